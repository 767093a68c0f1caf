"""A loopback address that refuses connections for as long as a test needs it."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """Yield ``http://127.0.0.1:PORT`` where connecting is refused.

    The port stays bound (never listening) until the block ends, so no other server on the
    machine can take it meanwhile: a closed-then-reused ephemeral port made "unreachable"
    tests flaky on a busy machine.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"

"""Progress bars and logging shared by every command.

Bars show counts, rate and ETA (tqdm) on stderr; ``GEOPAK_NO_PROGRESS=1`` turns them off
(e.g. in log files). ``-v`` on any command turns on debug logging.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("geopak")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (it may be swapped, e.g. by test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("geopak").setLevel(level)
    logging.getLogger("geopak_model").setLevel(level)
    if verbose > 1:
        root.setLevel(logging.DEBUG)


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | float | None = None,
    desc: str = "",
    unit: str = "it",
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar with the project's defaults (counts, rate, ETA; quiet when disabled)."""
    disable = os.environ.get("GEOPAK_NO_PROGRESS", "") not in ("", "0")
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        mininterval=0.5,
        dynamic_ncols=True,
        file=sys.stderr,
        **kwargs,
    )

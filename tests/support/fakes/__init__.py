"""Loopback fakes of the remote APIs the crawl talks to (Flickr REST, Google Places).

Each fake is a real aiohttp web application speaking the service's real request and response
shapes, started by a test on 127.0.0.1 with a random port. The crawl sources use synchronous
client libraries (``flickrapi``, ``googlemaps``, ``requests``), so the server runs its own
event loop in a background thread: ``with serve(app) as base_url: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from aiohttp import web


@contextlib.contextmanager
def serve(app: web.Application, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` on ``host`` with a random free port in a background thread; yield its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()
    state: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, 0)
            loop.run_until_complete(site.start())
            state["port"] = runner.addresses[0][1]
        except BaseException as exc:  # pragma: no cover - surfaced to the caller below
            state["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="fake-api-server", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("fake server did not start")
    if "error" in state:
        raise RuntimeError(f"fake server failed to start: {state['error']}")
    try:
        yield f"http://{host}:{state['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def tiny_jpeg(seed: int, width: int = 96, height: int = 72) -> bytes:
    """A small structured JPEG (the project's own fixture maker) for fake image routes."""
    from geopak_data.imageserver import make_jpeg

    return make_jpeg(width, height, seed=seed % (2**31))

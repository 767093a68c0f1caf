"""A loopback image host with fault injection, for tests, benchmarks and the offline demo.

Why: the downloader must be proven against everything a real crawl meets (404, 429 with
Retry-After, 5xx, slow and truncated bodies, HTML served as ``image/jpeg``, corrupt JPEGs,
decompression bombs, odd colour modes, EXIF rotation, opt-out headers) without touching the
network. This is a real aiohttp HTTP server on 127.0.0.1.

Routes
------
``GET /i/{name}``         an image from the store (a folder, a dict of bytes, plus the built-in
                          fixtures below). Query parameters inject faults on any image:
                          ``delay=S`` sleep before answering; ``status=CODE&times=N`` answer CODE
                          the first N times (per URL; default 1) then serve; ``retry_after=V``
                          add ``Retry-After: V`` to those failures; ``noai=1`` add
                          ``X-Robots-Tag: noai``; ``truncate=1`` declare the full length, send
                          half, close; ``ctype=TYPE`` override Content-Type;
                          ``require_header=NAME`` answer 401 unless the request has NAME.
``GET /fault/404``        a 404 page.
``GET /fault/html``       an HTML page served as ``image/jpeg``.
``GET /redirect?to=URL``  302 to URL (``hops=N`` chains N redirects through itself first).
``GET /count?path=P``     how many times P (path + query) was requested, as text.
``GET /last-headers?path=P``  the request headers of the last request to P, as JSON.
``GET /stats``            ``{"requests": N, "max_inflight": M}`` over the image routes.

Built-in fixtures (``fixture_images()``): ``photo.jpg`` 640x480, ``photo.png`` (RGBA),
``gray.jpg``, ``cmyk.jpg``, ``palette.png``, ``rotated.jpg`` (stored 600x400 with EXIF
orientation 6: upright it is 400x600), ``corrupt.jpg`` (valid header, garbage scan data),
``bomb.png`` (a few hundred bytes declaring 100000x100000 pixels), ``page.html``.

Use ``start_image_server(...) -> (base_url, stop)`` from synchronous code (the server runs in
a background thread), or ``python -m geopak_data.imageserver --folder DIR`` for a separate
process (benchmarks: the server then does not share the GIL with the client).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import mimetypes
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

# ----------------------------------------------------------------------------- fixtures


def make_jpeg(
    width: int = 640,
    height: int = 480,
    *,
    mode: str = "RGB",
    seed: int = 0,
    quality: int = 90,
    exif_orientation: int = 0,
) -> bytes:
    """A JPEG with some structure (gradients + blocks) so it is neither blank nor noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            (x * 255 // max(1, width - 1)),
            (y * 255 // max(1, height - 1)),
            ((x // 32 + y // 32) % 2) * 200 + rng.integers(0, 40),
        ],
        axis=-1,
    ).astype("uint8")
    im = Image.fromarray(base, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    out = io.BytesIO()
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    im.save(out, format="JPEG", quality=quality, **kwargs)
    return out.getvalue()


def make_png(width: int = 320, height: int = 240, *, mode: str = "RGBA") -> bytes:
    """A PNG fixture (alpha gradient in RGBA mode), so the decoders are tested on non-JPEG input."""
    from PIL import Image

    im = Image.open(io.BytesIO(make_jpeg(width, height))).convert(mode)
    if mode == "RGBA":
        im.putalpha(Image.linear_gradient("L").resize((width, height)))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def make_bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_corrupt_jpeg() -> bytes:
    """A JPEG whose headers are intact but whose entropy-coded data stops short."""
    good = make_jpeg(320, 240, seed=7)
    return good[: len(good) // 3] + b"\x00garbage\x00" * 8


HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Not Found</title></head><body><h1>Sorry, this photo is no "
    b"longer available</h1></body></html>"
)


def fixture_images() -> dict[str, bytes]:
    """The built-in fault fixtures served under ``/i/{name}``."""
    return {
        "photo.jpg": make_jpeg(640, 480, seed=1),
        "photo.png": make_png(320, 240, mode="RGBA"),
        "palette.png": make_png(200, 150, mode="P"),
        "gray.jpg": make_jpeg(300, 200, mode="L", seed=2),
        "cmyk.jpg": make_jpeg(300, 200, mode="CMYK", seed=3),
        "rotated.jpg": make_jpeg(600, 400, seed=4, exif_orientation=6),
        "corrupt.jpg": make_corrupt_jpeg(),
        "bomb.png": make_bomb_png(),
        "page.html": HTML_PAGE,
    }


# ----------------------------------------------------------------------------- server


HITS: web.AppKey[Counter[str]] = web.AppKey("hits", Counter)


class ImageStore:
    """Bytes by name: an in-memory dict first, then files in a folder (read on demand)."""

    def __init__(self, images: Mapping[str, bytes] | None = None, folder: str | Path | None = None):
        self.images = dict(images or {})
        self.folder = Path(folder).resolve() if folder else None

    def get(self, name: str) -> bytes | None:
        if name in self.images:
            return self.images[name]
        if self.folder is not None:
            p = (self.folder / name).resolve()
            if p.is_file() and p.is_relative_to(self.folder):
                return p.read_bytes()
        return None


def _content_type(name: str) -> str:
    if name.endswith(".html"):
        return "image/jpeg"  # the point of page.html: HTML that claims to be a JPEG
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def build_app(store: ImageStore, *, latency_s: float = 0.0) -> web.Application:
    """The aiohttp application (exposed so async tests can use ``aiohttp_server``).

    ``latency_s`` delays every image answer (a far-away host: requests overlap, so
    concurrency limits become visible in ``/stats``)."""
    hits: Counter[str] = Counter()
    last_headers: dict[str, dict[str, str]] = {}
    stats = {"requests": 0, "inflight": 0, "max_inflight": 0}

    async def image(request: web.Request) -> web.StreamResponse:
        stats["requests"] += 1
        stats["inflight"] += 1
        stats["max_inflight"] = max(stats["max_inflight"], stats["inflight"])
        try:
            return await _image(request)
        finally:
            stats["inflight"] -= 1

    async def _image(request: web.Request) -> web.StreamResponse:
        key = request.path_qs
        hits[key] += 1
        last_headers[key] = dict(request.headers)
        q = request.query
        name = request.match_info["name"]
        if "delay" in q or latency_s:
            await asyncio.sleep(float(q.get("delay", latency_s)))
        if "status" in q and hits[key] <= int(q.get("times", "1")):
            headers = {"Retry-After": q["retry_after"]} if "retry_after" in q else {}
            return web.Response(status=int(q["status"]), text="injected failure", headers=headers)
        if "require_header" in q and q["require_header"] not in request.headers:
            return web.Response(status=401, text=f"missing {q['require_header']}")
        data = store.get(name)
        if data is None:
            return web.Response(status=404, text="not found")
        headers = {"Content-Type": q.get("ctype", _content_type(name))}
        if q.get("noai"):
            headers["X-Robots-Tag"] = "noai, noimageai"
        if q.get("truncate"):
            resp = web.StreamResponse(headers=headers)
            resp.content_length = len(data)
            resp.force_close()
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            if request.transport is not None:
                request.transport.close()
            return resp
        return web.Response(body=data, headers=headers)

    async def not_found(request: web.Request) -> web.Response:
        hits[request.path_qs] += 1
        return web.Response(status=404, text="not found")

    async def html(request: web.Request) -> web.Response:
        hits[request.path_qs] += 1
        return web.Response(body=HTML_PAGE, headers={"Content-Type": "image/jpeg"})

    async def redirect(request: web.Request) -> web.Response:
        hits[request.path_qs] += 1
        hops = int(request.query.get("hops", "0"))
        target = request.query["to"]
        if hops > 0:
            target = str(request.url.update_query(hops=str(hops - 1)))
        # a plain response: the Location is sent as given, even when it is not a valid URL
        # (hostile servers do that; HTTPFound would refuse to build it)
        return web.Response(status=302, headers={"Location": target})

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(hits[request.query.get("path", "")]))

    async def headers(request: web.Request) -> web.Response:
        return web.json_response(last_headers.get(request.query.get("path", ""), {}))

    async def stats_route(request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": stats["requests"], "max_inflight": stats["max_inflight"]}
        )

    app = web.Application()
    app.router.add_get("/i/{name:.+}", image)
    app.router.add_get("/fault/404", not_found)
    app.router.add_get("/fault/html", html)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/count", count)
    app.router.add_get("/last-headers", headers)
    app.router.add_get("/stats", stats_route)
    app[HITS] = hits
    return app


def make_store(
    images: Mapping[str, bytes] | str | Path | None = None, *, fixtures: bool = True
) -> ImageStore:
    """An ImageStore over in-memory images and/or a folder, plus the fault fixtures unless
    ``fixtures=False``."""
    mem = fixture_images() if fixtures else {}
    folder = None
    if isinstance(images, str | Path):
        folder = images
    elif images is not None:
        mem.update(images)
    return ImageStore(mem, folder)


def start_image_server(
    images: Mapping[str, bytes] | str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    fixtures: bool = True,
    latency_s: float = 0.0,
) -> tuple[str, Callable[[], None]]:
    """Serve ``images`` (a dict name -> bytes, or a folder) plus the fixtures on loopback.

    Runs in a daemon thread with its own event loop; returns ``(base_url, stop)``, e.g.
    ``("http://127.0.0.1:41234", stop)``. Image URLs are ``f"{base_url}/i/{name}"``.
    """
    store = make_store(images, fixtures=fixtures)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def _start() -> None:
        runner = web.AppRunner(
            build_app(store, latency_s=latency_s), access_log=None, handle_signals=False
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        state["port"] = sock.getsockname()[1]
        state["runner"] = runner

    def _run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_start())
        except BaseException as exc:  # surface bind errors to the caller
            state["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(state["runner"].cleanup())  # type: ignore[attr-defined]
        loop.close()

    thread = threading.Thread(target=_run, name="geopak-imageserver", daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in state:
        raise state["error"]  # type: ignore[misc]
    url_host = f"[{host}]" if ":" in host else host
    base = f"http://{url_host}:{state['port']}"

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    return base, stop


def main(argv: list[str] | None = None) -> int:
    """Run the loopback image server from the command line (benchmarks, manual tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m geopak_data.imageserver",
        description="Serve a folder of images (plus fault fixtures) on loopback.",
    )
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-fixtures", action="store_true")
    parser.add_argument(
        "--preload",
        action="store_true",
        help="read the folder into memory once (benchmarks: no disk reads per request)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: several server processes can share one port",
    )
    args = parser.parse_args(argv)
    if args.preload and args.folder:
        folder = Path(args.folder)
        images = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        store = make_store(images, fixtures=not args.no_fixtures)
    else:
        store = make_store(args.folder, fixtures=not args.no_fixtures)

    async def _serve() -> None:
        runner = web.AppRunner(build_app(store), access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner,
            args.host,
            args.port,
            reuse_address=True,
            reuse_port=args.reuse_port or None,
            backlog=1024,
        )
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"http://{args.host}:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(_serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A lean loopback image host for the download benchmark: preloaded files over HTTP/1.1.

Why not ``geopak_data.imageserver`` (the aiohttp host with fault injection the tests use):
on a 2-core machine the host shares the cores with the client it serves, and that host
spends ~0.3 ms of CPU per request in aiohttp's web framework, as much as a tenth of the
per-image work the crawl is compared with (its no-network limit has no host at all). A real
crawl's image host runs elsewhere. This one answers ``GET /i/NAME`` from memory with a
``asyncio.Protocol`` (keep-alive, ``Content-Length``, ``Connection: close`` honoured, 404
otherwise), a few tens of microseconds per request, the same for every client measured.

    python bench/_statichost.py --folder DIR [--port P] [--reuse-port]

prints its base URL (``http://127.0.0.1:PORT``) on the first line, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path
from urllib.parse import unquote

_END = b"\r\n\r\n"


class _Conn(asyncio.Protocol):
    """One client connection: requests parsed from the byte stream, answered in order."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            end = self.buf.find(_END)
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + len(_END) :]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        assert self.transport is not None
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        close = any(
            h.lower().startswith(b"connection:") and b"close" in h.lower() for h in lines[1:]
        )
        path = unquote(parts[1].decode("latin-1")) if len(parts) == 3 else ""
        body = self.files.get(path[3:]) if path.startswith("/i/") and parts[0] == b"GET" else None
        status, ctype = (
            (b"200 OK", b"image/jpeg") if body is not None else (b"404 Not Found", b"text/plain")
        )
        body = body if body is not None else b"not found\n"
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (status, ctype, len(body), b"Connection: close\r\n" if close else b"")
        )
        self.transport.write(body)
        if close:
            self.transport.close()
            self.transport = None


async def serve(folder: Path, port: int, reuse_port: bool) -> None:
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(files), sock=sock)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--folder", type=Path, required=True, help="files served as /i/<relative path>")
    ap.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    ap.add_argument(
        "--reuse-port", action="store_true", help="SO_REUSEPORT: several processes, one port"
    )
    args = ap.parse_args()
    try:
        asyncio.run(serve(args.folder, args.port, args.reuse_port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A loopback host for pretrained weights: a Hugging Face Hub and a plain file server.

Hub, the shapes ``huggingface_hub.hf_hub_download`` relies on (``HF_ENDPOINT`` points here,
at ``127.0.0.1``; content is served as from a CDN on another host name, ``localhost``):

* ``HEAD /{org}/{repo}/resolve/{revision}/{filename}``: for a stored (LFS) file, a 302 whose
  ``Location`` is the content URL, with ``X-Repo-Commit`` (40 hex), ``X-Linked-Etag`` (the
  file's sha256, quoted), ``X-Linked-Size`` and a git ``ETag``; an unknown file is a 404 with
  ``X-Error-Code: EntryNotFound``, an unknown repo a 401 with ``X-Error-Code: RepoNotFound``;
* ``GET`` of the same path: the same 302; ``GET /cdn/{sha256}``: the bytes (``Range:
  bytes=N-`` answered with 206 and ``Content-Range``, as a CDN does for a resumed download).

File server: ``GET /files/{name}`` (the Places365 project's ``models_places365/...`` layout is
just a path). Either side can misbehave on demand through ``mode[name]``: ``corrupt`` (right
size, flipped bytes), ``truncate`` (the full Content-Length promised, half the bytes sent),
``slow`` (small chunks with pauses, for kill -9 tests). Every request is logged in ``log``.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class WeightsHost:
    hub: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> filename -> bytes
    files: dict[str, bytes] = field(default_factory=dict)  # path under /files/
    mode: dict[str, str] = field(default_factory=dict)  # filename or path -> fault
    log: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def __post_init__(self) -> None:
        self._cdn_names: dict[str, str] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/cdn/{sha}", self._cdn)
        app.router.add_route("*", "/files/{path:.+}", self._file)
        app.router.add_route("*", "/{org}/{repo}/resolve/{revision}/{filename:.+}", self._resolve)
        return app

    def content_gets(self) -> int:
        """How many requests fetched bytes (not metadata)."""
        return sum(1 for m, p in self.log if m == "GET" and p.startswith(("/cdn/", "/files/")))

    async def _resolve(self, request: web.Request) -> web.Response:
        self.log.append((request.method, request.path))
        repo = f"{request.match_info['org']}/{request.match_info['repo']}"
        name = request.match_info["filename"]
        if repo not in self.hub:
            return web.Response(
                status=401,
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
        data = self.hub[repo].get(name)
        if data is None:
            return web.Response(
                status=404,
                headers={
                    "X-Error-Code": "EntryNotFound",
                    "X-Error-Message": "Entry not found",
                    "X-Repo-Commit": COMMIT,
                },
            )
        sha = hashlib.sha256(data).hexdigest()
        self._cdn_names[sha] = name
        # The content lives on another host (a CDN for the real Hub): the client stops at this
        # redirect and reads the metadata from it, as it does with the real one.
        host = request.host.replace("127.0.0.1", "localhost", 1)
        base = f"{request.scheme}://{host}"
        return web.Response(
            status=302,
            headers={
                "Location": f"{base}/cdn/{sha}",
                "X-Repo-Commit": COMMIT,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                "Content-Length": "0",
            },
        )

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self.log.append((request.method, request.path))
        sha = request.match_info["sha"]
        name = self._cdn_names.get(sha)
        data = next(
            (d for files in self.hub.values() for n, d in files.items() if n == name),
            None,
        )
        if data is None:
            return web.Response(status=404)
        return await self._send(request, data, self.mode.get(name, ""))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.log.append((request.method, request.path))
        path = request.match_info["path"]
        data = self.files.get(path)
        if data is None:
            return web.Response(status=404, text="Not Found")
        return await self._send(request, data, self.mode.get(path, ""))

    async def _send(self, request: web.Request, data: bytes, mode: str) -> web.StreamResponse:
        if mode == "corrupt":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_type = "application/octet-stream"
        resp.content_length = len(data) - start
        resp.headers["Accept-Ranges"] = "bytes"
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        body = data[start:]
        if mode == "truncate":
            await resp.write(body[: len(body) // 2])
            await asyncio.sleep(0.05)
            request.transport.close()  # the connection drops mid-file
            return resp
        chunk = 1 << 18 if mode == "slow" else 1 << 20
        for i in range(0, len(body), chunk):
            await resp.write(body[i : i + chunk])
            if mode == "slow":
                await asyncio.sleep(0.1)
        await resp.write_eof()
        return resp

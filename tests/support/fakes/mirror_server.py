"""A loopback image mirror that insists on credentials, as a private photo mirror does.

``GET /p/{name}.jpg`` answers the JPEG only with HTTP Basic ``user:password`` (the
``user:pass@`` of a metadata URL, which clients send as ``Authorization: Basic``) *and* the
``api_key`` query parameter; otherwise 401 with ``WWW-Authenticate``. ``down = True`` answers
503 to everything (a mirror that is away), ``delay_s`` slows each image (for kill tests).
Every request is logged as ``(path, authorised)``.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field

from aiohttp import web

from . import tiny_jpeg


@dataclass
class MirrorFake:
    user: str = "alice"
    password: str = "S3CRET-pass"
    api_key: str = "S3CRET-key"
    down: bool = False
    delay_s: float = 0.0
    log: list[tuple[str, bool]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/p/{name}.jpg", self._image)
        return app

    def served(self) -> int:
        return sum(1 for _, ok in self.log if ok)

    def _authorised(self, request: web.Request) -> bool:
        want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        basic = request.headers.get("Authorization", "") == f"Basic {want}"
        return basic and request.query.get("api_key") == self.api_key

    async def _image(self, request: web.Request) -> web.Response:
        if self.down:
            self.log.append((request.path, False))
            return web.Response(status=503, text="mirror is away")
        ok = self._authorised(request)
        self.log.append((request.path, ok))
        if not ok:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="m"'})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        seed = sum(request.match_info["name"].encode())
        return web.Response(body=tiny_jpeg(seed, 96, 72), content_type="image/jpeg")

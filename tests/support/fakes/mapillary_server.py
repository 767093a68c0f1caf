"""A loopback Mapillary API v4 (``graph.mapillary.com``) images endpoint with a seeded world.

What it reproduces (from the public API v4 documentation and the shapes clients rely on):

* ``GET /images?bbox=minLon,minLat,maxLon,maxLat&fields=...&limit=N`` with the token as
  ``Authorization: OAuth TOKEN`` or the ``access_token`` parameter; only the requested fields
  come back; ``limit`` is at most 2000;
* bboxes of 0.01 square degrees or more are refused (400, ``{"error": ...}``) and recorded in
  ``violations``; at most ``cap`` images are reachable per bbox query;
* paging: ``{"data": [...], "paging": {"cursors": {"before", "after"}, "next": URL}}`` where
  ``next`` repeats the query with ``after=CURSOR`` *and the access token*, as the Graph API
  does (a client must not store it);
* errors as ``{"error": {"message", "type", "code", "fbtrace_id"}}``: no token (401, code 104),
  a bad token (401, code 190), injected ``faults`` ``"http500"`` (``is_transient``) and
  ``"http429"`` (code 4, with ``Retry-After``);
* images: ``computed_geometry`` (missing for some, which then only have ``geometry``),
  ``captured_at`` (ms), ``creator {id, username}``, ``sequence``, ``is_pano``,
  ``thumb_1024_url`` (signed CDN-style URL; missing for some images still processing);
* signed links expire, as Meta's CDN (``scontent-*.fbcdn.net``) behind Mapillary does: the
  ``oe=`` parameter is the link's expiry (hex), and a link past it is answered 403
  "URL signature expired". Time is a counter here, not the clock: ``expire()`` ends every
  link handed out so far; ``stale_listing`` makes ``/images`` hand out already-expired links
  (a download long after discovery). ``GET /{image_id}?fields=thumb_1024_url`` (token
  required) gives a fresh link, recorded in ``refreshes``;
  ``gone`` ids answer that node with 400 ``GraphMethodException`` code 100 (deleted image).
"""

from __future__ import annotations

import base64
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from . import tiny_jpeg

TOKEN = "MLY|4242424242|fake0123456789abcdef0123456789ab"


@dataclass
class FakeImage:
    id: str
    lat: float
    lon: float
    captured_at: int
    username: str
    sequence: str
    is_pano: bool = False
    has_thumb: bool = True
    has_computed: bool = True


def make_world(
    *,
    seed: int = 5,
    bbox: tuple[float, float, float, float] = (70.0, 30.0, 71.0, 31.0),
    sequences: int = 30,
    frames: int = 12,
    step_m: float = 8.0,
    hotspot: int = 5,
    hotspot_at: tuple[float, float] = (70.31, 30.31),
) -> list[FakeImage]:
    """``sequences`` drives of ``frames`` images ``step_m`` metres apart (``hotspot`` of them
    through one spot, more than one capped query returns), plus one panorama sequence, images
    without a thumbnail and images without ``computed_geometry``."""
    rng = random.Random(seed)
    out: list[FakeImage] = []
    n = 0
    for s in range(sequences + 1):
        lon = rng.uniform(bbox[0] + 0.01, bbox[2] - 0.01)
        lat = rng.uniform(bbox[1] + 0.01, bbox[3] - 0.01)
        if s >= sequences - hotspot:  # several drives through one junction: a dense box
            lon, lat = hotspot_at[0] + 0.0003 * s, hotspot_at[1]
        t = 1_500_000_000_000 + rng.randint(0, 10**11)
        user = f"driver{rng.randint(1, 9)}"
        seq = f"seq{s:04d}{rng.getrandbits(24):06x}"
        for f in range(frames):
            n += 1
            out.append(
                FakeImage(
                    id=str(300_000_000_000 + n * 7),
                    lat=round(lat + f * step_m / 111_320.0, 7),
                    lon=round(lon, 7),
                    captured_at=t + f * 1500,
                    username=user,
                    sequence=seq,
                    is_pano=s == sequences,
                    has_thumb=not (s == 1 and f == 3),
                    has_computed=not (s == 2 and f % 2 == 0),
                )
            )
    return out


@dataclass
class MapillaryFake:
    images: list[FakeImage] = field(default_factory=make_world)
    token: str = TOKEN
    cap: int = 2000  # images reachable per bbox query
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    image_hits: int = 0
    generation: int = 1  # the CDN's "now": links with an older oe have expired
    stale_listing: bool = False  # /images hands out links that have already expired
    gone: set[str] = field(default_factory=set)  # deleted since discovery
    refreshes: list[dict[str, Any]] = field(default_factory=list)
    expired_hits: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id = {i.id: i for i in self.images}

    def expected_ids(self) -> set[str]:
        return {i.id for i in self.images if not i.is_pano and i.has_thumb}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/images", self._images)
        app.router.add_get("/cdn/{id}.jpg", self._thumb)
        app.router.add_get(r"/{id:\d+}", self._node)
        return app

    def expire(self) -> None:
        """Time passes: every link handed out so far is past its expiry."""
        with self._lock:
            self.generation += 1

    def _token_of(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        return (
            auth[len("OAuth ") :]
            if auth.startswith("OAuth ")
            else request.query.get("access_token", "")
        )

    async def _node(self, request: web.Request) -> web.Response:
        """``GET /{image_id}?fields=...``: one image's fields (a fresh signed thumbnail link)."""
        sid = request.match_info["id"]
        token = self._token_of(request)
        entry = {"id": sid, "fields": request.query.get("fields", ""), "auth": bool(token)}
        with self._lock:
            self.refreshes.append(entry)
        if token != self.token:
            return self._error(401, "Invalid OAuth access token", "OAuthException", 190)
        img = self._by_id.get(sid)
        if img is None or sid in self.gone:
            return self._error(
                400,
                f"Unsupported get request. Object with ID '{sid}' does not exist",
                "GraphMethodException",
                100,
            )
        fields = [f for f in request.query.get("fields", "id").split(",") if f]
        return web.json_response(
            self._json(img, fields, f"{request.scheme}://{request.host}", fresh=True)
        )

    @staticmethod
    def _error(status: int, message: str, type_: str, code: int, **extra: Any) -> web.Response:
        body = {
            "error": {
                "message": message,
                "type": type_,
                "code": code,
                **extra,
                "fbtrace_id": "AbCdEfGhIjK",
            }
        }
        headers = {"Retry-After": "3"} if status == 429 else {}
        return web.Response(
            status=status, text=json.dumps(body), content_type="application/json", headers=headers
        )

    async def _thumb(self, request: web.Request) -> web.Response:
        img = self._by_id.get(request.match_info["id"])
        if img is None or "_nc_sig" not in request.query or "oe" not in request.query:
            return web.Response(status=403, text="URL signature mismatch")
        if int(request.query["oe"], 16) - _EPOCH < self.generation:
            with self._lock:
                self.expired_hits += 1
            return web.Response(status=403, text="URL signature expired")
        with self._lock:
            self.image_hits += 1
        return web.Response(body=tiny_jpeg(int(img.id)), content_type="image/jpeg")

    async def _images(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        auth = request.headers.get("Authorization", "")
        token = self._token_of(request)
        entry: dict[str, Any] = {
            "params": {k: v for k, v in q.items() if k != "access_token"},
            "outcome": "ok",
            "auth": "header" if auth else ("query" if token else "none"),
        }
        with self._lock:
            self.requests.append(entry)
            fault = self.faults.pop(0) if self.faults else None
        if not token:
            entry["outcome"] = "no-token"
            return self._error(
                401, "An access token is required to request this resource.", "OAuthException", 104
            )
        if token != self.token:
            entry["outcome"] = "bad-token"
            return self._error(
                401, "Invalid OAuth access token - Cannot parse access token", "OAuthException", 190
            )
        if fault == "http500":
            entry["outcome"] = fault
            return self._error(
                500, "An unknown error has occurred.", "OAuthException", 1, is_transient=True
            )
        if fault == "http429":
            entry["outcome"] = fault
            return self._error(
                429, "Application request limit reached", "OAuthException", 4, is_transient=True
            )
        try:
            lon0, lat0, lon1, lat1 = (float(v) for v in q["bbox"].split(","))
            limit = int(q.get("limit", "2000"))
        except (KeyError, ValueError):
            entry["outcome"] = "bad-bbox"
            return self._error(400, "Invalid parameter bbox", "GraphMethodException", 100)
        if (lon1 - lon0) * (lat1 - lat0) >= 0.01 or lon1 <= lon0 or lat1 <= lat0:
            with self._lock:
                self.violations.append({"bbox": q["bbox"]})
            entry["outcome"] = "bbox-too-big"
            return self._error(
                400,
                "Please reduce the amount of data you're asking for, then retry your request",
                "OAuthException",
                1,
            )
        if not 1 <= limit <= 2000:
            return self._error(
                400, "Invalid parameter limit: must be 1..2000", "GraphMethodException", 100
            )
        fields = [f for f in q.get("fields", "id").split(",") if f]
        inside = sorted(
            (i for i in self.images if lon0 <= i.lon <= lon1 and lat0 <= i.lat <= lat1),
            key=lambda i: i.id,
        )[: self.cap]
        after = int(base64.b64decode(q["after"]).decode()) if q.get("after") else 0
        page = inside[after : after + limit]
        entry["total"], entry["returned"] = len(inside), [i.id for i in page]
        origin = f"{request.scheme}://{request.host}"
        body: dict[str, Any] = {"data": [self._json(i, fields, origin) for i in page]}
        if page:
            cursors = {
                "before": base64.b64encode(str(after).encode()).decode(),
                "after": base64.b64encode(str(after + len(page)).encode()).decode(),
            }
            body["paging"] = {"cursors": cursors}
            if after + len(page) < len(inside):
                nq = {
                    **{k: v for k, v in q.items() if k not in ("after", "access_token")},
                    "access_token": token,
                    "after": cursors["after"],
                }
                body["paging"]["next"] = f"{origin}/images?{urlencode(nq)}"
        return web.json_response(body)

    def _json(
        self, i: FakeImage, fields: list[str], origin: str, fresh: bool = False
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"id": i.id}
        point = {"type": "Point", "coordinates": [i.lon, i.lat]}
        if "computed_geometry" in fields and i.has_computed:
            out["computed_geometry"] = point
        if "geometry" in fields:
            out["geometry"] = {
                "type": "Point",
                "coordinates": [round(i.lon + 2e-5, 7), round(i.lat - 2e-5, 7)],
            }
        if "captured_at" in fields:
            out["captured_at"] = i.captured_at
        if "creator" in fields:
            out["creator"] = {"username": i.username, "id": str(100 + int(i.username[-1]))}
        if "sequence" in fields:
            out["sequence"] = i.sequence
        if "is_pano" in fields:
            out["is_pano"] = i.is_pano
        if "thumb_1024_url" in fields and i.has_thumb:
            # valid until the next expire(); a stale listing's links have expired already
            expiry = _EPOCH + self.generation - (1 if self.stale_listing and not fresh else 0)
            out["thumb_1024_url"] = (
                f"{origin}/cdn/{i.id}.jpg?stp=s1024x768&_nc_sig=Xy{int(i.id) % 9973}&oh=00_AfB"
                f"&oe={expiry:08X}"
            )
        return out


_EPOCH = 0x65000000  # oe values are hex unix times; the fake's time counts from here

"""A loopback MediaWiki Action API (``/w/api.php``) holding a deterministic world of files.

What it reproduces (from mediawiki.org API:Geosearch, API:Imageinfo, Extension:GeoData,
Extension:CommonsMetadata and Manual:Maxlag_parameter), because each is something the real
service does to a crawler:

* ``action=query&list=geosearch`` with ``gsbbox=top|left|bottom|right`` (GeoData refuses
  ``top <= bottom`` as ``invalid-bbox`` and boxes over 4 x (10 km)² or under 100 m² as
  ``toobig``), ``gsnamespace``, ``gslimit`` (over 500 is clamped with a warning); hits are
  the nearest to the box centre, at most ``gslimit``, with no continuation;
* ``prop=imageinfo&titles=...`` (over 50 titles: ``toomanyvalues``) with
  ``iiprop=url|size|mime|extmetadata`` and ``iiurlwidth``: ``thumburl`` (or ``thumberror``
  for files that cannot be thumbnailed), ``descriptionurl``, ``extmetadata`` values as
  ``{"value", "source", "hidden"}`` with HTML in ``Artist``/``Credit``; when a batch is
  "too large" only the first ``pieces`` pages carry imageinfo and the answer holds
  ``continue: {"iicontinue": ..., "continue": "||"}``; ``normalized`` for titles sent with
  underscores; ``missing`` for deleted files;
* ``formatversion=2`` JSON; errors as ``{"error": {"code", "info", "*"}}`` with the
  ``MediaWiki-API-Error`` header;
* ``maxlag``: injected lag (``faults``: ``"maxlag"``) answers HTTP 200 with
  ``{"error": {"code": "maxlag", "info": "Waiting for db1: 7 seconds lagged", "host", "lag"}}``,
  ``Retry-After`` and ``X-Database-Lag``; ``"http503"``/``"http429"`` faults too;
* a request whose ``User-Agent`` names no contact (URL or e-mail) is refused with 403, as
  Wikimedia's User-Agent policy does.

Every API request is logged in ``requests`` (params, outcome, user agent).
"""

from __future__ import annotations

import json
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from . import tiny_jpeg

EARTH_M = 6371008.8
LICENSES = [
    ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0", "cc-by-sa-4.0"),
    ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0", "cc-by-2.0"),
    ("CC0", "http://creativecommons.org/publicdomain/zero/1.0/deed.en", "cc0"),
    ("Public domain", "", "pd"),
    (
        "CC BY-SA 3.0 de",
        "https://creativecommons.org/licenses/by-sa/3.0/de/deed.en",
        "cc-by-sa-3.0-de",
    ),
]
NON_FREE = ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0", "cc-by-nc-2.0")


@dataclass
class FakeFile:
    pageid: int
    name: str  # without "File:"
    lat: float
    lon: float
    license: tuple[str, str, str]
    artist_html: str
    credit_html: str
    date: str
    mime: str = "image/jpeg"
    size: tuple[int, int] = (4000, 3000)
    thumbable: bool = True
    deleted: bool = False

    @property
    def title(self) -> str:
        return f"File:{self.name}"


def make_world(
    *,
    seed: int = 3,
    n: int = 300,
    bbox: tuple[float, float, float, float] = (70.0, 30.0, 71.0, 31.0),
    hotspot: tuple[float, float] = (70.8, 30.2),
    hotspot_n: int = 120,
) -> list[FakeFile]:
    """``n`` geotagged files; ``hotspot_n`` within ~500 m of one spot (more than a small
    ``gslimit``), one non-free file, one video, one without a thumbnail, one deleted."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i < hotspot_n:
            lon = hotspot[0] + rng.uniform(-0.004, 0.004)
            lat = hotspot[1] + rng.uniform(-0.004, 0.004)
        else:
            lon, lat = rng.uniform(bbox[0], bbox[2]), rng.uniform(bbox[1], bbox[3])
        user = f"Photographer {rng.randint(1, 40)}"
        artist = (
            f'<a href="//commons.wikimedia.org/wiki/User:{quote(user.replace(" ", "_"))}" '
            f'title="User:{user}">{user}</a>'
            if i % 3
            else (
                '<span class="fn value"><a rel="nofollow" class="external text" '
                f'href="https://www.flickr.com/people/{i}">{user}</a> from Lahore, Pakistan</span>'
            )
        )
        f = FakeFile(
            pageid=10_000_000 + i * 13,
            name=f"View of place {i} (Pakistan).jpg",
            lat=round(lat, 6),
            lon=round(lon, 6),
            license=LICENSES[i % len(LICENSES)],
            artist_html=artist,
            credit_html='<span class="int-own-work" lang="en">Own work</span>' if i % 2 else "",
            date=(
                f"{2010 + i % 12}-{1 + i % 12:02d}-{1 + i % 27:02d} {i % 24:02d}:{i % 60:02d}:07"
                if i % 5
                else f'<time class="dtstart" datetime="{2009 + i % 9}-05-0{1 + i % 9}">May {2009 + i % 9}</time>'
            ),
        )
        out.append(f)
    special = out[hotspot_n : hotspot_n + 4]
    special[0].license = NON_FREE
    special[1].mime, special[1].name = "video/webm", special[1].name.replace(".jpg", ".webm")
    special[2].thumbable, special[2].size = False, (9000, 9000)
    special[2].mime, special[2].name = "image/tiff", special[2].name.replace(".jpg", ".tif")
    special[3].deleted = True
    return out


def _area_m2(top: float, left: float, bottom: float, right: float) -> float:
    return (
        EARTH_M**2
        * math.radians(right - left)
        * abs(math.sin(math.radians(top)) - math.sin(math.radians(bottom)))
    )


def _dist_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_M * math.asin(math.sqrt(a))


@dataclass
class CommonsFake:
    files: list[FakeFile] = field(default_factory=make_world)
    max_radius_m: float = 10_000.0  # $wgMaxGeoSearchRadius
    pieces: int = 20  # imageinfo pages per answer before `continue` (the API's size limit)
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    image_hits: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._by_title = {f.title: f for f in self.files}
        self._by_id = {f.pageid: f for f in self.files}

    def geosearches(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["params"].get("list") == "geosearch"]

    def free_ids(self) -> set[str]:
        """Page ids a default crawl must return (free licence, photo MIME, thumbnail, alive)."""
        return {
            str(f.pageid)
            for f in self.files
            if f.license is not NON_FREE
            and f.mime.startswith("image/")
            and f.thumbable
            and not f.deleted
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/w/api.php", self._api)
        app.router.add_post("/w/api.php", self._api)
        app.router.add_get("/thumb/{pageid}/{name}", self._image)
        app.router.add_get("/orig/{pageid}/{name}", self._image)
        return app

    async def _image(self, request: web.Request) -> web.Response:
        f = self._by_id.get(int(request.match_info["pageid"]))
        if f is None:
            return web.Response(status=404)
        with self._lock:
            self.image_hits += 1
        return web.Response(body=tiny_jpeg(f.pageid), content_type="image/jpeg")

    @staticmethod
    def _error(
        code: str, info: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {
            "error": {
                "code": code,
                "info": info,
                "docref": "See https://commons.wikimedia.org/w/api.php for API usage.",
            }
        }
        return web.Response(
            status=status,
            text=json.dumps(body),
            content_type="application/json",
            headers={"MediaWiki-API-Error": code, **(headers or {})},
        )

    async def _api(self, request: web.Request) -> web.Response:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        ua = request.headers.get("User-Agent", "")
        entry: dict[str, Any] = {"params": params, "outcome": "ok", "user_agent": ua}
        with self._lock:
            self.requests.append(entry)
            fault = self.faults.pop(0) if self.faults else None
        if not ("http" in ua or "@" in ua):
            entry["outcome"] = "ua"
            return web.Response(
                status=403,
                text="Please set a user-agent with contact information (https://meta.wikimedia.org/wiki/User-Agent_policy)",
            )
        if fault == "maxlag":
            entry["outcome"] = "maxlag"
            return self._error(
                "maxlag",
                "Waiting for db1: 7 seconds lagged.",
                headers={"Retry-After": "5", "X-Database-Lag": "7"},
            )
        if fault and fault.startswith("http"):
            entry["outcome"] = fault
            status = int(fault[4:])
            return web.Response(
                status=status,
                text="<html>busy</html>",
                content_type="text/html",
                headers={"Retry-After": "2"},
            )
        if params.get("action") != "query":
            return self._error("badvalue", 'Unrecognized value for parameter "action"')
        if params.get("format") != "json" or params.get("formatversion") != "2":
            entry["outcome"] = "format"
            return self._error("badvalue", "this fake speaks format=json&formatversion=2 only")
        if params.get("list") == "geosearch":
            return self._geosearch(params, entry)
        if params.get("prop") == "imageinfo":
            return self._imageinfo(params, entry, request)
        return self._error("badvalue", "unsupported query")

    def _geosearch(self, params: dict[str, str], entry: dict[str, Any]) -> web.Response:
        try:
            top, left, bottom, right = (float(v) for v in params["gsbbox"].split("|"))
        except (KeyError, ValueError):
            entry["outcome"] = "invalid-bbox"
            return self._error("invalid-bbox", "Invalid bounding box.")
        if top <= bottom:
            entry["outcome"] = "invalid-bbox"
            return self._error("invalid-bbox", "Invalid bounding box.")
        area = _area_m2(top, left, bottom, right)
        if area > 4 * self.max_radius_m**2 or area < 100:
            entry["outcome"] = "toobig"
            return self._error("toobig", "Bounding box is too big.")
        limit = int(params.get("gslimit", "10"))
        body: dict[str, Any] = {"batchcomplete": True}
        if limit > 500:
            limit = 500
            body["warnings"] = {
                "geosearch": {"warnings": "gslimit may not be over 500 (set to 500) for users."}
            }
        ns = {int(x) for x in params.get("gsnamespace", "0").split("|")}
        clat, clon = (top + bottom) / 2, (left + right) / 2
        inside = [
            f for f in self.files if 6 in ns and bottom <= f.lat <= top and left <= f.lon <= right
        ]
        inside.sort(key=lambda f: (_dist_m(clat, clon, f.lat, f.lon), f.pageid))
        hits = inside[:limit]
        entry["total"], entry["returned"] = len(inside), [str(f.pageid) for f in hits]
        body["query"] = {
            "geosearch": [
                {
                    "pageid": f.pageid,
                    "ns": 6,
                    "title": f.title,
                    "lat": f.lat,
                    "lon": f.lon,
                    "dist": round(_dist_m(clat, clon, f.lat, f.lon), 1),
                    "primary": True,
                    "type": "camera",
                }
                for f in hits
            ]
        }
        return web.json_response(body)

    def _imageinfo(
        self, params: dict[str, str], entry: dict[str, Any], request: web.Request
    ) -> web.Response:
        titles = [t for t in params.get("titles", "").split("|") if t]
        if len(titles) > 50:
            entry["outcome"] = "toomanyvalues"
            return self._error(
                "toomanyvalues", 'Too many values supplied for parameter "titles". The limit is 50.'
            )
        normalized = []
        canon = []
        for t in titles:
            c = t.replace("_", " ")
            if c != t:
                normalized.append({"fromencoded": False, "from": t, "to": c})
            canon.append(c)
        start = 0
        if params.get("iicontinue"):
            cont_title = "File:" + params["iicontinue"].split("|", 1)[0].replace("_", " ")
            start = canon.index(cont_title) if cont_title in canon else len(canon)
        width = int(params.get("iiurlwidth", "0") or 0)
        props = set(params.get("iiprop", "timestamp|user").split("|"))
        origin = f"{request.scheme}://{request.host}"
        extfilter = {k for k in params.get("iiextmetadatafilter", "").split("|") if k}
        pages = []
        cont = None
        for i, title in enumerate(canon):
            f = self._by_title.get(title)
            if f is None or f.deleted:
                pages.append({"ns": 6, "title": title, "missing": True, "known": False})
                continue
            page: dict[str, Any] = {
                "pageid": f.pageid,
                "ns": 6,
                "title": title,
                "imagerepository": "local",
            }
            if start <= i < start + self.pieces:
                page["imageinfo"] = [self._info(f, props, width, origin, extfilter)]
            elif i >= start + self.pieces and cont is None:
                cont = {
                    "iicontinue": f"{f.name.replace(' ', '_')}|20200101000000",
                    "continue": "||",
                }
            pages.append(page)
        pages.sort(key=lambda p: p.get("pageid", -1))
        body: dict[str, Any] = {"query": {"pages": pages}}
        if normalized:
            body["query"]["normalized"] = normalized
        if cont:
            body["continue"] = cont
        else:
            body["batchcomplete"] = True
        entry["pages"] = len(pages)
        return web.json_response(body)

    def _info(
        self, f: FakeFile, props: set[str], width: int, origin: str, extfilter: set[str]
    ) -> dict[str, Any]:
        w0, h0 = f.size
        enc = quote(f.name.replace(" ", "_"))
        info: dict[str, Any] = {}
        if "size" in props:
            info.update(size=w0 * h0 // 3, width=w0, height=h0)
        if "url" in props:
            if width and f.thumbable:
                tw = min(width, w0)
                info.update(
                    thumburl=f"{origin}/thumb/{f.pageid}/{tw}px-{enc}",
                    thumbwidth=tw,
                    thumbheight=round(h0 * tw / w0),
                )
            elif width:
                info["thumberror"] = (
                    "Error creating thumbnail: File with dimensions greater than 12.5 MP"
                )
            info.update(
                url=f"{origin}/orig/{f.pageid}/{enc}",
                descriptionurl=f"https://commons.wikimedia.org/wiki/File:{enc}",
                descriptionshorturl=f"https://commons.wikimedia.org/w/index.php?curid={f.pageid}",
            )
        if "mime" in props:
            info["mime"] = f.mime
        if "extmetadata" in props:
            name, url, lic = f.license

            def v(value: str, source: str = "commons-desc-page") -> dict[str, str]:
                return {"value": value, "source": source, "hidden": ""}

            meta = {
                "LicenseShortName": v(name),
                "License": v(lic),
                "Artist": v(f.artist_html),
                "DateTimeOriginal": v(f.date),
                "ObjectName": v(f.name.rsplit(".", 1)[0]),
            }
            if url:
                meta["LicenseUrl"] = v(url)
            if f.credit_html:
                meta["Credit"] = v(f.credit_html)
            if extfilter:
                meta = {k: val for k, val in meta.items() if k in extfilter}
            info["extmetadata"] = meta
        return info

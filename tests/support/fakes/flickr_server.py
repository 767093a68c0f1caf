"""A loopback Flickr REST API (``/services/rest/``) with a deterministic world of photos.

What it reproduces, because each is something the real service does to a crawler:

* requests as ``flickrapi`` sends them: POST, form-encoded parameters, signed with an OAuth 1
  ``Authorization`` header (the consumer key is the API key; the HMAC-SHA1 signature is
  verified with the secret); ``api_key`` as a plain parameter is accepted too;
* ``format=json&nojsoncallback=1`` JSON bodies: ``{"photos": {"page", "pages", "perpage",
  "total", "photo": [...]}, "stat": "ok"}`` with ``total`` as a *string* and numbers that are
  sometimes strings: half the photos send every number as a string, the other half mix the
  two inside one photo (``latitude`` a number, ``accuracy`` a string, ``width_m`` a number,
  ``height_m`` a string, ...), as the real service does field by field;
* ``date_taken`` as Flickr returns it: ``datetaken`` plus ``datetakengranularity`` (0 exact;
  some photos 4 month, 6 year, 8 circa, their ``datetaken`` then padded to the first of the
  month or year, e.g. ``2011-05-01 00:00:00``) and ``datetakenunknown``;
* photos whose JSON lacks the ``license`` field (``license_field=False``);
* ``flickr.photos.search`` with ``bbox``, ``has_geo``, ``license``, ``min/max_taken_date``,
  ``extras``, ``sort``, ``per_page`` (at most 250 for geo queries), ``page``;
* a geo query without a date window returns only photos uploaded in the last 12 hours (none
  here) and is recorded in ``violations``;
* the result cap: whatever ``total`` says, only the first ``cap`` results are reachable and
  pages beyond them repeat earlier pages;
* ``stat: fail`` errors (100 invalid key, 96 bad signature, 112 unknown method, 111 bad format)
  and injected faults (``faults``: ``"http429"``, ``"http500"``, ``"http503"``, ``"code105"``,
  ``"code10"``, ``"code201"``, ``"html"``), consumed one per REST call;
* static images at ``/img/{server}/{id}_{secret}_{size}.jpg`` (small JPEGs) for ``url_*``.

Every REST call is appended to ``requests`` (method, parameters, outcome) so tests can assert
what was asked, e.g. that every search carried a date window or that a resumed crawl asked
only for missing units.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import tiny_jpeg

SIZES: list[tuple[str, int]] = [
    ("m", 500),
    ("z", 640),
    ("c", 800),
    ("l", 1024),
    ("h", 1600),
    ("k", 2048),
]


@dataclass
class FakePhoto:
    id: str
    owner: str
    ownername: str
    secret: str
    server: str
    title: str
    license: int
    lat: float
    lon: float
    accuracy: int
    taken_ts: int
    upload_ts: int
    tags: str
    orig: tuple[int, int]  # original width, height
    has_large: bool  # older uploads have no url_h / url_k
    stringy: bool  # this photo's numbers all come back as strings (else: mixed per field)
    granularity: int = 0  # Flickr datetakengranularity: 0 exact, 4 month, 6 year, 8 circa
    license_field: bool = True  # False: the JSON has no "license" key at all

    @property
    def taken(self) -> str:
        """``datetaken`` as Flickr sends it: coarse dates padded to the month's / year's start."""
        t = dt.datetime.fromtimestamp(self.taken_ts, tz=dt.UTC)
        if self.granularity == 4:
            t = t.replace(day=1, hour=0, minute=0, second=0)
        elif self.granularity in (6, 8):
            t = t.replace(month=1, day=1, hour=0, minute=0, second=0)
        return t.strftime("%Y-%m-%d %H:%M:%S")


def _ts(day: str) -> int:
    d = dt.date.fromisoformat(day)
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def make_world(
    *,
    seed: int = 7,
    n: int = 6000,
    bbox: tuple[float, float, float, float] = (70.0, 30.0, 74.0, 34.0),
    start: str = "2010-01-01",
    end: str = "2013-12-31",
    hotspot: tuple[float, float] = (72.31, 31.77),
    hotspot_n: int = 4500,
    hotspot_year: int = 2011,
    edge_n: int = 24,
    excluded_n: int = 400,
    licenses: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16),
) -> list[FakePhoto]:
    """``n`` openly licensed geotagged photos (plus ``excluded_n`` all-rights-reserved or
    Commons ones that a default crawl must not return), deterministic from ``seed``.

    ``hotspot_n`` of them sit within ~100 m of ``hotspot`` and were taken in one year, so no
    spatial split alone gets them under a 4,000 cap: the crawl must also split the window.
    ``edge_n`` sit exactly on the 2-degree tile edges (they match two or four tiles).
    """
    rng = random.Random(seed)
    t0, t1 = _ts(start), _ts(end) + 86399
    h0, h1 = _ts(f"{hotspot_year}-01-01"), _ts(f"{hotspot_year}-12-31") + 86399
    lon0, lat0, lon1, lat1 = bbox
    photos: list[FakePhoto] = []
    for i in range(n + excluded_n):
        if i < hotspot_n:
            lon = hotspot[0] + rng.uniform(-0.0008, 0.0008)
            lat = hotspot[1] + rng.uniform(-0.0008, 0.0008)
            taken = rng.randint(h0, h1)
        elif i < hotspot_n + edge_n:
            # exactly on the inner tile edges of a 2-degree grid
            k = i - hotspot_n
            lon = lon0 + 2.0 if k % 3 != 1 else rng.uniform(lon0, lon1)
            lat = lat0 + 2.0 if k % 3 != 0 else rng.uniform(lat0, lat1)
            taken = rng.randint(t0, t1)
        else:
            lon = rng.uniform(lon0, lon1)
            lat = rng.uniform(lat0, lat1)
            taken = rng.randint(t0, t1)
        lic = rng.choice(licenses) if i < n else rng.choice((0, 7, 8))
        owner_n = rng.randint(1, 400)
        w, h = rng.choice([(4000, 3000), (3000, 4000), (6000, 4000), (2048, 1536), (1600, 1200)])
        photos.append(
            FakePhoto(
                id=str(50_000_000_000 + i * 7 + rng.randint(0, 6)),
                owner=f"{100000 + owner_n}@N0{owner_n % 8}",
                ownername=f"user {owner_n}",
                secret=f"{rng.getrandbits(40):010x}",
                server=str(65535 - rng.randint(0, 2000)),
                title=f"View {i}" if i % 5 else "",
                license=lic,
                lat=round(lat, 6),
                lon=round(lon, 6),
                accuracy=rng.choice((16, 16, 15, 14, 11, 6)),
                taken_ts=taken,
                upload_ts=taken + rng.randint(60, 86400 * 30),
                tags=" ".join(
                    rng.sample(
                        [
                            "pakistan",
                            "mountains",
                            "karakoram",
                            "city",
                            "street",
                            "mosque",
                            "river",
                            "food",
                        ],
                        rng.randint(0, 3),
                    )
                ),
                orig=(w, h),
                has_large=bool(i % 4),
                stringy=bool(i % 2),
                granularity=(4, 6, 8)[i % 3] if i % 17 == 5 else 0,
            )
        )
    return photos


def _parse_date(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return int(dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC).timestamp())
        except ValueError:
            continue
    return None


@dataclass
class FlickrFake:
    """The fake service: its world, credentials, fault queue and request log."""

    photos: list[FakePhoto] = field(default_factory=make_world)
    keys: dict[str, str] = field(
        default_factory=lambda: {"fake-flickr-key-0123456789abcdef": "fake-secret-fedcba9876"}
    )
    cap: int = 4000
    total_as_string: bool = True
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    image_hits: int = 0
    fail_after: int | None = (
        None  # after this many successful calls, answer every call with HTTP 503
    )
    clock: Callable[[], float] | None = (
        None  # stamps each logged request (tests inject a fake clock)
    )

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id = {p.id: p for p in self.photos}

    # ------------------------------------------------------------------ helpers for tests
    def expected_ids(
        self,
        *,
        licenses: set[int] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
    ) -> set[str]:
        lic = (
            licenses if licenses is not None else {1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16}
        )
        out = set()
        for p in self.photos:
            if p.license not in lic:
                continue
            if bbox and not (bbox[0] <= p.lon <= bbox[2] and bbox[1] <= p.lat <= bbox[3]):
                continue
            out.add(p.id)
        return out

    def searches(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "flickr.photos.search"]

    # ------------------------------------------------------------------ the app
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/services/rest/", self._rest)
        app.router.add_route("*", "/services/rest", self._rest)
        app.router.add_get("/img/{server}/{name}", self._image)
        return app

    async def _image(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        pid = name.split("_", 1)[0]
        photo = self._by_id.get(pid)
        if photo is None or not name.startswith(f"{pid}_{photo.secret}_"):
            return web.Response(status=404, text="Not Found")
        with self._lock:
            self.image_hits += 1
        return web.Response(body=tiny_jpeg(int(pid)), content_type="image/jpeg")

    async def _rest(self, request: web.Request) -> web.Response:
        form = await request.post() if request.method == "POST" else {}
        params: dict[str, str] = dict(request.query)
        params.update({k: str(v) for k, v in form.items()})
        method = params.get("method", "")
        entry: dict[str, Any] = {
            "method": method,
            "params": params,
            "outcome": "ok",
            "t": self.clock() if self.clock else None,
        }
        with self._lock:
            ok_so_far = sum(1 for r in self.requests if r["outcome"] == "ok")
            self.requests.append(entry)
            fault = self.faults.pop(0) if self.faults else None
            if fault is None and self.fail_after is not None and ok_so_far >= self.fail_after:
                fault = "http503"
        # authentication first (as Flickr does)
        auth_error = self._check_auth(request, params, list(form.items()))
        if auth_error:
            entry["outcome"] = f"code{auth_error[0]}"
            return self._fail(*auth_error)
        if fault:
            entry["outcome"] = fault
            if fault.startswith("http"):
                status = int(fault[4:])
                headers = {"Retry-After": "1"} if status == 429 else {}
                return web.Response(
                    status=status,
                    text=f"<html><body>{status}</body></html>",
                    content_type="text/html",
                    headers=headers,
                )
            if fault.startswith("code"):
                code = int(fault[4:])
                msg = {
                    10: "Sorry, the Flickr search API is not currently available.",
                    105: "Service currently unavailable",
                    201: "Sorry, the Flickr API service is not currently available.",
                }.get(code, "Error")
                return self._fail(code, msg)
            if fault == "html":
                return web.Response(
                    text="<!DOCTYPE html><html><body>Flickr is having a massage</body></html>",
                    content_type="text/html",
                )
        if params.get("format") != "json":
            entry["outcome"] = "code111"
            return web.Response(
                text=(
                    '<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="fail">\n\t<err '
                    f'code="111" msg="Format &quot;{params.get("format", "rest")}&quot; not '
                    'found" />\n</rsp>\n'
                ),
                content_type="text/xml",
            )
        if method == "flickr.photos.search":
            return self._json(self._search(params, entry, request))
        if method == "flickr.test.echo":
            return self._json({**params, "stat": "ok"})
        entry["outcome"] = "code112"
        return self._fail(112, f'Method "{method}" not found')

    def _check_auth(
        self, request: web.Request, params: dict[str, str], body: list[tuple[str, Any]]
    ) -> tuple[int, str] | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("OAuth "):
            from oauthlib.oauth1.rfc5849 import signature, utils

            oauth = {k: utils.unescape(v) for k, v in utils.parse_authorization_header(header)}
            key = oauth.get("oauth_consumer_key", "")
            if key not in self.keys:
                return 100, "Invalid API Key (Key not found)"
            collected = signature.collect_parameters(
                uri_query=request.query_string,
                body=[(k, str(v)) for k, v in body],
                headers={"Authorization": header},
                exclude_oauth_signature=True,
            )
            base = signature.signature_base_string(
                request.method,
                signature.base_string_uri(str(request.url)),
                signature.normalize_parameters(collected),
            )
            from oauthlib.oauth1 import Client

            expected = signature.sign_hmac_sha1_with_client(
                base, Client(key, client_secret=self.keys[key])
            )
            if not signature.safe_string_equals(expected, oauth.get("oauth_signature", "")):
                return 96, "Invalid signature"
            return None
        key = params.get("api_key", "")
        if not key:
            return 100, "Invalid API Key (Key has invalid format)"
        if key not in self.keys:
            return 100, "Invalid API Key (Key not found)"
        return None

    @staticmethod
    def _json(obj: Any) -> web.Response:
        return web.Response(text=json.dumps(obj), content_type="application/json")

    def _fail(self, code: int, message: str) -> web.Response:
        return self._json({"stat": "fail", "code": code, "message": message})

    def _search(
        self, params: dict[str, str], entry: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        bbox = [float(v) for v in params["bbox"].split(",")] if params.get("bbox") else None
        geo = bool(bbox) or params.get("has_geo") in ("1", "true")
        lo = _parse_date(params.get("min_taken_date", ""))
        hi = _parse_date(params.get("max_taken_date", ""))
        has_window = any(
            params.get(k)
            for k in ("min_taken_date", "max_taken_date", "min_upload_date", "max_upload_date")
        )
        entry["date_window"] = has_window
        licenses = {int(x) for x in params["license"].split(",")} if params.get("license") else None
        matched: list[FakePhoto] = []
        if geo and not has_window:
            # Flickr: geo queries without a limiting agent return only the last 12 hours' uploads.
            with self._lock:
                self.violations.append(
                    {"reason": "geo query without a date window", "params": params}
                )
        else:
            for p in self.photos:
                if bbox and not (bbox[0] <= p.lon <= bbox[2] and bbox[1] <= p.lat <= bbox[3]):
                    continue
                if licenses is not None and p.license not in licenses:
                    continue
                if lo is not None and p.taken_ts < lo:
                    continue
                if hi is not None and p.taken_ts > hi:
                    continue
                matched.append(p)
        sort = params.get("sort", "date-posted-desc")
        keyf = (
            (lambda p: (p.taken_ts, p.id))
            if sort.startswith("date-taken")
            else (lambda p: (p.upload_ts, p.id))
        )
        matched.sort(key=keyf, reverse=sort.endswith("desc"))
        per_page = int(params.get("per_page") or 100)
        per_page = max(1, min(per_page, 250 if geo else 500))
        page = max(1, int(params.get("page") or 1))
        total = len(matched)
        reachable = matched[: self.cap]
        offset = (page - 1) * per_page
        if offset >= len(reachable) and total > self.cap:
            cycle = max(per_page, (self.cap // per_page) * per_page)
            offset %= cycle  # beyond the cap Flickr serves earlier results again
        items = reachable[offset : offset + per_page]
        entry["total"] = total
        entry["returned"] = [p.id for p in items]
        extras = {e.strip() for e in params.get("extras", "").split(",") if e.strip()}
        origin = f"{request.scheme}://{request.host}"
        return {
            "photos": {
                "page": page,
                "pages": math.ceil(total / per_page),
                "perpage": per_page,
                "total": str(total) if self.total_as_string else total,
                "photo": [self._photo_json(p, extras, origin) for p in items],
            },
            "stat": "ok",
        }

    def _photo_json(self, p: FakePhoto, extras: set[str], origin: str) -> dict[str, Any]:
        def num(v: float | int, name: str = "") -> Any:
            if p.stringy:
                return str(v)
            # mixed inside one photo: each field's type fixed by (photo, field)
            return str(v) if (sum(map(ord, name)) + int(p.id)) % 2 else v

        out: dict[str, Any] = {
            "id": p.id,
            "owner": p.owner,
            "secret": p.secret,
            "server": p.server,
            "farm": 66,
            "title": p.title,
            "ispublic": 1,
            "isfriend": 0,
            "isfamily": 0,
        }
        if "license" in extras and p.license_field:
            out["license"] = num(p.license, "license")
        if "date_upload" in extras:
            out["dateupload"] = str(p.upload_ts)
        if "date_taken" in extras:
            out.update(
                datetaken=p.taken,
                datetakengranularity=num(p.granularity, "granularity"),
                datetakenunknown="0",
            )
        if "owner_name" in extras:
            out["ownername"] = p.ownername
        if "tags" in extras:
            out["tags"] = p.tags
        if "geo" in extras:
            out.update(
                latitude=num(p.lat, "latitude"),
                longitude=num(p.lon, "longitude"),
                accuracy=num(p.accuracy, "accuracy"),
                context=0,
                place_id="",
                woeid="",
                geo_is_public=1,
                geo_is_contact=0,
                geo_is_friend=0,
                geo_is_family=0,
            )
        if "media" in extras:
            out.update(media="photo", media_status="ready")
        w0, h0 = p.orig
        for suffix, side in SIZES:
            if f"url_{suffix}" not in extras:
                continue
            if (suffix in ("h", "k") and not p.has_large) or side > max(w0, h0):
                continue  # Flickr offers no size larger than the original
            scale = min(1.0, side / max(w0, h0))
            w, h = round(w0 * scale), round(h0 * scale)
            out[f"url_{suffix}"] = f"{origin}/img/{p.server}/{p.id}_{p.secret}_{suffix}.jpg"
            out[f"height_{suffix}"] = num(h, f"height_{suffix}")
            out[f"width_{suffix}"] = num(w, f"width_{suffix}")
        if "url_o" in extras and p.has_large:
            out["url_o"] = f"{origin}/img/{p.server}/{p.id}_{p.secret}_o.jpg"
            out["height_o"] = num(h0)
            out["width_o"] = num(w0)
        return out

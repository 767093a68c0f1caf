"""A loopback Google Places service: Places API (New) and the legacy Places web service.

Both APIs serve one deterministic world of places (ids, names, types, locations, photos).

Places API (New), as documented:

* ``POST /v1/places:searchNearby`` with ``X-Goog-Api-Key`` (or ``?key=``) and a required
  ``X-Goog-FieldMask`` (400 ``INVALID_ARGUMENT`` "FieldMask is a required parameter" without
  it); body ``includedTypes``, ``maxResultCount`` (1..20), ``locationRestriction.circle``
  (``center.latitude/longitude``, ``radius`` 0..50000); answers ``{"places": [...]}`` with only
  the masked fields, or ``{}`` when nothing matches; no pagination;
* ``GET /v1/places/{id}/photos/{ref}/media?maxWidthPx=N`` (or ``maxHeightPx``): a 302 to the
  image (``skipHttpRedirect=true``: JSON ``{"name", "photoUri"}``);
* errors as ``google.rpc.Status``: ``{"error": {"code", "message", "status"}}`` - 403
  ``PERMISSION_DENIED`` (no key), 400 ``INVALID_ARGUMENT`` (bad key, bad body), 429
  ``RESOURCE_EXHAUSTED``, 503 ``UNAVAILABLE`` (injected with ``new_faults``).

Legacy Places web service, as the ``googlemaps`` client calls it:

* ``GET /maps/api/place/nearbysearch/json?location=LAT,LNG&radius=R&type=T&key=K`` ->
  ``{"html_attributions": [], "results": [...], "status": "OK", "next_page_token": ...}``:
  20 per page, at most 3 pages; a ``pagetoken`` is ``INVALID_REQUEST`` until
  ``token_delay_s`` after it was issued (counted in ``early_tokens``); statuses ``OK``,
  ``ZERO_RESULTS``, ``REQUEST_DENIED`` (bad key), ``INVALID_REQUEST``, ``OVER_QUERY_LIMIT``
  (injected with ``legacy_faults``);
* ``GET /maps/api/place/photo?maxwidth=N&photo_reference=R&key=K``: a 302 to the image;
* a ``type`` that only Places API (New) has (``historical_landmark``, ``monument``, ...) is
  ``INVALID_REQUEST`` "Invalid request. Invalid 'type' parameter.";
* response-level ``html_attributions`` (``listing_attributions``, e.g. ``Listings by <a
  href=...>...</a>``), which the Places terms require to be shown, next to the per-photo
  ones; a photo's attribution may be plain text or empty (``author_styles``: photo ref ->
  ``"plain"`` / ``"empty"``), in both APIs.

Images are small JPEGs at ``/gphoto/{ref}``, served like Google serves them from another host
than the API (``image_host``, e.g. ``"localhost"`` when the API is addressed as 127.0.0.1): the
media redirects then cross hosts, so a client that forwards the API key is caught (image
requests are logged as ``image`` with their headers and query). Every API request is logged
in ``requests``.
"""

from __future__ import annotations

import json
import math
import random
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import tiny_jpeg

TYPES = ["tourist_attraction", "park", "historical_landmark", "mosque", "museum", "restaurant"]
# Types of Places API (New) that the legacy web service answers with INVALID_REQUEST.
NEW_ONLY_TYPES = frozenset(
    {"historical_landmark", "monument", "cultural_landmark", "historical_place", "national_park"}
)
_ID_CHARS = string.ascii_letters + string.digits + "-_"


@dataclass
class FakePlacePhoto:
    ref: str
    width: int
    height: int
    author: str
    author_id: int


@dataclass
class FakePlace:
    id: str
    name: str
    lat: float
    lon: float
    types: list[str]
    popularity: float
    photos: list[FakePlacePhoto]


def _haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(min(1.0, a)))


def make_places(
    *,
    seed: int = 11,
    centers: list[tuple[float, float]] | None = None,
    per_center: int = 40,
    spread_km: float = 6.0,
) -> list[FakePlace]:
    """``per_center`` places scattered within ``spread_km`` of each center, 0-10 photos each."""
    rng = random.Random(seed)
    centers = centers or [(33.6844, 73.0479), (31.5204, 74.3587)]
    out: list[FakePlace] = []
    for ci, (clat, clon) in enumerate(centers):
        for i in range(per_center):
            r_km = spread_km * math.sqrt(rng.random())
            ang = rng.uniform(0, 2 * math.pi)
            lat = clat + r_km * math.cos(ang) / 111.32
            lon = clon + r_km * math.sin(ang) / (111.32 * math.cos(math.radians(clat)))
            pid = "ChIJ" + "".join(rng.choice(_ID_CHARS) for _ in range(23))
            n_photos = rng.choice([0, 1, 2, 3, 5, 10, 10])
            photos = [
                FakePlacePhoto(
                    ref="AXCi2Q" + "".join(rng.choice(_ID_CHARS) for _ in range(60)),
                    width=rng.choice([4032, 3024, 1920, 800]),
                    height=rng.choice([3024, 4032, 1080, 600]),
                    author=rng.choice(
                        ["Ayesha K", "Bilal", "Chen Wei", "Dana O'Neil", "Emre <Guide>"]
                    ),
                    author_id=rng.randint(10**20, 10**21),
                )
                for _ in range(n_photos)
            ]
            types = sorted(
                set(rng.sample(TYPES, rng.randint(1, 3)) + ["point_of_interest", "establishment"])
            )
            out.append(
                FakePlace(
                    id=pid,
                    name=f"Place {ci}-{i}",
                    lat=round(lat, 7),
                    lon=round(lon, 7),
                    types=types,
                    popularity=rng.random(),
                    photos=photos,
                )
            )
    return out


@dataclass
class PlacesFake:
    places: list[FakePlace] = field(default_factory=make_places)
    keys: set[str] = field(default_factory=lambda: {"AIzaFAKE-places-key-0123456789"})
    token_delay_s: float = 0.2
    new_faults: list[int] = field(
        default_factory=list
    )  # HTTP statuses to answer searchNearby with, in order
    legacy_faults: list[str] = field(
        default_factory=list
    )  # statuses to answer nearbysearch with, in order
    requests: list[dict[str, Any]] = field(default_factory=list)
    early_tokens: int = 0
    listing_attributions: list[str] = field(default_factory=list)  # response-level (legacy)
    author_styles: dict[str, str] = field(default_factory=dict)  # photo ref -> plain / empty
    image_host: str | None = None  # serve images as if from another host (redirects cross)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[list[FakePlace], int, float]] = {}
        self._photo: dict[str, tuple[FakePlace, FakePlacePhoto]] = {
            ph.ref: (p, ph) for p in self.places for ph in p.photos
        }
        self._rng = random.Random(5)

    # ------------------------------------------------------------------ test helpers
    def matching(
        self, lat: float, lon: float, radius_m: float, types: list[str]
    ) -> list[FakePlace]:
        found = [
            p
            for p in self.places
            if _haversine_m(lat, lon, p.lat, p.lon) <= radius_m
            and (not types or set(types) & set(p.types))
        ]
        return sorted(found, key=lambda p: (-p.popularity, p.id))

    def log(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["kind"] == kind]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/places:searchNearby", self._search_nearby)
        app.router.add_get("/v1/places/{pid}/photos/{ref}/media", self._media)
        app.router.add_get("/maps/api/place/nearbysearch/json", self._legacy_nearby)
        app.router.add_get("/maps/api/place/photo", self._legacy_photo)
        app.router.add_get("/gphoto/{ref}", self._image)
        return app

    def _record(self, kind: str, **info: Any) -> dict[str, Any]:
        entry = {"kind": kind, **info}
        with self._lock:
            self.requests.append(entry)
        return entry

    # ------------------------------------------------------------------ New
    @staticmethod
    def _rpc(code: int, status: str, message: str) -> web.Response:
        return web.Response(
            status=code,
            text=json.dumps({"error": {"code": code, "message": message, "status": status}}),
            content_type="application/json",
        )

    def _new_key(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("X-Goog-Api-Key") or request.query.get("key", "")
        if not key:
            return self._rpc(403, "PERMISSION_DENIED", "The request is missing a valid API key.")
        if key not in self.keys:
            return self._rpc(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            )
        return None

    async def _search_nearby(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        entry = self._record(
            "searchNearby", headers=dict(request.headers), body=body, query=dict(request.query)
        )
        err = self._new_key(request)
        if err is not None:
            entry["outcome"] = err.status
            return err
        with self._lock:
            fault = self.new_faults.pop(0) if self.new_faults else None
        if fault:
            entry["outcome"] = fault
            status = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(
                fault, "UNKNOWN"
            )
            msg = (
                "Resource has been exhausted (e.g. check quota)."
                if fault == 429
                else "The service is currently unavailable."
            )
            return self._rpc(fault, status, msg)
        mask = (
            request.headers.get("X-Goog-FieldMask")
            or request.query.get("fields")
            or request.query.get("$fields")
        )
        if not mask:
            entry["outcome"] = 400
            return self._rpc(
                400,
                "INVALID_ARGUMENT",
                "FieldMask is a required parameter. See "
                "https://cloud.google.com/apis/docs/system-parameters on how to provide it. As "
                "an example, you can set the header 'X-Goog-FieldMask' to value "
                "'places.displayName', 'places.id' to ask for the display name and the place id "
                "of a place. You can also set the value to '*' in manual testing to get all the "
                "available response fields.",
            )
        if not isinstance(body, dict):
            entry["outcome"] = 400
            return self._rpc(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        circle = (body.get("locationRestriction") or {}).get("circle") or {}
        center = circle.get("center") or {}
        radius = circle.get("radius")
        max_count = body.get("maxResultCount", 20)
        if "latitude" not in center or "longitude" not in center or radius is None:
            entry["outcome"] = 400
            return self._rpc(400, "INVALID_ARGUMENT", "location_restriction is required.")
        if not (0 < float(radius) <= 50000):
            entry["outcome"] = 400
            return self._rpc(
                400,
                "INVALID_ARGUMENT",
                "Invalid radius. Must be between 0.0 and 50000.0, inclusive.",
            )
        if not (isinstance(max_count, int) and 1 <= max_count <= 20):
            entry["outcome"] = 400
            return self._rpc(
                400, "INVALID_ARGUMENT", "max_result_count must be between 1 and 20, inclusive."
            )
        found = self.matching(
            float(center["latitude"]),
            float(center["longitude"]),
            float(radius),
            list(body.get("includedTypes") or []),
        )[:max_count]
        entry["outcome"] = 200
        entry["returned"] = [p.id for p in found]
        if not found:
            return web.json_response({})
        fields = {f.strip() for f in mask.split(",")}
        return web.json_response({"places": [self._place_json(p, fields) for p in found]})

    def _place_json(self, p: FakePlace, fields: set[str]) -> dict[str, Any]:
        full: dict[str, Any] = {
            "name": f"places/{p.id}",
            "id": p.id,
            "types": p.types,
            "displayName": {"text": p.name, "languageCode": "en"},
            "location": {"latitude": p.lat, "longitude": p.lon},
            "photos": [
                {
                    "name": f"places/{p.id}/photos/{ph.ref}",
                    "widthPx": ph.width,
                    "heightPx": ph.height,
                    "authorAttributions": self._new_authors(ph),
                    "flagContentUri": f"https://www.google.com/local/imagery/report/?cb_client=maps_api_places&image_key=!1e10!2s{ph.ref}",
                    "googleMapsUri": f"https://www.google.com/maps/place//data=!3m4!1e2!3m2!1s{ph.ref}!2e10",
                }
                for ph in p.photos
            ],
        }
        if "*" in fields:
            out = full
        else:
            out = {k: v for k, v in full.items() if f"places.{k}" in fields}
        if not out.get("photos"):
            out.pop("photos", None)  # proto3 JSON leaves empty lists out
        return out

    def _new_authors(self, ph: FakePlacePhoto) -> list[dict[str, str]]:
        style = self.author_styles.get(ph.ref, "")
        if style == "empty":
            return []
        if style == "plain":
            return [{"displayName": ph.author}]
        return [
            {
                "displayName": ph.author,
                "uri": f"//maps.google.com/maps/contrib/{ph.author_id}",
                "photoUri": f"//lh3.googleusercontent.com/a-/{ph.author_id}=s100-p-k-no-mo",
            }
        ]

    def _image_base(self, request: web.Request) -> str:
        host = request.host
        if self.image_host:
            port = host.rsplit(":", 1)[1] if ":" in host else ""
            host = f"{self.image_host}:{port}" if port else self.image_host
        return f"{request.scheme}://{host}"

    async def _media(self, request: web.Request) -> web.Response:
        pid, ref = request.match_info["pid"], request.match_info["ref"]
        entry = self._record(
            "media", pid=pid, ref=ref, query=dict(request.query), headers=dict(request.headers)
        )
        err = self._new_key(request)
        if err is not None:
            entry["outcome"] = err.status
            return err
        hit = self._photo.get(ref)
        if hit is None or hit[0].id != pid:
            entry["outcome"] = 404
            return self._rpc(
                404,
                "NOT_FOUND",
                f"The photo resource in the request is invalid: places/{pid}/photos/{ref}",
            )
        w = request.query.get("maxWidthPx") or request.query.get("maxHeightPx")
        if not w or not w.isdigit() or not (1 <= int(w) <= 4800):
            entry["outcome"] = 400
            return self._rpc(
                400,
                "INVALID_ARGUMENT",
                "You must specify either max_height_px or max_width_px, with values between 1 and 4800.",
            )
        photo_uri = f"{self._image_base(request)}/gphoto/{ref}=w{w}"
        entry["outcome"] = 302
        if request.query.get("skipHttpRedirect") == "true":
            return web.json_response(
                {"name": f"places/{pid}/photos/{ref}/media", "photoUri": photo_uri}
            )
        raise web.HTTPFound(photo_uri)

    # ------------------------------------------------------------------ legacy
    @staticmethod
    def _legacy(
        status: str,
        results: list[dict[str, Any]] | None = None,
        message: str | None = None,
        token: str | None = None,
    ) -> web.Response:
        body: dict[str, Any] = {"html_attributions": [], "results": results or [], "status": status}
        if message:
            body["error_message"] = message
        if token:
            body["next_page_token"] = token
        return web.json_response(body)

    async def _legacy_nearby(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        entry = self._record("nearbysearch", query=q, url=str(request.rel_url))
        key = q.get("key", "")
        if not key:
            entry["outcome"] = "REQUEST_DENIED"
            return self._legacy(
                "REQUEST_DENIED",
                message=(
                    "You must use an API key to authenticate each request to Google Maps "
                    "Platform APIs. For additional information, please refer to "
                    "http://g.co/dev/maps-no-account"
                ),
            )
        if key not in self.keys:
            entry["outcome"] = "REQUEST_DENIED"
            return self._legacy("REQUEST_DENIED", message="The provided API key is invalid.")
        with self._lock:
            fault = self.legacy_faults.pop(0) if self.legacy_faults else None
        if fault:
            entry["outcome"] = fault
            return self._legacy(
                fault,
                message="You have exceeded your rate-limit for this API."
                if fault == "OVER_QUERY_LIMIT"
                else None,
            )
        token = q.get("pagetoken")
        if token:
            with self._lock:
                state = self._tokens.get(token)
                if state is None or time.monotonic() < state[2]:
                    self.early_tokens += state is not None
                    entry["outcome"] = "INVALID_REQUEST"
                    return self._legacy("INVALID_REQUEST")
            found, offset, _ = state
        else:
            if "location" not in q:
                entry["outcome"] = "INVALID_REQUEST"
                return self._legacy("INVALID_REQUEST", message="Missing the location parameter.")
            try:
                lat, lng = (float(v) for v in q["location"].split(","))
                radius = float(q.get("radius", "0"))
            except ValueError:
                entry["outcome"] = "INVALID_REQUEST"
                return self._legacy(
                    "INVALID_REQUEST", message="Invalid request. Invalid 'location' parameter."
                )
            if not (0 < radius <= 50000):
                entry["outcome"] = "INVALID_REQUEST"
                return self._legacy(
                    "INVALID_REQUEST", message="Invalid request. Invalid 'radius' parameter."
                )
            types = [q["type"]] if q.get("type") else []
            if set(types) & NEW_ONLY_TYPES:
                entry["outcome"] = "INVALID_REQUEST"
                return self._legacy(
                    "INVALID_REQUEST", message="Invalid request. Invalid 'type' parameter."
                )
            found = self.matching(lat, lng, radius, types)[:60]
            offset = 0
        page = found[offset : offset + 20]
        if not page:
            entry["outcome"] = "ZERO_RESULTS"
            return self._legacy("ZERO_RESULTS")
        next_token = None
        if offset + 20 < len(found):
            with self._lock:
                next_token = "".join(self._rng.choice(_ID_CHARS) for _ in range(180))
                self._tokens[next_token] = (
                    found,
                    offset + 20,
                    time.monotonic() + self.token_delay_s,
                )
        entry["outcome"] = "OK"
        entry["returned"] = [p.id for p in page]
        resp = self._legacy("OK", [self._legacy_place(p) for p in page], token=next_token)
        if self.listing_attributions:
            body = json.loads(resp.text or "{}")
            body["html_attributions"] = list(self.listing_attributions)
            resp = web.json_response(body)
        return resp

    def _legacy_place(self, p: FakePlace) -> dict[str, Any]:
        out: dict[str, Any] = {
            "business_status": "OPERATIONAL",
            "geometry": {
                "location": {"lat": p.lat, "lng": p.lon},
                "viewport": {
                    "northeast": {"lat": p.lat + 0.001, "lng": p.lon + 0.001},
                    "southwest": {"lat": p.lat - 0.001, "lng": p.lon - 0.001},
                },
            },
            "icon": "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/generic_business-71.png",
            "name": p.name,
            "place_id": p.id,
            "reference": p.id,
            "scope": "GOOGLE",
            "types": p.types,
            "vicinity": "Somewhere",
        }
        if p.photos:  # Nearby Search lists at most one photo per place
            ph = p.photos[0]
            style = self.author_styles.get(ph.ref, "")
            attributions = (
                []
                if style == "empty"
                else [_html_escape(ph.author)]
                if style == "plain"
                else [
                    f'<a href="https://maps.google.com/maps/contrib/{ph.author_id}">{_html_escape(ph.author)}</a>'
                ]
            )
            out["photos"] = [
                {
                    "height": ph.height,
                    "width": ph.width,
                    "html_attributions": attributions,
                    "photo_reference": ph.ref,
                }
            ]
        return out

    async def _legacy_photo(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        entry = self._record("photo", query=q)
        if q.get("key") not in self.keys:
            entry["outcome"] = 403
            return web.Response(status=403, text="The provided API key is invalid.")
        ref = q.get("photo_reference") or q.get("photoreference") or ""
        w = q.get("maxwidth") or q.get("maxheight")
        if not w or ref not in self._photo:
            entry["outcome"] = 400
            return web.Response(status=400, text="Bad Request")
        entry["outcome"] = 302
        raise web.HTTPFound(f"{self._image_base(request)}/gphoto/{ref}=w{w}")

    async def _image(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"].split("=", 1)[0]
        self._record(
            "image",
            ref=ref,
            host=request.host,
            query=dict(request.query),
            headers=dict(request.headers),
        )
        if ref not in self._photo:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=tiny_jpeg(sum(map(ord, ref))), content_type="image/jpeg")


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)

"""Google Places discovery: a grid of Nearby Search queries around anchor points.

Two APIs, one record shape:

* **Places API (New)** (default, ``crawl.places.api = "new"``): ``POST {endpoint}/v1/places:searchNearby``
  with ``X-Goog-Api-Key`` and ``X-Goog-FieldMask`` headers and a body with ``includedTypes``,
  ``maxResultCount`` (<= 20) and ``locationRestriction.circle``. Each place lists up to ten
  ``photos[]`` with a resource ``name`` (``places/P/photos/R``), ``widthPx``/``heightPx`` and
  ``authorAttributions``. The bytes come from ``GET {endpoint}/v1/{name}/media?maxWidthPx=N``
  (a redirect to the image). Errors arrive as ``google.rpc.Status`` JSON.
* **Legacy Places** (``api = "legacy"``, for keys that still have it) through the
  ``googlemaps`` client: ``places_nearby`` pages of 20 with a ``next_page_token`` that only
  becomes valid a short while after it is issued (``INVALID_REQUEST`` until then: wait and
  ask again), one ``photo_reference`` per place and ``html_attributions``. The bytes come from
  ``/maps/api/place/photo``, fetched by the project's downloader (the client's own
  ``places_photo`` streams one byte per chunk).

Why ``restricted``: the Google Maps Platform Terms do not allow keeping photo bytes in a
permanent dataset, so every record is marked ``restricted=True`` with the licence
"Google Maps Platform Terms (restricted)"; the shard and publish stages leave restricted
content out unless explicitly told otherwise.

Why ``request_for``: the key must never be stored. Records hold a key-free URL; the key is
added at fetch time, as the ``X-Goog-Api-Key`` header (New) or the ``key`` query parameter
that the legacy photo endpoint requires.

With a coverage plan (``--plan W/coverage/plan.parquet``) the searches go to the plan's tiles
below target instead of the anchor grid, weighted by their deficits (``placesplan``).

Each grid point (legacy: grid point and place type) is one unit; places seen in an earlier
unit are skipped (overlapping circles return the same places), seeded from the parts already
written so a resumed crawl writes exactly the parts of an uninterrupted one.
"""

from __future__ import annotations

import html.parser
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore

from ..config import PipelineConfig
from ..placetypes import explain, unknown_types
from ..ratelimit import CallBudget, Retry, RetryPolicy, redact_in_logs, retry_after_seconds
from ..records import empty_record
from ..tiling import PlannedTile
from .base import Progress, Source, write_unit
from .placesplan import EMPTY_POINTS_TO_STOP, PlannedPoint, plan_points

log = logging.getLogger("geopak.places")

SOURCE = "places"
NEW_ENDPOINT = "https://places.googleapis.com"
LEGACY_ENDPOINT = "https://maps.googleapis.com"
ENV_KEY = "GOOGLE_MAPS_API_KEY"
LICENSE = "Google Maps Platform Terms (restricted)"
LICENSE_ID = "google-maps-platform-terms"
LICENSE_URL = "https://cloud.google.com/maps-platform/terms"
FIELD_MASK = "places.id,places.displayName,places.location,places.types,places.photos"
KM_PER_DEG_LAT = 111.32
_TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
_LEGACY_PAGES = 3  # Nearby Search returns at most 60 results in 3 pages
# urllib3 logs request lines (with the legacy ?key=) at DEBUG
LEGACY_LOGGERS = ("urllib3.connectionpool",)


class _AnchorText(html.parser.HTMLParser):
    """Names and links out of legacy ``html_attributions`` (``<a href="...">Name</a>``)."""

    def __init__(self) -> None:
        super().__init__()
        self.href = ""
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a" and not self.href:
            self.href = dict(attrs).get("href") or ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html_attribution(fragment: str) -> tuple[str, str]:
    """``'<a href="https://maps.google.com/maps/contrib/1">Ann</a>'`` -> ``("Ann", "https://...")``."""
    p = _AnchorText()
    p.feed(fragment or "")
    p.close()
    return " ".join("".join(p.text).split()), _abs_uri(p.href)


def _abs_uri(uri: str) -> str:
    return f"https:{uri}" if uri.startswith("//") else uri


def grid_points(
    lat: float, lon: float, size: int, step_km: float
) -> list[tuple[int, int, float, float]]:
    """A ``size`` x ``size`` grid of (row, col, lat, lon) centred on (lat, lon), ``step_km`` apart."""
    out = []
    half = (size - 1) / 2.0
    cos_lat = max(0.01, math.cos(math.radians(lat)))
    for r in range(size):
        for c in range(size):
            dlat = (r - half) * step_km / KM_PER_DEG_LAT
            dlon = (c - half) * step_km / (KM_PER_DEG_LAT * cos_lat)
            out.append((r, c, round(lat + dlat, 6), round(lon + dlon, 6)))
    return out


def _attribution(
    authors: list[tuple[str, str]], listing: list[tuple[str, str]] = ()
) -> tuple[str, str]:
    """(owner, attribution line) from photo-level authors and response-level attributions.

    Only a *linked* author (``<a href="https://maps.google.com/maps/contrib/...">Name</a>``
    or a New-API ``authorAttributions`` entry with a ``uri``) is an owner: a plain-text
    attribution can be anything (a business name, "A Google User") and an empty one is no
    one, so the owner stays empty then. Every non-empty attribution, both levels, is kept in
    the attribution line, which the Places terms require to be shown with the photo.
    """
    owner = next((n for n, u in authors if n and u), "")
    credits = ", ".join(f"{n} ({u})" if u else n for n, u in authors if n) or "unknown"
    line = f"Photo by {credits} via Google Maps"
    extra = "; ".join(f"{n} ({u})" if u else n for n, u in listing if n)
    return owner, line + (f"; {extra}" if extra else "")


def place_photo_record(
    *,
    place_id: str,
    index: int,
    url: str,
    lat: float,
    lon: float,
    title: str,
    types: list[str],
    authors: list[tuple[str, str]],
    listing: list[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The common discovery record for photo ``index`` of a place (both APIs); ``listing``:
    the response-level ``html_attributions`` (legacy) parsed to (text, link)."""
    owner, attribution = _attribution(authors, listing)
    return empty_record(
        source=SOURCE,
        source_id=f"{place_id}-{index}",
        url=url,
        lat=float(lat),
        lon=float(lon),
        accuracy=None,  # the place's location, not the camera's
        license=LICENSE,
        license_id=LICENSE_ID,
        license_url=LICENSE_URL,
        owner=owner,
        title=title,
        tags=" ".join(types),
        date_taken="",
        attribution=attribution,
        restricted=True,
    )


class PlacesSource(Source):
    """Google Places photos around ``crawl.places.anchors`` (restricted: not redistributable).

    Options (keyword): ``api`` ("new" or "legacy", overrides the config), ``clock`` and
    ``sleep`` (injectable time for the budget, back-off and page-token waits), ``rng``.
    """

    name = SOURCE

    def __init__(self, config: PipelineConfig, endpoint: str | None = None, **opts: Any):
        super().__init__(config, endpoint, **opts)
        self.cfg = config.crawl.places
        self.api = opts.get("api") or self.cfg.api
        if self.api not in ("new", "legacy"):
            raise GeopakError(f"places: unknown api {self.api!r} (new or legacy)")
        self.types = list(self.cfg.included_types if self.api == "new" else self.cfg.legacy_types)
        key = "included_types" if self.api == "new" else "legacy_types"
        for t in unknown_types(self.types, self.api):  # settings changed after loading
            raise GeopakError(f"config key 'crawl.places.{key}' = {t!r}: {explain(t, self.api)}")
        default = NEW_ENDPOINT if self.api == "new" else LEGACY_ENDPOINT
        self.base = (endpoint or self.cfg.endpoint or default).rstrip("/")
        for api_root in (
            "/v1",
            "/maps/api/place",
            "/maps/api",
        ):  # accept a URL that already names the API root
            if self.base.endswith(api_root):
                self.base = self.base[: -len(api_root)]
                break
        self._sleep: Callable[[float], None] = opts.get("sleep") or time.sleep
        clock: Callable[[], float] = opts.get("clock") or time.monotonic
        self.rng: random.Random = opts.get("rng") or random.Random()
        self.budget = CallBudget(self.cfg.calls_per_minute, 60.0, clock=clock, sleep=self._sleep)
        self._session: Any = None
        self._gmaps: Any = None
        self._key = ""
        self.plan_path = opts.get("plan")
        self.stats: dict[str, int] = {
            "calls": 0,
            "retries": 0,
            "places": 0,
            "photos": 0,
            "duplicates": 0,
            "early_tokens": 0,
            "tiles": 0,
            "tiles_at_budget": 0,
            "tiles_exhausted": 0,
        }

    # ------------------------------------------------------------------ public
    def extra(self) -> dict[str, Any]:
        return {"endpoint": self.base, "api": self.api}

    def describe(self) -> str:
        if self.plan_path:
            planned = self.planned_points()
            n = sum(len(points) for _, points in planned)
            return (
                f"places ({self.api} API) via {self.base}: {len(planned)} under-covered tiles "
                f"of {self.plan_path} ({n} search points at most)"
            )
        return (
            f"places ({self.api} API) via {self.base}: {len(self.units())} searches around "
            f"{len(self.cfg.anchors)} anchors"
        )

    def units(self) -> list[tuple[str, float, float, str]]:
        """(unit name, lat, lon, place type or '') for every search, in crawl order."""
        if not self.cfg.anchors:
            raise GeopakError(
                "config key 'crawl.places.anchors' is empty: add [lat, lon, name] anchor points"
            )
        out = []
        for ai, anchor in enumerate(self.cfg.anchors):
            lat, lon = float(anchor[0]), float(anchor[1])
            for r, c, plat, plon in grid_points(
                lat, lon, self.cfg.grid_size, self.cfg.grid_step_km
            ):
                unit = f"a{ai:03d}-r{r:02d}c{c:02d}"
                if self.api == "new":
                    out.append((unit, plat, plon, ""))
                else:
                    for t in self.types:
                        out.append((f"{unit}-{_safe(t)}", plat, plon, t))
        return out

    def discover(self, parts: PartStore, *, progress: Progress) -> None:
        """One Nearby Search (legacy: per type, all pages) per grid point, or per planned point
        with ``--plan``; see the module doc and ``placesplan``."""
        done = parts.done_units()
        seen = self._seen_places(parts, done)
        if self.plan_path:
            self._discover_planned(parts, done, seen, progress)
        else:
            for unit, lat, lon, ptype in self.units():
                if unit not in done:
                    self._search_unit(parts, done, seen, progress, (unit, lat, lon, ptype))
        log.info(
            "places: %d places, %d photos (%d calls, %d retries, %d duplicate places)",
            self.stats["places"],
            self.stats["photos"],
            self.stats["calls"],
            self.stats["retries"],
            self.stats["duplicates"],
        )

    def _search_unit(
        self,
        parts: PartStore,
        done: set[str],
        seen: set[str],
        progress: Progress,
        unit: tuple[str, float, float, str],
    ) -> int:
        """Run one search and commit its records as the unit's part; returns the photo count."""
        name, lat, lon, ptype = unit
        if self.api == "new":
            records = self._search_new(lat, lon, seen)
        else:
            records = self._search_legacy(lat, lon, ptype, seen)
        write_unit(parts, name, records)
        done.add(name)
        self.stats["photos"] += len(records)
        progress.update(len(records))
        progress.set_postfix_str(f"calls={self.stats['calls']}", refresh=False)
        return len(records)

    # ------------------------------------------------------------------ coverage plan
    def round_inputs(self) -> dict[str, Any]:
        from pathlib import Path

        return {"plan": Path(self.plan_path)} if self.plan_path else {}

    def planned_points(self) -> list[tuple[PlannedTile, list[PlannedPoint]]]:
        """The plan's tiles below target (plan order) with the points searched in each."""
        from ..country import crawl_bbox, geonames_cities
        from ..tiling import load_plan, tile_grid

        tile_deg = self.config.coverage.tile_deg
        planned = load_plan(self.plan_path, tile_grid(crawl_bbox(self.config), tile_deg))
        cities = [(la, lo, pop) for la, lo, _, pop in geonames_cities(self.config.region.country)]
        return plan_points(
            planned,
            tile_deg=tile_deg,
            step_km=self.cfg.grid_step_km,
            cities=cities,
        )

    def _point_units(self, point: PlannedPoint) -> list[tuple[str, float, float, str]]:
        if self.api == "new":
            return [(point.unit, point.lat, point.lon, "")]
        return [(f"{point.unit}-{_safe(t)}", point.lat, point.lon, t) for t in self.types]

    def _discover_planned(
        self, parts: PartStore, done: set[str], seen: set[str], progress: Progress
    ) -> None:
        """The planned points tile by tile (plan order); see ``placesplan``."""
        for planned, points in self.planned_points():
            self.stats["tiles"] += 1
            self._search_tile(parts, done, seen, progress, planned, points)

    def _search_tile(
        self,
        parts: PartStore,
        done: set[str],
        seen: set[str],
        progress: Progress,
        planned: PlannedTile,
        points: list[PlannedPoint],
    ) -> None:
        """Points in order until the tile's deficit is found or the last points found nothing;
        finished points are read back, so a resumed crawl decides exactly the same."""
        budget, found, empty = int(planned.budget or 0), 0, 0
        for point in points:
            if empty >= EMPTY_POINTS_TO_STOP:
                self.stats["tiles_exhausted"] += 1
                return
            new = 0
            for unit in self._point_units(point):
                if found >= budget:
                    self.stats["tiles_at_budget"] += 1
                    return
                if unit[0] in done:
                    n = parts.read(unit[0]).num_rows
                else:
                    n = self._search_unit(parts, done, seen, progress, unit)
                found, new = found + n, new + n
            empty = 0 if new else empty + 1

    def request_for(self, record: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
        """Add the key at fetch time: a header for the New API, the ``key`` parameter for legacy."""
        url = str(record["url"])
        key = self._api_key()
        if "/maps/api/place/photo" in urlsplit(url).path:
            sep = "&" if urlsplit(url).query else "?"
            return f"{url}{sep}{urlencode({'key': key})}", {}
        return url, {"X-Goog-Api-Key": key}

    # ------------------------------------------------------------------ shared
    def _api_key(self) -> str:
        if not self._key:
            key = os.environ.get(ENV_KEY, "").strip()
            if not key:
                raise GeopakError(
                    f"{ENV_KEY} is not set: create a key with the Places API enabled "
                    f"(https://console.cloud.google.com/google/maps-apis) and export {ENV_KEY}"
                )
            self._key = key
        return self._key

    def _scrub(self, text: str) -> str:
        out = " ".join(str(text).split())
        if self._key:
            out = out.replace(self._key, "***").replace(quote(self._key, safe=""), "***")
        return out

    def _seen_places(self, parts: PartStore, done: set[str]) -> set[str]:
        seen: set[str] = set()
        for unit in sorted(done):
            table = parts.read(unit)
            if "source_id" in table.column_names:
                seen.update(str(v).rsplit("-", 1)[0] for v in table.column("source_id").to_pylist())
        return seen

    def _policy(self, what: str) -> RetryPolicy:
        """The shared retry policy, logging each retry of ``what`` and counting it."""

        def on_retry(n: int, of: int, why: str, delay: float) -> None:
            self.stats["retries"] += 1
            log.info("places: %s failed (%s); retry %d/%d in %.1fs", what, why, n, of, delay)

        return RetryPolicy(self.config.retry, rng=self.rng, on_retry=on_retry)

    @staticmethod
    def _give_up(label: str, what: str) -> Any:
        def give_up(last: Retry, attempts: int) -> GeopakError:
            return GeopakError(
                f"{label}: {what} still failing after {attempts} attempts ({last.reason}); run "
                "the crawl again later to resume"
            )

        return give_up

    # ------------------------------------------------------------------ Places API (New)
    def _http(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = self.config.download.user_agent
        return self._session

    def search_nearby_body(self, lat: float, lon: float) -> dict[str, Any]:
        """The ``places:searchNearby`` request body for one grid point."""
        return {
            "includedTypes": list(self.types),
            "maxResultCount": int(self.cfg.max_result_count),
            "rankPreference": "POPULARITY",
            "locationRestriction": {
                "circle": {
                    "center": {"latitude": lat, "longitude": lon},
                    "radius": float(self.cfg.radius_m),
                }
            },
        }

    def _search_new(self, lat: float, lon: float, seen: set[str]) -> list[dict[str, Any]]:
        import requests

        key = self._api_key()
        url = f"{self.base}/v1/places:searchNearby"
        headers = {
            "Content-Type": "application/json",
            "X-Goog-Api-Key": key,
            "X-Goog-FieldMask": FIELD_MASK,
        }
        body = self.search_nearby_body(lat, lon)
        what = f"searchNearby at {lat:.4f},{lon:.4f}"

        def attempt(_n: int) -> list[dict[str, Any]]:
            self.budget.acquire()
            self.stats["calls"] += 1
            try:
                resp = self._http().post(
                    url, json=body, headers=headers, timeout=self.config.retry.timeout_s
                )
            except requests.RequestException as exc:
                raise Retry(self._scrub(f"{type(exc).__name__}: {exc}")) from None
            if resp.status_code == 200:
                try:
                    data = resp.json()
                except ValueError:
                    raise Retry("response is not JSON") from None
                return self._new_records(data, seen)
            status, message = _rpc_error(resp)
            last = self._scrub(f"HTTP {resp.status_code} {status}: {message}")
            if resp.status_code not in _TRANSIENT_HTTP:
                hint = (
                    f"check {ENV_KEY} and that the Places API (New) is enabled for it"
                    if resp.status_code in (401, 403) or "API key" in message
                    else "check crawl.places and --endpoint"
                )
                raise GeopakError(f"places: {what} failed: {last}; {hint}")
            raise Retry(last, retry_after=retry_after_seconds(resp.headers.get("Retry-After")))

        return self._policy(what).run(
            attempt, give_up=self._give_up("places", what), sleep=self._sleep
        )

    def _first_sighting(self, place_id: str, seen: set[str]) -> bool:
        """True the first time a place is met (grid circles overlap); counts both outcomes."""
        if place_id in seen:
            self.stats["duplicates"] += 1
            return False
        seen.add(place_id)
        self.stats["places"] += 1
        return True

    def _new_records(self, data: Mapping[str, Any], seen: set[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for place in data.get("places") or []:  # an empty result is {}
            pid = str(place.get("id") or "")
            loc = place.get("location") or {}
            if not pid or "latitude" not in loc or "longitude" not in loc:
                continue
            if not self._first_sighting(pid, seen):
                continue
            title = (place.get("displayName") or {}).get("text", "")
            types = [str(t) for t in place.get("types") or []]
            for i, photo in enumerate((place.get("photos") or [])[: self.cfg.max_photos_per_place]):
                name = str(photo.get("name") or "")
                if not name:
                    continue
                authors = [
                    (str(a.get("displayName") or ""), _abs_uri(str(a.get("uri") or "")))
                    for a in photo.get("authorAttributions") or []
                ]
                width = min(
                    self.cfg.max_width_px, int(photo.get("widthPx") or self.cfg.max_width_px)
                )
                media = f"{self.base}/v1/{quote(name, safe='/')}/media?{urlencode({'maxWidthPx': width})}"
                out.append(
                    place_photo_record(
                        place_id=pid,
                        index=i,
                        url=media,
                        lat=loc["latitude"],
                        lon=loc["longitude"],
                        title=title,
                        types=types,
                        authors=authors,
                    )
                )
        return out

    # ------------------------------------------------------------------ legacy Places (googlemaps)
    def _legacy_client(self) -> Any:
        if self._gmaps is None:
            import googlemaps

            key = self._api_key()
            redact_in_logs(key, LEGACY_LOGGERS)
            try:
                self._gmaps = googlemaps.Client(
                    key=key,
                    base_url=self.base,
                    timeout=self.config.retry.timeout_s,
                    retry_over_query_limit=False,  # we retry with our own back-off and budget
                    # the client's own limiter sleeps in real time; our CallBudget is the limit
                    queries_per_second=10_000,
                    queries_per_minute=600_000,
                    requests_kwargs={"headers": {"User-Agent": self.config.download.user_agent}},
                )
            except ValueError as exc:
                raise GeopakError(f"{ENV_KEY} is not a usable Google Maps key ({exc})") from None
        return self._gmaps

    def _search_legacy(
        self, lat: float, lon: float, ptype: str, seen: set[str]
    ) -> list[dict[str, Any]]:
        client = self._legacy_client()
        what = f"places_nearby {ptype} at {lat:.4f},{lon:.4f}"
        out: list[dict[str, Any]] = []
        resp = self._legacy_call(
            client, what, location=(lat, lon), radius=int(self.cfg.radius_m), type=ptype
        )
        out += self._legacy_records(resp, seen)
        pages = 1
        token = resp.get("next_page_token")
        while token and pages < _LEGACY_PAGES:
            # A next_page_token is valid only a short while after it is issued.
            self._sleep(self.cfg.page_token_delay_s)
            resp = self._legacy_call(client, f"{what} page {pages + 1}", page_token=token)
            out += self._legacy_records(resp, seen)
            token = resp.get("next_page_token")
            pages += 1
        return out

    def _legacy_call(self, client: Any, what: str, **kwargs: Any) -> Mapping[str, Any]:
        from googlemaps import exceptions as gx

        paging = "page_token" in kwargs

        def attempt(_n: int) -> Mapping[str, Any]:
            self.budget.acquire()
            self.stats["calls"] += 1
            try:
                return client.places_nearby(**kwargs)
            except gx.ApiError as exc:  # includes OVER_QUERY_LIMIT (retry_over_query_limit=False)
                last = self._scrub(str(exc))
                if exc.status == "INVALID_REQUEST" and paging:
                    # a page token is valid only shortly after it is issued: wait, ask again
                    self.stats["early_tokens"] += 1
                    log.debug(
                        "places: %s: page token not valid yet; waiting %.1fs",
                        what,
                        self.cfg.page_token_delay_s,
                    )
                    raise Retry(last, wait_s=self.cfg.page_token_delay_s) from None
                if exc.status not in ("OVER_QUERY_LIMIT", "UNKNOWN_ERROR"):
                    hint = (
                        f"check {ENV_KEY} and that the legacy Places API is enabled for it"
                        if exc.status == "REQUEST_DENIED"
                        else "check crawl.places"
                    )
                    raise GeopakError(f"places (legacy): {what} failed: {last}; {hint}") from None
                raise Retry(last) from None
            except gx.HTTPError as exc:
                if exc.status_code not in _TRANSIENT_HTTP:
                    raise GeopakError(
                        f"places (legacy): {what} answered HTTP {exc.status_code} at {self.base}; check --endpoint"
                    ) from None
                raise Retry(f"HTTP {exc.status_code}") from None
            except (gx.TransportError, gx.Timeout) as exc:  # the message may hold the URL (and key)
                raise Retry(self._scrub(f"{type(exc).__name__}: {exc}")) from None

        return self._policy(what).run(
            attempt, give_up=self._give_up("places (legacy)", what), sleep=self._sleep
        )

    def _legacy_records(self, resp: Mapping[str, Any], seen: set[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        listing = [parse_html_attribution(str(h)) for h in resp.get("html_attributions") or []]
        for place in resp.get("results") or []:
            pid = str(place.get("place_id") or "")
            loc = (place.get("geometry") or {}).get("location") or {}
            if not pid or "lat" not in loc or "lng" not in loc:
                continue
            if not self._first_sighting(pid, seen):
                continue
            types = [str(t) for t in place.get("types") or []]
            for i, photo in enumerate((place.get("photos") or [])[: self.cfg.max_photos_per_place]):
                ref = str(photo.get("photo_reference") or "")
                if not ref:
                    continue
                authors = [parse_html_attribution(h) for h in photo.get("html_attributions") or []]
                width = min(self.cfg.max_width_px, int(photo.get("width") or self.cfg.max_width_px))
                url = f"{self.base}/maps/api/place/photo?{urlencode({'maxwidth': width, 'photo_reference': ref})}"
                out.append(
                    place_photo_record(
                        place_id=pid,
                        index=i,
                        url=url,
                        lat=loc["lat"],
                        lon=loc["lng"],
                        title=str(place.get("name") or ""),
                        types=types,
                        authors=authors,
                        listing=listing,
                    )
                )
        return out


def _rpc_error(resp: Any) -> tuple[str, str]:
    """(status, message) from a ``google.rpc.Status`` error body (``{"error": {...}}``)."""
    try:
        err = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", (resp.text or "")[:200]
    return str(err.get("status") or ""), str(err.get("message") or "")


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in text)


__all__ = [
    "FIELD_MASK",
    "LICENSE",
    "PlacesSource",
    "grid_points",
    "parse_html_attribution",
    "place_photo_record",
]

"""Flickr discovery: ``flickr.photos.search`` over bbox tiles and date windows.

Why it is built this way (each point is a way a naive crawl silently loses photos):

* **Date window on every query.** Flickr answers a geo query that has no limiting agent with
  the photos of the last 12 hours only. Every query carries ``min_taken_date`` and
  ``max_taken_date``.
* **The result cap.** Any query returns at most ~4,000 distinct photos however large ``total``
  is; later pages silently repeat earlier ones. When a query's ``total`` exceeds
  ``result_cap`` it is split, spatially into four quadrants while the tile is larger than
  ``min_tile_deg``, then by halving the date window, until every leaf query is complete.
  Photos on shared edges (bbox and date bounds are inclusive) are de-duplicated by id.
* **Checkpoints.** Each leaf page is one part (``r003c005-w20150101-ns2t1-p0002of0005``:
  root tile, root window, split path, page of pages). A split query leaves an empty
  ``...-split`` part so a resumed crawl re-enters the children without asking again. Units
  run in a deterministic order and de-duplication is seeded from the parts already written,
  so a resumed crawl ends with exactly the parts of an uninterrupted one.
* **Budget and faults.** Every HTTP call (retries included) goes through an hourly
  ``CallBudget``. HTTP 429/5xx, connection errors and API codes 10, 105, 106, 201 are retried
  with exponential back-off; any other ``stat: fail`` is a one-line ``GeopakError``.
* **Secrets.** ``FLICKR_API_KEY``/``FLICKR_API_SECRET`` come from the environment, are used
  only to sign requests (OAuth header, via ``flickrapi``) and are scrubbed from every message.
  Image URLs on Flickr's static hosts need no key, so records hold the plain URL.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore

from ..config import PipelineConfig
from ..country import crawl_bbox
from ..dates import clean_date, from_unix
from ..licenses import FLICKR_LICENSES
from ..ratelimit import CallBudget, Retry, RetryPolicy, redact_in_logs
from ..records import empty_record
from .base import Progress, Source, write_unit

log = logging.getLogger("geopak.flickr")

SOURCE = "flickr"
DEFAULT_ENDPOINT = "https://api.flickr.com/services/rest/"
GEO_MAX_PER_PAGE = 250  # Flickr: geo queries return at most 250 photos per page

# Image sizes, smallest first: the extra name's suffix and Flickr's nominal longer side.
URL_SIZES: list[tuple[str, int]] = [
    ("m", 500),
    ("z", 640),
    ("c", 800),
    ("l", 1024),
    ("h", 1600),
    ("k", 2048),
    ("o", 0),
]
# date_taken also returns datetakengranularity and datetakenunknown
EXTRAS = "geo,license,owner_name,date_taken,date_upload,tags,media," + ",".join(
    f"url_{s}" for s, _ in URL_SIZES
)

TRANSIENT_CODES = frozenset(
    {10, 105, 106, 201}
)  # search unavailable, service unavailable, temporary failures
_HTTP_STATUS = re.compile(r"Status code (\d{3})")
_MIN_WINDOW_S = (
    60  # below this a capped query cannot be split further (and cannot occur in practice)
)
_DATE_FMT = "%Y-%m-%d %H:%M:%S"
_UNIT_PAGE = re.compile(r"^(?P<node>.+)-p(?P<page>\d{4})of(?P<pages>\d{4})$")

# Loggers of the client stack that put the key into DEBUG records (OAuth base string, reprs).
CLIENT_LOGGERS = (
    "flickrapi.core",
    "flickrapi.auth",
    "flickrapi.auth.OAuthFlickrInterface",
    "oauthlib.oauth1.rfc5849",
    "oauthlib.oauth1.rfc5849.signature",
    "requests_oauthlib.oauth1_auth",
    "urllib3.connectionpool",
)
ENV_KEY = "FLICKR_API_KEY"
ENV_SECRET = "FLICKR_API_SECRET"


def rest_url(endpoint: str) -> str:
    """The REST URL for an ``--endpoint``: a bare host (``http://127.0.0.1:8080``) means the
    standard ``/services/rest/`` path on it; a URL with a path is used as given."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("http", "https") and parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, "/services/rest/", parts.query, ""))
    return endpoint


@dataclass(frozen=True)
class Query:
    """One node of the split tree: a tile, a date window and the path of splits that made it."""

    tile: str  # root tile label, e.g. "r003c005" or "t002"
    window: str  # root window label, e.g. "w20150101"
    path: str  # "n" for a root, then "s0".."s3" (quadrant) / "t0", "t1" (window half) per split
    bbox: tuple[float, float, float, float]  # lon_min, lat_min, lon_max, lat_max
    start: int  # unix seconds, inclusive
    end: int  # unix seconds, exclusive

    @property
    def name(self) -> str:
        return f"{self.tile}-{self.window}-{self.path}"

    @property
    def split_unit(self) -> str:
        return f"{self.name}-split"

    def page_unit(self, page: int, pages: int) -> str:
        return f"{self.name}-p{page:04d}of{pages:04d}"

    def quadrants(self) -> list[Query]:
        lon0, lat0, lon1, lat1 = self.bbox
        lonm, latm = (lon0 + lon1) / 2.0, (lat0 + lat1) / 2.0
        boxes = [
            (lon0, lat0, lonm, latm),
            (lonm, lat0, lon1, latm),
            (lon0, latm, lonm, lat1),
            (lonm, latm, lon1, lat1),
        ]
        return [
            Query(self.tile, self.window, f"{self.path}s{i}", b, self.start, self.end)
            for i, b in enumerate(boxes)
        ]

    def halves(self) -> list[Query]:
        mid = self.start + (self.end - self.start) // 2
        return [
            Query(self.tile, self.window, f"{self.path}t0", self.bbox, self.start, mid),
            Query(self.tile, self.window, f"{self.path}t1", self.bbox, mid, self.end),
        ]


def _utc(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _parse_day(value: str, key: str) -> int:
    try:
        d = dt.date.fromisoformat(value)
    except ValueError:
        raise GeopakError(
            f"config key 'crawl.flickr.{key}' = {value!r}: must be a date YYYY-MM-DD"
        ) from None
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def _num(value: Any) -> float | None:
    """Flickr sends numbers as numbers or as strings, depending on the field and the year."""
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    v = _num(value)
    return None if v is None else int(v)


def _text(value: Any) -> str:
    if isinstance(value, dict):  # some Flickr JSON wraps text as {"_content": "..."}
        value = value.get("_content", "")
    return "" if value is None else str(value)


def pick_url(photo: Mapping[str, Any], max_side: int = 1600) -> tuple[str, int | None, int | None]:
    """The largest ``url_*`` whose longer side is <= ``max_side`` (else the smallest larger one).

    Returns ``(url, width, height)``; ``("", None, None)`` when the photo has no URL extras.
    """
    # (longer side, 1 for a resized copy / 0 for the original, url, w, h): on equal sides a
    # resized copy wins (originals may be PNG/GIF or carry an unapplied EXIF rotation).
    options: list[tuple[int, int, str, int | None, int | None]] = []
    for suffix, nominal in URL_SIZES:
        url = photo.get(f"url_{suffix}")
        if not url:
            continue
        w, h = _int(photo.get(f"width_{suffix}")), _int(photo.get(f"height_{suffix}"))
        side = max(w or 0, h or 0) or nominal or 10**9
        options.append((side, int(suffix != "o"), str(url), w, h))
    if not options:
        return "", None, None
    fitting = [o for o in options if o[0] <= max_side]
    _, _, url, w, h = max(fitting) if fitting else min(options, key=lambda o: (o[0], -o[1]))
    return url, w, h


def _fallback_url(photo: Mapping[str, Any]) -> str:
    """Build the 1024 px static URL from id/server/secret when no url_* extra came back."""
    pid, server, secret = photo.get("id"), photo.get("server"), photo.get("secret")
    if not (pid and server and secret):
        return ""
    return f"https://live.staticflickr.com/{server}/{pid}_{secret}_b.jpg"


def photo_record(photo: Mapping[str, Any], *, max_side: int = 1600) -> dict[str, Any] | None:
    """Map one ``photos.search`` result (with our extras) onto the common discovery record."""
    pid = _text(photo.get("id")).strip()
    lat, lon = _num(photo.get("latitude")), _num(photo.get("longitude"))
    if not pid or lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return None
    url, _, _ = pick_url(photo, max_side)
    url = url or _fallback_url(photo)
    if not url:
        return None
    # A photo without a licence field (or with an id Flickr does not define) has an unknown
    # licence: license_id stays empty and the crawl's licence policy refuses it.
    lic_id = _int(photo.get("license"))
    lic_name, lic_url = FLICKR_LICENSES.get(lic_id if lic_id is not None else -1, ("", ""))
    if not lic_name:
        lic_id = None
    owner_nsid = _text(photo.get("owner"))
    owner = _text(photo.get("ownername")) or owner_nsid
    taken, granularity = "", None
    if _int(photo.get("datetakenunknown")) != 1:
        taken, granularity = clean_date(
            _text(photo.get("datetaken")),
            photo.get("datetakengranularity"),
            uploaded=from_unix(photo.get("dateupload")),
        )
    page = f"https://www.flickr.com/photos/{owner_nsid}/{pid}" if owner_nsid else ""
    attribution = f"Photo by {owner or 'unknown'} on Flickr, {lic_name or 'licence unknown'}" + (
        f" ({page})" if page else ""
    )
    return empty_record(
        source=SOURCE,
        source_id=pid,
        url=url,
        lat=lat,
        lon=lon,
        accuracy=_int(photo.get("accuracy")),
        license=lic_name,
        license_id="" if lic_id is None else str(lic_id),
        license_url=lic_url,
        owner=owner,
        title=_text(photo.get("title")),
        tags=_text(photo.get("tags")),
        date_taken=taken,
        date_granularity=granularity,
        attribution=attribution,
        restricted=False,
    )


class FlickrSource(Source):
    """Geotagged, openly licensed Flickr photos inside ``crawl.bbox`` (or ``crawl.flickr.tiles``).

    Options (keyword): ``clock`` and ``sleep`` (injectable time for the call budget and the
    back-off; default ``time.monotonic``/``time.sleep``), ``rng`` (a ``random.Random`` for
    back-off jitter).
    """

    name = SOURCE

    def __init__(self, config: PipelineConfig, endpoint: str | None = None, **opts: Any):
        super().__init__(config, endpoint, **opts)
        self.cfg = config.crawl.flickr
        self.api_url = rest_url(endpoint or self.cfg.endpoint or DEFAULT_ENDPOINT)
        self._sleep: Callable[[float], None] = opts.get("sleep") or time.sleep
        clock: Callable[[], float] = opts.get("clock") or time.monotonic
        self.rng: random.Random = opts.get("rng") or random.Random()
        self.budget = CallBudget(self.cfg.calls_per_hour, 3600.0, clock=clock, sleep=self._sleep)
        self.per_page = min(self.cfg.per_page, GEO_MAX_PER_PAGE)
        self.licenses = sorted(set(self.cfg.licenses))
        self._api: Any = None
        self._secrets: tuple[str, ...] = ()
        self.stats: dict[str, int] = {
            "calls": 0,
            "retries": 0,
            "splits": 0,
            "truncated": 0,
            "photos": 0,
            "duplicates": 0,
            "skipped": 0,
            "licence_unknown": 0,
        }

    # ------------------------------------------------------------------ public
    def extra(self) -> dict[str, Any]:
        return {"endpoint": self.api_url}

    def describe(self) -> str:
        return (
            f"flickr photos.search via {self.api_url} ({len(self.roots())} root queries, licences "
            f"{','.join(map(str, self.licenses))})"
        )

    def tiles(self) -> list[tuple[str, tuple[float, float, float, float]]]:
        """Root tiles: ``crawl.flickr.tiles`` if given, else a ``tile_deg`` grid over ``crawl.bbox``."""
        if self.cfg.tiles:
            return [(f"t{i:03d}", tuple(float(v) for v in t)) for i, t in enumerate(self.cfg.tiles)]  # type: ignore[misc]
        from ..tiling import tile_grid

        return [(t.id, t.box) for t in tile_grid(crawl_bbox(self.config), float(self.cfg.tile_deg))]

    def windows(self) -> list[tuple[str, int, int]]:
        """Root date windows of ``window_days`` from ``min_date``.

        Windows are anchored at ``min_date`` and never depend on today's date (an empty
        ``max_date`` lets the last window run into the future), so unit names stay the same
        when a crawl is resumed on another day.
        """
        start = _parse_day(self.cfg.min_date, "min_date")
        if self.cfg.max_date:
            stop = _parse_day(self.cfg.max_date, "max_date") + 86400  # max_date is inclusive
            clip = True
        else:
            stop = int(time.time()) + 86400
            clip = False
        if stop <= start:
            raise GeopakError(
                f"config key 'crawl.flickr.max_date' = {self.cfg.max_date!r}: must be after "
                f"min_date {self.cfg.min_date}"
            )
        step = int(self.cfg.window_days) * 86400
        out = []
        s = start
        while s < stop:
            e = min(s + step, stop) if clip else s + step
            out.append((f"w{_utc(s):%Y%m%d}", s, e))
            s += step
        return out

    def roots(self) -> list[Query]:
        """Every tile x window; with a coverage plan (``plan=``) only tiles overlapping
        under-covered planner tiles, the most under-covered first."""
        tiles = self.tiles()
        plan = self.opts.get("plan")
        if plan:
            from ..country import crawl_bbox
            from ..tiling import load_plan, order_by_plan, tile_grid

            grid = tile_grid(crawl_bbox(self.config), self.config.coverage.tile_deg)
            tiles = order_by_plan(tiles, lambda t: t[1], load_plan(plan, grid))
        return [Query(t, w, "n", box, s, e) for t, box in tiles for w, s, e in self.windows()]

    def round_inputs(self) -> dict[str, Any]:
        from pathlib import Path

        plan = self.opts.get("plan")
        return {"plan": Path(plan)} if plan else {}

    def discover(self, parts: PartStore, *, progress: Progress) -> None:
        """Crawl every root query (tile x window), splitting capped ones; see the module doc."""
        done = parts.done_units()
        known_pages: dict[str, int] = {}
        for unit in done:
            m = _UNIT_PAGE.match(unit)
            if m:
                known_pages[m.group("node")] = int(m.group("pages"))
        seen = self._seen_ids(parts, done)
        if seen:
            log.info("flickr: resuming with %d photos in %d finished units", len(seen), len(done))
        for root in self.roots():
            if self._limit_reached(seen):
                break
            self._crawl(root, parts, done, known_pages, seen, progress)
        log.info(
            "flickr: %d photos (%d calls, %d retries, %d splits, %d duplicates, %d skipped, %d capped leaves)",
            len(seen),
            self.stats["calls"],
            self.stats["retries"],
            self.stats["splits"],
            self.stats["duplicates"],
            self.stats["skipped"],
            self.stats["truncated"],
        )

    # ------------------------------------------------------------------ crawl
    def _limit_reached(self, seen: set[str]) -> bool:
        return bool(self.cfg.max_photos) and len(seen) >= self.cfg.max_photos

    def _seen_ids(self, parts: PartStore, done: set[str]) -> set[str]:
        seen: set[str] = set()
        for unit in sorted(done):
            table = parts.read(unit)
            if "source_id" in table.column_names:
                seen.update(str(v) for v in table.column("source_id").to_pylist())
        return seen

    def _crawl(
        self,
        root: Query,
        parts: PartStore,
        done: set[str],
        known_pages: dict[str, int],
        seen: set[str],
        progress: Progress,
    ) -> None:
        stack = [root]
        while stack:
            if self._limit_reached(seen):
                return
            node = stack.pop()
            if node.split_unit in done:
                stack.extend(reversed(self._children(node)))
                continue
            pages = known_pages.get(node.name)
            first = 2
            if pages is None:
                photos = self._search(node, 1)
                total = _int(photos.get("total")) or 0
                perpage = _int(photos.get("perpage")) or self.per_page
                pages = _int(photos.get("pages"))
                if pages is None:
                    pages = math.ceil(total / max(1, perpage))
                if total > self.cfg.result_cap:
                    children = self._children(node)
                    if children:
                        self.stats["splits"] += 1
                        log.debug(
                            "flickr: %s has %d > %d results; splitting into %d",
                            node.name,
                            total,
                            self.cfg.result_cap,
                            len(children),
                        )
                        self._commit(parts, done, node.split_unit, [], progress)
                        stack.extend(reversed(children))
                        continue
                    self.stats["truncated"] += 1
                    log.warning(
                        "flickr: %s still reports %d results (> cap %d) at the smallest tile and "
                        "window; only the first %d are reachable",
                        node.name,
                        total,
                        self.cfg.result_cap,
                        self.cfg.result_cap,
                    )
                    pages = min(pages, max(1, self.cfg.result_cap // max(1, perpage)))
                pages = max(1, min(int(pages), 9999))
                self._commit(
                    parts, done, node.page_unit(1, pages), self._records(photos, seen), progress
                )
            else:
                first = 1
            for page in range(first, pages + 1):
                unit = node.page_unit(page, pages)
                if unit in done:
                    continue
                if self._limit_reached(seen):
                    return
                photos = self._search(node, page)
                self._commit(parts, done, unit, self._records(photos, seen), progress)

    def _children(self, node: Query) -> list[Query]:
        lon0, lat0, lon1, lat1 = node.bbox
        if max(lon1 - lon0, lat1 - lat0) / 2.0 >= self.cfg.min_tile_deg:
            return node.quadrants()
        if node.end - node.start >= 2 * _MIN_WINDOW_S:
            return node.halves()
        return []

    def _commit(
        self,
        parts: PartStore,
        done: set[str],
        unit: str,
        records: list[dict[str, Any]],
        progress: Progress,
    ) -> None:
        write_unit(parts, unit, records)
        done.add(unit)
        self.stats["photos"] += len(records)
        progress.update(len(records))
        progress.set_postfix_str(
            f"calls={self.stats['calls']} splits={self.stats['splits']}", refresh=False
        )

    def _records(self, photos: Mapping[str, Any], seen: set[str]) -> list[dict[str, Any]]:
        out = []
        allowed = set(self.licenses)
        for p in photos.get("photo") or []:
            rec = photo_record(p, max_side=self.cfg.max_side_px)
            if rec is not None and not rec["license_id"]:
                self.stats["licence_unknown"] += 1
                rec = None
            if rec is None or int(rec["license_id"]) not in allowed:
                self.stats["skipped"] += 1
                continue
            if rec["accuracy"] is not None and rec["accuracy"] < self.cfg.min_accuracy:
                self.stats["skipped"] += 1
                continue
            if rec["source_id"] in seen:
                self.stats["duplicates"] += 1
                continue
            seen.add(rec["source_id"])
            out.append(rec)
            if self._limit_reached(seen):
                break
        return out

    # ------------------------------------------------------------------ API calls
    def _client(self) -> Any:
        if self._api is not None:
            return self._api
        key = os.environ.get(ENV_KEY, "").strip()
        secret = os.environ.get(ENV_SECRET, "").strip()
        if not key:
            raise GeopakError(
                f"{ENV_KEY} is not set: create a key at "
                f"https://www.flickr.com/services/apps/create/ and export {ENV_KEY} and "
                f"{ENV_SECRET}"
            )
        if not secret:
            raise GeopakError(
                f"{ENV_SECRET} is not set: export the secret that belongs to {ENV_KEY}"
            )
        import flickrapi

        self._secrets = (key, secret)
        for s in self._secrets:
            redact_in_logs(s, CLIENT_LOGGERS)
        api = flickrapi.FlickrAPI(
            key,
            secret,
            format="parsed-json",
            store_token=False,
            cache=False,
            timeout=self.config.retry.timeout_s,
        )
        api.REST_URL = self.api_url  # instance attribute: the class default stays the real service
        self._api = api
        return api

    def search_params(self, node: Query, page: int) -> dict[str, Any]:
        """The ``flickr.photos.search`` arguments for one page of one query."""
        return {
            "bbox": ",".join(f"{v:.6f}" for v in node.bbox),
            "has_geo": 1,
            "min_taken_date": _utc(node.start).strftime(_DATE_FMT),
            "max_taken_date": _utc(node.end - 1).strftime(_DATE_FMT),
            "license": ",".join(str(x) for x in self.licenses),
            "media": "photos",
            "extras": EXTRAS,
            "sort": "date-posted-asc",  # new uploads land at the end: earlier pages stay stable
            "per_page": self.per_page,
            "page": page,
        }

    def _search(self, node: Query, page: int) -> Mapping[str, Any]:
        resp = self.call("flickr.photos.search", **self.search_params(node, page))
        photos = resp.get("photos")
        if not isinstance(photos, Mapping):
            raise GeopakError(
                f"flickr: unexpected photos.search response for {node.name} page {page} (no "
                "'photos' object); is --endpoint a Flickr REST endpoint?"
            )
        return photos

    def call(self, method: str, **params: Any) -> Mapping[str, Any]:
        """One API call under the hourly budget, retried on transient failures."""
        import requests
        from flickrapi.exceptions import FlickrError

        api = self._client()
        fn = functools.reduce(getattr, method.split(".")[1:], api)  # api.photos.search

        def attempt(_n: int) -> Mapping[str, Any]:
            self.budget.acquire()
            self.stats["calls"] += 1
            try:
                resp = fn(**params)
                if not isinstance(resp, Mapping):
                    raise ValueError("response is not a JSON object")
                return resp
            except FlickrError as exc:
                status_m = _HTTP_STATUS.search(str(exc))
                status = int(status_m.group(1)) if status_m else None
                if status is not None:
                    if status != 429 and status < 500:
                        raise GeopakError(
                            self._scrub(
                                f"flickr: {method} answered HTTP {status} at {self.api_url}; check --endpoint"
                            )
                        ) from None
                    raise Retry(f"HTTP {status}") from None
                if exc.code not in TRANSIENT_CODES:
                    raise GeopakError(
                        self._fail_message(method, exc.code, _error_text(exc))
                    ) from None
                raise Retry(self._scrub(f"API error {exc.code}: {_error_text(exc)}")) from None
            except requests.RequestException as exc:
                raise Retry(self._scrub(f"{type(exc).__name__}: {exc}")) from None
            except ValueError as exc:  # body was not JSON (an HTML error page, a proxy)
                raise Retry(self._scrub(f"invalid response ({exc})")) from None

        def on_retry(n: int, of: int, why: str, delay: float) -> None:
            self.stats["retries"] += 1
            log.info("flickr: %s failed (%s); retry %d/%d in %.1fs", method, why, n, of, delay)

        def give_up(last: Retry, attempts: int) -> GeopakError:
            return GeopakError(
                f"flickr: {method} still failing after {attempts} attempts ({last.reason}); run "
                "the crawl again later to resume"
            )

        policy = RetryPolicy(self.config.retry, rng=self.rng, on_retry=on_retry)
        return policy.run(attempt, give_up=give_up, sleep=self._sleep)

    def _fail_message(self, method: str, code: int | None, text: str) -> str:
        hint = {
            100: f"check {ENV_KEY}",
            96: f"check {ENV_SECRET}",
            97: f"check {ENV_SECRET}",
            111: "the endpoint does not speak Flickr JSON",
            112: "the endpoint does not know this method; check --endpoint",
        }.get(code or -1, "see https://www.flickr.com/services/api/flickr.photos.search.html")
        return self._scrub(f"flickr: {method} failed with API error {code} ({text}); {hint}")

    def _scrub(self, text: str) -> str:
        out = " ".join(str(text).split())
        for s in self._secrets:
            if s:
                out = out.replace(s, "***")
        return out


def _error_text(exc: Exception) -> str:
    """The API's message from a FlickrError ('Error: 100: Invalid API Key' -> 'Invalid API Key')."""
    text = str(exc)
    m = re.match(r"Error: -?\d+: (.*)$", text, re.S)
    return (m.group(1) if m else text).strip()


__all__ = ["EXTRAS", "FLICKR_LICENSES", "FlickrSource", "Query", "photo_record", "pick_url"]

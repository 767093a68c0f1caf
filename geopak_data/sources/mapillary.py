"""Mapillary discovery: the API v4 ``images`` endpoint over bbox tiles.

How the API is used (``--endpoint``, default ``https://graph.mapillary.com``):

* ``GET /images?bbox=minLon,minLat,maxLon,maxLat&fields=...&limit=N`` with the token from
  ``MAPILLARY_ACCESS_TOKEN`` sent as ``Authorization: OAuth TOKEN`` (or, with
  ``crawl.mapillary.auth = "query"``, as the ``access_token`` parameter). The endpoint wants
  small boxes (under 0.01 square degrees) and returns at most ``limit`` (2000) images per
  request; ``paging.next`` (when present) is followed. A box whose answer reaches ``box_cap``
  images may hold more, so it is split into quadrants (``tiled.TiledSource``).
* Fields: ``id, computed_geometry, geometry, captured_at, creator, sequence, is_pano,
  thumb_1024_url``. ``computed_geometry`` (the SfM-corrected position) is used when present,
  the raw GPS ``geometry`` otherwise.
* Errors arrive as ``{"error": {"message", "type", "code", "fbtrace_id"}}``: 401/403 (a bad
  token, code 190) is one line naming the variable; 429/5xx are retried with back-off.

Records: licence CC BY-SA 4.0 with the creator's username as owner and attribution. The
sequence id becomes ``group_id`` so one drive never straddles train/test; per sequence at most
one image every ``thin_m`` metres is kept (consecutive frames are near-duplicates).
Panoramas (``is_pano``) are skipped unless ``include_panoramas``; images without a thumbnail
or coordinates are rejected with their reason.

The token never reaches the work folder or logs: ``paging.next`` URLs carry it back, so it is
stripped before a URL is followed or logged, and the CDN thumbnail URLs need no token.

Thumbnail URLs are signed CDN links (``oh=`` signature, ``oe=`` expiry) that expire: a
download long after discovery is answered 403 ("URL signature expired"). The downloader then
asks ``refresh_url``: ``GET /{image_id}?fields=thumb_1024_url`` (same token, same auth mode)
for a fresh link, fetches once more and the crawl records the new URL.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from geopak_core.errors import GeopakError
from geopak_core.geo import haversine_km

from ..config import PipelineConfig
from ..records import empty_record
from ..tiling import Box, Tile, split_box
from .httpapi import ApiClient
from .tiled import TiledSource

log = logging.getLogger("geopak.mapillary")

SOURCE = "mapillary"
DEFAULT_ENDPOINT = "https://graph.mapillary.com"
ENV_TOKEN = "MAPILLARY_ACCESS_TOKEN"
THUMB_FIELD = "thumb_1024_url"
FIELDS = f"id,computed_geometry,geometry,captured_at,creator,sequence,is_pano,{THUMB_FIELD}"
_SECRET_PARAMS = {"access_token"}


def strip_token(url: str) -> str:
    """``url`` without an ``access_token`` query parameter."""
    p = urlsplit(url)
    q = [(k, v) for k, v in parse_qsl(p.query, keep_blank_values=True) if k not in _SECRET_PARAMS]
    return urlunsplit((p.scheme, p.netloc, p.path, urlencode(q), p.fragment))


def _describe(status: int, body: Any) -> str:
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        return "no error body"
    msg = f"{err.get('message', '')} (type {err.get('type', '?')}, code {err.get('code', '?')})"
    if status in (401, 403) or err.get("code") in (190, 104, 200):
        msg += f"; check {ENV_TOKEN}"
    return msg


def _point(img: Mapping[str, Any]) -> tuple[float, float] | None:
    for name in ("computed_geometry", "geometry"):
        g = img.get(name)
        if isinstance(g, Mapping):
            c = g.get("coordinates") or []
            if len(c) >= 2 and all(isinstance(v, int | float) for v in c[:2]):
                lon, lat = float(c[0]), float(c[1])
                if math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90:
                    return lat, lon
    return None


def _iso_ms(value: Any) -> str:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return ""
    return dt.datetime.fromtimestamp(ms / 1000.0, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class MapillarySource(TiledSource):
    """Street-level images of Mapillary inside the planner's tiles (CC BY-SA 4.0)."""

    name = SOURCE
    refreshes_urls = True  # thumbnail links are signed and expire

    def __init__(self, config: PipelineConfig, endpoint: str | None = None, **opts: Any):
        super().__init__(config, endpoint, **opts)
        self.cfg = config.crawl.mapillary
        self.base = (endpoint or self.cfg.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        if self.base.endswith("/images"):
            self.base = self.base[: -len("/images")]
        self.max_photos = self.cfg.max_photos
        self.min_box_deg = self.cfg.min_box_deg
        self._opts = opts
        self._client: ApiClient | None = None
        self._token = ""
        self._refresh_lock = threading.Lock()  # downloads ask from worker threads

    def extra(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "endpoint": self.base,
            "tile_deg": self.config.coverage.tile_deg,
            "thin_m": c.thin_m,
            "include_panoramas": c.include_panoramas,
        }

    def describe(self) -> str:
        return (
            f"mapillary images via {self.base} (panoramas "
            f"{'kept' if self.cfg.include_panoramas else 'skipped'}, "
            f"thinning {self.cfg.thin_m:g} m)"
        )

    def client(self) -> ApiClient:
        if self._client is None:
            token = os.environ.get(ENV_TOKEN, "").strip()
            if not token:
                raise GeopakError(
                    f"{ENV_TOKEN} is not set: get a client token at "
                    f"https://www.mapillary.com/dashboard/developers and export {ENV_TOKEN}"
                )
            self._token = token
            self._client = ApiClient(
                name=SOURCE,
                user_agent=self.config.download.user_agent,
                retries=self.config.retry.retries,
                backoff_s=self.config.retry.backoff_s,
                max_backoff_s=self.config.retry.max_backoff_s,
                timeout_s=self.config.retry.timeout_s,
                min_interval_s=self.cfg.min_interval_s,
                sleep=self._opts.get("sleep"),
                clock=self._opts.get("clock"),
                rng=self._opts.get("rng"),
                secrets=(token,),
            )
        return self._client

    # ------------------------------------------------------------------ boxes
    def initial_boxes(self, tile: Tile) -> list[Box]:
        """The tile cut into the fewest equal boxes strictly under ``max_box_deg2``."""
        lon0, lat0, lon1, lat1 = tile.box
        side = math.sqrt(self.cfg.max_box_deg2) * 0.99
        nx = max(1, math.ceil((lon1 - lon0) / side))
        ny = max(1, math.ceil((lat1 - lat0) / side))
        return split_box(tile.box, nx, ny)

    def _authed_get(self, url: str, params: Mapping[str, Any] | None) -> Any:
        c = self.client()
        headers: dict[str, str] = {}
        full = dict(params or {})
        if self.cfg.auth == "query":
            full["access_token"] = self._token
        else:
            headers["Authorization"] = f"OAuth {self._token}"
        return c.get_json(url, full, headers=headers, describe_error=_describe)

    def refresh_url(self, record: Mapping[str, Any]) -> str | None:
        """A fresh signed thumbnail URL for a record whose stored one expired (the image's
        own node, ``GET /{id}?fields=thumb_1024_url``); None when the API gives none."""
        sid = str(record.get("source_id") or "")
        if not sid.isdigit():
            return None
        with self._refresh_lock:
            body = self._authed_get(f"{self.base}/{sid}", {"fields": THUMB_FIELD})
        url = body.get(THUMB_FIELD) if isinstance(body, Mapping) else None
        return strip_token(str(url)) if url else None

    def _get(self, url: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        body = self._authed_get(url, params)
        if not isinstance(body, Mapping) or not isinstance(body.get("data", []), list):
            raise GeopakError(
                f"mapillary: {self.base} did not answer an images collection; check --endpoint"
            )
        return dict(body)

    def search(self, box: Box) -> tuple[list[dict[str, Any]], bool]:
        lon0, lat0, lon1, lat1 = box
        url: str = f"{self.base}/images"
        params: dict[str, Any] | None = {
            "bbox": f"{lon0:.7f},{lat0:.7f},{lon1:.7f},{lat1:.7f}",
            "fields": FIELDS,
            "limit": self.cfg.limit,
        }
        hits: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            body = self._get(url, params)
            for img in body.get("data") or []:
                sid = str(img.get("id", ""))
                if sid and sid not in seen:
                    seen.add(sid)
                    hits.append({**img, "source_id": sid})
            nxt = (body.get("paging") or {}).get("next")
            if not nxt or len(hits) >= self.cfg.box_cap:
                break
            url, params = strip_token(str(nxt)), None  # the next link already holds the query
        return hits, len(hits) >= self.cfg.box_cap

    # ------------------------------------------------------------------ records
    def record(self, img: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
        sid = str(img["source_id"])
        pt = _point(img)
        creator = img.get("creator") if isinstance(img.get("creator"), Mapping) else {}
        user = str(creator.get("username") or creator.get("id") or "")
        seq = str(img.get("sequence") or "")
        page = f"https://www.mapillary.com/app/?pKey={sid}"
        rec = empty_record(
            source=SOURCE,
            source_id=sid,
            url=strip_token(str(img.get("thumb_1024_url") or "")),
            lat=pt[0] if pt else None,
            lon=pt[1] if pt else None,
            license=self.cfg.license,
            license_id="cc-by-sa-4.0",
            license_url=self.cfg.license_url,
            owner=user,
            title="",
            date_taken=_iso_ms(img.get("captured_at")),
            attribution=f"Image by {user or 'unknown'} on Mapillary, {self.cfg.license} ({page})",
            restricted=False,
            group_id=f"mapillary-seq-{seq}" if seq else "",
        )
        if pt is None:
            return rec, "no_coordinates", "neither computed_geometry nor geometry"
        if img.get("is_pano") and not self.cfg.include_panoramas:
            return (
                rec,
                "panorama",
                "360-degree panorama (crawl.mapillary.include_panoramas = false)",
            )
        if not rec["url"]:
            return rec, "no_thumbnail", "no thumb_1024_url (image still processing or blurred)"
        return rec, "", ""

    def materialise(
        self, hits: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        kept: list[tuple[dict[str, Any], int]] = []
        rejects: list[dict[str, Any]] = []
        for img in hits:
            rec, reason, detail = self.record(img)
            if reason:
                rejects.append({**rec, "reason": reason, "detail": detail})
            else:
                kept.append((rec, int(img.get("captured_at") or 0)))
        records, thinned = thin_sequences(kept, self.cfg.thin_m)
        rejects.extend(thinned)
        return records, rejects


def thin_sequences(
    kept: list[tuple[dict[str, Any], int]], thin_m: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per sequence (``group_id``), in capture order: keep an image only if it is at least
    ``thin_m`` metres from the last one kept. Returns (records in input order, rejects)."""
    if thin_m <= 0:
        return [r for r, _ in kept], []
    drop: dict[int, float] = {}
    by_seq: dict[str, list[int]] = {}
    for i, (rec, _) in enumerate(kept):
        if rec["group_id"]:
            by_seq.setdefault(rec["group_id"], []).append(i)
    for idx in by_seq.values():
        idx.sort(key=lambda i: (kept[i][1], kept[i][0]["source_id"]))
        last = None
        for i in idx:
            rec = kept[i][0]
            if last is not None:
                d = float(haversine_km(last[0], last[1], rec["lat"], rec["lon"])) * 1000.0
                if d < thin_m:
                    drop[i] = d
                    continue
            last = (rec["lat"], rec["lon"])
    records = [r for i, (r, _) in enumerate(kept) if i not in drop]
    rejects = [
        {
            **kept[i][0],
            "reason": "sequence_thinned",
            "detail": f"{d:.1f} m from the previous kept frame (< {thin_m:g} m)",
        }
        for i, d in sorted(drop.items())
    ]
    return records, rejects


__all__ = ["FIELDS", "MapillarySource", "strip_token", "thin_sequences"]

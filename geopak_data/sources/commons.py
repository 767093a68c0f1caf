"""Wikimedia Commons discovery: GeoData geosearch over tiles, then imageinfo + extmetadata.

How the MediaWiki Action API is used (``--endpoint``, default the real ``api.php``):

1. ``action=query&list=geosearch&gsnamespace=6&gsbbox=TOP|LEFT|BOTTOM|RIGHT&gslimit=500``:
   the File pages with coordinates in a box. GeoData refuses boxes larger than
   ``4 x wgMaxGeoSearchRadius²`` (10 km radius: 400 km²; error code ``toobig``) and returns
   at most ``gslimit`` (500; 5000 for bots) hits per query, nearest to the box centre first,
   with no way to page past them. So every tile is cut into boxes under 400 km², and a box
   that returns ``gslimit`` hits is split into quadrants (``tiled.TiledSource``).
2. ``action=query&prop=imageinfo&titles=A|B|...`` (at most 50 titles) with
   ``iiprop=url|size|mime|extmetadata`` and ``iiurlwidth=download.max_side``: the file URL,
   a thumbnail of the size the dataset stores (no need to fetch a 40-megapixel original),
   size, MIME type, and Extension:CommonsMetadata's ``extmetadata``: ``LicenseShortName``,
   ``LicenseUrl``, ``Artist`` (HTML: kept as text plus its link), ``Credit``,
   ``DateTimeOriginal``. Large batches come back in pieces: ``continue`` (``iicontinue``) is
   followed until the batch is complete.

Only free licences (``crawl.commons.licenses``, compared by family: see ``licenses.py``) and
photo MIME types are kept; the others are committed as rejects with their reason. The
licence, licence URL, artist and an attribution line travel with every record.

Etiquette (API:Etiquette, Manual:Maxlag_parameter): one request at a time, a descriptive
``User-Agent`` naming the project and a contact, ``maxlag=5`` on every request (an overloaded
cluster answers ``{"error": {"code": "maxlag"}}`` with ``Retry-After``: the crawl waits at
least that long), back-off on 429/5xx. No key is needed.
"""

from __future__ import annotations

import html.parser
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from geopak_core.errors import GeopakError

from ..config import PipelineConfig
from ..licenses import classify, is_free
from ..records import empty_record
from ..tiling import Box, Tile, box_area_km2, split_box
from .httpapi import ApiClient
from .tiled import TiledSource

log = logging.getLogger("geopak.commons")

SOURCE = "commons"
DEFAULT_ENDPOINT = "https://commons.wikimedia.org/w/api.php"
FILE_NAMESPACE = 6
EXTMETADATA = ("LicenseShortName", "LicenseUrl", "License", "Artist", "Credit", "DateTimeOriginal")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?")


class _Html(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[str] = []
        self.datetimes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        when = dict(attrs).get("datetime")
        if when:
            self.datetimes.append(when)
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if href:
                self.links.append(href)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def html_text_and_link(value: str | None) -> tuple[str, str]:
    """The visible text of an extmetadata HTML value and its first link (absolute URL).

    ``<a href="//commons.wikimedia.org/wiki/User:X" title="User:X">X</a>`` -> ("X",
    "https://commons.wikimedia.org/wiki/User:X").
    """
    p = _Html()
    p.feed(str(value or ""))
    p.close()
    text = " ".join("".join(p.text).split())
    link = p.links[0] if p.links else ""
    if link.startswith("//"):
        link = "https:" + link
    elif link.startswith("/"):
        link = "https://commons.wikimedia.org" + link
    return text, link


def iso_date(value: str | None) -> str:
    """``DateTimeOriginal`` (plain, or HTML such as ``<time datetime="2012-03-04">``) as
    ISO 8601, or "" when it holds no full date ("May 2012", "unknown")."""
    p = _Html()
    p.feed(str(value or ""))
    p.close()
    m = None
    for candidate in [*p.datetimes, "".join(p.text)]:
        m = _DATE.search(candidate)
        if m:
            break
    if not m:
        return ""
    y, mo, d, h, mi, s = m.groups()
    if h is None:
        return f"{y}-{mo}-{d}"
    return f"{y}-{mo}-{d}T{h}:{mi}:{s or '00'}"


def _meta(info: Mapping[str, Any], name: str) -> str:
    entry = (info.get("extmetadata") or {}).get(name) or {}
    value = entry.get("value", "") if isinstance(entry, Mapping) else entry
    return "" if value is None else str(value)


def _maxlag(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping) and err.get("code") in ("maxlag", "ratelimited", "readonly"):
        return f"{err.get('code')}: {err.get('info', '')}"
    return None


class CommonsSource(TiledSource):
    """Geotagged, freely licensed files of Wikimedia Commons inside the planner's tiles.

    Options: ``plan`` (a coverage plan), ``sleep``/``clock``/``rng`` (injectable time).
    """

    name = SOURCE

    def __init__(self, config: PipelineConfig, endpoint: str | None = None, **opts: Any):
        super().__init__(config, endpoint, **opts)
        self.cfg = config.crawl.commons
        self.api_url = endpoint or self.cfg.endpoint or DEFAULT_ENDPOINT
        if "://" in self.api_url and self.api_url.rstrip("/").count("/") == 2:
            self.api_url = self.api_url.rstrip("/") + "/w/api.php"  # a bare host
        self.max_photos = self.cfg.max_photos
        self.min_box_deg = self.cfg.min_box_deg
        self.thumb_width = int(config.download.max_side)
        self.client = ApiClient(
            name=SOURCE,
            user_agent=self.cfg.user_agent or config.download.user_agent,
            retries=self.config.retry.retries,
            backoff_s=self.config.retry.backoff_s,
            max_backoff_s=self.config.retry.max_backoff_s,
            timeout_s=self.config.retry.timeout_s,
            min_interval_s=self.cfg.min_interval_s,
            sleep=opts.get("sleep"),
            clock=opts.get("clock"),
            rng=opts.get("rng"),
        )

    def extra(self) -> dict[str, Any]:
        return {
            "endpoint": self.api_url,
            "tile_deg": self.config.coverage.tile_deg,
            "thumb_width": self.thumb_width,
        }

    def describe(self) -> str:
        return f"commons geosearch via {self.api_url} (licences {', '.join(self.cfg.licenses)})"

    # ------------------------------------------------------------------ boxes
    def initial_boxes(self, tile: Tile) -> list[Box]:
        """The tile cut into the fewest equal boxes whose area is under the gsbbox limit."""
        limit = self.cfg.max_box_km2 * 0.98  # a margin for the server's own area formula
        n = max(1, math.ceil(math.sqrt(box_area_km2(tile.box) / limit)))
        while max(box_area_km2(b) for b in split_box(tile.box, n, n)) > limit:
            n += 1
        return split_box(tile.box, n, n)

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        """One API query (with maxlag, JSON, formatversion 2); API errors are one line."""
        full = {
            "action": "query",
            "format": "json",
            "formatversion": 2,
            "maxlag": self.cfg.maxlag,
            **params,
        }
        body = self.client.get_json(self.api_url, full, transient=_maxlag)
        if not isinstance(body, Mapping):
            raise GeopakError(
                f"commons: {self.api_url} did not answer a JSON object; check --endpoint"
            )
        err = body.get("error")
        if isinstance(err, Mapping):
            raise GeopakError(
                f"commons: API error {err.get('code', '?')} ({err.get('info', '')}) from {self.api_url}"
            )
        return dict(body)

    def _query_all(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every piece of a query, following ``continue`` until the server says it is done."""
        pieces = []
        cont: dict[str, Any] = {}
        for _ in range(10_000):
            body = self._query({**params, **cont})
            pieces.append(body)
            nxt = body.get("continue")
            if not isinstance(nxt, Mapping):
                return pieces
            cont = {str(k): v for k, v in nxt.items()}
        raise GeopakError(f"commons: endless continuation from {self.api_url}")

    def search(self, box: Box) -> tuple[list[dict[str, Any]], bool]:
        lon0, lat0, lon1, lat1 = box
        hits = []
        for body in self._query_all(
            {
                "list": "geosearch",
                "gsbbox": f"{lat1:.7f}|{lon0:.7f}|{lat0:.7f}|{lon1:.7f}",
                "gsnamespace": FILE_NAMESPACE,
                "gslimit": self.cfg.gslimit,
                "gsprop": "type",
            }
        ):
            for h in (body.get("query") or {}).get("geosearch") or []:
                if "pageid" not in h or h.get("lat") is None or h.get("lon") is None:
                    continue
                hits.append(
                    {
                        "source_id": str(h["pageid"]),
                        "title": str(h.get("title", "")),
                        "lat": float(h["lat"]),
                        "lon": float(h["lon"]),
                    }
                )
        return hits, len(hits) >= self.cfg.gslimit

    # ------------------------------------------------------------------ records
    def _imageinfo(self, titles: list[str]) -> dict[str, dict[str, Any]]:
        """title -> page (with its ``imageinfo`` merged across continuation pieces)."""
        pages: dict[str, dict[str, Any]] = {}
        for body in self._query_all(
            {
                "prop": "imageinfo",
                "titles": "|".join(titles),
                "iiprop": "url|size|mime|extmetadata",
                "iiurlwidth": self.thumb_width,
                "iiextmetadatafilter": "|".join(EXTMETADATA),
                "iiextmetadatalanguage": "en",
            }
        ):
            query = body.get("query") or {}
            renamed = {n.get("to"): n.get("from") for n in query.get("normalized") or []}
            for page in query.get("pages") or []:
                title = str(page.get("title", ""))
                title = renamed.get(title, title)
                slot = pages.setdefault(title, {**page, "imageinfo": []})
                slot["imageinfo"].extend(page.get("imageinfo") or [])
                for k in ("missing", "invalid"):
                    if page.get(k):
                        slot[k] = True
        return pages

    def materialise(
        self, hits: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        records: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        bs = self.cfg.batch_titles
        for i in range(0, len(hits), bs):
            batch = hits[i : i + bs]
            pages = self._imageinfo([h["title"] for h in batch])
            for hit in batch:
                rec, reason, detail = self.record(hit, pages.get(hit["title"]))
                if reason:
                    rejects.append({**rec, "reason": reason, "detail": detail})
                else:
                    records.append(rec)
        return records, rejects

    def record(
        self, hit: Mapping[str, Any], page: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], str, str]:
        """(record, reject reason or "", detail) for one geosearch hit and its imageinfo page."""
        info = ((page or {}).get("imageinfo") or [{}])[0]
        name = str(hit["title"]).split(":", 1)[-1]
        lic = " ".join(_meta(info, "LicenseShortName").split())
        url = self._thumbnail(info)
        rec = empty_record(
            source=SOURCE,
            source_id=str(hit["source_id"]),
            url=url or str(info.get("url") or ""),
            lat=float(hit["lat"]),
            lon=float(hit["lon"]),
            license=lic,
            license_id=_meta(info, "License") or classify(lic).family,
            license_url=_meta(info, "LicenseUrl"),
            title=name,
            date_taken=iso_date(_meta(info, "DateTimeOriginal")),
            restricted=False,
            **_credit(info, name, lic),
        )
        reason, detail = self._problem(page, info, lic, url)
        return rec, reason, detail

    def _thumbnail(self, info: Mapping[str, Any]) -> str:
        """The thumbnail at ``download.max_side``, or the original when it is that small."""
        url = str(info.get("thumburl") or "")
        width, height = info.get("width"), info.get("height")
        if not url and width and height and max(int(width), int(height)) <= self.thumb_width:
            url = str(info.get("url") or "")
        return url

    def _problem(
        self, page: Mapping[str, Any] | None, info: Mapping[str, Any], lic: str, url: str
    ) -> tuple[str, str]:
        """Why a file is not taken (reason, detail), or ("", "")."""
        if page is None or page.get("missing") or page.get("invalid") or not page.get("imageinfo"):
            return "missing_file", "the file page has no imageinfo (deleted or renamed)"
        mime = str(info.get("mime") or "")
        if mime not in self.cfg.mimes:
            return "not_a_photo", f"MIME type {mime or 'unknown'}"
        if not is_free(lic, self.cfg.licenses):
            allowed = ", ".join(self.cfg.licenses)
            return "license_not_free", f"licence {lic or 'unknown'!r} is not one of {allowed}"
        if not url:
            return "no_thumbnail", f"no {self.thumb_width}px thumbnail"
        return "", ""


def _credit(info: Mapping[str, Any], name: str, lic: str) -> dict[str, str]:
    """Owner and the attribution line Commons asks reusers to show (author, licence, page)."""
    artist, artist_link = html_text_and_link(_meta(info, "Artist"))
    credit, _ = html_text_and_link(_meta(info, "Credit"))
    page_url = str(info.get("descriptionurl") or "")
    lic_url = _meta(info, "LicenseUrl")
    owner = artist or credit
    attribution = (
        f"{name} by {owner or 'unknown'}"
        + (f" ({artist_link})" if artist_link else "")
        + f", {lic or 'licence unknown'}"
        + (f" ({lic_url})" if lic_url else "")
        + ", via Wikimedia Commons"
        + (f": {page_url}" if page_url else "")
    )
    return {"owner": owner, "attribution": attribution}


__all__ = ["CommonsSource", "html_text_and_link", "iso_date"]

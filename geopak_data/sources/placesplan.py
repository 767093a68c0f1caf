"""Where a planned Places crawl searches: Nearby Search points inside the plan's tiles.

Why this shape (``crawl places --plan W/coverage/plan.parquet``):

* **Only tiles below target, most under-covered first** (``tiling.load_plan``, the same
  order and budgets the tiled sources follow). Without a plan the crawl keeps its anchor
  grid.
* **Points cover the tile like the anchor grid does**: the tile is cut into sub-cells at
  most ``crawl.places.grid_step_km`` on a side and a search is centred on each, with the
  configured ``radius_m`` (the API's 50 km limit is checked at config load) and, for the
  New API, ``maxResultCount`` <= 20 (no paging) or, for legacy, one search per type with
  its three pages of 20.
* **Searches are weighted by the deficit.** A tile's points are searched, most promising
  first, until they have found as many new photos as the tile's deficit: a tile short of a
  few photos costs one call, a city tile short of thousands gets many (at most its covering
  grid). Nearby Search is billed per call, so calls go where photos are missing and none to
  tiles at target.
* **The most promising points first**: points with the most GeoNames city population around
  them (each city weighted by ``exp(-distance / grid_step_km)``: a big city's neighbours come
  before a small town), then the ones nearest the tile's centre. So when
  ``EMPTY_POINTS_TO_STOP`` points in a row find no new photo (desert, sea, or every place
  already found by the overlapping circles) the tile is left.
* **Replayable decisions**: whether a tile goes on is decided from the parts of its points
  in order (a finished point's count is read back, not searched), so a resumed crawl makes
  the same decisions. Photos found in an earlier round count against the current plan's
  deficit, as in the tiled sources.
* **Deterministic unit names** (``t0.5-r012c034-g002003``: tile size, tile, sub-cell): a
  resumed crawl skips finished searches and writes exactly the parts of an uninterrupted
  one; the tile size is in the name so a plan of another grid never reuses a part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..tiling import Box, PlannedTile

KM_PER_DEG_LAT = 111.32
# A tile whose last this-many points found no new photo is done (empty land, or its places
# are all found): the most promising points are searched first, so the rest would be too.
EMPTY_POINTS_TO_STOP = 2


@dataclass(frozen=True)
class PlannedPoint:
    """One Nearby Search centre of a planned tile (``unit`` names its part)."""

    unit: str
    tile_id: str
    lat: float
    lon: float


def tile_points(box: Box, step_km: float) -> list[tuple[int, int, float, float]]:
    """(row, col, lat, lon) centres of the sub-cells (<= ``step_km`` on a side) of ``box``."""
    lon0, lat0, lon1, lat1 = box
    cos_lat = max(0.01, math.cos(math.radians((lat0 + lat1) / 2.0)))
    rows = max(1, math.ceil((lat1 - lat0) * KM_PER_DEG_LAT / step_km - 1e-9))
    cols = max(1, math.ceil((lon1 - lon0) * KM_PER_DEG_LAT * cos_lat / step_km - 1e-9))
    dlat, dlon = (lat1 - lat0) / rows, (lon1 - lon0) / cols
    return [
        (r, c, round(lat0 + (r + 0.5) * dlat, 6), round(lon0 + (c + 0.5) * dlon, 6))
        for r in range(rows)
        for c in range(cols)
    ]


def _km(lat0: float, lon0: float, lat1: float, lon1: float) -> float:
    """Equirectangular distance: exact enough inside one tile, and cheap."""
    dx = (lon1 - lon0) * math.cos(math.radians((lat0 + lat1) / 2.0))
    return KM_PER_DEG_LAT * math.hypot(lat1 - lat0, dx)


def rank_points(
    box: Box,
    points: list[tuple[int, int, float, float]],
    cities: Sequence[tuple[float, float, int]],
    scale_km: float,
) -> list[tuple[int, int, float, float]]:
    """``points`` most promising first: by the population of the cities around them, each
    city weighted by ``exp(-distance / scale_km)`` (so the ring around a big city comes before
    a small town's centre), then by distance to the tile's centre, then row and column (a
    total, stable order)."""
    lon0, lat0, lon1, lat1 = box
    clat, clon = (lat0 + lat1) / 2.0, (lon0 + lon1) / 2.0
    reach = 6.0 * scale_km / KM_PER_DEG_LAT  # beyond ~6 scales a city adds < 0.25 %
    near = [
        (c_lat, c_lon, pop)
        for c_lat, c_lon, pop in cities
        if lat0 - reach <= c_lat <= lat1 + reach and lon0 - 2 * reach <= c_lon <= lon1 + 2 * reach
    ]

    def key(p: tuple[int, int, float, float]) -> tuple[float, float, int, int]:
        r, c, lat, lon = p
        pull = sum(pop * math.exp(-_km(lat, lon, a, b) / scale_km) for a, b, pop in near)
        return (-round(pull), round(_km(lat, lon, clat, clon), 6), r, c)

    return sorted(points, key=key)


def plan_points(
    planned: list[PlannedTile],
    *,
    tile_deg: float,
    step_km: float,
    cities: Sequence[tuple[float, float, int]] = (),
) -> list[tuple[PlannedTile, list[PlannedPoint]]]:
    """Every planned tile (plan order) with the points its searches may go to, best first
    (``rank_points`` with the point spacing as the scale)."""
    out = []
    for p in planned:
        pts = rank_points(p.tile.box, tile_points(p.tile.box, step_km), cities, step_km)
        prefix = f"t{tile_deg:g}-{p.tile.id}"
        chosen = [
            PlannedPoint(f"{prefix}-g{r:03d}{c:03d}", p.tile.id, la, lo) for r, c, la, lo in pts
        ]
        out.append((p, chosen))
    return out


__all__ = [
    "EMPTY_POINTS_TO_STOP",
    "PlannedPoint",
    "plan_points",
    "rank_points",
    "tile_points",
]

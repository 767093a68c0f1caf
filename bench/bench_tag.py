"""Benchmark: province tagging throughput, vectorised vs a naive per-point loop.

    .venv/bin/python bench/bench_tag.py            # 1,000,000 points (goal: >= 1,000,000 points/s)
    .venv/bin/python bench/bench_tag.py --quick    # 200,000 points, well under a minute

Points are uniform over Pakistan's bounding box plus a 1 degree margin ("in and around"
Pakistan: about a third land inside a province, some in the border band, the rest abroad or
at sea), so every path of the tagger is exercised. Compared with ``geopandas.sjoin``
(``predicate="within"``, what a GIS user would pick; answers compared) and the naive reference,
what one writes first: for each point, build a shapely Point and try ``polygon.contains`` on
each province until one says yes. It runs on a sample (it is slow) and its answers are checked against
the vectorised ones. Boundaries: ``--boundaries FILE``, else ``GEOPAK_BOUNDARIES``, else the
pinned download.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geopak_core.boundaries import load_boundaries  # noqa: E402
from geopak_core.errors import GeopakError  # noqa: E402
from geopak_data.config import COAST_BBOXES  # noqa: E402
from geopak_data.tagging import ProvinceTagger, TagResult  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter
from _report import alternated, emit, machine_facts, median  # noqa: E402

GOAL = 1_000_000


def naive_tag(polys, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    import shapely

    geoms = list(polys.geometry)
    ids = list(polys["province_id"])
    out = np.full(lon.shape[0], -1, dtype=np.int64)
    for i in range(lon.shape[0]):
        p = shapely.Point(lon[i], lat[i])
        for pid, g in zip(ids, geoms, strict=True):
            if g.contains(p):
                out[i] = pid
                break
    return out


def sjoin_tag(polys, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """What a geopandas user writes: points as a GeoDataFrame, ``geopandas.sjoin`` with the
    province polygons (``predicate="within"``); the province id per point, -1 outside."""
    import geopandas as gpd

    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs=polys.crs)
    joined = gpd.sjoin(pts, polys[["province_id", "geometry"]], how="left", predicate="within")
    joined = joined[~joined.index.duplicated(keep="first")]  # a point on a shared border
    return joined["province_id"].fillna(-1).to_numpy(dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000, help="points to tag (default 1,000,000)")
    ap.add_argument(
        "--naive-sample",
        type=int,
        default=20_000,
        help="points for the naive loop (default 20,000)",
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="alternated rounds (geopak, sjoin); medians reported"
    )
    ap.add_argument("--tolerance-km", type=float, default=5.0)
    ap.add_argument("--boundaries", default=None, metavar="FILE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="200,000 points, 2,000 naive, 2 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.naive_sample, args.repeat = 200_000, 2_000, 2

    t0 = time.perf_counter()
    try:
        polys = load_boundaries(args.boundaries)
    except GeopakError as exc:
        print(f"bench_tag: error: {exc}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    tagger = ProvinceTagger(polys, args.tolerance_km, coast_bboxes=COAST_BBOXES["PAK"])
    t2 = time.perf_counter()
    x0, y0, x1, y1 = tagger.zone_bounds
    rng = np.random.default_rng(args.seed)
    lon = rng.uniform(x0 - 1, x1 + 1, args.n)
    lat = rng.uniform(y0 - 1, y1 + 1, args.n)

    got: dict[str, object] = {}

    def timed(name, fn):
        def run() -> float:
            s = time.perf_counter()
            got[name] = fn()
            return time.perf_counter() - s

        return run

    runs = {"geopak": timed("geopak", lambda: tagger.tag(lat, lon))}
    try:
        import geopandas  # noqa: F401

        runs["sjoin"] = timed("sjoin", lambda: sjoin_tag(polys, lon, lat))
    except ImportError:
        print("geopandas not installed (bench-only: pip install geopandas): no sjoin row")
    secs = alternated(runs, max(1, args.repeat))
    best = median(secs["geopak"])  # the median of the alternated runs (name kept for the prints)
    res = got["geopak"]
    assert isinstance(res, TagResult)
    rate = args.n / best

    k = min(args.naive_sample, args.n)
    s = time.perf_counter()
    naive = naive_tag(polys, lon[:k], lat[:k])
    naive_s = time.perf_counter() - s
    naive_rate = k / naive_s
    inside = naive >= 0
    disagree = int((res.province_id[:k][inside] != naive[inside]).sum())
    extra = int((res.status[:k][~inside] == TagResult.INSIDE).sum())

    counts = np.bincount(res.status, minlength=4)
    print(
        f"boundaries: {polys.attrs.get('source')} (load {t1 - t0:.2f}s, prepare {t2 - t1:.2f}s); "
        f"cpu cores: {os.cpu_count()}"
    )
    print(
        f"points: {args.n:,} uniform over lon {x0 - 1:.1f}..{x1 + 1:.1f}, lat {y0 - 1:.1f}..{y1 + 1:.1f}"
    )
    print(
        f"  inside a province {counts[0]:,} | snapped within {args.tolerance_km:g} km "
        f"{counts[1]:,} | outside {counts[2]:,} | invalid {counts[3]:,}"
    )
    print(machine_facts(("shapely", "geopandas", "numpy")))
    print(
        f"vectorised: {best:.3f}s median of {args.repeat} alternated runs "
        f"({', '.join(f'{x:.3f}' for x in secs['geopak'])}) -> {rate:,.0f} points/s"
    )
    sj_rate = sj_agree = None
    if "sjoin" in secs:
        sj_s = median(secs["sjoin"])
        sj_rate = args.n / sj_s
        sj = got["sjoin"]
        inside_sj = sj >= 0
        sj_agree = int((res.province_id[inside_sj] == sj[inside_sj]).sum()), int(inside_sj.sum())
        print(
            f"geopandas sjoin (within): {sj_s:.3f}s median of {args.repeat} -> {sj_rate:,.0f} points/s;"
            f" {sj_agree[0]:,}/{sj_agree[1]:,} points it put in a province got the same id from geopak"
            " (geopak also snaps border-band points within the tolerance, which sjoin leaves out)"
        )
    print(
        f"naive per-point polygon.contains loop: {k:,} points in {naive_s:.2f}s -> {naive_rate:,.0f} points/s"
    )
    print(f"speed-up: {rate / naive_rate:,.0f}x")
    print(
        f"agreement on the naive sample: {int(inside.sum()) - disagree:,}/{int(inside.sum()):,} "
        f"points the naive loop put in a province got the same id; {extra} points it left out "
        "were called inside"
    )
    print(f"goal >= {GOAL:,} points/s: {'met' if rate >= GOAL else 'NOT met'}")

    agree = (
        "agrees with the naive loop"
        if disagree == 0 and extra == 0
        else f"DISAGREES with the naive loop ({disagree} ids, {extra} extra)"
    )
    emit(
        "tag",
        "tag points/s",
        rate,
        "points/s",
        vs=f"naive polygon.contains loop ({k:,} pts)",
        vs_value=naive_rate,
        goal=GOAL,
        note=f"{args.n:,} points, median of {args.repeat} alternated runs; {agree}",
    )
    emit(
        "tag",
        "tag points/s vs geopandas sjoin",
        rate,
        "points/s",
        vs="geopandas.sjoin(predicate='within')",
        vs_value=sj_rate,
        note=(
            f"{args.n:,} points, medians of {args.repeat} alternated runs; "
            + (
                f"{sj_agree[0]:,}/{sj_agree[1]:,} sjoin-inside points tagged the same"
                if sj_agree
                else "geopandas not installed"
            )
            + "; geopak also snaps points within the border tolerance"
        ),
    )
    return 0 if disagree == 0 and extra == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

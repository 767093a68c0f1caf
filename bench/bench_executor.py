"""Benchmark: crawl + filter with the Ray executor next to the local executor, same photos.

    .venv/bin/python bench/bench_executor.py            # 2,000 synthetic photos
    .venv/bin/python bench/bench_executor.py --quick    # 400 photos

One synthetic YFCC source (the demo's generator) is served by the loopback image host; the
``crawl yfcc`` and ``filter`` stages run into fresh work folders with ``--executor local``
and ``--executor ray`` (a private Ray instance on this machine, started once and not
timed), alternating, ``--repeat`` times each. Printed: median seconds per stage, the ratio
local/ray (> 1: Ray faster) and the per-unit overhead of Ray, (ray - local) / units. On one
2-core machine Ray cannot win much (the same cores, plus task scheduling and object
transfer); what it buys is more machines. The outputs of both runs are compared byte for
byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from _report import emit  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.parquet")):
        h.update(p.read_bytes())
    return h.hexdigest()


def one_run(root: Path, meta: Path, executor: str) -> tuple[float, float, str]:
    from geopak_data.crawl import run_crawl
    from geopak_data.filter import run_filter
    from geopak_data.runner import work_config

    work = root / f"w-{executor}-{time.monotonic_ns()}"
    cfg = work_config(
        work,
        REPO / "pipelines" / "demo.toml",
        overrides={"crawl.yfcc.metadata": str(meta), "crawl.sources": ["yfcc"]},
    )
    t0 = time.perf_counter()
    run_crawl(source="yfcc", work=work, config=cfg, allow_private_hosts=True, executor=executor)
    t1 = time.perf_counter()
    run_filter(work=work, config=cfg, executor=executor)
    t2 = time.perf_counter()
    out = digest(work / "filter")
    shutil.rmtree(work)
    return t1 - t0, t2 - t1, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="400 photos, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.photos, args.repeat = 400, 2
    from geopak_core.executor import RayExecutor
    from geopak_data.config import load_config
    from geopak_data.demo import generate_source
    from geopak_data.imageserver import start_image_server

    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    root = Path(tempfile.mkdtemp(prefix="geopak-bench-exec-"))
    base, stop = start_image_server(root / "source" / "images", fixtures=False)
    try:
        meta = generate_source(root / "source", n_photos=args.photos, seed=0, base_url=base)
        RayExecutor()  # start the private Ray instance once, outside the timings
        cfg = load_config(REPO / "pipelines" / "demo.toml")
        crawl_units = -(-args.photos // cfg.download.batch_size)
        filter_units = -(-args.photos // cfg.filter.batch_size)
        times: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
        outs: dict[str, set[str]] = {"local": set(), "ray": set()}
        for _ in range(args.repeat):
            for ex in ("local", "ray"):
                c, f, out = one_run(root, meta, ex)
                times[ex].append((c, f))
                outs[ex].add(out)
    finally:
        stop()
        shutil.rmtree(root, ignore_errors=True)
    same = outs["local"] == outs["ray"] and len(outs["local"]) == 1
    print(f"{args.photos} photos, {args.repeat} alternated runs each; outputs identical: {same}")
    print(f"{'stage':<8} {'local s':>9} {'ray s':>9} {'local/ray':>10} {'ray overhead/unit':>18}")
    for i, (stage, units) in enumerate((("crawl", crawl_units), ("filter", filter_units))):
        lo = statistics.median(t[i] for t in times["local"])
        ry = statistics.median(t[i] for t in times["ray"])
        print(
            f"{stage:<8} {lo:>9.2f} {ry:>9.2f} {lo / ry:>10.2f} {1000 * (ry - lo) / units:>15.1f} ms"
        )
        emit(
            "executor",
            f"{stage} {args.photos} photos, ray executor",
            ry,
            "s",
            vs="local executor",
            vs_value=lo,
            higher_is_better=False,
            note=f"{units} units; outputs identical: {same}",
        )


if __name__ == "__main__":
    main()

"""Scaling run: synthetic photos through the whole data pipeline, per-stage time and peak RSS.

For each size (default 1,000, 5,000 and 20,000 photos; ``--quick`` 1,000 and 2,000) it writes
the demo's synthetic source (``geopak_data.demo.generate_source``: rendered JPEGs at places
sampled around real Pakistani towns, as a YFCC100M metadata file), serves the images from the
loopback image host (``python -m geopak_data.imageserver`` in its own process, so it shares no
GIL with the crawl), and runs ``crawl yfcc -> filter -> tag -> cluster -> shard`` with the
demo's pipeline config. Every stage runs in a fresh process, so its peak RSS (``ru_maxrss``)
is its own; its seconds are the stage function's wall time (the interpreter start and imports
are left out: a fixed cost, not a per-photo one).

From the sizes it fits ``seconds = a + b * n`` and ``peak MiB = c + d * n`` per stage (least
squares) and prints the extrapolation to 100,000 and 1,000,000 photos. Synthetic photos are
small (the demo renders ~200x150 px), so crawl and filter at realistic 512-px images cost
more per photo; the fit says how each stage grows, not a promise of the real run's minutes.

    python bench/bench_scaling.py            # 1k, 5k, 20k photos
    python bench/bench_scaling.py --quick    # 1k, 2k (a few minutes on 2 cores)
    python bench/bench_scaling.py --sizes 1000 3000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter

from _report import emit, machine_facts  # noqa: E402

STAGES = ("crawl", "filter", "tag", "cluster", "shard")
CONFIG = REPO / "pipelines" / "demo.toml"
EXTRAPOLATE = (100_000, 1_000_000)
SIZES: list[int] = []  # the sizes measured in this run (set by main)


def _stage(name: str, work: Path, meta: Path) -> dict:
    """Run one stage in this (fresh) process; its wall seconds and this process's peak RSS."""
    os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")
    from geopak_data.cluster import run_cluster
    from geopak_data.crawl import run_crawl
    from geopak_data.filter import run_filter
    from geopak_data.runner import work_config
    from geopak_data.shard import run_shard
    from geopak_data.tag import run_tag

    overrides = {
        "crawl.yfcc.metadata": str(meta),
        "crawl.sources": ["yfcc"],
        "shard.synthetic": True,
    }
    cfg = work_config(work, CONFIG, overrides=overrides)
    runs = {
        "crawl": lambda: run_crawl(source="yfcc", work=work, config=cfg, allow_private_hosts=True),
        "filter": lambda: run_filter(work=work, config=cfg),
        "tag": lambda: run_tag(work=work, config=cfg),
        "cluster": lambda: run_cluster(work=work, config=cfg),
        "shard": lambda: run_shard(work=work, config=cfg, out=work / "shards"),
    }
    t0 = time.perf_counter()
    runs[name]()
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_size(n: int, root: Path, timeout: float) -> dict[str, dict]:
    """Generate ``n`` photos, serve them, run every stage; per-stage figures."""
    from geopak_data.demo import generate_source

    source = root / f"source-{n}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    meta = generate_source(source, n_photos=n, seed=0, base_url=base)
    print(f"n={n:>7,}: generated the source in {time.perf_counter() - t0:.1f}s", flush=True)
    cmd = [sys.executable, "-m", "geopak_data.imageserver", "--folder", str(source / "images")]
    cmd += ["--no-fixtures", "--port", str(port)]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    got = server.stdout.readline().strip()
    if not got.startswith("http://"):
        server.kill()
        raise SystemExit(f"image server did not start: {got!r}")
    work = root / f"work-{n}"
    out: dict[str, dict] = {}
    env = dict(os.environ, PYTHONPATH=str(REPO), GEOPAK_NO_PROGRESS="1")
    try:
        for stage in STAGES:
            cmd = [sys.executable, __file__, "--child", stage, str(work), str(meta)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
            if res.returncode != 0:
                last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
                raise SystemExit(f"n={n}: stage {stage} failed: {last}")
            out[stage] = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"n={n:>7,}: {stage:<8} {out[stage]['seconds']:8.2f} s  peak RSS {out[stage]['peak_rss_mib']:7.0f} MiB",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(10)
    return out


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` (``a`` = fixed cost, ``b`` = cost per photo).

    A stage whose figures do not grow over the sizes measured (a fixed cost drowned in the
    shared machine's noise) gets ``b = 0`` and ``a`` = the median figure rather than a
    negative slope that would extrapolate to nothing; the table marks it with ``~``."""
    import numpy as np

    if len(xs) < 2:
        return 0.0, ys[0] / xs[0]
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    if b <= 0:
        return float(np.median(ys)), 0.0
    return float(a), float(b)


def _row(stage: str, ys: list[float], fmt: str) -> str:
    a, b = fit(SIZES, ys)
    ext = [max(0.0, a + b * n) for n in EXTRAPOLATE]
    flag = "~" if b == 0 else " "
    cells = "".join(f"{y:10{fmt}}" for y in ys) + "".join(f"{e:13.0f}" for e in ext)
    return f"  {stage:<17}{flag}{cells}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for what is measured and how it is extrapolated.",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 5_000, 20_000])
    ap.add_argument("--quick", action="store_true", help="1,000 and 2,000 photos")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per stage")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the folders")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        stage, work, meta = args.child
        print(json.dumps(_stage(stage, Path(work), Path(meta))))
        return 0
    sizes = [1_000, 2_000] if args.quick else sorted(args.sizes)
    print(machine_facts(("numpy", "pillow", "hdbscan", "pyarrow", "aiohttp")))
    print(f"pipeline config {CONFIG.relative_to(REPO)}; every stage in a fresh process")
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="geopak-scaling-") as td:
        root = args.keep or Path(td)
        root.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            results[n] = run_size(n, root, args.timeout)

    head = "".join(f"{n:>10,}" for n in sizes) + "".join(f"{n:>12,}*" for n in EXTRAPOLATE)
    SIZES[:] = sizes
    print(
        f"\nseconds per stage{'':<3}{head}   (* = extrapolated: a + b n; ~ = no growth measured, held flat)"
    )
    for stage in STAGES:
        print(_row(stage, [results[n][stage]["seconds"] for n in sizes], ".1f"))
    total = [sum(results[n][s]["seconds"] for s in STAGES) for n in sizes]
    print(_row("total", total, ".1f"))
    print(f"\npeak RSS MiB{'':<8}{head}")
    for stage in STAGES:
        print(_row(stage, [results[n][stage]["peak_rss_mib"] for n in sizes], ".0f"))
    if sizes[-1] < 4 * sizes[0]:
        print("(sizes this close (--quick) make the extrapolation a smoke test, not a forecast)")

    big = sizes[-1]
    for stage in STAGES:
        a, b = fit(sizes, [results[n][stage]["seconds"] for n in sizes])
        emit(
            "scaling",
            f"{stage}: seconds at 1M photos (extrapolated)",
            max(0.0, a + b * 1_000_000),
            "s",
            higher_is_better=False,
            note=(
                f"linear fit over {', '.join(f'{n:,}' for n in sizes)} synthetic photos; "
                f"{results[big][stage]['seconds']:.1f} s and "
                f"{results[big][stage]['peak_rss_mib']:.0f} MiB peak at {big:,}"
            ),
        )
    a, b = fit(sizes, total)
    emit(
        "scaling",
        "whole pipeline: hours at 1M photos (extrapolated)",
        max(0.0, a + b * 1_000_000) / 3600.0,
        "h",
        higher_is_better=False,
        note=(
            "crawl -> filter -> tag -> cluster -> shard; synthetic ~200 px photos on loopback; "
            f"{total[-1]:.0f} s at {big:,}"
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

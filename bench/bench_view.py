"""Benchmark: the viewer on 100,000 samples: time to first render and server memory.

    .venv/bin/python bench/bench_view.py             # 100,000 samples
    .venv/bin/python bench/bench_view.py --quick     # 20,000 samples

A shard folder's tables are generated (index.parquet with every column the viewer reads,
cells.parquet; no tars: the map needs none) and ``geopak-data view`` is started on it as a
subprocess. Headless Chromium (Debian's, driven by Playwright) then loads the page
``--repeat`` times; reported are the medians of:

* time to first render: navigation start until every sample is drawn (``data-ready``);
* the drawing itself, geopak's one canvas layer, next to the named alternative a Leaflet
  user would write: one ``L.circleMarker`` per sample on Leaflet's canvas renderer, timed in
  the same page on the same points;
* the server's resident memory (VmRSS) after serving the page.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

from geopak_core.regions import PAKISTAN  # noqa: E402

CHROMIUM = os.environ.get("GEOPAK_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def make_tables(root: Path, n: int) -> Path:
    import pandas as pd

    rng = np.random.default_rng(0)
    names = PAKISTAN.names
    pid = rng.integers(0, 7, n)
    df = pd.DataFrame(
        {
            "key": [f"flickr-{i:08d}" for i in range(n)],
            "split": rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1]),
            "shard": "train/geopak-train-000000.tar",
            "lat": rng.uniform(24.5, 36.5, n),
            "lon": rng.uniform(61.5, 77.5, n),
            "province": [names[i] for i in pid],
            "province_id": pid.astype("int8"),
            "cell_id": rng.integers(0, 500, n).astype("int32"),
            "source": rng.choice(["flickr", "yfcc", "commons", "mapillary"], n),
            "license": rng.choice(["CC BY 2.0", "CC BY-SA 2.0", "CC0 1.0", "CC BY-SA 4.0"], n),
            "owner": "someone",
            "sha256": "",
        }
    )
    out = root / "shards"
    out.mkdir(parents=True)
    df.to_parquet(out / "index.parquet")
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(500),
            "province_id": rng.integers(0, 7, 500),
            "center_lat": rng.uniform(25, 36, 500),
            "center_lon": rng.uniform(62, 77, 500),
            "radius_km": rng.uniform(1, 50, 500),
            "n_samples": 200,
            "urban": False,
        }
    )
    cells["province"] = [names[i] for i in cells["province_id"]]
    cells.to_parquet(out / "cells.parquet")
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


LEAFLET_ALT = """() => { const t0 = performance.now();
  const r = L.canvas(); const g = L.layerGroup();
  for (let i = 0; i < state.data.lat.length; i++)
    g.addLayer(L.circleMarker([state.data.lat[i], state.data.lon[i]], {renderer: r, radius: 2}));
  g.addTo(map); return performance.now() - t0; }"""
OURS = "() => { const t0 = performance.now(); points.redraw(); return performance.now() - t0; }"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.samples = 20_000
    if not Path(CHROMIUM).exists():
        sys.exit(f"bench_view: needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    root = Path(tempfile.mkdtemp(prefix="geopak-bench-view-"))
    shards = make_tables(root, args.samples)
    port = 18765
    env = {**os.environ, "GEOPAK_NO_PROGRESS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "geopak_data.cli", "view", str(shards), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = server.stdout.readline().split()[2]
        first, ours, alt = [], [], []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for _ in range(args.repeat):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_function("document.body.dataset.ready === '1'", timeout=300_000)
                first.append(time.perf_counter() - t0)
                ours.append(page.evaluate(OURS))
                alt.append(page.evaluate(LEAFLET_ALT))
                page.close()
            browser.close()
        mem = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    f, o, a = statistics.median(first), statistics.median(ours), statistics.median(alt)
    print(f"{args.samples} samples, median of {args.repeat} page loads")
    print(f"  time to first render (navigation -> all samples drawn): {f:.2f} s")
    print(
        f"  drawing all samples: geopak canvas layer {o:.0f} ms; one L.circleMarker each {a:.0f} ms ({a / o:.1f}x)"
    )
    print(f"  server resident memory: {mem:.0f} MiB")
    emit(
        "view",
        f"draw {args.samples} samples",
        o,
        "ms",
        vs="L.circleMarker per sample",
        vs_value=a,
        higher_is_better=False,
        note=f"first render {f:.2f} s; server {mem:.0f} MiB",
    )


if __name__ == "__main__":
    main()

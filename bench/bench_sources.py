"""Benchmark: discovery records/s of the Commons and Mapillary sources on their loopback fakes.

What it times is the crawl's own work per record (tiling, box splitting on capped answers,
JSON parsing, continuation/paging, licence and panorama checks, sequence thinning, Parquet
parts) plus the loopback HTTP round trips, so the figure is an upper bound of what the
client adds on top of the real services' latency (the real Commons asks for serial
requests; Mapillary's limits are per minute). Each source crawls a seeded world into a
fresh part store; the figure is committed discovery records (candidates + rejects) per
second, with requests per second beside it.

Usage: ``python bench/bench_sources.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit, machine_facts  # noqa: E402
from support.fakes import commons_server as cs  # noqa: E402
from support.fakes import mapillary_server as ms  # noqa: E402
from support.fakes import serve  # noqa: E402

from geopak_core.io import PartStore  # noqa: E402
from geopak_data.config import load_config  # noqa: E402
from geopak_data.sources import NullProgress  # noqa: E402
from geopak_data.sources.base import discovery_rejects  # noqa: E402
from geopak_data.sources.commons import CommonsSource  # noqa: E402
from geopak_data.sources.mapillary import MapillarySource  # noqa: E402

BBOX = [70.0, 30.0, 71.0, 31.0]


def _count(parts: PartStore) -> tuple[int, int]:
    rec = parts.read_all().num_rows
    rej = discovery_rejects(parts)
    return rec, (rej.read_all().num_rows if rej.done_units() else 0)


def _timed_discover(
    app: Any, make_source: Callable[[str], Any], folder: Path
) -> tuple[Any, float, int, int]:
    """Discovery by ``make_source(base URL)`` against ``app`` served on loopback, timed:
    (source, seconds, records, rejects)."""
    with serve(app) as base:
        src = make_source(base)
        parts = PartStore(folder)
        t0 = time.perf_counter()
        src.discover(parts, progress=NullProgress())
        dt = time.perf_counter() - t0
    return (src, dt, *_count(parts))


def bench_commons(n: int, tmp: Path) -> None:
    fake = cs.CommonsFake(files=cs.make_world(n=n, hotspot_n=n // 4))
    cfg = load_config(None)
    cfg.crawl.bbox = list(BBOX)
    cfg.crawl.commons.gslimit = 500
    src, dt, rec, rej = _timed_discover(
        fake.app(), lambda base: CommonsSource(cfg, f"{base}/w/api.php"), tmp / "commons"
    )
    calls = len(fake.requests)
    print(
        f"commons: {rec} records + {rej} rejects in {dt:.2f}s; {calls} requests ({src.stats['splits']} splits)"
    )
    emit("sources", "commons discovery", (rec + rej) / dt, "records/s",
         note=f"{n} files, gslimit 500, {calls} requests ({calls / dt:.0f}/s), batches of 50 titles, "
              "loopback fake")  # fmt: skip


def bench_mapillary(sequences: int, tmp: Path) -> None:
    fake = ms.MapillaryFake(
        images=ms.make_world(sequences=sequences, hotspot=sequences // 5), cap=2000
    )
    os.environ["MAPILLARY_ACCESS_TOKEN"] = ms.TOKEN
    cfg = load_config(None)
    cfg.crawl.bbox = list(BBOX)
    cfg.crawl.mapillary.limit = 200  # pages of 200: paging.next is followed
    src, dt, rec, rej = _timed_discover(
        fake.app(), lambda base: MapillarySource(cfg, base), tmp / "mapillary"
    )
    calls = len(fake.requests)
    print(f"mapillary: {rec} records + {rej} rejects in {dt:.2f}s; {calls} requests")
    emit("sources", "mapillary discovery", (rec + rej) / dt, "records/s",
         note=f"{len(fake.images)} images in {sequences + 1} sequences, pages of 200, {calls} requests "
              f"({calls / dt:.0f}/s; most boxes empty), thinning 15 m, loopback fake")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small worlds")
    args = ap.parse_args()
    print(machine_facts(("aiohttp", "requests", "pyarrow")))
    with tempfile.TemporaryDirectory() as d:
        bench_commons(1500 if args.quick else 6000, Path(d))
        bench_mapillary(40 if args.quick else 400, Path(d))


if __name__ == "__main__":
    main()

"""Benchmark: YFCC100M metadata rows scanned per second (goal >= 1M rows/s).

Generates a ``yfcc100m_dataset``-format file with realistic field sizes (URL-encoded titles,
descriptions, tags, URLs; ~1% of rows inside Pakistan, some videos, some without
coordinates), then times

* the scan: ``scan_blocks`` (block reads, vectorised numpy byte scan (pyarrow CSV as the exact fallback), vectorised bbox/marker
  filter, kept lines split), and
* the whole discovery (scan + record mapping + Parquet parts), as the crawl runs it.

Usage: ``python bench/bench_yfcc.py [--quick] [--rows N] [--gzip] [--keep FILE]``.
"""

from __future__ import annotations

import argparse
import gzip
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geopak_core.io import PartStore  # noqa: E402
from geopak_data.config import load_config  # noqa: E402
from geopak_data.sources import NullProgress  # noqa: E402
from geopak_data.sources.yfcc import YfccSource, scan_blocks, yfcc_line  # noqa: E402

GOAL = 1_000_000  # rows/s, plain file (issue 3)
WORDS = "lahore karachi mountain river sunset mosque street market bridge lake valley fort garden temple beach road city night snow train".split()
LICENSES = [
    (
        "Attribution-NonCommercial-ShareAlike License",
        "http://creativecommons.org/licenses/by-nc-sa/2.0/",
    ),
    ("Attribution License", "http://creativecommons.org/licenses/by/2.0/"),
    ("Attribution-ShareAlike License", "http://creativecommons.org/licenses/by-sa/2.0/"),
    (
        "Attribution-NonCommercial-NoDerivs License",
        "http://creativecommons.org/licenses/by-nc-nd/2.0/",
    ),
]


def make_lines(n_unique: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n_unique):
        r = rng.random()
        if r < 0.01:
            lat, lon = rng.uniform(24.5, 36.5), rng.uniform(61.5, 77.0)  # Pakistan
        elif r < 0.5:
            lat, lon = rng.uniform(-60, 70), rng.uniform(-180, 180)
        else:
            lat = lon = None  # about half of YFCC has no coordinates
        lic = LICENSES[i % len(LICENSES)]
        pid = 10_000_000_000 + i
        row = {
            "photoid": pid,
            "hash": f"{rng.getrandbits(128):032x}",
            "uid": f"{rng.randrange(10**8)}@N0{rng.randrange(9)}",
            "unickname": " ".join(rng.choices(WORDS, k=2)),
            "datetaken": f"20{rng.randrange(4, 14):02d}-0{rng.randrange(1, 9)}-1{rng.randrange(9)} 1{rng.randrange(9)}:2{rng.randrange(9)}:33.0",
            "dateuploaded": str(1_100_000_000 + rng.randrange(10**8)),
            "capturedevice": "Canon EOS 400D DIGITAL",
            "title": " ".join(rng.choices(WORDS, k=rng.randrange(1, 6))),
            "description": " ".join(rng.choices(WORDS, k=rng.randrange(0, 25))),
            "usertags": rng.choices(WORDS, k=rng.randrange(0, 8)),
            "longitude": None if lon is None else round(lon, 6),
            "latitude": None if lat is None else round(lat, 6),
            "accuracy": None if lat is None else rng.randrange(1, 17),
            "pageurl": f"http://www.flickr.com/photos/{pid % 99999}@N00/{pid}/",
            "downloadurl": f"http://farm{rng.randrange(1, 9)}.staticflickr.com/{rng.randrange(9999)}/{pid}_{rng.getrandbits(40):010x}.jpg",
            "licensename": lic[0],
            "licenseurl": lic[1],
            "serverid": rng.randrange(9999),
            "farmid": rng.randrange(1, 9),
            "secret": f"{rng.getrandbits(40):010x}",
            "secretoriginal": f"{rng.getrandbits(40):010x}",
            "ext": "jpg",
            "marker": 1 if rng.random() < 0.03 else 0,
        }
        lines.append(yfcc_line(row, i))
    return lines


def cpu_seconds() -> float:
    """CPU time of this process, all threads (the machine may be shared: wall time alone lies)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_file(path: Path, rows: int, compress: bool) -> None:
    unique = make_lines(min(rows, 50_000))
    block = ("\n".join(unique) + "\n").encode()
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        full, rest = divmod(rows, len(unique))
        for _ in range(full):
            fh.write(block)
        if rest:
            fh.write(("\n".join(unique[:rest]) + "\n").encode())


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="500k rows (well under a minute)")
    ap.add_argument(
        "--rows", type=int, default=0, help="rows to generate (default 3M, --quick 500k)"
    )
    ap.add_argument("--gzip", action="store_true", help="also time a .gz copy")
    ap.add_argument(
        "--keep", type=Path, default=None, help="write the generated file here and keep it"
    )
    args = ap.parse_args()
    rows = args.rows or (500_000 if args.quick else 3_000_000)
    cfg = load_config()
    with tempfile.TemporaryDirectory() as td:
        paths = [args.keep or Path(td) / "yfcc100m_dataset.tsv"]
        if args.gzip:
            paths.append(Path(td) / "yfcc100m_dataset.tsv.gz")
        t0 = time.perf_counter()
        for p in paths:
            write_file(p, rows, p.suffix == ".gz")
        print(
            f"generated {rows:,} rows ({paths[0].stat().st_size / rows:.0f} bytes/row) in {time.perf_counter() - t0:.1f}s"
        )
        for _ in scan_blocks(
            paths[0], cfg.crawl.bbox, chunk_bytes=1 << 20
        ):  # warm-up: thread pools, page cache
            break
        rates: dict[str, tuple[float, float]] = {}  # "scan <file>" -> (rows/s, rows/cpu-s)
        for p in paths:
            size_mb = p.stat().st_size / 1e6
            c0, t0 = cpu_seconds(), time.perf_counter()
            scanned = kept = 0
            for block in scan_blocks(p, cfg.crawl.bbox, chunk_bytes=cfg.crawl.yfcc.chunk_bytes):
                scanned += block.rows
                kept += len(block.kept)
            dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
            rates[f"scan {p.name}"] = (scanned / dt, scanned / dc)
            print(
                f"scan     {p.name:<26} {scanned:>10,} rows {dt:6.2f}s wall {dc:6.2f}s cpu  {scanned / dt / 1e6:5.2f} M rows/s  {scanned / dc / 1e6:5.2f} M rows/cpu-s  {size_mb / dt:5.0f} MB/s  ({kept:,} kept)"
            )
            src = YfccSource(cfg, metadata=p)
            parts = PartStore(Path(td) / f"parts-{p.name}")
            c0, t0 = cpu_seconds(), time.perf_counter()
            src.discover(parts, progress=NullProgress())
            dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
            found = parts.read_all().num_rows
            rates[f"discover {p.name}"] = (scanned / dt, scanned / dc)
            print(
                f"discover {p.name:<26} {scanned:>10,} rows {dt:6.2f}s wall {dc:6.2f}s cpu  {scanned / dt / 1e6:5.2f} M rows/s  {scanned / dc / 1e6:5.2f} M rows/cpu-s  ({found:,} records)"
            )
        import os

        print(
            f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
    print(
        "goal: >= 1.00 M rows/s on the plain file (the scan is CPU-bound; .gz/.bz2 add decompression)"
    )

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter
    from _report import emit

    for name, (per_s, per_cpu_s) in rates.items():
        stage, fname = name.split(" ", 1)
        plain = fname == paths[0].name
        what = "metadata scan" if stage == "scan" else "discovery (scan + records + Parquet)"
        emit(
            "yfcc",
            f"YFCC {what} rows/s{'' if plain else ' (' + fname + ')'}",
            per_s,
            "rows/s",
            goal=GOAL if plain and stage == "scan" else None,
            note=f"{rows:,} rows; {per_cpu_s / 1e6:.2f} M rows per CPU-second",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

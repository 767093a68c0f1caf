"""Benchmark: YFCC100M discovery against duckdb and polars (goal: >= 1.3x duckdb; scan >= 1M rows/s).

Generates a ``yfcc100m_dataset``-format file with realistic field sizes (URL-encoded titles,
descriptions, tags, URLs; ~1% of rows inside Pakistan, some videos, some without
coordinates), then times, in alternated rounds (medians):

* the scan: ``scan_blocks`` (memory-mapped blocks, vectorised numpy byte scan, bbox/marker
  filter, the kept rows' fields gathered into an Arrow table), and
* the whole discovery (scan + columnar record mapping + Parquet parts, their rows counted
  from the footers), as the crawl runs it,

against what a user would write: duckdb ``read_csv`` and polars ``scan_csv`` (no quoting) +
the same bbox/marker filter, writing the kept rows' candidate columns (the 11 text fields the
records are made from, longitude/latitude as doubles, accuracy as an integer) to Parquet and
counting them back from the footer. What differs: geopak also URL-decodes the text, maps
licences and dates, composes the attribution and writes one part per 32 MB block (resumable;
the crawl stage merges them), fsynced.

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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geopak_core.io import PartStore  # noqa: E402
from geopak_data.config import load_config  # noqa: E402
from geopak_data.country import crawl_bbox  # noqa: E402
from geopak_data.sources import NullProgress  # noqa: E402
from geopak_data.sources.yfcc import YFCC_COLUMNS, YfccSource, scan_blocks, yfcc_line  # noqa: E402
from geopak_data.sources.yfccscan import TEXT_FIELDS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter
from _report import alternated, emit, machine_facts, median  # noqa: E402

GOAL = 1_000_000  # scan rows/s, plain file (issue 3); discovery: 1.3x duckdb (issue 20)
WORDS = (
    "lahore karachi mountain river sunset mosque street market bridge lake valley fort garden "
    "temple beach road city night snow train"
).split()
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
            "datetaken": (
                f"20{rng.randrange(4, 14):02d}-0{rng.randrange(1, 9)}-1{rng.randrange(9)} "
                f"1{rng.randrange(9)}:2{rng.randrange(9)}:33.0"
            ),
            "dateuploaded": str(1_100_000_000 + rng.randrange(10**8)),
            "capturedevice": "Canon EOS 400D DIGITAL",
            "title": " ".join(rng.choices(WORDS, k=rng.randrange(1, 6))),
            "description": " ".join(rng.choices(WORDS, k=rng.randrange(0, 25))),
            "usertags": rng.choices(WORDS, k=rng.randrange(0, 8)),
            "longitude": None if lon is None else round(lon, 6),
            "latitude": None if lat is None else round(lat, 6),
            "accuracy": None if lat is None else rng.randrange(1, 17),
            "pageurl": f"http://www.flickr.com/photos/{pid % 99999}@N00/{pid}/",
            "downloadurl": f"http://farm{rng.randrange(1, 9)}.staticflickr.com/{rng.randrange(9999)}/"
            f"{pid}_{rng.getrandbits(40):010x}.jpg",
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


def duckdb_discover(path: Path, out: Path, bbox: tuple[float, ...], write: bool = True) -> int:
    """What a user would write with duckdb: ``read_csv`` (every column as text, no quoting) +
    the bbox/marker filter, the kept rows' candidate columns written as one Parquet file (the
    candidate table). Returns the rows kept."""
    import duckdb

    cols = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in YFCC_COLUMNS) + "}"
    where = (
        f"marker = '0' AND TRY_CAST(longitude AS DOUBLE) BETWEEN {bbox[0]} AND {bbox[2]}"
        f" AND TRY_CAST(latitude AS DOUBLE) BETWEEN {bbox[1]} AND {bbox[3]}"
    )
    src = f"read_csv('{path}', delim='\t', header=false, quote='', escape='', columns={cols})"
    con = duckdb.connect()
    try:
        if not write:
            return int(con.execute(f"SELECT count(*) FROM {src} WHERE {where}").fetchall()[0][0])
        picked = ", ".join(TEXT_FIELDS) + (
            ", TRY_CAST(longitude AS DOUBLE) AS longitude, TRY_CAST(latitude AS DOUBLE) AS latitude"
            ", TRY_CAST(accuracy AS INTEGER) AS accuracy"
        )
        con.execute(f"COPY (SELECT {picked} FROM {src} WHERE {where}) TO '{out}' (FORMAT parquet)")
        return int(con.execute(f"SELECT count(*) FROM '{out}'").fetchall()[0][0])
    finally:
        con.close()


def polars_discover(path: Path, out: Path, bbox: tuple[float, ...], write: bool = True) -> int:
    """The same with polars: lazy ``scan_csv`` (text columns, no quoting) + filter +
    ``sink_parquet`` (or a count when ``write`` is false)."""
    import polars as pl

    lf = pl.scan_csv(
        path,
        separator="\t",
        has_header=False,
        quote_char=None,
        schema={c: pl.String for c in YFCC_COLUMNS},
    )
    lon = pl.col("longitude").cast(pl.Float64, strict=False)
    lat = pl.col("latitude").cast(pl.Float64, strict=False)
    lf = lf.filter(
        (pl.col("marker") == "0")
        & lon.is_between(bbox[0], bbox[2])
        & lat.is_between(bbox[1], bbox[3])
    )
    if not write:
        return int(lf.select(pl.len()).collect().item())
    lf.select(
        *TEXT_FIELDS,
        lon.alias("longitude"),
        lat.alias("latitude"),
        pl.col("accuracy").cast(pl.Int32, strict=False),
    ).sink_parquet(out)
    return int(pl.scan_parquet(out).select(pl.len()).collect().item())


def _timed(fn) -> tuple[float, float, Any]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, out


def _emit_figures(med: dict[str, float], rows: int, rounds: int, gz_rate: float | None) -> None:
    """The headline figures: discovery and scan against duckdb and polars, and the goal."""
    for stage, goal in (("discovery", 1.3), ("scan", None)):
        for other in ("duckdb", "polars"):
            if f"{other} {stage}" not in med:
                continue
            emit(
                "yfcc",
                f"YFCC {stage} rows/s vs {other}",
                rows / med[f"geopak {stage}"],
                "rows/s",
                vs=f"{other} read_csv + filter"
                + (" + Parquet" if stage == "discovery" else " (count)"),
                vs_value=rows / med[f"{other} {stage}"],
                goal=goal * rows / med[f"{other} {stage}"] if goal and other == "duckdb" else None,
                note=f"{rows:,} rows, medians of {rounds} alternated runs"
                + (
                    "; all write the kept rows' candidate columns, geopak mapped (decoded text,"
                    " licence, dates, attribution) in resumable parts"
                    if stage == "discovery"
                    else ""
                )
                + ("; goal ratio >= 1.3" if goal and other == "duckdb" else ""),
            )
    emit(
        "yfcc",
        "YFCC metadata scan rows/s",
        rows / med["geopak scan"],
        "rows/s",
        goal=GOAL,
        note=f"{rows:,} rows, median of {rounds}",
    )
    if gz_rate:
        emit("yfcc", "YFCC metadata scan rows/s (.gz)", gz_rate, "rows/s", note=f"{rows:,} rows")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="200k rows, 2 rounds (well under a minute)"
    )
    ap.add_argument(
        "--rows", type=int, default=0, help="rows to generate (default 1M, --quick 200k)"
    )
    ap.add_argument(
        "--rounds", type=int, default=0, help="alternated rounds (default 3, --quick 2)"
    )
    ap.add_argument("--gzip", action="store_true", help="also time the scan of a .gz copy")
    ap.add_argument(
        "--keep", type=Path, default=None, help="write the generated file here and keep it"
    )
    args = ap.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    rounds = args.rounds or (2 if args.quick else 3)
    cfg = load_config()
    bbox = tuple(crawl_bbox(cfg))
    print(machine_facts(("pyarrow", "numpy", "duckdb", "polars")))
    with tempfile.TemporaryDirectory() as td:
        tdp = Path(td)
        plain = args.keep or tdp / "yfcc100m_dataset.tsv"
        if not (args.keep and args.keep.exists()):
            t0 = time.perf_counter()
            write_file(plain, rows, False)
            print(
                f"generated {rows:,} rows ({plain.stat().st_size / rows:.0f} bytes/row) in "
                f"{time.perf_counter() - t0:.1f}s"
            )
        for _ in scan_blocks(plain, bbox, chunk_bytes=1 << 20):  # warm-up: page cache
            break
        counter = iter(range(10**9))

        def scan(path: Path = plain) -> tuple[int, int]:
            scanned = kept = 0
            for block in scan_blocks(path, bbox, chunk_bytes=cfg.crawl.yfcc.chunk_bytes):
                scanned += block.rows
                kept += len(block.kept)
            return scanned, kept

        def discover() -> int:
            """The crawl's discovery; the rows written are counted from the parts' Parquet
            footers, as duckdb's ``count(*)`` and polars' ``len()`` count theirs."""
            import pyarrow.parquet as pq

            parts = PartStore(tdp / f"parts-{next(counter)}")
            YfccSource(cfg, metadata=plain).discover(parts, progress=NullProgress())
            return sum(pq.ParquetFile(f).metadata.num_rows for f in parts.folder.glob("*.parquet"))

        runs: dict[str, Any] = {
            "geopak scan": lambda: _timed(scan),
            "geopak discovery": lambda: _timed(discover),
        }
        try:
            import duckdb  # noqa: F401

            runs["duckdb scan"] = lambda: _timed(
                lambda: duckdb_discover(plain, tdp / "d.parquet", bbox, False)
            )
            runs["duckdb discovery"] = lambda: _timed(
                lambda: duckdb_discover(plain, tdp / "d.parquet", bbox)
            )
        except ImportError:
            print("duckdb not installed (bench-only: pip install duckdb): no duckdb rows")
        try:
            import polars  # noqa: F401

            runs["polars scan"] = lambda: _timed(
                lambda: polars_discover(plain, tdp / "p.parquet", bbox, False)
            )
            runs["polars discovery"] = lambda: _timed(
                lambda: polars_discover(plain, tdp / "p.parquet", bbox)
            )
        except ImportError:
            print("polars not installed (bench-only: pip install polars): no polars rows")
        res = alternated(runs, rounds)
        med: dict[str, float] = {}
        for name, got in res.items():
            secs = [g[0] for g in got]
            med[name] = median(secs)
            kept = got[-1][2] if not isinstance(got[-1][2], tuple) else got[-1][2][1]
            print(
                f"{name:<18} {rows:>10,} rows  median {med[name]:6.2f} s of {len(secs)} "
                f"({', '.join(f'{x:.2f}' for x in secs)})"
                f"  {rows / med[name] / 1e6:5.2f} M rows/s  cpu {median([g[1] for g in got]):5.2f} s  ({kept:,} kept)"
            )
        gz_rate = None
        if args.gzip:
            gz = tdp / "yfcc100m_dataset.tsv.gz"
            write_file(gz, rows, True)
            secs = [_timed(lambda: scan(gz))[0] for _ in range(rounds)]
            gz_rate = rows / median(secs)
            print(
                f"geopak scan .gz     {rows:>10,} rows  median {median(secs):6.2f} s  {gz_rate / 1e6:5.2f} M rows/s"
            )
    print(
        "goal: discovery >= 1.3x duckdb (read + filter to the region + write the candidate table)"
    )

    _emit_figures(med, rows, rounds, gz_rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

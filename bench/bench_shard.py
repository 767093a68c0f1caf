"""Benchmark: shard writing throughput (MB/s, samples/s) next to a plain ``tarfile`` copy.

    .venv/bin/python bench/bench_shard.py            # 10,000 generated images, 5 rounds
    .venv/bin/python bench/bench_shard.py --quick    # 1,000 images, 3 rounds, under a minute

A work folder as the cluster stage leaves it is generated (unique JPEGs with a gradient and
noise, every record column, cells) and then timed:

* ``geopak shard``: the whole stage (``run_shard``): leakage groups and splits, the seeded
  shuffle and shard plan, sha256 check of every image, json, the tars (``shardfmt.write_tar``)
  into temporary files, fsync, rename, index/cells/stats tables, the card and the map (drawn
  in the cold run; the timed rounds rebuild the same dataset, so they copy it from the map
  cache, as any rebuild with unchanged points and cells does; ``--no-map-cache`` draws it
  in every round, as a first build does);
* ``TarWriter only``: the same files read and written through ``webdataset.TarWriter`` into one tar;
* ``tarfile copy`` (the ceiling): the same image files read and appended, with the same json
  bytes, by the standard library's ``tarfile`` into one tar, then fsync; nothing else.

MB/s counts the bytes that end up in the tars (images + json). The methods run in alternated
order for ``--repeat`` rounds and each is reported by its median (min..max beside it), with
the machine's facts and the ratio geopak / plain tarfile (the issue's goal: >= 0.8 at 10,000
images, >= 0.5 at 1,000).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from geopak_core.regions import PAKISTAN  # noqa: E402
from geopak_core.shardfmt import json_bytes  # noqa: E402
from geopak_data.config import load_config  # noqa: E402
from geopak_data.records import DOWNLOADED_SCHEMA, make_key  # noqa: E402
from geopak_data.shard import run_shard  # noqa: E402

CENTRES = [
    (0, 24.86, 67.01),
    (0, 25.40, 68.37),
    (1, 31.52, 74.36),
    (1, 30.20, 71.47),
    (2, 34.01, 71.58),
    (3, 33.69, 73.05),
    (4, 35.92, 74.31),
    (5, 30.18, 66.97),
    (6, 34.37, 73.47),
]


def make_work(work: Path, n: int, side: int, seed: int = 0) -> int:
    """Generate ``n`` images and the cluster-stage tables; returns the image bytes written."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    noise = [
        rng.normal(0, 18, size=(side, side, 3)).astype(np.float32) for _ in range(8)
    ]  # rolled per image
    rows = []
    total = 0
    for i in range(n):
        cell = int(rng.integers(0, len(CENTRES)))
        pid, clat, clon = CENTRES[cell]
        colour = rng.uniform(40, 215, size=3).astype(np.float32)
        img = (
            colour[None, None, :]
            * (0.6 + 0.4 * (xx * rng.uniform() + yy * rng.uniform()))[..., None]
        )
        img += np.roll(
            noise[i % len(noise)],
            shift=(int(rng.integers(0, side)), int(rng.integers(0, side))),
            axis=(0, 1),
        )
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(
            buf, format="JPEG", quality=88
        )
        data = buf.getvalue()
        key = make_key("yfcc", str(10_000_000 + i))
        rel = f"images/yfcc/{key[-2:]}/{key}.jpg"
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
        total += len(data)
        rows.append(
            {
                "key": key,
                "source": "yfcc",
                "source_id": str(10_000_000 + i),
                "url": f"https://farm1.example/{i}.jpg",
                "lat": clat + float(rng.normal(0, 0.05)),
                "lon": clon + float(rng.normal(0, 0.05)),
                "accuracy": 16,
                "license": "CC BY 2.0",
                "license_id": "4",
                "license_url": "https://creativecommons.org/licenses/by/2.0/",
                "owner": f"owner{int(rng.integers(0, 800))}",
                "title": f"photo {i}",
                "tags": "",
                "date_taken": f"20{10 + i % 10}-{1 + i % 12:02d}-{1 + i % 28:02d} 12:00:00",
                "attribution": "",
                "restricted": False,
                "image_path": rel,
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": side,
                "height": side,
                "bytes": len(data),
                "original_width": side * 4,
                "original_height": side * 4,
                "phash": f"{int(rng.integers(0, 2**63)):016x}",
                "province": PAKISTAN.names[pid],
                "province_id": pid,
                "cell_id": cell,
            }
        )
    extra = [
        ("phash", pa.string()),
        ("province", pa.string()),
        ("province_id", pa.int8()),
        ("cell_id", pa.int32()),
    ]
    schema = pa.schema(list(DOWNLOADED_SCHEMA) + [pa.field(a, b) for a, b in extra])
    (work / "cluster").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema),
        work / "cluster" / "records.parquet",
    )
    counts = np.bincount([r["cell_id"] for r in rows], minlength=len(CENTRES))
    pq.write_table(
        pa.table(
            {
                "cell_id": pa.array(range(len(CENTRES)), pa.int32()),
                "province_id": pa.array([c[0] for c in CENTRES], pa.int8()),
                "province": [PAKISTAN.names[c[0]] for c in CENTRES],
                "center_lat": [c[1] for c in CENTRES],
                "center_lon": [c[2] for c in CENTRES],
                "radius_km": [10.0] * len(CENTRES),
                "n_samples": counts.tolist(),
                "urban": [True] * len(CENTRES),
            }
        ),
        work / "cluster" / "cells.parquet",
    )
    return total


def samples(work: Path) -> list[tuple[str, Path, bytes]]:
    """(key, image file, json bytes) per record; the image bytes are read during each timed copy."""
    recs = pq.read_table(work / "cluster" / "records.parquet").to_pylist()
    return [
        (
            r["key"],
            work / r["image_path"],
            json_bytes(
                {
                    k: r[k]
                    for k in (
                        "key",
                        "lat",
                        "lon",
                        "province",
                        "province_id",
                        "cell_id",
                        "source",
                        "source_id",
                        "url",
                        "license",
                        "owner",
                        "date_taken",
                        "width",
                        "height",
                    )
                }
            ),
        )
        for r in recs
    ]


def tarfile_copy(path: Path, data: list[tuple[str, Path, bytes]]) -> None:
    with open(path, "wb") as fh, tarfile.open(fileobj=fh, mode="w|") as tf:
        for key, img, meta in data:
            for ext, payload in (("jpg", img.read_bytes()), ("json", meta)):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
        fh.flush()
        os.fsync(fh.fileno())


def tarwriter_only(path: Path, data: list[tuple[str, Path, bytes]], wds) -> None:
    with open(path, "wb") as fh:
        w = wds.TarWriter(fh, mtime=0, encoder=False)
        for key, img, meta in data:
            w.write({"__key__": key, "jpg": img.read_bytes(), "json": meta})
        w.close()
        fh.flush()
        os.fsync(fh.fileno())


def machine_facts() -> str:
    """CPU model, cores, memory, Python and library versions: printed with every table."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load {os.getloadavg()[0]:.1f}"
    return (
        f"machine: {cpu}, {os.cpu_count()} cores{mem}{load}; Python {platform.python_version()}, "
        f"pyarrow {pa.__version__}, {platform.system()} {platform.release()}"
    )


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _tarwriter():
    try:
        import webdataset as wds
    except ImportError:
        return None
    return wds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=10_000, help="generated images (default 10,000)")
    ap.add_argument("--side", type=int, default=256, help="image side in pixels (default 256)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="alternated timed rounds; the median of each method is reported (default 5, --quick 3)",
    )
    ap.add_argument(
        "--max-shard-samples",
        type=int,
        default=2_000,
        help="shard size for the geopak run (default 2,000)",
    )
    ap.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="scratch folder (default: a temporary one, removed after)",
    )
    ap.add_argument("--quick", action="store_true", help="1,000 images, 3 rounds")
    ap.add_argument(
        "--no-map-cache",
        action="store_true",
        help="draw map.png in every round (GEOPAK_MAP_CACHE=0); by default the cold run draws "
        "it and the timed rounds, with the same points and cells, copy it from the cache",
    )
    args = ap.parse_args(argv)
    if args.no_map_cache:
        os.environ["GEOPAK_MAP_CACHE"] = "0"
    if args.quick:
        args.n, args.max_shard_samples = 1_000, 250
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    scratch = args.dir or Path(tempfile.mkdtemp(prefix="geopak-bench-shard-"))
    os.environ["GEOPAK_CACHE"] = str(scratch / "cache")  # an empty map cache: the cold run draws
    wds = _tarwriter()
    try:
        work = scratch / "w"
        t0 = time.perf_counter()
        img_bytes = make_work(work, args.n, args.side)
        gen_s = time.perf_counter() - t0
        data = samples(work)
        payload = img_bytes + sum(len(m) for _, _, m in data)
        print(machine_facts())
        print(
            f"images: {args.n:,} generated {args.side}x{args.side} JPEGs, {img_bytes / 1e6:,.1f} "
            f"MB ({img_bytes / args.n / 1e3:.1f} KB each) in {gen_s:.1f}s"
        )
        print(
            f"payload per run: {payload / 1e6:,.1f} MB (images + json); {args.repeat} alternated rounds, medians"
        )

        for _, img, _ in data:  # warm the page cache: every method then reads from memory
            img.read_bytes()
        cfg = load_config(None, {"shard.max_shard_samples": args.max_shard_samples})
        run = 0

        def geopak() -> None:
            nonlocal run
            run += 1
            shutil.rmtree(work / "shard", ignore_errors=True)
            (work / "manifest.json").unlink(missing_ok=True)
            shutil.rmtree(scratch / f"out{run - 1}", ignore_errors=True)
            run_shard(work=work, config=cfg, out=scratch / f"out{run}")

        methods = {"tarfile copy (ceiling)": lambda: tarfile_copy(scratch / "plain.tar", data)}
        if wds is not None:
            methods["webdataset TarWriter only"] = lambda: tarwriter_only(
                scratch / "wds.tar", data, wds
            )
        methods["geopak shard (whole stage)"] = geopak
        # One untimed warm-up round; geopak's first (cold) run, with its imports (matplotlib,
        # geopandas, huggingface_hub), is printed on its own: a CLI run pays it once.
        cold = {name: timed(fn) for name, fn in methods.items()}
        print(
            f"cold first run of the geopak stage (imports included): {cold['geopak shard (whole stage)']:.2f}s"
        )
        times: dict[str, list[float]] = {k: [] for k in methods}
        for r in range(args.repeat):  # alternated: the machine's load drifts, this keeps it fair
            order = list(methods) if r % 2 == 0 else list(reversed(methods))
            for name in order:
                times[name].append(timed(methods[name]))
        med = {k: float(np.median(v)) for k, v in times.items()}
        ceiling = med["tarfile copy (ceiling)"]
        stage = med["geopak shard (whole stage)"]
        n_tars = len(list((scratch / f"out{run}").glob("*/*.tar")))
        print(
            f"{'':34} {'median s':>9} {'min..max s':>13} {'MB/s':>8} {'samples/s':>10} {'vs tarfile':>10}"
        )
        for name, sec in med.items():
            lo, hi = min(times[name]), max(times[name])
            print(
                f"{name:34} {sec:9.2f} {lo:6.2f}..{hi:<6.2f} {payload / 1e6 / sec:8.1f} "
                f"{args.n / sec:10,.0f} {ceiling / sec:9.2f}x"
            )
        drawn = (
            "every round"
            if args.no_map_cache
            else "in the cold run, copied from the map cache after"
        )
        print(
            f"geopak wrote {n_tars} tars; map.png drawn {drawn}; ratio shard / plain tarfile = {ceiling / stage:.2f}x"
        )
        summary = {
            "n": args.n,
            "payload_mb": round(payload / 1e6, 1),
            "tarfile_mb_s": round(payload / 1e6 / ceiling, 1),
            "shard_mb_s": round(payload / 1e6 / stage, 1),
            "shard_samples_s": round(args.n / stage, 1),
            "ratio_vs_tarfile": round(ceiling / stage, 3),
        }
        if "webdataset TarWriter only" in med:
            summary["tarwriter_mb_s"] = round(payload / 1e6 / med["webdataset TarWriter only"], 1)
        print(json.dumps(summary))

        sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter
        from _report import emit

        note = f"{args.n:,} images {args.side}px, {payload / 1e6:,.1f} MB, median of {args.repeat}"
        note += ", map drawn every round" if args.no_map_cache else ", map from the cache"
        emit(
            "shard",
            "shard MB/s (whole stage)",
            payload / 1e6 / stage,
            "MB/s",
            vs="plain tarfile copy (ceiling)",
            vs_value=payload / 1e6 / ceiling,
            note=note,
        )
        emit(
            "shard",
            "shard samples/s (whole stage)",
            args.n / stage,
            "samples/s",
            vs="plain tarfile copy (ceiling)",
            vs_value=args.n / ceiling,
            note=note,
        )
        if "webdataset TarWriter only" in med:
            emit(
                "shard",
                "webdataset TarWriter only MB/s",
                payload / 1e6 / med["webdataset TarWriter only"],
                "MB/s",
                vs="plain tarfile copy (ceiling)",
                vs_value=payload / 1e6 / ceiling,
                note=note,
            )
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

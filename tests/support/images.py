"""Small generated images and crawl work folders for the filter tests (and a check of them).

Images are tiny (about 128 px) so the whole filter suite runs in seconds; the tests lower
``filter.min_side`` accordingly.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageFilter

from geopak_data.records import DOWNLOADED_SCHEMA, empty_record

SMALL_CFG = {"filter.min_side": 64, "filter.batch_size": 4}


def textured(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A photo-like picture: smooth colour fields, a few shapes and fine texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        base[..., c] = 128 + 70 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        r = rng.integers(5, max(6, min(w, h) // 3))
        mask = (xx - x0) ** 2 + (yy - y0) ** 2 < r * r
        base[mask] = rng.uniform(0, 255, 3)
    base += rng.normal(0, 18, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def blurred(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    return textured(seed, size).filter(ImageFilter.GaussianBlur(6))


def flat(size: tuple[int, int] = (128, 96), value: int = 120) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def add_record(
    work: Path,
    rows: dict[str, list[dict[str, Any]]],
    source: str,
    sid: str,
    data: bytes | None,
    **values: Any,
) -> str:
    """Store ``data`` as the image of a new downloaded record of ``source``; returns its key."""
    rec = empty_record(
        source=source,
        source_id=sid,
        url=f"https://example.org/{source}/{sid}.jpg",
        lat=31.52,
        lon=74.35,
        accuracy=16,
        license="CC BY 2.0",
    )
    key = rec["key"]
    rel = f"images/{source}/{key[-2:]}/{key}.jpg"
    w = h = None
    if data is not None:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except Exception:  # corrupt on purpose
            w, h = 100, 100
    rec.update(
        image_path=rel,
        sha256="",
        width=w,
        height=h,
        bytes=len(data or b""),
        original_width=w,
        original_height=h,
    )
    rec.update(values)
    rows.setdefault(source, []).append(rec)
    return key


def write_crawl(work: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    for source, recs in rows.items():
        cols = {f.name: [r.get(f.name) for r in recs] for f in DOWNLOADED_SCHEMA}
        path = work / "crawl" / source / "records.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols, schema=DOWNLOADED_SCHEMA), path)

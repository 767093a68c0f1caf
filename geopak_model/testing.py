"""A tiny, learnable shard folder in exactly the contract's format, for tests and benchmarks.

Real shards come out of ``geopak-data shard``; training code must not depend on that stage to
be tested. ``make_toy_shards`` writes the same format (through ``geopak_core.shardfmt``, the
module the shard stage writes with) and layout (``{split}/geopak-{split}-NNNNNN.tar``
with ``{key}.jpg`` + ``{key}.json``, ``cells.parquet``, ``index.parquet``, ``stats.json``)
from synthetic photos whose colour says the province and whose stripe pattern says the
cell, so a small model can beat the constant baselines after a few hundred steps.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from geopak_core.io import atomic_write_json, atomic_write_parquet
from geopak_core.regions import PAKISTAN, RegionTable
from geopak_core.shardfmt import (
    INDEX_SCHEMA,
    JSON_FIELDS,
    SPLITS,
    cells_with_counts,
    json_bytes,
    shard_name,
    stats_document,
    with_region_ids,
    write_regions,
    write_tar,
)

from . import __version__

# (province_id, [(cell lat, cell lon), ...]) around real places so distances are realistic.
TOY_LAYOUT: tuple[tuple[int, tuple[tuple[float, float], ...]], ...] = (
    (0, ((24.86, 67.01), (25.40, 68.37), (27.70, 68.86))),  # Karachi, Hyderabad, Sukkur
    (1, ((31.52, 74.36), (30.20, 71.47), (31.42, 73.08))),  # Lahore, Multan, Faisalabad
    (4, ((35.92, 74.31), (35.30, 75.63))),  # Gilgit, Skardu
    (5, ((30.18, 66.97), (26.00, 63.05))),  # Quetta, Turbat
)
# Relative sample share per province: imbalanced like the real data (Sindh-heavy).
TOY_WEIGHTS: dict[int, float] = {0: 0.4, 1: 0.25, 4: 0.2, 5: 0.15}
_PROVINCE_RGB: dict[int, tuple[int, int, int]] = {
    0: (200, 60, 50),
    1: (60, 170, 60),
    4: (70, 90, 210),
    5: (200, 180, 60),
}


def toy_cells() -> list[dict[str, Any]]:
    """One row per toy cell, ids contiguous from 0 in TOY_LAYOUT order."""
    rows = []
    for pid, centres in TOY_LAYOUT:
        for lat, lon in centres:
            rows.append(
                {
                    "cell_id": len(rows),
                    "province_id": pid,
                    "province": PAKISTAN.names[pid],
                    "center_lat": lat,
                    "center_lon": lon,
                    "radius_km": 15.0,
                    "n_samples": 0,
                    "urban": True,
                }
            )
    return rows


def toy_image(
    province_id: int,
    cell_index: int,
    dlat: float,
    dlon: float,
    rng: np.random.Generator,
    size: int = 64,
) -> Image.Image:
    """A photo whose hue encodes the province, stripes the cell, and shading the offset."""
    base = np.array(_PROVINCE_RGB[province_id], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = cell_index * math.pi / 3.0
    freq = 3.0 + 2.0 * cell_index
    stripes = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
    shade = 1.0 + 0.25 * dlat * (0.5 - yy) + 0.25 * dlon * (0.5 - xx)  # offsets in [-1, 1]
    img = base[None, None, :] * (0.75 + 0.25 * stripes[..., None]) * shade[..., None]
    img += rng.normal(0.0, 12.0, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_toy_shards(
    out: str | Path,
    *,
    n: int = 300,
    per_shard: int = 40,
    size: int = 64,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Path:
    """Write a toy shard folder with ``n`` samples and return its path.

    Deterministic for a given seed. Each sample sits within ~10 km of its cell centre, and its
    offset from the centre is visible in the image's shading.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    cells = toy_cells()
    by_province: dict[int, list[int]] = {}
    for c in cells:
        by_province.setdefault(c["province_id"], []).append(c["cell_id"])
    pids = sorted(TOY_WEIGHTS)
    probs = np.array([TOY_WEIGHTS[p] for p in pids])
    probs /= probs.sum()

    samples: list[dict[str, Any]] = []
    for i in range(n):
        pid = int(pids[rng.choice(len(pids), p=probs)])
        local = int(rng.integers(len(by_province[pid])))
        cell = cells[by_province[pid][local]]
        dlat, dlon = np.clip(rng.normal(0.0, 0.4, size=2), -1.0, 1.0)
        lat = cell["center_lat"] + 0.09 * dlat  # 0.09 deg ~ 10 km
        lon = cell["center_lon"] + 0.09 * dlon / math.cos(math.radians(cell["center_lat"]))
        key = f"toy-{i:06d}"
        u = rng.random()
        split = "train" if u < splits[0] else ("val" if u < splits[0] + splits[1] else "test")
        img = toy_image(pid, local, float(dlat), float(dlon), rng, size)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        meta = sample_meta(key, lat, lon, cell, size)
        samples.append({"split": split, "jpg": buf.getvalue(), "json": meta})

    return write_shard_folder(out, samples, cells, per_shard=per_shard)


def sample_meta(
    key: str, lat: float, lon: float, cell: dict[str, Any], size: int = 64, source: str = "toy"
) -> dict[str, Any]:
    """The ``{key}.json`` of one sample, with every field the contract requires."""
    pid = int(cell["province_id"])
    return {
        "key": key,
        "lat": float(lat),
        "lon": float(lon),
        "province": str(cell.get("province") or PAKISTAN.names[pid]),
        "province_id": pid,
        "cell_id": int(cell["cell_id"]),
        "cell_center_lat": float(cell["center_lat"]),
        "cell_center_lon": float(cell["center_lon"]),
        "source": source,
        "source_id": key,
        "url": f"https://example.invalid/{key}.jpg",
        "license": "CC0",
        "owner": "geopak-tests",
        "date_taken": "",
        "width": size,
        "height": size,
    }


def _full_meta(meta: dict[str, Any], split: str) -> dict[str, Any]:
    """``meta`` with every field of the real sample json, in the real order (extras after)."""
    full = {f: meta.get(f, "") for f in JSON_FIELDS}
    full["split"] = split
    return {**full, **{k: v for k, v in meta.items() if k not in full}}


def write_shard_folder(
    out: str | Path,
    samples: list[dict[str, Any]],
    cells: list[dict[str, Any]],
    *,
    per_shard: int = 40,
    regions: RegionTable = PAKISTAN,
) -> Path:
    """Write ``samples`` (dicts with ``split``, ``jpg`` bytes, ``json`` meta) as a shard folder
    of the country described by ``regions`` (its ``regions.parquet`` is written too).

    Everything but the dataset card comes from the same format module that ``geopak-data shard``
    writes through (``geopak_core.shardfmt``): the tar bytes, the json field order, the index
    schema, the cells table with its counts and the ``stats.json`` document (marked synthetic).
    """
    out = Path(out)
    index_rows: list[dict[str, Any]] = []
    sizes: dict[str, int] = {}
    for split in SPLITS:
        rows = [s for s in samples if s["split"] == split]
        (out / split).mkdir(parents=True, exist_ok=True)
        for shard_no in range(math.ceil(len(rows) / per_shard)):
            name = shard_name(split, shard_no)
            chunk = rows[shard_no * per_shard : (shard_no + 1) * per_shard]
            metas = [_full_meta(s["json"], split) for s in chunk]
            write_tar(
                out / name,
                [(m["key"], s["jpg"], json_bytes(m)) for s, m in zip(chunk, metas, strict=True)],
            )
            sizes[name] = (out / name).stat().st_size
            for s, m in zip(chunk, metas, strict=True):
                index_rows.append(
                    {
                        **m,
                        "shard": name,
                        "sha256": hashlib.sha256(s["jpg"]).hexdigest(),
                        "bytes": len(s["jpg"]),
                        "restricted": False,
                        "group": len(index_rows),
                    }
                )
    schema = with_region_ids(INDEX_SCHEMA, regions)
    index = pa.Table.from_pylist(
        [{f: r.get(f) for f in schema.names} for r in index_rows], schema=schema
    ).to_pandas()
    split_ids = np.array([SPLITS.index(s) for s in index["split"]], dtype=np.int64)
    cells_df = cells_with_counts(
        pd.DataFrame(cells), index["cell_id"].to_numpy(np.int64), split_ids, regions
    )
    write_regions(out, regions)
    atomic_write_parquet(
        out / "cells.parquet", pa.Table.from_pandas(cells_df, preserve_index=False)
    )
    atomic_write_parquet(
        out / "index.parquet",
        pa.Table.from_pandas(index, schema=schema, preserve_index=False),
    )
    stats = stats_document(
        index=index,
        cells=cells_df,
        shard_sizes=sizes,
        dataset="geopak-toy",
        geopak_version=__version__,
        split_rule="toy data: each sample drawn into a split at random (geopak_model.testing)",
        synthetic=True,
        regions=regions,
    )
    atomic_write_json(out / "stats.json", stats)
    return out

"""A tiny work folder as the cluster stage leaves it, for the shard/publish/stats tests.

``make_work(tmp)`` writes real JPEGs and the tables the earlier stages write (records with
every column, cells, rejects, filter report, manifest), with known bursts, an exact and a
near-duplicate, restricted Google Places photos and a rare province with few photos.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from geopak_core.regions import PAKISTAN
from geopak_data.records import DOWNLOADED_SCHEMA, make_key, reject_rows
from geopak_data.runner import Manifest

# (province_id, lat, lon, urban)
CELLS = [
    (0, 24.86, 67.01, True),  # Karachi
    (0, 25.40, 68.37, False),  # Hyderabad
    (1, 31.52, 74.36, True),  # Lahore
    (1, 30.20, 71.47, False),  # Multan
    (4, 35.92, 74.31, False),  # Gilgit
    (5, 30.18, 66.97, False),  # Quetta
]
# photos per cell (Sindh-heavy, sparse Gilgit-Baltistan / Balochistan)
PER_CELL = [22, 14, 16, 10, 5, 6]
LICENSES = [
    ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
]


def jpeg(seed: int, size: int = 24, quality: int = 80, base: np.ndarray | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    arr = base if base is not None else rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _phash(data: bytes) -> str:
    return str(imagehash.phash(Image.open(io.BytesIO(data))))


def make_work(root: Path, *, restricted: int = 2) -> Path:
    """Write the work folder under ``root`` and return it."""
    work = Path(root)
    rng = np.random.default_rng(7)
    rows = []
    photo = 0

    def add(
        cell: int,
        *,
        source: str = "yfcc",
        owner: str | None = None,
        date: str | None = None,
        dlat: float | None = None,
        dlon: float | None = None,
        data: bytes | None = None,
        is_restricted: bool = False,
    ) -> dict:
        nonlocal photo
        photo += 1
        pid, clat, clon, _ = CELLS[cell]
        sid = f"{1000 + photo}"
        key = make_key(source, sid)
        data = data if data is not None else jpeg(photo)
        rel = f"images/{source}/{key[-2:]}/{key}.jpg"
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
        lic, lic_url = LICENSES[photo % len(LICENSES)]
        row = {
            "key": key,
            "source": source,
            "source_id": sid,
            "url": f"http://127.0.0.1:1/{source}/{sid}.jpg",
            "lat": clat + (dlat if dlat is not None else float(rng.uniform(-0.05, 0.05))),
            "lon": clon + (dlon if dlon is not None else float(rng.uniform(-0.05, 0.05))),
            "accuracy": 16,
            "license": "" if is_restricted else lic,
            "license_id": "",
            "license_url": "" if is_restricted else lic_url,
            "owner": owner if owner is not None else f"owner{photo % 9}",
            "title": f"photo {photo}",
            "tags": "",
            "date_taken": date
            if date is not None
            else f"2012-{1 + photo % 12:02d}-{1 + photo % 27:02d} 10:00:00",
            "attribution": "" if photo % 2 else f"photo {photo} by owner{photo % 9}, {lic}",
            "restricted": is_restricted,
            "image_path": rel,
            "sha256": hashlib.sha256(data).hexdigest(),
            "width": 24,
            "height": 24,
            "bytes": len(data),
            "original_width": 240,
            "original_height": 240,
            "phash": _phash(data),
            "laplacian_var": 100.0,
            "entropy": 5.0,
            "indoor_prob": None,
            "province": PAKISTAN.names[pid],
            "province_id": pid,
            "border_km": 0.0,
            "cell_id": cell,
        }
        rows.append(row)
        return row

    for cell, n in enumerate(PER_CELL):
        for _ in range(n):
            add(cell, source="flickr" if photo % 3 == 0 else "yfcc")
    # A burst: one owner, one day, a walk of 150 m steps in Karachi (single linkage joins it).
    for i in range(5):
        add(0, owner="burst-owner", date=f"2014-03-02 09:1{i}:00", dlat=0.0013 * i, dlon=0.0)
    # Same owner, same day but 30 km away: not a burst with the above.
    add(1, owner="burst-owner", date="2014-03-02 17:00:00")
    # A near-duplicate pair (same picture re-encoded) in Lahore, different owners and days.
    base = np.random.default_rng(99).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    add(2, owner="dup-a", date="2011-01-01", data=jpeg(0, base=base, quality=95))
    add(2, owner="dup-b", date="2013-05-05", data=jpeg(0, base=base, quality=70))
    # An exact duplicate pair (same bytes) in Multan.
    same = jpeg(12345)
    add(3, owner="exact-a", date="2010-02-02", data=same)
    add(3, owner="exact-b", date="2015-02-02", data=same)
    for _ in range(restricted):
        add(0, source="places", owner="A Google user", date="", is_restricted=True)

    extra = [
        ("phash", pa.string()),
        ("laplacian_var", pa.float64()),
        ("entropy", pa.float64()),
        ("indoor_prob", pa.float64()),
        ("province", pa.string()),
        ("province_id", pa.int8()),
        ("border_km", pa.float64()),
        ("cell_id", pa.int32()),
    ]
    schema = pa.schema(list(DOWNLOADED_SCHEMA) + [pa.field(n, t) for n, t in extra])
    table = pa.table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)
    (work / "cluster").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, work / "cluster" / "records.parquet")

    counts = np.bincount([r["cell_id"] for r in rows], minlength=len(CELLS))
    cells = pa.table(
        {
            "cell_id": pa.array(range(len(CELLS)), pa.int32()),
            "province_id": pa.array([c[0] for c in CELLS], pa.int8()),
            "province": [PAKISTAN.names[c[0]] for c in CELLS],
            "center_lat": [c[1] for c in CELLS],
            "center_lon": [c[2] for c in CELLS],
            "radius_km": [8.0, 9.0, 7.5, 10.0, 12.0, 11.0],
            "n_samples": pa.array(counts.tolist(), pa.int64()),
            "urban": [c[3] for c in CELLS],
            "neighbours": pa.array(
                [[j for j in range(len(CELLS)) if j != i][:3] for i in range(len(CELLS))],
                pa.list_(pa.int32()),
            ),
            "crs": ["EPSG:4326"] * len(CELLS),
        }
    )
    pq.write_table(cells, work / "cluster" / "cells.parquet")

    def rej(stage_dir: str, stage: str, reasons: list[str]) -> None:
        recs = [
            {"key": f"x-{stage}-{i}", "source": "yfcc", "source_id": str(i), "url": ""}
            for i in range(len(reasons))
        ]
        (work / stage_dir).mkdir(parents=True, exist_ok=True)
        pq.write_table(
            reject_rows(recs, stage=stage, reason=reasons), work / stage_dir / "rejects.parquet"
        )

    rej("crawl/yfcc", "crawl:yfcc", ["http_404", "http_404", "not_an_image"])
    rej("filter", "filter", ["blur", "blur", "blur", "near_duplicate", "too_small"])
    rej("tag", "tag", ["outside_pakistan", "outside_pakistan"])
    rej("cluster", "cluster", ["geocell_isolated"])
    (work / "filter" / "report.json").write_text(
        json.dumps(
            {
                # the filter stage's own report shape (geopak_data.filter)
                "checks": {
                    "file": {"enabled": True, "applied": True},
                    "indoor": {
                        "enabled": True,
                        "applied": False,
                        "reason": "no CLIP or Places365 weights",
                    },
                },
                "not_applied": {"indoor": "no CLIP or Places365 weights"},
                "disabled": [],
            }
        )
    )
    m = Manifest(work)
    for name, c in (
        ("crawl:yfcc", {"records": 70}),
        ("filter", {"kept": 80}),
        ("tag", {"kept": 80}),
        ("cluster", {"cells": len(CELLS)}),
    ):
        m.update(name, status="done", counts=c, seconds=1.0)
    return work


@contextlib.contextmanager
def fake_maps(calls: list[dict] | None = None) -> Iterator[None]:
    """Stand in for ``geopak_data.maps`` (drawn by another module, slow with real polygons):
    ``plot_map`` records its arguments and writes a tiny PNG signature."""

    def plot_map(
        path, *, boundaries=None, points=None, cells=None, predictions=None, title="", regions=None
    ):
        if calls is not None:
            calls.append(
                {
                    "path": Path(path),
                    "points": 0 if points is None else len(points),
                    "cells": 0 if cells is None else len(cells),
                    "title": title,
                    "boundaries": boundaries,
                }
            )
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")
        return Path(path)

    from geopak_data import sidejob

    saved = sys.modules.get("geopak_data.maps", _MISSING)
    sys.modules["geopak_data.maps"] = types.SimpleNamespace(plot_map=plot_map)  # type: ignore[assignment]
    fork, sidejob.FORK = sidejob.FORK, False  # the calls are recorded in this process's memory
    try:
        yield
    finally:
        sidejob.FORK = fork
        if saved is _MISSING:
            sys.modules.pop("geopak_data.maps", None)
        else:
            sys.modules["geopak_data.maps"] = saved  # type: ignore[assignment]


_MISSING = object()

"""A country with 150 first-level units (more than an int8 holds: Slovenia's geoBoundaries
ADM1 has ~212) through tag -> cluster -> shard -> embed/train tiny -> predict: ids past 127
survive every artefact (stored as int16 there), the model's province head has 150 outputs.
Pakistan's folders keep int8 (tests/data/test_tag_stage.py, test_geocells.py)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import manyregions
from support.tinytrain import train_tiny_phase1
from support.workfolder import _phash, jpeg

from geopak_core.boundaries import load_boundaries
from geopak_core.regions import RegionTable
from geopak_data.cluster import run_cluster
from geopak_data.records import DOWNLOADED_SCHEMA, make_key
from geopak_data.runner import work_config
from geopak_data.shard import run_shard
from geopak_data.tag import run_tag

REPO = Path(__file__).resolve().parents[2]
N = 150
PER_REGION = 4


def _filtered_records(work: Path) -> None:
    """W/filter/records.parquet as the filter stage leaves it: PER_REGION photos in each box."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(N):
        x0, y0, x1, y1 = manyregions.box(i)
        for j in range(PER_REGION):
            sid = f"{i:03d}{j}"
            key = make_key("yfcc", sid)
            data = jpeg(i * PER_REGION + j, size=32)
            rel = f"images/yfcc/{key[-2:]}/{key}.jpg"
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(data)
            rows.append(
                {
                    "key": key,
                    "source": "yfcc",
                    "source_id": sid,
                    "url": f"http://127.0.0.1:1/yfcc/{sid}.jpg",
                    "lat": (y0 + y1) / 2 + float(rng.uniform(-0.05, 0.05)),
                    "lon": (x0 + x1) / 2 + float(rng.uniform(-0.05, 0.05)),
                    "accuracy": 16,
                    "license": "CC BY 2.0",
                    "license_url": "https://creativecommons.org/licenses/by/2.0/",
                    "owner": f"owner{len(rows) % 37}",
                    "title": f"photo {sid}",
                    "date_taken": f"2012-{1 + j % 12:02d}-{1 + i % 27:02d} 10:00:00",
                    "restricted": False,
                    "image_path": rel,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "width": 32,
                    "height": 32,
                    "bytes": len(data),
                    "phash": _phash(data),
                    "laplacian_var": 100.0,
                    "entropy": 5.0,
                    "indoor_prob": None,
                }
            )
    extra = [
        ("phash", pa.string()),
        ("laplacian_var", pa.float64()),
        ("entropy", pa.float64()),
        ("indoor_prob", pa.float64()),
    ]
    schema = pa.schema(list(DOWNLOADED_SCHEMA) + [pa.field(n, t) for n, t in extra])
    table = pa.table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)
    (work / "filter").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, work / "filter" / "records.parquet")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("xmr")
    boundaries = manyregions.write_grid_country(root / "xmr-adm1.geojson", N)
    work = root / "w"
    _filtered_records(work)
    cfg = work_config(
        work,
        REPO / "pipelines" / "demo.toml",
        overrides={"region.country": manyregions.COUNTRY, "region.boundaries": str(boundaries)},
    )
    tag = run_tag(work=work, config=cfg)
    run_cluster(work=work, config=cfg)
    run_shard(work=work, config=cfg, out=work / "shards")
    return {"work": work, "shards": work / "shards", "tag": tag, "boundaries": boundaries}


def test_150_regions_in_every_artefact(run):
    work, shards = run["work"], run["shards"]
    polys = load_boundaries(run["boundaries"], country=manyregions.COUNTRY)
    assert polys["province_id"].tolist() == list(range(N))
    assert polys["province"].tolist() == [manyregions.name(i) for i in range(N)]
    assert run["tag"].counts["tagged"] == N * PER_REGION
    tagged = pq.read_table(work / "tag" / "records.parquet")
    assert tagged.schema.field("province_id").type == pa.int16()
    assert sorted(set(tagged.column("province_id").to_pylist())) == list(range(N))
    for folder in (work / "tag", work / "cluster", shards):
        t = RegionTable.read(folder / "regions.parquet")
        assert t.n == N and t.codes[140] == manyregions.code(140), folder
    for path in (work / "cluster" / "cells.parquet", shards / "cells.parquet"):
        cells = pq.read_table(path)
        assert cells.schema.field("province_id").type == pa.int16(), path
        assert sorted(set(cells.column("province_id").to_pylist())) == list(range(N)), path
    index = pq.read_table(shards / "index.parquet").to_pandas()
    assert index["province_id"].dtype == np.int16
    assert set(index["province_id"]) == set(range(N))
    assert all(
        manyregions.name(p) == n
        for p, n in zip(index["province_id"], index["province"], strict=True)
    )
    high = 0
    for tar in sorted(shards.glob("*/*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                if m.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(m).read())
                    assert meta["province"] == manyregions.name(meta["province_id"])
                    high += meta["province_id"] > 127
    assert high >= (N - 128) * PER_REGION  # ids past int8 reach the samples intact
    stats = json.loads((shards / "stats.json").read_text())
    assert stats["regions"]["count"] == N and len(stats["provinces"]) == N


def test_tiny_model_heads_sized_by_the_table(run, tmp_path):
    from geopak_model.checkpoint import load_checkpoint
    from geopak_model.predictor import GeopakPredictor

    shards = run["shards"]
    best = train_tiny_phase1(shards, tmp_path, epochs=1, batch_size=64)
    model, payload = load_checkpoint(best)
    n_cells = pq.read_metadata(shards / "cells.parquet").num_rows
    assert model.province_head[-1].out_features == N
    assert len(payload["provinces"]) == N
    assert len(payload["cells"]["province_id"]) == n_cells
    assert max(payload["cells"]["province_id"]) == N - 1

    from PIL import Image

    p = GeopakPredictor(checkpoint_path=best, device="cpu")
    ans = p.predict_many([Image.new("RGB", (64, 64), (90, 120, 60))])[0]
    assert 0 <= ans["province_id"] < N
    assert ans["province"] == manyregions.name(ans["province_id"])

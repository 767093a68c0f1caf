"""The shard plan on its own: records in memory, no files read or written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from geopak_core.errors import GeopakError
from geopak_core.shardfmt import JSON_FIELDS, SPLITS
from geopak_data.config import ShardConfig
from geopak_data.removal import RemovalList
from geopak_data.shardplan import cut_split, pack, plan_shards

CELLS = pd.DataFrame(
    {
        "cell_id": [0, 1, 2],
        "province_id": [0, 1, 5],
        "province": ["Sindh", "Punjab", "Balochistan"],
        "center_lat": [24.86, 31.52, 30.18],
        "center_lon": [67.01, 74.36, 66.97],
        "radius_km": [10.0, 10.0, 40.0],
        "n_samples": [0, 0, 0],
        "urban": [True, True, False],
    }
)


def records(n: int = 300, restricted: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    cell = rng.integers(0, 3, size=n)
    rows = []
    for i in range(n):
        c = int(cell[i])
        rows.append(
            {
                "key": f"yfcc_{i:06d}",
                "source": "places" if i < restricted else "yfcc",
                "source_id": str(i),
                "url": f"https://example.invalid/{i}.jpg",
                "lat": float(CELLS.center_lat[c] + rng.normal(0, 0.01)),
                "lon": float(CELLS.center_lon[c] + rng.normal(0, 0.01)),
                "license": "CC BY 2.0",
                "license_url": "https://creativecommons.org/licenses/by/2.0/",
                "owner": f"owner{i}",  # every photo its own group
                "title": f"t{i}",
                "date_taken": f"2012-01-{1 + i % 28:02d}",
                "attribution": "",
                "restricted": i < restricted,
                "image_path": f"images/{i}.jpg",
                "sha256": f"{i:064x}",
                "bytes": 5_000 + 7 * i,
                "width": 256,
                "height": 192,
                "phash": f"{int(rng.integers(0, 2**62)):016x}",
                "province_id": int(CELLS.province_id[c]),
                "cell_id": c,
            }
        )
    return pd.DataFrame(rows)


def cfg(**kw) -> ShardConfig:
    return dataclasses.replace(ShardConfig(), **kw)


def test_plan_covers_every_record_once_with_splits_and_json() -> None:
    plan = plan_shards(records(), CELLS, cfg(max_shard_samples=40), RemovalList())
    order = plan.order
    assert sorted(order) == list(range(300))
    for name, rows in plan.shards.items():
        split = name.split("/")[0]
        assert all(plan.metas[i]["split"] == split for i in rows.tolist())
        assert rows.size <= 40 and name.startswith(f"{split}/geopak-{split}-")
    m = plan.metas[0]
    assert tuple(m) == JSON_FIELDS and m["cell_center_lat"] == pytest.approx(
        CELLS.center_lat[m["cell_id"]]
    )
    assert m["attribution"].startswith('"t0" by owner0 (yfcc), CC BY 2.0')
    again = plan_shards(records(), CELLS, cfg(max_shard_samples=40), RemovalList())
    assert again.fingerprints == plan.fingerprints  # deterministic


def test_removal_changes_only_the_shard_that_held_the_photo() -> None:
    base = plan_shards(records(), CELLS, cfg(max_shard_samples=40), RemovalList())
    victim = base.metas[base.shards["train/geopak-train-000001.tar"][3]]["key"]
    plan = plan_shards(
        records(), CELLS, cfg(max_shard_samples=40), RemovalList(frozenset({victim}))
    )
    changed = [n for n in base.fingerprints if plan.fingerprints.get(n) != base.fingerprints[n]]
    assert changed == ["train/geopak-train-000001.tar"]
    assert int(plan.removed.sum()) == 1 and len(plan.order) == 299


def test_small_splits_get_min_shards_per_split() -> None:
    plan = plan_shards(records(60), CELLS, cfg(max_shard_samples=1000), RemovalList())
    per_split = {s: [n for n in plan.shards if n.startswith(f"{s}/")] for s in SPLITS}
    sizes = {s: sum(1 for i in plan.order if plan.metas[i]["split"] == s) for s in SPLITS}
    for s in SPLITS:
        assert len(per_split[s]) == min(8, sizes[s]), (s, sizes[s])
    one = plan_shards(
        records(60), CELLS, cfg(max_shard_samples=1000, min_shards_per_split=1), RemovalList()
    )
    assert len(one.shards) == 3


def test_cut_split_keeps_pack_when_enough_shards_and_respects_limits() -> None:
    sizes = np.full(100, 3_000, dtype=np.int64)
    packed = pack(sizes, 10**9, 10)
    assert [
        c.tolist() for c in cut_split(sizes, max_bytes=10**9, max_samples=10, min_shards=8)
    ] == [c.tolist() for c in packed]
    cuts = cut_split(sizes[:20], max_bytes=10**9, max_samples=10, min_shards=8)
    assert len(cuts) == 8 and np.concatenate(cuts).tolist() == list(range(20))
    assert len(cut_split(sizes[:3], max_bytes=10**9, max_samples=10, min_shards=8)) == 3
    tight = cut_split(sizes[:20], max_bytes=20_000, max_samples=100, min_shards=2)
    assert all(c.size <= 5 for c in tight)  # the byte limit still holds inside each run


def test_restricted_excluded_and_synthetic_marked() -> None:
    plan = plan_shards(records(50, restricted=5), CELLS, cfg(synthetic=True), RemovalList())
    assert plan.excluded_restricted == 5 and len(plan.order) == 45
    assert all(m["synthetic"] is True for m in plan.metas)
    assert tuple(plan.metas[0])[: len(JSON_FIELDS)] == JSON_FIELDS
    with pytest.raises(GeopakError, match="all 5 are restricted"):
        plan_shards(records(5, restricted=5), CELLS, cfg(), RemovalList())


def test_labels_are_checked_against_the_cells() -> None:
    bad = records(10)
    bad.loc[3, "cell_id"] = 7
    with pytest.raises(GeopakError, match="cell_id not in cells.parquet"):
        plan_shards(bad, CELLS, cfg(), RemovalList())
    bad = records(10)
    bad.loc[2, "province_id"] = 6 if bad.loc[2, "province_id"] != 6 else 0
    with pytest.raises(GeopakError, match="lies in province"):
        plan_shards(bad, CELLS, cfg(), RemovalList())

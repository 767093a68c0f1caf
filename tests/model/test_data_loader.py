"""The WebDataset pipeline over a shard folder: coverage, determinism, resume skip, splits."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from geopak_core.errors import GeopakError
from geopak_model import data as D
from geopak_model.config import load_model_config
from geopak_model.encoders import PairTransform, preprocess_info

pytestmark = pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")


@pytest.fixture(scope="module")
def transforms():
    cfg = load_model_config("tiny")
    pp = (preprocess_info(cfg, "clip"), preprocess_info(cfg, "places"))
    return PairTransform(*pp, train=True), PairTransform(*pp, train=False)


def _keys(batches):
    return [k for b in batches for k in b["key"]]


def test_open_shard_folder_reads_index(toy_shards):
    folder = D.open_shard_folder(toy_shards)
    assert folder.num_cells == 10
    assert len(folder.shards("train")) >= 2
    assert folder.size("train") + folder.size("val") + folder.size("test") == 300
    assert folder.province_counts("train")[[0, 1, 4, 5]].min() > 0


def test_open_shard_folder_errors(tmp_path, toy_shards):
    with pytest.raises(GeopakError, match="shard folder not found"):
        D.open_shard_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeopakError, match="cells.parquet"):
        D.open_shard_folder(tmp_path / "empty")


def test_epoch_covers_every_sample_once_with_labels(toy_shards, transforms):
    folder = D.open_shard_folder(toy_shards)
    spec = D.LoaderSpec(batch_size=16, shuffle=True, shuffle_buffer=50, seed=3)
    batches = list(D.image_batches(folder.shards("train"), transforms[0], spec, epoch=0))
    keys = _keys(batches)
    assert sorted(keys) == sorted(folder.labels("train")["key"].tolist())
    assert len(batches) == D.epoch_batches(folder.size("train"), spec)
    b = batches[0]
    assert b["clip"].shape == (16, 3, 64, 64) and b["places"].shape == (16, 3, 64, 64)
    assert b["cell_id"].dtype == torch.long and b["lat"].dtype == torch.float32
    # labels travel with their image
    lab = folder.labels("train")
    pos = {k: i for i, k in enumerate(lab["key"])}
    for j, k in enumerate(b["key"]):
        assert int(b["cell_id"][j]) == int(lab["cell_id"][pos[k]])


def test_order_and_augmentation_are_seeded(toy_shards, transforms):
    folder = D.open_shard_folder(toy_shards)
    spec = D.LoaderSpec(batch_size=16, shuffle_buffer=50, seed=3)
    a = list(D.image_batches(folder.shards("train"), transforms[0], spec, epoch=1))
    torch.manual_seed(999)  # the global RNG must not matter
    b = list(D.image_batches(folder.shards("train"), transforms[0], spec, epoch=1))
    c = list(D.image_batches(folder.shards("train"), transforms[0], spec, epoch=2))
    assert _keys(a) == _keys(b)
    assert all(torch.equal(x["clip"], y["clip"]) for x, y in zip(a, b, strict=True))
    assert _keys(a) != _keys(c)
    # the loader leaves the global RNG alone (dropout and resume depend on it)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    list(D.image_batches(folder.shards("train"), transforms[0], spec, epoch=1))
    assert torch.equal(before, torch.get_rng_state())


def test_skip_batches_replays_the_tail_exactly(toy_shards, transforms):
    folder = D.open_shard_folder(toy_shards)
    spec = D.LoaderSpec(batch_size=16, shuffle_buffer=50, seed=7)
    full = list(D.image_batches(folder.shards("train"), transforms[0], spec, epoch=4))
    tail = list(
        D.image_batches(folder.shards("train"), transforms[0], spec, epoch=4, skip_batches=5)
    )
    assert len(tail) == len(full) - 5
    for x, y in zip(full[5:], tail, strict=True):
        assert x["key"] == y["key"]
        assert torch.equal(x["clip"], y["clip"]) and torch.equal(x["places"], y["places"])


def test_workers_see_each_sample_once(toy_shards, transforms):
    folder = D.open_shard_folder(toy_shards)
    spec = D.LoaderSpec(batch_size=16, shuffle_buffer=20, seed=1, num_workers=2)
    keys = _keys(D.image_batches(folder.shards("train"), transforms[1], spec, epoch=0))
    assert sorted(keys) == sorted(folder.labels("train")["key"].tolist())
    # with workers the resume skip is exact too
    skipped = _keys(
        D.image_batches(folder.shards("train"), transforms[1], spec, epoch=0, skip_batches=3)
    )
    assert skipped == keys[3 * 16 :]


def test_workers_give_full_batches_and_leave_the_global_rng_alone(toy_shards, transforms):
    """Each worker ends its stream with a partial batch; the epoch must still have exactly
    epoch_batches() full batches (the LR schedule's step count), and building the DataLoader
    must not draw from the global RNG (a resumed run builds one loader more)."""
    folder = D.open_shard_folder(toy_shards)
    spec = D.LoaderSpec(
        batch_size=16, shuffle=False, num_workers=2
    )  # workers get 120 and 82 samples
    torch.manual_seed(5)
    before = torch.get_rng_state()
    batches = list(D.image_batches(folder.shards("train"), transforms[1], spec))
    assert torch.equal(before, torch.get_rng_state())
    assert len(batches) == D.epoch_batches(folder.size("train"), spec)
    assert all(len(b["key"]) == 16 for b in batches[:-1])
    assert sorted(_keys(batches)) == sorted(folder.labels("train")["key"].tolist())


@pytest.mark.parametrize("per_node_shards", [True, False])
def test_ranks_get_disjoint_data(toy_shards, transforms, per_node_shards):
    folder = D.open_shard_folder(toy_shards)
    shards = folder.shards("train")
    world = 2 if per_node_shards else len(shards) + 1  # more ranks than shards: split by sample
    seen = []
    for rank in range(world):
        spec = D.LoaderSpec(batch_size=8, shuffle_buffer=10, seed=2, rank=rank, world_size=world)
        seen.append(_keys(D.image_batches(shards, transforms[1], spec, epoch=3)))
    flat = [k for s in seen for k in s]
    assert len(flat) == len(set(flat)) == folder.size("train")
    assert all(seen)


def test_balanced_sampling_lifts_rare_provinces(toy_shards):
    folder = D.open_shard_folder(toy_shards)
    counts = folder.province_counts("train")
    f = D.balance_factors(counts, power=1.0)
    assert f[counts == 0].sum() == 0
    present = counts > 0
    assert np.allclose((f * counts)[present], (f * counts)[present][0])  # equalised
    assert (f * counts).sum() == pytest.approx(counts.sum())  # epoch keeps its length
    assert 0 < D.balance_factors(counts, 0.5)[5] < f[5]
    reps = [D.repeat_count(1.4, 0, 0, f"k{i}") for i in range(2000)]
    assert set(reps) == {1, 2} and np.mean(reps) == pytest.approx(1.4, abs=0.05)
    assert D.repeat_count(1.4, 0, 0, "k1") == D.repeat_count(1.4, 0, 0, "k1")


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_image_in_a_shard_is_one_line_naming_the_sample(tmp_path, transforms, workers):
    from geopak_model.testing import sample_meta, toy_cells, write_shard_folder

    cell = toy_cells()[0]
    good = io.BytesIO()
    Image.new("RGB", (32, 32)).save(good, format="JPEG")
    samples = [
        {
            "split": "train",
            "jpg": b"not a jpeg" if i == 3 else good.getvalue(),
            "json": sample_meta(f"s{i}", 24.86, 67.01, cell),
        }
        for i in range(8)
    ]
    folder = D.open_shard_folder(
        write_shard_folder(tmp_path / "s", samples, toy_cells(), per_shard=4)
    )
    spec = D.LoaderSpec(batch_size=2, shuffle=False, num_workers=workers)
    with pytest.raises(GeopakError) as exc:
        list(D.image_batches(folder.shards("train"), transforms[1], spec))
    msg = str(exc.value)
    assert "sample 's3'" in msg and "geopak-train-000000.tar" in msg and "\n" not in msg


def test_unreadable_index_is_one_line(tmp_path, toy_shards):
    import shutil

    shards = shutil.copytree(toy_shards, tmp_path / "s")
    (shards / "index.parquet").write_text("not parquet")
    with pytest.raises(GeopakError, match="cannot read .*index.parquet") as exc:
        D.open_shard_folder(shards).size("train")
    assert "\n" not in str(exc.value)

"""Issue 15 regressions on the model side, through the real CLIs: a checkpoint from another
cell table, a corrupted or absurd checkpoint, and best.pt where a run's last.pt belongs are
refused in one line (exit 2) and change nothing."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from support.snapshot import one_line, snapshot

from geopak_model import eval_cli, train_cli
from geopak_model.cells import CellTable
from geopak_model.checkpoint import load_checkpoint, make_payload, save_checkpoint
from geopak_model.config import load_model_config
from geopak_model.model import build_model

pytestmark = pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")


@pytest.fixture(scope="module")
def ckpt(toy_shards, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(
        load_model_config("tiny"), CellTable.from_parquet(toy_shards / "cells.parquet")
    )
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "best.pt", model)


def _eval(capsys, shards, checkpoint):
    rc = eval_cli.main(
        ["--shards", str(shards), "--checkpoint", str(checkpoint), "--split", "test"]
        + ["--workers", "0", "--device", "cpu"]
    )
    return rc, capsys.readouterr()


def test_same_count_other_cell_table_is_refused(toy_shards, ckpt, tmp_path, capsys):
    other = tmp_path / "shards"
    shutil.copytree(toy_shards, other)
    cells = pq.read_table(other / "cells.parquet")
    lat = cells.column("center_lat").to_numpy().copy()
    lat[[0, 1]] = lat[[1, 0]]  # two centres swapped: the count still matches
    idx = cells.schema.get_field_index("center_lat")
    pq.write_table(cells.set_column(idx, "center_lat", [lat]), other / "cells.parquet")
    before = snapshot(other)
    rc, out = _eval(capsys, other, ckpt)
    assert rc == 2
    line = one_line(out.err)
    assert "another cell table" in line and "first difference: cell 0" in line
    assert snapshot(other) == before


def test_corrupted_checkpoint_is_refused(toy_shards, ckpt, tmp_path, capsys):
    bad = tmp_path / "flipped.pt"
    shutil.copy(ckpt, bad)
    with zipfile.ZipFile(bad) as zf:  # the largest stored tensor, at its offset in the file
        info = max(zf.infolist(), key=lambda i: i.file_size)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(bad.read_bytes())
    for i in range(start + 64, start + 64 + 2000):
        data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    rc, out = _eval(capsys, toy_shards, bad)
    assert rc == 2
    assert "checkpoint is corrupted" in one_line(out.err)
    # the original still loads and its digest matches
    load_checkpoint(ckpt)


def test_absurd_sizes_are_refused_before_allocating(ckpt, tmp_path, toy_shards, capsys):
    model, _ = load_checkpoint(ckpt)
    payload = make_payload(model)
    payload["config"]["fusion_dim"] = 10**9
    payload.pop("tensors_sha256")
    path = tmp_path / "huge.pt"
    torch.save(payload, path)
    rc, out = _eval(capsys, toy_shards, path)
    assert rc == 2
    line = one_line(out.err)
    assert "fusion_dim" in line and "1000000000" in line


def test_best_pt_in_place_of_last_pt_with_resume(toy_shards, ckpt, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "last.pt")  # a weights-only checkpoint, no training state
    before = snapshot(run)
    argv = ["--shards", str(toy_shards), "--phase", "1", "--out", str(run), "--resume"]
    rc = train_cli.main(argv + ["--preset", "tiny", "--workers", "0", "--device", "cpu"])
    assert rc == 2
    assert "no training state to resume from" in one_line(capsys.readouterr().err)
    assert snapshot(run) == before
    # and best.pt given where the flag takes no value is an argparse line, not a traceback
    with pytest.raises(SystemExit) as ei:
        train_cli.main(argv + [str(ckpt)])
    assert ei.value.code == 2
    one_line(capsys.readouterr().err)


def test_old_checkpoints_without_digests_still_load(ckpt, tmp_path):
    model, _ = load_checkpoint(ckpt)
    payload = make_payload(model)
    for k in ("tensors_sha256", "cells_sha256"):
        payload.pop(k)
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert np.array_equal(loaded.cells.center_lat, model.cells.center_lat)


def _damage(folder, how):
    """Damage the first test shard of a copied shard folder in one of the issue's ways."""
    import tarfile

    tar = sorted((folder / "test").glob("*.tar"))[0]
    data = bytearray(tar.read_bytes())
    if how == "deleted":
        tar.unlink()
    elif how == "truncated":
        tar.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "header":
        with tarfile.open(tar) as tf:
            off = tf.getmembers()[4].offset
        data[off + 100] ^= 0x41  # the mode field: the header checksum fails
        tar.write_bytes(bytes(data))
    elif how == "jpg":
        with tarfile.open(tar) as tf:
            m = next(m for m in tf.getmembers() if m.name.endswith(".jpg"))
        data[m.offset_data + 40] ^= 0xFF
        tar.write_bytes(bytes(data))
    elif how == "json":
        with tarfile.open(tar) as tf:
            m = next(m for m in tf.getmembers() if m.name.endswith(".json"))
        data[m.offset_data] = ord("#")
        tar.write_bytes(bytes(data))
    return tar


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("deleted", "missing"),
        ("truncated", "truncated"),
        ("header", "damaged member header"),
        ("json", "is not valid JSON"),
        ("jpg", "does not match its sha256"),
    ],
)
def test_eval_stops_on_a_bad_shard_unless_asked(toy_shards, ckpt, tmp_path, capsys, how, needle):
    folder = tmp_path / "shards"
    shutil.copytree(toy_shards, folder)
    tar = _damage(folder, how)
    before = snapshot(folder)
    rc, out = _eval(capsys, folder, ckpt)
    assert rc == 2
    line = one_line(out.err)
    assert tar.name in line and needle in line and "--skip-bad-shards" in line
    assert snapshot(folder) == before
    n_bad = pq.read_table(folder / "index.parquet").to_pandas()
    n_bad = int((n_bad["shard"] == f"test/{tar.name}").sum())
    total = int(
        (pq.read_table(folder / "index.parquet").column("split").to_numpy() == "test").sum()
    )
    rc = eval_cli.main(
        ["--shards", str(folder), "--checkpoint", str(ckpt), "--split", "test", "--json"]
        + ["--workers", "0", "--device", "cpu", "--skip-bad-shards"]
    )
    out = capsys.readouterr()
    assert rc == 0
    import json

    result = json.loads(out.out)
    assert result["skipped_samples"] == n_bad and result["n"] == total - n_bad
    assert f"{n_bad} samples of index.parquet" in out.err


def test_train_checks_its_shards_too(toy_shards, tmp_path, capsys):
    folder = tmp_path / "shards"
    shutil.copytree(toy_shards, folder)
    tar = sorted((folder / "train").glob("*.tar"))[1]
    tar.write_bytes(tar.read_bytes()[:-5000])
    argv = ["--shards", str(folder), "--phase", "1", "--out", str(tmp_path / "run")]
    rc = train_cli.main(argv + ["--preset", "tiny", "--workers", "0", "--device", "cpu"])
    assert rc == 2
    assert tar.name in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run" / "last.pt").exists()

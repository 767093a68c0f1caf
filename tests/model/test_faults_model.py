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

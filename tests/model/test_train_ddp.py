"""torchrun with two CPU processes (gloo): ranks split the data, stay in lockstep, rank 0 writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geopak_model.checkpoint import read_payload
from geopak_model.data import open_shard_folder

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_torchrun_two_processes(toy_shards, toy_features, tmp_path):
    run = tmp_path / "ddp"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GEOPAK_NO_PROGRESS": "1",
        "PYTHONPATH": str(REPO),
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "geopak_model.train_cli", "--shards", str(toy_shards), "--features", str(toy_features),
        "--phase", "1", "--out", str(run), "--epochs", "2", "--batch-size", "16", "--workers", "0",
        "--no-plots", "--device", "cpu", "--checkpoint-every", "0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_train = open_shard_folder(toy_shards).size("train")
    steps_per_epoch = math.ceil(math.ceil(n_train / 2) / 16)  # each rank sees half the data
    state = read_payload(run / "last.pt")["extra"]["train"]
    assert state["finished"] and state["step"] == 2 * steps_per_epoch
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # only rank 0 validates and writes
    assert "ranks" in proc.stderr and "x 2 ranks" in proc.stderr

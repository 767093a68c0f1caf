"""``bench/gpu_check --device cpu --quick``: the GPU check's own smoke test, on CPU.

The figures only mean something on a GPU; here the script must run end to end (model
factory, phase-2 step, embedding cache, inference, the loss curve on shards) and print its
one table, every row present and the loss going down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_gpu_check_quick_on_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GEOPAK_BOUNDARIES"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GEOPAK_NO_PROGRESS="1")
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check"), "--device", "cpu", "--quick",
         "--json", str(tmp_path / "rows.json")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["check"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    for check in (
        "phase-2 step, batch 8",
        "phase-2 step, batch 16",
        "embedding cache build",
        "inference, batch 1",
        "inference, batch 8",
        "peak GPU memory",
    ):
        assert check in rows, sorted(rows)
        assert check in res.stdout  # the printed table has the same rows
    assert rows["loss over 12 phase-2 steps"]["note"] == "decreasing"
    assert rows["model"]["value"] == "tiny, random init"
    assert float(rows["embedding cache build"]["value"].split()[0].replace(",", "")) > 0

"""The Ray executor: same shards (and embedding cache) as the local executor, a killed
worker changes nothing,
the per-host limit holds across workers, and every connection stays on loopback.

The whole run (image host, Ray cluster, pipeline) happens inside a network namespace that
has only loopback (``unshare -n``), so nothing can leave the machine whatever Ray binds to.
Needs root (CI is); where namespaces cannot be made the test skips and says why (README).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "support" / "ray_pipeline.py"
LOOPBACK = {
    "0100007F",
    "00000000",
    "00000000000000000000000001000000",
    "00000000000000000000000000000000",
    "0000000000000000FFFF00000100007F",
}


def _namespace_or_skip() -> None:
    pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare/ip are needed for the loopback-only namespace")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here (needs root, as in CI)")


def test_ray_executor_matches_local_and_survives_a_killed_worker(tmp_path: Path) -> None:
    _namespace_or_skip()
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "OMP_NUM_THREADS": "1",
    }
    cmd = (
        f'ip link set lo up && exec "{sys.executable}" "{SCRIPT}" "{tmp_path / "run"}" 120 '
        f'"{report}" kill'
    )
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(report.read_text())
    local, ray_run, killed = (out["runs"][k] for k in ("local", "ray", "ray-kill"))
    assert local["shards"] and any(k.endswith(".tar") for k in local["shards"])
    assert ray_run["shards"] == local["shards"]  # byte for byte, every file
    assert ray_run["records"] == local["records"]
    assert killed["shards"] == local["shards"]
    assert out["killed"], "no worker was killed: the kill test proved nothing"
    for run in (local, ray_run, killed):
        assert 1 <= run["peak_per_host"] <= 2  # download.per_host, shared by all workers
    assert out["embed"]["local"] and out["embed"]["ray"] == out["embed"]["local"]
    assert set(out["addresses"]) <= LOOPBACK, out["addresses"]

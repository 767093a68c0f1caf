"""The Ray executor: same shards (and embedding cache) as the local executor, a killed
worker changes nothing,
the per-host limit holds across workers, and every connection stays on loopback.

The whole run (image host, Ray cluster, pipeline) happens inside a network namespace that
has only loopback (``unshare -n``), so nothing can leave the machine whatever Ray binds to.
Needs root (CI is); where namespaces cannot be made the test skips and says why (README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.loopbackns import namespace_problem, run_offline

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
    why = namespace_problem()
    if why:
        pytest.skip(why)


def test_ray_executor_matches_local_and_survives_a_killed_worker(tmp_path: Path) -> None:
    _namespace_or_skip()
    report = tmp_path / "report.json"
    proc = run_offline(
        SCRIPT,
        tmp_path / "run",
        120,
        report,
        "kill",
        env={"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"},
        timeout=900,
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

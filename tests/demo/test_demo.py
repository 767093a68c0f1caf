"""`geopak-data demo`: the offline end-to-end job a new user runs first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _demo(work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GEOPAK_NO_PROGRESS="1")
    cmd = [
        sys.executable,
        "-m",
        "geopak_data.cli",
        "demo",
        "--work",
        str(work),
        "--photos",
        "360",
        "--epochs",
        "10",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)


def test_demo_end_to_end_beats_baselines_and_writes_its_report(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = _demo(work)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((work / "report" / "report.json").read_text())
    metrics = report["metrics"]
    index = pq.read_table(work / "shards" / "index.parquet")
    assert metrics["n"] == pc.sum(pc.equal(index.column("split"), "test")).as_py()
    for name, baseline in metrics["baselines"].items():
        assert metrics["median_km"] < 0.6 * baseline["median_km"], name
        assert metrics["province_acc"] > baseline["province_acc"] + 0.25, name

    # the deliberately bad records were caught by the stage that owns each fault
    rejects = {
        stage: set(pq.read_table(work / stage / "rejects.parquet").column("reason").to_pylist())
        for stage in ("crawl/yfcc", "filter", "tag")
    }
    assert {"not_an_image", "corrupt_image", "http_404"} <= rejects["crawl/yfcc"]
    assert {"too_small", "low_entropy", "exact_duplicate", "coarse_accuracy"} <= rejects["filter"]
    assert rejects["tag"] == {"outside_pakistan"}

    text = (work / "report" / "report.md").read_text()
    assert "median_km" in text and "densest_cell" in text and "crawl:yfcc" in text
    # every aggregation on the same test images, in the JSON and in the report
    assert {"mean", "best", "mode", "refine"} <= set(metrics["by_aggregate"])
    assert "median vs mean" in text and "refine" in text
    with Image.open(work / "report" / "map.png") as im:
        assert im.format == "PNG" and im.width > 400
    assert len(report["predictions"]) >= 5
    assert all(p["province"] for p in report["predictions"])

    again = _demo(work, "--no-train")
    assert again.returncode == 0
    assert again.stdout.count("skipped (done)") == 5

    # the first run printed its metrics table once and no raw JSON; stderr had no bar frames
    assert result.stdout.count("densest_cell") == 1
    assert not any(line.startswith("{") for line in result.stdout.splitlines())
    assert "\r" not in result.stderr

    # a full rerun is a no-op: no photo rendered, nothing trained or evaluated, report untouched
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (work / "report").glob("*.*")}
    full = _demo(work)
    assert full.returncode == 0, full.stderr[-2000:]
    assert "synthetic source already generated" in full.stderr
    assert "demo: already done" in full.stderr and "generating" not in full.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before
    assert full.stdout.count("densest_cell") == 1  # the stored table, shown once

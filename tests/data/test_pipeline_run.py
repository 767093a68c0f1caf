"""`geopak-data run FILE`: every stage in order, resumed after kill -9, identical results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geopak_data.demo import generate_source
from geopak_data.imageserver import start_image_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("source")
    (root / "images").mkdir()
    base, stop = start_image_server(root / "images", fixtures=False)
    meta = generate_source(root, n_photos=160, seed=3, base_url=base)
    demo = (REPO / "pipelines" / "demo.toml").read_text()
    cfg = root / "mini.toml"
    cfg.write_text(
        demo.replace('name = "demo"', 'name = "mini"')
        + f"\n[crawl.yfcc]\nmetadata = {str(meta)!r}\n"
    )
    yield cfg
    stop()


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, GEOPAK_NO_PROGRESS="1")
    return subprocess.run(
        [sys.executable, "-m", "geopak_data.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kw,
    )


def _index(work: Path):
    return pq.read_table(work / "shards" / "index.parquet").sort_by("key")


def test_run_all_stages_then_nothing_to_do(pipeline_file: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    first = _cli("run", str(pipeline_file), "--work", str(work))
    assert first.returncode == 0, first.stderr[-2000:]
    for stage in ("crawl:yfcc", "filter", "tag", "cluster", "shard"):
        assert stage in first.stdout
    index = _index(work)
    assert index.num_rows > 100
    assert set(index.column("split").to_pylist()) == {"train", "val", "test"}
    assert (work / "shards" / "README.md").exists() and (work / "shards" / "cells.parquet").exists()

    again = _cli("run", str(pipeline_file), "--work", str(work))
    assert again.returncode == 0
    assert again.stdout.count("skipped (done)") == 5
    assert "nothing to do" in again.stderr


@pytest.mark.parametrize("kill_after_s", [1.5, 4.0])
def test_run_killed_at_any_point_resumes_to_the_same_dataset(
    pipeline_file: Path, tmp_path: Path, kill_after_s: float
) -> None:
    ref = tmp_path / "ref"
    assert _cli("run", str(pipeline_file), "--work", str(ref)).returncode == 0

    work = tmp_path / "killed"
    env = dict(os.environ, GEOPAK_NO_PROGRESS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "geopak_data.cli", "run", str(pipeline_file), "--work", str(work)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(kill_after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _cli("run", str(pipeline_file), "--work", str(work))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _index(work).drop_columns(["shard"]).equals(_index(ref).drop_columns(["shard"]))
    assert _index(work).column("shard").to_pylist() == _index(ref).column("shard").to_pylist()
    for tar in sorted((ref / "shards").rglob("*.tar")):
        assert (work / "shards" / tar.relative_to(ref / "shards")).read_bytes() == tar.read_bytes()


def test_run_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[filter]\nmin_side = -1\n")
    result = _cli("run", str(bad), "--work", str(tmp_path / "w"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "filter.min_side" in result.stderr and "Traceback" not in result.stderr

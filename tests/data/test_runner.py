"""The stage runner: skip when done, re-run on change, exact resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore, atomic_write_bytes
from geopak_data.config import load_config
from geopak_data.runner import Manifest, StageResult, run_stage, work_config

TOY = Path(__file__).resolve().parents[1] / "support" / "toy_stage.py"


def _run_toy(work: Path, n: int, delay: float = 0.0, mult: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(TOY.parent.parent))
    return subprocess.run(
        [sys.executable, str(TOY), str(work), str(n), str(delay), str(mult)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _parts(work: Path) -> list[Path]:
    return sorted((work / "toy" / ".parts").glob("units-*/*.parquet"))


@pytest.mark.parametrize("kill_after_parts", [1, 4, 9])
def test_kill_9_then_resume_equals_uninterrupted(tmp_path: Path, kill_after_parts: int) -> None:
    ref = tmp_path / "ref"
    assert _run_toy(ref, 12).returncode == 0
    expected = pq.read_table(ref / "toy" / "records.parquet")

    work = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(TOY.parent.parent))
    proc = subprocess.Popen(
        [sys.executable, str(TOY), str(work), "12", "0.15"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while (
        len(_parts(work)) < kill_after_parts and time.monotonic() < deadline and proc.poll() is None
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(_parts(work))
    assert kill_after_parts <= n_before < 12
    assert Manifest(work).entry("toy")["status"] == "running"

    result = _run_toy(work, 12)
    assert result.returncode == 0, result.stderr
    assert "resuming where it stopped" in result.stderr
    got = pq.read_table(work / "toy" / "records.parquet")
    assert got.equals(expected)
    assert got.num_rows == 120 and len(set(got.column("value").to_pylist())) == 120


def test_finished_stage_does_no_work_and_says_so(tmp_path: Path) -> None:
    assert _run_toy(tmp_path, 3).returncode == 0
    mtime = (tmp_path / "toy" / "records.parquet").stat().st_mtime_ns
    again = _run_toy(tmp_path, 3)
    assert again.returncode == 0
    assert "nothing to do" in again.stderr + again.stdout
    assert (tmp_path / "toy" / "records.parquet").stat().st_mtime_ns == mtime


def test_config_change_is_reported_and_redone(tmp_path: Path) -> None:
    assert _run_toy(tmp_path, 3, mult=1).returncode == 0
    changed = _run_toy(tmp_path, 3, mult=2)
    assert changed.returncode == 0
    assert "shard.seed: 1 -> 2" in changed.stderr
    values = pq.read_table(tmp_path / "toy" / "records.parquet").column("value").to_pylist()
    assert values == [2 * v for v in range(30)]
    # parts made under the old config are gone, not mixed in
    assert len(list((tmp_path / "toy" / ".parts").iterdir())) == 1


def test_input_change_and_deleted_output_trigger_rerun(tmp_path: Path) -> None:
    cfg = load_config(None)
    src = tmp_path / "input.txt"
    src.write_text("a")
    calls: list[int] = []

    def do(ctx):
        calls.append(1)
        out = ctx.stage_dir / "out.txt"
        atomic_write_bytes(out, src.read_bytes() * 2)
        return StageResult(counts={"n": 1}, outputs=[out])

    kw = dict(
        work=tmp_path / "w", name="s", config=cfg, sections=["tag"], inputs={"src": src}, fn=do
    )
    assert not run_stage(**kw).skipped
    assert run_stage(**kw).skipped
    src.write_text("b")
    outcome = run_stage(**kw)
    assert not outcome.skipped and "input src changed" in outcome.changes
    (tmp_path / "w" / "s" / "out.txt").unlink()
    outcome = run_stage(**kw)
    assert not outcome.skipped and "outputs were modified or removed" in outcome.changes
    assert len(calls) == 3


def test_missing_input_is_a_user_error(tmp_path: Path) -> None:
    cfg = load_config(None)
    with pytest.raises(GeopakError, match="missing input upstream"):
        run_stage(
            work=tmp_path,
            name="s",
            config=cfg,
            sections=["tag"],
            inputs={"upstream": tmp_path / "nope.parquet"},
            fn=lambda ctx: StageResult(),
        )


def test_manifest_records_counts_timings_and_config(tmp_path: Path) -> None:
    assert _run_toy(tmp_path, 2).returncode == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["stages"]["toy"]
    assert entry["status"] == "done"
    assert entry["counts"] == {"records": 20}
    assert entry["seconds"] >= 0 and entry["finished"] >= entry["started"]
    assert entry["config"]["shard"]["seed"] == 1 and len(entry["config_hash"]) == 16


def test_part_store_ignores_torn_temp_files(tmp_path: Path) -> None:
    store = PartStore(tmp_path / "p")
    store.write("a", pa.table({"x": [1]}))
    (tmp_path / "p" / ".b.parquet.abc.tmp").write_bytes(b"torn")
    store2 = PartStore(tmp_path / "p")
    assert store2.done_units() == {"a"}
    assert not (tmp_path / "p" / ".b.parquet.abc.tmp").exists()


def test_work_config_remembers_the_config(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text('name = "x"\n[filter]\nmin_side = 128\n')
    cfg = work_config(tmp_path / "w", toml)
    assert cfg.filter.min_side == 128
    again = work_config(tmp_path / "w")
    assert again.filter.min_side == 128 and again.name == "x"


def test_failed_stage_is_recorded_and_rerun(tmp_path: Path) -> None:
    cfg = load_config(None)
    attempts: list[int] = []

    def flaky(ctx):
        attempts.append(1)
        if len(attempts) == 1:
            raise GeopakError("source answered 503")
        out = ctx.stage_dir / "out.txt"
        atomic_write_bytes(out, b"ok")
        return StageResult(counts={"n": 1}, outputs=[out])

    kw = dict(work=tmp_path, name="s", config=cfg, sections=["tag"], inputs={}, fn=flaky)
    with pytest.raises(GeopakError):
        run_stage(**kw)
    entry = Manifest(tmp_path).entry("s")
    assert entry["status"] == "failed" and "503" in entry["error"]
    assert not run_stage(**kw).skipped
    entry = Manifest(tmp_path).entry("s")
    assert entry["status"] == "done" and entry["error"] is None


def test_atomic_writes_get_normal_file_permissions(tmp_path: Path) -> None:
    # mkstemp makes 0600 files; published shards and tables must be readable like any new file.
    old = os.umask(0o022)
    os.umask(old)
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~old

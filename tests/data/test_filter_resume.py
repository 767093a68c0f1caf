"""kill -9 during the filter's measuring phase, run again: exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.images import add_record, blurred, jpeg, textured, write_crawl

REPO = Path(__file__).resolve().parents[2]

# Runs the real CLI in a child process that SIGKILLs itself at a chosen point of the Nth
# part write: "after" the part is committed, or "during" (temp file written, not yet renamed).
KILLER = r"""
import os, signal, sys
import pyarrow.parquet as pq
from geopak_core import io as gio

work, nth, mode, cfg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
state = {"writes": 0}
orig_write, orig_pq = gio.PartStore.write, pq.write_table

def write(self, unit, table):
    state["writes"] += 1
    if state["writes"] == nth and mode == "during":
        def torn(t, where, **kw):
            orig_pq(t, where, **kw)
            os.kill(os.getpid(), signal.SIGKILL)
        gio.pq.write_table = torn
    orig_write(self, unit, table)
    if state["writes"] == nth:
        os.kill(os.getpid(), signal.SIGKILL)

gio.PartStore.write = write
from geopak_data.cli import main
sys.exit(main(["filter", "--work", work, "--config", cfg]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, GEOPAK_NO_PROGRESS="1", PYTHONPATH=str(REPO))
    env.pop("PYTHONHASHSEED", None)
    return env


def _argv(work: Path, cfg: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "geopak_data.cli",
        "filter",
        "--work",
        str(work),
        "--config",
        str(cfg),
    ]


def _cli(work: Path, cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        _argv(work, cfg),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A crawl of 22 images (6 units of 4) with a few rejects and duplicates among them."""
    root = tmp_path_factory.mktemp("resume")
    work = root / "template"
    rows: dict = {}
    for i in range(16):
        add_record(work, rows, "flickr", f"p{i:02d}", jpeg(textured(300 + i)))
    add_record(work, rows, "flickr", "soft", jpeg(blurred(330)))
    add_record(work, rows, "flickr", "bad", b"garbage")
    same = jpeg(textured(331))
    add_record(work, rows, "flickr", "d1", same)
    add_record(work, rows, "yfcc", "d1", same)
    add_record(work, rows, "yfcc", "n1", jpeg(textured(300), 75))
    add_record(work, rows, "yfcc", "zero", jpeg(textured(332)), lat=0.0, lon=0.0)
    write_crawl(work, rows)
    cfg = root / "p.toml"
    cfg.write_text("[filter]\nmin_side = 64\nbatch_size = 4\n")
    ref = root / "reference"
    shutil.copytree(work, ref)
    done = _cli(ref, cfg)
    assert done.returncode == 0, done.stderr
    return work, cfg, ref


def _outputs(work: Path):
    return [pq.read_table(work / "filter" / n) for n in ("records.parquet", "rejects.parquet")] + [
        json.loads((work / "filter" / "report.json").read_text())
    ]


@pytest.mark.parametrize("nth,mode", [(2, "after"), (3, "during")])
def test_kill_9_then_rerun_equals_uninterrupted(template, tmp_path, nth, mode):
    src, cfg, ref = template
    work = tmp_path / "W"
    shutil.copytree(src, work)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(work), str(nth), mode, str(cfg)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    parts = next((work / "filter" / ".parts").glob("measure-*"))
    committed = sorted(p.name for p in parts.glob("*.parquet"))
    assert len(committed) == (nth if mode == "after" else nth - 1)
    assert not (work / "filter" / "records.parquet").exists()
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["stages"]["filter"]["status"] == "running"

    rerun = _cli(work, cfg)
    assert rerun.returncode == 0, rerun.stderr
    assert (
        "resuming" in rerun.stderr
        and f"{len(committed)} of 6 units already measured" in rerun.stderr
    )
    got, want = _outputs(work), _outputs(ref)
    assert got[0].equals(want[0]) and got[1].equals(want[1])
    assert got[2] == want[2]
    assert got[1].num_rows >= 4  # the run really had rejects to get right
    assert not list(parts.glob(".*.tmp"))  # a torn temp part was cleaned up


def test_kill_at_a_random_moment(template, tmp_path):
    src, cfg, ref = template
    work = tmp_path / "W"
    shutil.copytree(src, work)
    proc = subprocess.Popen(
        _argv(work, cfg),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parts_root = work / "filter" / ".parts"
    while proc.poll() is None and not list(parts_root.glob("measure-*/*.parquet")):
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    rerun = _cli(work, cfg)
    assert rerun.returncode == 0, rerun.stderr
    got, want = _outputs(work), _outputs(ref)
    assert got[0].equals(want[0]) and got[1].equals(want[1]) and got[2] == want[2]

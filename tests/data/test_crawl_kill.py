"""kill -9 during a crawl, run again: the same final set as an uninterrupted run.

A real ``python -m geopak_data.cli crawl yfcc`` subprocess downloads from a loopback image
host started here; it is SIGKILLed once it has committed k download batches (and once
mid-way through another run), then run to completion. Records, rejects, candidates and the
image files must equal those of an uninterrupted crawl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geopak_data.sources.yfcc import write_yfcc_tsv

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N = 18


def _cmd(work: Path, meta: Path, conf: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "geopak_data.cli",
        "crawl",
        "yfcc",
        "--work",
        str(work),
        "--metadata",
        str(meta),
        "--config",
        str(conf),
        "--allow-private-hosts",
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["GEOPAK_NO_PROGRESS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _parts(work: Path) -> int:
    return sum(1 for _ in (work / "crawl/yfcc/.parts").glob("download-*/*.parquet"))


def _run_and_kill_after(work: Path, meta: Path, conf: Path, k: int, timeout: float = 120) -> bool:
    """Start the crawl; SIGKILL it once k download parts exist. True if it was killed."""
    proc = subprocess.Popen(
        _cmd(work, meta, conf),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (work / "crawl/yfcc/.parts").exists() and _parts(work) >= k:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return True
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return False


def _snapshot(work: Path) -> dict:
    images = {
        p.relative_to(work).as_posix(): p.read_bytes()
        for p in sorted((work / "images").rglob("*"))
        if p.is_file()
    }
    return {
        "candidates": pq.read_table(work / "crawl/yfcc/candidates.parquet"),
        "records": pq.read_table(work / "crawl/yfcc/records.parquet"),
        "rejects": pq.read_table(work / "crawl/yfcc/rejects.parquet"),
        "images": images,
    }


def test_kill9_then_rerun_equals_uninterrupted(tmp_path, server):
    kinds = ["photo.jpg", "rotated.jpg", "gray.jpg", "cmyk.jpg", "photo.png", "palette.png"]
    rows = []
    for i in range(N):
        path = f"/fault/404?k={i}" if i % 7 == 3 else f"/i/{kinds[i % len(kinds)]}?k={i}&delay=0.2"
        rows.append(
            dict(
                photoid=5000 + i,
                longitude=71.0 + i * 0.05,
                latitude=31.0,
                downloadurl=server + path,
                title=f"p{i}",
                licensename="Attribution License",
            )
        )
    meta = write_yfcc_tsv(tmp_path / "meta.tsv", rows)
    conf = tmp_path / "p.toml"
    conf.write_text(
        "[retry]\nretries = 0\n[download]\nbatch_size = 2\nconcurrency = 2\nper_host = 2\nworkers = 1\nmax_side = 128\n"
    )

    ref = tmp_path / "ref"
    subprocess.run(
        _cmd(ref, meta, conf), cwd=REPO, env=_env(), check=True, capture_output=True, timeout=300
    )

    work = tmp_path / "w"
    killed = [_run_and_kill_after(work, meta, conf, k) for k in (1, 4)]
    assert any(killed), "the crawl finished before it could be killed"
    assert not (work / "crawl/yfcc/records.parquet").exists()  # killed before the merge
    done = subprocess.run(
        _cmd(work, meta, conf), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr or not killed[-1]

    a, b = _snapshot(ref), _snapshot(work)
    assert a["candidates"].equals(b["candidates"])
    assert a["records"].equals(b["records"])
    assert a["rejects"].equals(b["rejects"])
    assert a["images"] == b["images"]
    assert b["records"].num_rows + b["rejects"].num_rows == N
    assert not list(work.rglob("*.tmp"))

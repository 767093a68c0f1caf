"""kill -9 in the middle of `geopak-data shard`, run again: finished tars are kept as they are
and the folder ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from support.workfolder import make_work

from geopak_data.config import load_config
from geopak_data.shard import run_shard

REPO = Path(__file__).resolve().parents[2]

# The real CLI, with every sample write slowed down so the kill lands inside the run (and
# usually inside a tar), never after it.
SLOW_CLI = textwrap.dedent(
    """
    import sys, time
    from geopak_core import shardfmt
    _header = shardfmt.member_header
    def slow(name, size):
        time.sleep(0.025)  # two members per sample
        return _header(name, size)
    shardfmt.member_header = slow
    from geopak_data.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _ids(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.glob("*/*.tar"))
    }


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    cfg_file = tmp_path / "p.toml"
    cfg_file.write_text("[shard]\nmax_shard_samples = 8\n")

    ref_work = make_work(tmp_path / "ref")
    run_shard(work=ref_work, config=load_config(cfg_file), out=tmp_path / "ref_out")
    reference = _digest(tmp_path / "ref_out")
    n_tars = sum(1 for k in reference if k.endswith(".tar"))
    assert n_tars >= 8

    work = make_work(tmp_path / "w")
    out = tmp_path / "out"
    env = {**os.environ, "GEOPAK_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_CLI,
            "shard",
            "--work",
            str(work),
            "--out",
            str(out),
            "--config",
            str(cfg_file),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while len(list(out.glob("*/*.tar"))) < 3:
            assert proc.poll() is None, (
                f"shard ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            )
            assert time.monotonic() < deadline, "shard did not start writing in time"
            time.sleep(0.02)
        time.sleep(0.1)  # into the next tar
        proc.kill()  # SIGKILL
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9
    done_before = _ids(out)
    assert 3 <= len(done_before) < n_tars
    manifest = (work / "manifest.json").read_text()
    assert '"running"' in manifest  # the stage really was interrupted

    outcome = run_shard(work=work, config=load_config(cfg_file), out=out)
    assert outcome.counts["written"] == n_tars - len(done_before)
    after = _ids(out)
    for name, ident in done_before.items():
        assert after[name] == ident, f"{name} was rewritten"
    assert _digest(out) == reference
    assert not [p for p in out.rglob(".*.tmp")]

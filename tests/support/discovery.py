"""Helpers for the tiled-discovery source tests (Commons, Mapillary): one pipeline TOML for
a crawl of a 1 x 1 degree box against a loopback fake, and the kill -9 resume check.

Why shared: both sources are crawled the same way (quick retries, small downloads, one
worker), and "kill -9 mid-discovery, run again, same tables as an uninterrupted crawl" is one
property; each test file still names its own source settings and kill points.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

_CONF = """
[crawl]
bbox = [70.0, 30.0, 71.0, 31.0]
[retry]
backoff_s = 0.01
max_backoff_s = 0.05
[crawl.{source}]
{settings}
{extra}
[download]
max_side = 128
concurrency = 4
workers = 1
"""


def write_crawl_conf(tmp: Path, source: str, settings: str, extra: str = "") -> Path:
    """``tmp/p.toml``: ``[crawl.<source>]`` holds ``settings`` then ``extra`` (a test's own
    lines), around the shared box, retry and download settings."""
    p = tmp / "p.toml"
    p.write_text(_CONF.format(source=source, settings=settings, extra=extra))
    return p


def kill_mid_discovery_and_resume(
    cmd: Callable[[Path], list[str]],
    env: dict[str, str],
    tmp: Path,
    source: str,
    kill_at: tuple[int, ...],
) -> tuple[Path, Path]:
    """An uninterrupted crawl into ``tmp/ref``; a crawl into ``tmp/w`` SIGKILLed once it has
    committed ``k`` discovery parts (for each ``k`` in ``kill_at``), then run to the end.
    Asserts it was killed at least once and finished; returns (ref, work)."""
    ref = tmp / "ref"
    subprocess.run(cmd(ref), env=env, check=True, capture_output=True, timeout=300)
    work = tmp / "w"
    parts = work / f"crawl/{source}/.parts"
    killed = 0
    for k in kill_at:
        proc = subprocess.Popen(
            cmd(work), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if sum(1 for _ in parts.glob("discover-*/*.parquet")) >= k:
                proc.send_signal(signal.SIGKILL)
                killed += 1
                break
            time.sleep(0.005)
        proc.wait(30)
    assert killed, "the crawl finished before it could be killed"
    done = subprocess.run(cmd(work), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return ref, work


def assert_same_crawl(ref: Path, work: Path, source: str) -> None:
    """Candidates, records and rejects equal to the reference crawl's; no temporary left."""
    for name in ("candidates", "records", "rejects"):
        a = pq.read_table(ref / f"crawl/{source}/{name}.parquet")
        b = pq.read_table(work / f"crawl/{source}/{name}.parquet")
        assert a.equals(b), name
    assert not list(work.rglob("*.tmp"))

"""The side job (the shard stage's map drawn in a forked child): its value travels as the exit
status, every unusual outcome falls back to running the function in the parent, and the child
never outlives a parent killed with kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from geopak_data import sidejob
from geopak_data.sidejob import SideJob

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, text: str, value: str | None = "done") -> str | None:
    path.write_text(f"{text} {os.getpid()}")
    return value


def test_child_does_the_work_and_reports_its_value(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    with SideJob(_write, out, "hello", values=("done", None)) as job:
        assert job.result() == "done"
    text, pid = out.read_text().split()
    assert text == "hello" and int(pid) != os.getpid()  # written by the child
    none = SideJob(_write, tmp_path / "b.txt", "x", None, values=("done", None))
    assert none.result() is None and none.result() is None  # asked twice: the same answer


def _fails(path: Path) -> str:
    path.write_text(str(os.getpid()))
    raise ValueError("no map for you")


def test_a_failing_child_makes_the_parent_run_it_and_raise_the_real_error(tmp_path: Path) -> None:
    job = SideJob(_fails, tmp_path / "f.txt", values=("done",))
    with pytest.raises(ValueError, match="no map for you"):
        job.result()
    assert int((tmp_path / "f.txt").read_text()) == os.getpid()  # the parent ran it again


def _dies_in_child(parent: int, path: Path) -> str:
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    path.write_text("parent")
    return "done"


def test_a_killed_child_or_an_unknown_value_falls_back_to_the_parent(tmp_path: Path) -> None:
    job = SideJob(_dies_in_child, os.getpid(), tmp_path / "k.txt", values=("done",))
    assert job.result() == "done" and (tmp_path / "k.txt").read_text() == "parent"
    other = SideJob(_write, tmp_path / "u.txt", "u", "unexpected", values=("done",))
    assert other.result() == "unexpected"
    assert int((tmp_path / "u.txt").read_text().split()[1]) == os.getpid()


def test_without_fork_it_runs_in_the_parent_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidejob, "FORK", False)
    job = SideJob(_write, tmp_path / "p.txt", "p", values=("done",))
    assert not (tmp_path / "p.txt").exists()  # nothing ran yet
    assert job.result() == "done"
    assert int((tmp_path / "p.txt").read_text().split()[1]) == os.getpid()


def test_warm_runs_in_the_parent_while_the_child_works_from_the_second_job_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warmed: list[int] = []
    monkeypatch.setattr(sidejob, "_STARTED", [0])
    first = SideJob(time.sleep, 0.5, values=(None,), warm=lambda: warmed.append(os.getpid()))
    assert first.result() is None and warmed == []  # a one-shot command never warms
    slow = SideJob(time.sleep, 0.5, values=(None,), warm=lambda: warmed.append(os.getpid()))
    assert slow.result() is None and warmed == [os.getpid()]
    fast = SideJob(int, values=(0,), warm=lambda: warmed.append(-1))
    time.sleep(0.3)  # the child is done before the parent asks
    assert fast.result() == 0 and warmed == [os.getpid()]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from geopak_data.sidejob import SideJob

        def linger(path):
            Path(path).write_text(str(os.getpid()))
            time.sleep(60)

        job = SideJob(linger, {str(pid_file)!r})
        while not Path({str(pid_file)!r}).exists():
            time.sleep(0.01)
        os.kill(os.getpid(), 9)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=60)
    assert proc.returncode == -9
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:  # gone, or a zombie waiting for init to reap it: dead either way
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the side job outlived its parent")


def _points_at_devnull(fd: int) -> str:
    return "null" if os.path.samestat(os.fstat(fd), os.stat(os.devnull)) else "lock"


def test_a_child_does_not_share_the_stage_lock(tmp_path: Path) -> None:
    """The lock is the parent's alone: a child that outlived a killed parent for a moment
    must not keep the stage locked against the rerun."""
    from geopak_data import runner

    with runner._locked(tmp_path / ".shard.lock", blocking=False):
        (fd,) = runner._HELD_LOCKS
        job = SideJob(_points_at_devnull, fd, values=("null", "lock"))
        assert job.result() == "null"
        assert _points_at_devnull(fd) == "lock"  # the parent's descriptor is untouched
        with pytest.raises(Exception, match="another geopak process"):
            with runner._locked(tmp_path / ".shard.lock", blocking=False):
                pass
    assert not runner._HELD_LOCKS

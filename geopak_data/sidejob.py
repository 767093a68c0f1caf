"""A side job that runs beside a stage's main work on another core: a forked child process.

The shard stage draws its map (a quarter of a second of matplotlib, pure Python that holds the
GIL) while the tars are written; in a thread the drawing and the writers take turns on one
core, in a forked child they run at once. A fork copies the parent's memory (the plan, the
modules already imported), so the child starts in milliseconds where a fresh interpreter
would spend a second importing.

What the child produces must be a file it writes atomically itself; it reports only whether
it worked (its exit status). Anything unusual (no ``fork`` on this OS, the child killed or
failing) makes :meth:`SideJob.result` run the function in the parent instead, so the result
never depends on where it ran, and a real error surfaces there as it would without the job.
The child dies with its parent (Linux ``PR_SET_PDEATHSIG``): a stage killed with kill -9
leaves no process behind that writes into the folder a rerun is rebuilding.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from geopak_core.progress import log

# False runs every side job in the calling process when its result is asked for (tests whose
# fakes record calls in memory set it; a forked child's memory is its own).
FORK = True
_STARTED = [0]  # side jobs this process has started (the warm-up waits for the second)
_FAILED = 1  # the child's exit status when the function raised: the parent runs it again
_WAIT_S = 600.0  # a child that has not ended by then is stopped and the job run in the parent


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this child when the parent dies (Linux only; else nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(_FAILED)


def _child(parent: int, fn: Callable[..., Any], args: tuple[Any, ...], values: tuple) -> None:
    _die_with_parent(parent)
    try:
        got = fn(*args)
    except BaseException:  # noqa: BLE001 - the parent runs fn again and raises the real error
        sys.exit(_FAILED)
    sys.exit(values.index(got) + 2 if got in values else _FAILED)


class SideJob:
    """``fn(*args)`` in a forked child, started now; :meth:`result` waits for it.

    ``fn`` must return one of ``values`` (hashable, few: they travel as the exit status) and
    do its work through files; on any other outcome the parent calls ``fn(*args)`` itself.
    ``warm`` (optional) runs in the parent when it comes to wait while the child still works:
    it imports what ``fn`` needs, so the next child of a long-lived process (the pipeline,
    the demo, a benchmark) inherits the modules instead of importing them again. It runs
    from a process's second side job on: a one-shot command (one job) never pays for it.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        values: tuple = (None,),
        name: str = "side-job",
        warm: Callable[[], None] | None = None,
    ) -> None:
        self._fn, self._args, self._values, self._warm = fn, args, tuple(values), warm
        self._proc: Any = None
        self._done = False
        self._value: Any = None
        _STARTED[0] += 1
        if not FORK or "fork" not in multiprocessing.get_all_start_methods():
            return
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(
            target=_child, args=(os.getpid(), fn, args, self._values), name=name, daemon=True
        )
        try:
            proc.start()
        except OSError as exc:  # no memory or process slots for a fork: do it in the parent
            log.info("%s: no child process (%s); running it in this one", name, exc)
            return
        self._proc = proc

    def _wait(self) -> int | None:
        """Join the child (stopping one that hangs); its exit status, or None if there was none."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        proc.join(_WAIT_S)
        if proc.exitcode is None:
            log.info("%s: child process still running after %.0f s; stopped", proc.name, _WAIT_S)
            proc.kill()
            proc.join()
        return proc.exitcode

    def result(self) -> Any:
        """The function's value: the child's (by its exit status), else computed here."""
        if not self._done:
            alive = self._proc is not None and self._proc.is_alive()
            if self._warm is not None and alive and _STARTED[0] > 1:
                self._warm()
            code = self._wait()
            if code is not None and 2 <= code < 2 + len(self._values):
                self._value = self._values[code - 2]
            else:
                if code is not None and code != _FAILED:
                    log.info("side job: child process ended with status %s; running it here", code)
                self._value = self._fn(*self._args)
            self._done = True
        return self._value

    def __enter__(self) -> SideJob:
        return self

    def __exit__(self, *exc: object) -> None:
        """Leaving the block, also by an exception, waits for the child: nothing runs on."""
        self._wait()

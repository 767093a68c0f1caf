"""Where a stage's work units run: in this process (``local``) or on a Ray cluster (``ray``).

A stage plans its units exactly as before (download batches, filter parts, embedding
shards) and hands them to an executor together with a pure function; the executor only
decides where each call runs and gives every result back to the stage, which commits it as
before (one atomic part per unit). So both executors produce byte-identical outputs, and a
killed driver resumes the same way: finished units are already on disk and are skipped.

On Ray a unit whose worker dies, or whose function raises, is retried (``retries`` times,
Ray reschedules it, on a cluster usually on another node) before its error is reported.

Politeness across the cluster: ``HostLimiter`` grants per-host request slots and records
``Retry-After`` back-offs. Locally it is a set of asyncio semaphores; on Ray it is one named
actor that every worker asks, so ten machines never hit a host harder than one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from .errors import GeopakError
from .progress import log

EXECUTORS = ("local", "ray")
_LIMITER_ACTOR = "geopak-politeness"


class Executor(Protocol):
    """Runs ``fn(*args)`` for each unit and calls ``on_done(name, result)`` in the driver."""

    name: str

    def run_units(
        self,
        fn: Callable[..., Any],
        units: Sequence[tuple[str, tuple[Any, ...]]],
        on_done: Callable[[str, Any], None],
    ) -> None: ...

    def host_limiter(self, per_host: int) -> HostLimiter: ...


class HostLimiter(Protocol):
    """Per-host request slots and shared back-off, as an async context manager per request."""

    def slot(self, host: str) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def backoff(self, host: str, seconds: float) -> None: ...


# ----------------------------------------------------------------------------- local


class LocalHostLimiter:
    """``per_host`` concurrent requests per host within this process (asyncio semaphores).

    Back-off stays per request here (each retry sleeps its own delay), as it always has."""

    def __init__(self, per_host: int):
        self.per_host = per_host
        self._sems: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        sem = self._sems.get(host)
        if sem is None:
            sem = self._sems[host] = asyncio.Semaphore(self.per_host)
        async with sem:
            yield

    async def backoff(self, host: str, seconds: float) -> None:
        return None


class LocalExecutor:
    """Every unit on this machine: in this process, in plan order, or with ``processes > 1``
    in that many worker processes (for pure CPU-bound units; results still reach
    ``on_done`` in the driver, which commits them)."""

    name = "local"

    def __init__(self, processes: int = 0):
        self.processes = processes

    def run_units(
        self,
        fn: Callable[..., Any],
        units: Sequence[tuple[str, tuple[Any, ...]]],
        on_done: Callable[[str, Any], None],
    ) -> None:
        if self.processes <= 1 or len(units) <= 1:
            for name, args in units:
                on_done(name, fn(*args))
            return
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        todo = list(reversed(units))
        window = 2 * self.processes
        ctx = mp.get_context("fork")  # workers are our children: they die with us
        workers = min(self.processes, len(units))
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_die_with_parent) as pool:
            pending: dict[Any, str] = {}
            while todo or pending:
                while todo and len(pending) < window:
                    name, args = todo.pop()
                    pending[pool.submit(fn, *args)] = name
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: pending[f]):
                    on_done(pending.pop(fut), fut.result())

    def host_limiter(self, per_host: int) -> HostLimiter:
        return LocalHostLimiter(per_host)


def _die_with_parent() -> None:
    """A worker process ends when its parent does (Linux): a driver killed with SIGKILL
    must not leave workers behind that hold its pipes open or keep writing."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown still applies
        pass


# ----------------------------------------------------------------------------- ray


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GeopakError(
            "--executor ray needs Ray: pip install 'geopak[ray]' (on the driver and every worker)"
        ) from None
    return ray


class Politeness:
    """The cluster-wide politeness state (run as one named Ray actor).

    ``acquire`` waits until the host has a free slot and its back-off has passed;
    ``backoff`` pushes the host's next allowed request out; ``peak`` says how many requests
    were ever in flight at once per host (what the tests check against the limit)."""

    def __init__(self, per_host: int):
        self.per_host = per_host
        self.active: dict[str, int] = {}
        self.peak_seen: dict[str, int] = {}
        self.not_before: dict[str, float] = {}
        self._changed = asyncio.Condition()

    async def acquire(self, host: str) -> None:
        async with self._changed:
            while True:
                wait = self.not_before.get(host, 0.0) - time.monotonic()
                if self.active.get(host, 0) < self.per_host and wait <= 0:
                    break
                timeout = wait if wait > 0 else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
            self.active[host] = self.active.get(host, 0) + 1
            self.peak_seen[host] = max(self.peak_seen.get(host, 0), self.active[host])

    async def release(self, host: str) -> None:
        async with self._changed:
            self.active[host] = max(0, self.active.get(host, 0) - 1)
            self._changed.notify_all()

    async def backoff(self, host: str, seconds: float) -> None:
        async with self._changed:
            until = time.monotonic() + max(0.0, seconds)
            self.not_before[host] = max(self.not_before.get(host, 0.0), until)

    async def peak(self) -> dict[str, int]:
        return dict(self.peak_seen)


class RayHostLimiter:
    """A worker's handle on the politeness actor (picklable: only the actor handle travels)."""

    def __init__(self, actor: Any):
        self.actor = actor

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        await self.actor.acquire.remote(host)
        try:
            yield
        finally:
            await self.actor.release.remote(host)

    async def backoff(self, host: str, seconds: float) -> None:
        await self.actor.backoff.remote(host, seconds)


class RayExecutor:
    """Units as Ray tasks (one CPU each), at most ``2 x cluster CPUs`` in flight."""

    name = "ray"

    def __init__(
        self, address: str | None = None, *, retries: int = 2, num_cpus: int | None = None
    ):
        ray = _ray()
        self.retries = retries
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address:
                kwargs["address"] = address
            else:  # a private instance on this machine, reachable only from it
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
                kwargs["_node_ip_address"] = "127.0.0.1"
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise GeopakError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        self._actors: dict[int, Any] = {}

    def run_units(
        self,
        fn: Callable[..., Any],
        units: Sequence[tuple[str, tuple[Any, ...]]],
        on_done: Callable[[str, Any], None],
    ) -> None:
        ray = _ray()
        remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=True)(fn)
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending: dict[Any, str] = {}
        queue = list(units)
        queue.reverse()
        while queue or pending:
            while queue and len(pending) < window:
                name, args = queue.pop()
                pending[remote.remote(*args)] = name
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            name = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, GeopakError):
                    raise cause from None
                raise GeopakError(
                    f"unit {name} failed on Ray after {self.retries} retries: {cause or exc}"
                ) from None
            except ray.exceptions.RayError as exc:
                raise GeopakError(
                    f"unit {name} failed on Ray after {self.retries} retries: {exc}"
                ) from None
            on_done(name, result)

    def host_limiter(self, per_host: int) -> HostLimiter:
        actor = self._actors.get(per_host)
        if actor is None:
            ray = _ray()
            cls = ray.remote(num_cpus=0, max_restarts=-1)(Politeness)
            actor = cls.options(name=f"{_LIMITER_ACTOR}-{per_host}", get_if_exists=True).remote(
                per_host
            )
            self._actors[per_host] = actor
        return RayHostLimiter(actor)


def make_executor(
    name: str = "local", address: str | None = None, *, processes: int = 0
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); ``address`` joins a Ray cluster
    (``ray start --head`` prints it), else Ray starts a local one. ``processes`` lets the
    local executor use worker processes (stages whose units are pure CPU work)."""
    if name == "local":
        if address:
            log.warning("--ray-address is ignored with --executor local")
        return LocalExecutor(processes)
    if name == "ray":
        return RayExecutor(address)
    raise GeopakError(f"unknown executor {name!r} (one of {', '.join(EXECUTORS)})")

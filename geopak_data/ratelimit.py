"""Call budgets, retry back-off and log redaction shared by the API sources.

Remote APIs meter keys per rolling window (Flickr: 3,600 calls an hour; Google: queries per
minute). Going over does not just fail one call: it gets a key throttled or suspended, so the
crawl must *never* exceed the budget, not merely average under it. ``CallBudget`` is a
sliding-window limiter: at most ``calls`` calls start in any ``period_s`` window. A token
bucket refilled at ``calls/period`` with capacity ``calls`` would allow up to ``2 * calls`` in
one window (a full bucket plus an hour's refill), which is exactly what a per-hour quota
forbids.

Time is injectable (``clock`` and ``sleep``) so tests can check the budget over simulated hours
without waiting.

``redact_in_logs`` exists because the API client libraries log what they send at DEBUG
(``-vv``): urllib3 logs request lines (the legacy Places key is a query parameter), oauthlib
logs the OAuth base string (the Flickr key), flickrapi logs its own repr (the key again).
Secrets must never reach the logs, so their records are scrubbed before any handler sees them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CallBudget:
    """At most ``calls`` calls may start in any rolling window of ``period_s`` seconds.

    ``acquire()`` blocks (through the injected ``sleep``) until the next call is within
    budget, records it, and returns the seconds it waited. Thread-safe: concurrent callers
    are given distinct slots.
    """

    def __init__(
        self,
        calls: int,
        period_s: float = 3600.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if calls < 1:
            raise ValueError(f"calls must be >= 1 (got {calls})")
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0 (got {period_s})")
        self.calls = int(calls)
        self.period_s = float(period_s)
        self.clock = clock
        self.sleep = sleep
        self._starts: deque[float] = (
            deque()
        )  # start times of recent (and reserved) calls, ascending
        self._lock = threading.Lock()
        self.total = 0  # calls granted so far
        self.waited_s = 0.0  # total time spent waiting for budget

    def _prune(self, now: float) -> None:
        horizon = now - self.period_s
        while self._starts and self._starts[0] <= horizon:
            self._starts.popleft()

    def reserve(self) -> float:
        """Book the next call slot; returns how many seconds to wait before making the call."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            start = now
            if len(self._starts) >= self.calls:
                # The call `calls` places back must have left the window before this one starts.
                start = max(now, self._starts[-self.calls] + self.period_s)
            self._starts.append(start)
            self.total += 1
            wait = max(0.0, start - now)
            self.waited_s += wait
            return wait

    def acquire(self) -> float:
        """Wait until a call is within budget and record it; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self.sleep(wait)
        return wait

    async def acquire_async(self, sleep: Callable[[float], Awaitable[None]] | None = None) -> float:
        """``acquire`` for asyncio code (``asyncio.sleep`` unless another sleep is given)."""
        wait = self.reserve()
        if wait > 0:
            await (sleep or asyncio.sleep)(wait)
        return wait

    def in_window(self) -> int:
        """How many calls started (or are booked) within the current window."""
        with self._lock:
            self._prune(self.clock())
            return len(self._starts)


def backoff_delay(
    attempt: int, base_s: float = 1.0, cap_s: float = 60.0, rng: random.Random | None = None
) -> float:
    """Exponential back-off with jitter for retry number ``attempt`` (0-based).

    ``base * 2**attempt`` capped at ``cap``, then scaled by a random factor in [0.5, 1.0]
    so many clients that failed together do not retry together.
    """
    r = rng or random
    raw = min(cap_s, base_s * (2.0 ** max(0, attempt)))
    return raw * (0.5 + 0.5 * r.random())


class Retry(Exception):  # noqa: N818 - a signal, not an error
    """Raised by one attempt of a retried call: why it failed, and what the server asked.

    ``retry_after`` is the server's ``Retry-After`` (waited at least that long, up to the
    policy's cap); ``wait_s`` replaces the back-off with a fixed wait (e.g. a Places page
    token that is not valid yet)."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        wait_s: float | None = None,
        cause: BaseException | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.wait_s = wait_s
        self.cause = cause  # the failure itself, for a give_up that re-raises it


class RetryPolicy:
    """The one retry policy of every network client (``[retry]`` in the pipeline config):
    ``retries`` more attempts after the first, exponential back-off with jitter from
    ``backoff_s`` capped at ``max_backoff_s``, ``Retry-After`` honoured up to that cap.

    ``run`` (blocking) and ``arun`` (asyncio) drive a call: the attempt function returns the
    result or raises ``Retry``; any other exception passes through. After the last attempt
    ``give_up(last_retry, attempts)`` is raised. Time and jitter are injectable."""

    def __init__(
        self,
        config: Any,
        *,
        rng: random.Random | None = None,
        on_retry: Callable[[int, int, str, float], None] | None = None,
    ):
        self.retries = max(0, int(config.retries))
        self.backoff_s = float(config.backoff_s)
        self.max_backoff_s = float(config.max_backoff_s)
        self.timeout_s = float(config.timeout_s)
        self.rng = rng or random.Random()
        self.on_retry = on_retry

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay(self, attempt: int, retry: Retry) -> float:
        """Seconds to wait before retry ``attempt`` + 1 (``attempt`` is 0-based)."""
        if retry.wait_s is not None:
            return retry.wait_s
        return retry_delay(attempt, self.backoff_s, self.max_backoff_s, retry.retry_after, self.rng)

    def _next(self, attempt: int, retry: Retry) -> float | None:
        if attempt + 1 >= self.attempts:
            return None
        delay = self.delay(attempt, retry)
        if self.on_retry is not None:
            self.on_retry(attempt + 1, self.retries, retry.reason, delay)
        return delay

    def run(
        self,
        attempt_fn: Callable[[int], T],
        *,
        give_up: Callable[[Retry, int], BaseException],
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        last = Retry("no attempt made")
        for attempt in range(self.attempts):
            try:
                return attempt_fn(attempt)
            except Retry as r:
                last = r
            delay = self._next(attempt, last)
            if delay is not None:
                sleep(delay)
        raise give_up(last, self.attempts)

    async def arun(
        self,
        attempt_fn: Callable[[int], Awaitable[T]],
        *,
        give_up: Callable[[Retry, int], BaseException],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        before_sleep: Callable[[Retry, float], Awaitable[None]] | None = None,
    ) -> T:
        last = Retry("no attempt made")
        for attempt in range(self.attempts):
            try:
                return await attempt_fn(attempt)
            except Retry as r:
                last = r
            delay = self._next(attempt, last)
            if delay is not None:
                if before_sleep is not None:
                    await before_sleep(last, delay)
                await sleep(delay)
        raise give_up(last, self.attempts)


def retry_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The wait before retry ``attempt`` (0-based): the jittered exponential back-off, or the
    server's ``Retry-After`` when that is longer; never more than ``cap_s``."""
    delay = backoff_delay(attempt, base_s, cap_s, rng)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap_s))
    return delay


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse an HTTP ``Retry-After`` header (delta seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class RedactSecret(logging.Filter):
    """Replace a secret with ``***`` in every record of the logger it is attached to."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        if self.secret and self.secret in msg:
            record.msg, record.args = msg.replace(self.secret, "***"), ()
        return True


def redact_in_logs(secret: str, loggers: tuple[str, ...]) -> None:
    """Scrub ``secret`` from the records of the named loggers (idempotent).

    Logger filters are not inherited, so name the loggers that actually emit (e.g.
    ``urllib3.connectionpool``, not ``urllib3``).
    """
    if not secret:
        return
    for name in loggers:
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactSecret) and f.secret == secret for f in lg.filters):
            lg.addFilter(RedactSecret(secret))

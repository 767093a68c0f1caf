"""One retry policy for every network client (downloader, Flickr, Places, Commons/Mapillary)."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from geopak_data.ratelimit import Retry, RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = SimpleNamespace(retries=3, backoff_s=1.0, max_backoff_s=10.0, timeout_s=5.0)


def _flaky(failures: list[Retry]):
    calls = []

    def attempt(n: int) -> str:
        calls.append(n)
        if failures:
            raise failures.pop(0)
        return "ok"

    return attempt, calls


def test_retries_back_off_exponentially_and_honour_retry_after_up_to_the_cap():
    slept, seen = [], []
    policy = RetryPolicy(
        SETTINGS, rng=random.Random(0), on_retry=lambda n, of, why, d: seen.append((n, of, why))
    )
    attempt, calls = _flaky(
        [Retry("HTTP 503"), Retry("HTTP 429", retry_after=7.0), Retry("x", retry_after=999)]
    )
    assert policy.run(attempt, give_up=lambda r, n: AssertionError(), sleep=slept.append) == "ok"
    assert calls == [0, 1, 2, 3]
    assert 0.5 <= slept[0] <= 1.0  # base * 2**0 with jitter
    assert slept[1] == 7.0  # the server asked for longer than our back-off
    assert slept[2] == 10.0  # ... but never longer than max_backoff_s
    assert seen == [(1, 3, "HTTP 503"), (2, 3, "HTTP 429"), (3, 3, "x")]


def test_gives_up_with_the_last_reason_and_passes_other_errors_through():
    policy = RetryPolicy(SETTINGS)
    attempt, calls = _flaky([Retry(f"fail {i}") for i in range(10)])
    with pytest.raises(RuntimeError, match=r"fail 3 after 4"):
        policy.run(
            attempt,
            give_up=lambda r, n: RuntimeError(f"{r.reason} after {n}"),
            sleep=lambda s: None,
        )
    assert calls == [0, 1, 2, 3]

    def broken(n: int) -> str:
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        policy.run(broken, give_up=lambda r, n: AssertionError(), sleep=lambda s: None)


def test_fixed_waits_and_the_async_driver():
    slept, hooks = [], []

    async def sleep(d: float) -> None:
        slept.append(d)

    async def before_sleep(r: Retry, d: float) -> None:
        hooks.append((r.reason, d))

    state = {"n": 0}

    async def attempt(n: int) -> int:
        state["n"] += 1
        if n == 0:
            raise Retry("token not valid yet", wait_s=2.0)
        return n

    policy = RetryPolicy(SETTINGS)
    got = asyncio.run(
        policy.arun(
            attempt, give_up=lambda r, n: AssertionError(), sleep=sleep, before_sleep=before_sleep
        )
    )
    assert got == 1 and slept == [2.0] and hooks == [("token not valid yet", 2.0)]


def test_no_client_keeps_its_own_retry_loop():
    """The downloader and every source retry through RetryPolicy, not a hand-written loop."""
    offenders = []
    for path in [
        ROOT / "geopak_data" / "download.py",
        *(ROOT / "geopak_data" / "sources").glob("*.py"),
    ]:
        text = path.read_text("utf-8")
        if re.search(r"(?<!def )backoff_delay\(|for attempt in range\(|cfg\.retries \+ 1", text):
            offenders.append(path.name)
    assert not offenders


def test_one_retry_section_for_every_client(tmp_path):
    """[retry] is the only place these settings live; the old per-client keys say where they went."""
    import dataclasses

    from geopak_core.errors import ConfigError
    from geopak_data.config import RETRY_KEYS, PipelineConfig, load_config

    def sections(obj, prefix=""):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                yield f"{prefix}{f.name}", v
                yield from sections(v, f"{prefix}{f.name}.")

    holders = [
        n
        for n, sec in sections(PipelineConfig())
        if set(RETRY_KEYS) & {f.name for f in dataclasses.fields(sec)}
    ]
    assert holders == ["retry"]
    cfg = load_config(None, {"retry.retries": 1, "retry.timeout_s": 2.5})
    assert (cfg.retry.retries, cfg.retry.timeout_s) == (1, 2.5)
    for old in ("download.retries", "crawl.flickr.timeout_s", "crawl.places.backoff_s"):
        with pytest.raises(ConfigError, match=r"moved.*\[retry\]") as err:
            load_config(None, {old: 1})
        assert old in str(err.value)

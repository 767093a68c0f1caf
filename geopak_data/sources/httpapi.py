"""A polite, serial JSON-over-HTTP client shared by the Commons and Mapillary sources.

Why one client: both APIs ask the same things of a crawler (Wikimedia's API:Etiquette,
Mapillary's rate limits): one request at a time, a descriptive ``User-Agent``, back off on
overload and wait at least as long as ``Retry-After`` says. Doing that once keeps every
source equally well-behaved and makes the retry policy one thing to test.

* Retried: connection errors and timeouts, HTTP 429 and 5xx, bodies that are not JSON, and
  whatever the caller's ``transient(body)`` recognises (a MediaWiki ``maxlag`` error arrives
  as HTTP 200 with ``{"error": {"code": "maxlag"}}``). The wait is the larger of the jittered
  exponential back-off and the server's ``Retry-After``.
* Not retried: other 4xx; the caller's ``describe_error(status, body)`` turns them into one
  line (Mapillary's ``{"error": {"message", "type", "code", "fbtrace_id"}}``).
* Secrets (an access token) are scrubbed from every message; URLs are logged without their
  query string.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from geopak_core.errors import GeopakError

from ..ratelimit import Retry, RetryPolicy, redact_in_logs, retry_after_seconds

log = logging.getLogger("geopak.httpapi")

Transient = Callable[[Any], str | None]  # body -> reason to retry, or None
DescribeError = Callable[[int, Any], str]


def bare_url(url: str) -> str:
    """A URL without its query string or fragment (safe to log: tokens live in queries)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


class ApiClient:
    """Serial GET requests returning parsed JSON, with back-off and ``Retry-After``."""

    def __init__(
        self,
        *,
        name: str,
        user_agent: str,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 60.0,
        min_interval_s: float = 0.0,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        secrets: tuple[str, ...] = (),
    ):
        self.name = name
        self.user_agent = user_agent
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self.sleep = sleep or time.sleep
        self.clock = clock or time.monotonic
        self.rng = rng or random.Random()
        self.secrets = tuple(s for s in secrets if s)
        for s in self.secrets:
            redact_in_logs(s, ("urllib3.connectionpool", "geopak.httpapi"))
        self._session: Any = None
        self._last = -1e18
        self.stats = {"calls": 0, "retries": 0, "waited_s": 0}

    def _http(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = self.user_agent
            self._session.headers["Accept"] = "application/json"
        return self._session

    def scrub(self, text: str) -> str:
        out = " ".join(str(text).split())
        for s in self.secrets:
            out = out.replace(s, "***")
        return out

    def _pace(self) -> None:
        if self.min_interval_s > 0:
            wait = self._last + self.min_interval_s - self.clock()
            if wait > 0:
                self.sleep(wait)
        self._last = self.clock()

    def get_json(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        transient: Transient | None = None,
        describe_error: DescribeError | None = None,
    ) -> Any:
        """GET ``url`` with ``params``; the parsed JSON body of the first good answer."""
        import requests

        def attempt(_n: int) -> Any:
            self._pace()
            self.stats["calls"] += 1
            try:
                resp = self._http().get(
                    url,
                    params=dict(params or {}),
                    headers=dict(headers or {}),
                    timeout=self.timeout_s,
                )
            except requests.RequestException as exc:
                raise Retry(self.scrub(f"{type(exc).__name__}: {exc}")) from None
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            body = _json_or_none(resp)
            if resp.status_code == 429 or resp.status_code >= 500:
                raise Retry(f"HTTP {resp.status_code}", retry_after=retry_after)
            if resp.status_code >= 400:
                what = describe_error(resp.status_code, body) if describe_error else ""
                raise GeopakError(
                    self.scrub(
                        f"{self.name}: HTTP {resp.status_code} from {bare_url(url)}"
                        + (f": {what}" if what else "")
                    )
                )
            if body is None:
                raise Retry("response is not JSON", retry_after=retry_after)
            why = transient(body) if transient else None
            if why is None:
                return body
            raise Retry(why, retry_after=retry_after)

        def on_retry(n: int, of: int, why: str, delay: float) -> None:
            self.stats["retries"] += 1
            self.stats["waited_s"] += int(round(delay))
            log.info(
                "%s: %s (%s); retry %d/%d in %.1fs",
                self.name,
                bare_url(url),
                self.scrub(why),
                n,
                of,
                delay,
            )

        def give_up(last: Retry, attempts: int) -> GeopakError:
            return GeopakError(
                self.scrub(
                    f"{self.name}: {bare_url(url)} still failing after {attempts} attempts "
                    f"({last.reason}); run the crawl again later to resume"
                )
            )

        return self.policy(on_retry).run(attempt, give_up=give_up, sleep=self.sleep)

    def policy(self, on_retry: Any = None) -> RetryPolicy:
        """The shared retry policy with this client's settings."""
        return RetryPolicy(self, rng=self.rng, on_retry=on_retry)


def _json_or_none(resp: Any) -> Any:
    try:
        return json.loads(resp.content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


__all__ = ["ApiClient", "bare_url"]

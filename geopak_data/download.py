"""The concurrent image downloader (aiohttp) shared by every crawl source.

What it guarantees, and why:

* **Bounded concurrency**: ``concurrency`` workers in total and at most ``per_host``
  requests per host (semaphores, plus the connector's ``limit``/``limit_per_host``), so a
  crawl never hammers one server.
* **Retries** with exponential back-off and jitter on 429, 5xx, timeouts and connection
  errors; ``Retry-After`` (seconds or an HTTP date) is honoured, capped by ``max_backoff_s``.
* **Safety**: only http(s); private, loopback and link-local addresses refused unless
  allowed (``netguard``), re-checked on every redirect hop; credentials given by a source's
  ``request_for`` are dropped when a redirect leaves the host; bodies are capped at
  ``max_bytes`` while streaming; ``X-Robots-Tag: noai`` / ``noimageai`` respected by default;
  an honest User-Agent.
* **Content**: bytes are sniffed, fully decoded, bomb-checked, oriented, resized and
  re-encoded by ``imaging.process_image`` in a thread pool so the event loop keeps
  downloading while the CPU works.
* **Failures are data**: every failure ends as a ``DownloadOutcome`` with a stable reason
  code (``http_404``, ``http_429``, ``http_5xx``, ``timeout``, ``too_large``,
  ``not_an_image``, ``corrupt_image``, ``decompression_bomb``, ``noai_optout``,
  ``blocked_private_address``, ``bad_scheme``, ``connection_error`` ...) and a detail in
  which URLs are redacted (``redact_url``): nothing is dropped silently, no secret is stored.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from geopak_core.errors import GeopakError
from geopak_core.executor import HostLimiter, LocalHostLimiter
from geopak_core.io import atomic_write_bytes

from .config import DownloadConfig, RetryConfig
from .imaging import ImageRejected, StoredImage, process_image
from .netguard import Blocked, Guard, GuardedResolver
from .ratelimit import Retry, RetryPolicy, retry_delay
from .ratelimit import retry_after_seconds as parse_retry_after
from .records import SECRET_PARAMS as _SECRET_PARAMS

log = logging.getLogger("geopak.download")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_REASONS = frozenset(
    {"http_429", "http_5xx", "http_408", "timeout", "connection_error", "truncated", "dns_error"}
)
_AI_OPTOUT = frozenset({"noai", "noimageai"})
# What a signed CDN link answers once its signature expired (Meta's fbcdn, behind Mapillary's
# thumb_*_url: 403 "URL signature expired"; others 410 Gone): a source that can re-resolve
# the URL (``DownloadItem.refresh``) gets one more try with a fresh one.
REFRESH_REASONS = frozenset({"http_403", "http_410"})
# (request URL, its headers, the URL to record without credentials) or None: no fresh URL
Refresh = Callable[[], tuple[str, dict[str, str], str] | None]


# ----------------------------------------------------------------------------- helpers


def redact_url(url: str) -> str:
    """``url`` with credential-like query parameters (``key=``, ``token=``...) and userinfo
    removed: the only form of a URL that may appear in logs, rejects or error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if parts.query:
        kept = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if not _SECRET_PARAMS.match(k)
        ]
        query = urlencode(kept)
    else:
        query = ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before retry ``attempt`` (0-based): ``base * 2**attempt`` with jitter in
    [50%, 100%], or the server's ``Retry-After`` when longer; never more than ``cap`` (the
    one policy of every client: ``ratelimit.retry_delay``)."""
    return retry_delay(attempt, base, cap, retry_after, rng)


def robots_optout(values: Iterable[str], agent: str = "geopak") -> bool:
    """True when ``X-Robots-Tag`` values forbid AI use for us (``noai``/``noimageai``, either
    for every agent or for ``agent``; a directive for another named bot does not apply)."""
    agent = agent.lower()
    for value in values:
        scope: str | None = None
        for token in value.split(","):
            token = token.strip().lower()
            m = re.match(r"^([a-z0-9_.*-]+)\s*:\s*(.*)$", token)
            if m and m.group(1) not in _AI_OPTOUT:
                scope, token = m.group(1), m.group(2).strip()
            if token in _AI_OPTOUT and (scope is None or scope in ("*", agent)):
                return True
    return False


class FetchFailed(Exception):
    """One failed attempt (or a final failure): stable ``reason``, redacted ``detail``."""

    def __init__(self, reason: str, detail: str = "", *, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE_REASONS


@dataclass
class DownloadItem:
    """One image to fetch. ``url``/``headers`` come from ``Source.request_for`` and may hold
    credentials: they are used for the request only, never stored or logged unredacted."""

    index: int
    url: str
    dest: Path
    headers: dict[str, str] = field(default_factory=dict)
    failure: tuple[str, str] | None = None  # (reason, detail) known before any request
    refresh: Refresh | None = None  # a fresh URL after a 403/410 (blocking: run in a thread)


@dataclass
class DownloadOutcome:
    """What happened to one item; ``reason == ""`` means the image is stored at ``dest``."""

    index: int
    reason: str = ""
    detail: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0
    bytes: int = 0
    original_width: int = 0
    original_height: int = 0
    url: str = ""  # the refreshed URL (credentials stripped) when the stored one had expired

    @property
    def ok(self) -> bool:
        return not self.reason


def write_image(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically against process death (temp file + rename).

    No fsync per image: a killed process never leaves a torn file, and the batch part that
    records the image is itself fsynced, so a resumed crawl only trusts finished batches.
    """
    # the project's one atomic writer; an error names dest and leaves no half-written twin
    atomic_write_bytes(dest, data, durable=False)


def _store(data: bytes, dest: Path, cfg: DownloadConfig) -> StoredImage:
    img = process_image(
        data, max_side=cfg.max_side, quality=cfg.jpeg_quality, max_pixels=cfg.max_pixels
    )
    write_image(dest, img.data)
    return img


# ----------------------------------------------------------------------------- downloader


class Downloader:
    """An aiohttp session with the guard and limits of ``DownloadConfig``, retried under the
    pipeline's one ``RetryConfig``.

    Use as ``async with Downloader(cfg) as dl: outcome = await dl.download(item)``.
    ``resolver`` replaces the system DNS resolver (the guard still checks its answers).
    """

    def __init__(
        self,
        config: DownloadConfig,
        *,
        allow_private_hosts: bool | None = None,
        allow_hosts: tuple[str, ...] = (),
        workers: int | None = None,
        seed: int | None = None,
        resolver: AbstractResolver | None = None,
        host_limiter: HostLimiter | None = None,
        retry: RetryConfig | None = None,
    ):
        self.cfg = config
        self.retry = retry or RetryConfig()  # the pipeline's one [retry] policy
        self.limiter = host_limiter or LocalHostLimiter(config.per_host)
        self._inner_resolver = resolver
        allow = config.allow_private_hosts if allow_private_hosts is None else allow_private_hosts
        self.guard = Guard(allow_private=allow, allow_hosts=allow_hosts)
        self.workers = workers or config.workers or (os.cpu_count() or 1)
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._sleep = asyncio.sleep  # replaceable in tests (records back-off delays)
        timeout_s = self.retry.timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 15.0))
        self._session: aiohttp.ClientSession | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> Downloader:
        connector = aiohttp.TCPConnector(
            limit=self.cfg.concurrency,
            limit_per_host=self.cfg.per_host,
            resolver=GuardedResolver(self.guard, self._inner_resolver),
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.cfg.user_agent, "Accept": "image/*,*/*;q=0.5"},
            auto_decompress=True,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="geopak-img")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def fetch(self, url: str, headers: dict[str, str] | None = None) -> bytes:
        """The body at ``url`` after retries, or ``FetchFailed`` with the final reason."""
        host = _host_of(url)

        async def attempt(n: int) -> bytes:
            self.stats["attempts"] += 1
            try:
                async with self.limiter.slot(host):
                    return await self._fetch_once(url, dict(headers or {}))
            except FetchFailed as exc:
                if not exc.retryable:
                    raise
                raise Retry(exc.reason, retry_after=exc.retry_after, cause=exc) from exc

        async def before_sleep(retry: Retry, delay: float) -> None:
            self.stats["retries"] += 1
            if retry.retry_after is not None:  # the host asked: every worker waits
                await self.limiter.backoff(host, delay)
            log.debug("retry for %s in %.2fs (%s)", redact_url(url), delay, retry.reason)

        def give_up(retry: Retry, attempts: int) -> BaseException:
            assert isinstance(retry.cause, FetchFailed)
            return retry.cause

        policy = RetryPolicy(self.retry, rng=self._rng)
        return await policy.arun(
            attempt, give_up=give_up, sleep=lambda d: self._sleep(d), before_sleep=before_sleep
        )

    async def _fetch_once(self, url: str, headers: dict[str, str]) -> bytes:
        assert self._session is not None, "use 'async with Downloader(...)'"
        cfg = self.cfg
        timeout = self._timeout
        if not url:
            raise FetchFailed("no_url", "record has no download URL")
        current = url
        try:
            origin = url_origin(url)
        except ValueError as exc:
            raise FetchFailed("bad_url", f"unparsable URL: {exc}") from None
        for _hop in range(cfg.max_redirects + 1):
            try:
                self.guard.check_url(current)
            except Blocked as exc:
                raise FetchFailed(exc.reason, exc.detail) from None
            try:
                async with self._session.get(
                    current, headers=headers, allow_redirects=False, timeout=timeout
                ) as resp:
                    status = resp.status
                    if status in REDIRECT_STATUSES:
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchFailed(f"http_{status}", "redirect without Location")
                        nxt = _join_location(resp.url, location)
                        if url_origin(nxt) != origin:
                            # never forward a source's credentials to another origin (scheme,
                            # host or port): another port is another server
                            headers = {}
                        current = nxt
                        continue
                    self._check_answer(resp)
                    return await self._read_body(resp)
            except FetchFailed:
                raise
            except aiohttp.ClientConnectorDNSError as exc:
                if isinstance(exc.os_error, Blocked):
                    raise FetchFailed(exc.os_error.reason, exc.os_error.detail) from None
                raise FetchFailed(
                    "dns_error", f"cannot resolve {urlsplit(current).hostname}"
                ) from None
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise FetchFailed(
                    "timeout", f"no complete answer within {self.retry.timeout_s:g}s"
                ) from None
            except aiohttp.ClientPayloadError as exc:
                raise FetchFailed("truncated", f"body ended early: {type(exc).__name__}") from None
            except aiohttp.InvalidURL:
                raise FetchFailed("bad_url", f"invalid URL {redact_url(current)}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise FetchFailed(
                    "connection_error", f"{type(exc).__name__}: {_redact_text(str(exc))}"
                ) from None
        raise FetchFailed("too_many_redirects", f"more than {cfg.max_redirects} redirects")

    def _check_answer(self, resp: aiohttp.ClientResponse) -> None:
        """Refuse a final (non-redirect) answer that is not a usable 200 (``FetchFailed``)."""
        cfg, status = self.cfg, resp.status
        if status == 429 or status >= 500:
            reason = "http_429" if status == 429 else "http_5xx"
            text = "HTTP 429 Too Many Requests" if status == 429 else f"HTTP {status}"
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise FetchFailed(reason, text, retry_after=retry_after)
        if status == 408:
            raise FetchFailed("http_408", "HTTP 408 Request Timeout")
        if status != 200:
            raise FetchFailed(f"http_{status}", f"HTTP {status}")
        if cfg.respect_noai and robots_optout(resp.headers.getall("X-Robots-Tag", [])):
            raise FetchFailed("noai_optout", "X-Robots-Tag forbids AI use (noai/noimageai)")
        if resp.content_length is not None and resp.content_length > cfg.max_bytes:
            raise FetchFailed(
                "too_large", f"Content-Length {resp.content_length} > {cfg.max_bytes}"
            )

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, refused as soon as it passes ``max_bytes`` (a lying Content-Length).

        A body with a Content-Length (already checked against ``max_bytes``) and no
        Content-Encoding is read in one call: aiohttp reads exactly that many bytes and
        raises ``ClientPayloadError`` when fewer come, so it cannot exceed the cap. Anything
        else (chunked, compressed: the decoded size is unknown) is streamed and counted.
        """
        if resp.content_length is not None and not resp.headers.get("Content-Encoding"):
            data = await resp.read()
            self.stats["bytes"] += len(data)
            return data
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.cfg.max_bytes:
                raise FetchFailed("too_large", f"body over {self.cfg.max_bytes} bytes")
            chunks.append(chunk)
        self.stats["bytes"] += size
        return b"".join(chunks)

    async def download(self, item: DownloadItem) -> DownloadOutcome:
        """Fetch, process and store one item; every failure becomes an outcome with a reason.

        One record's trouble never stops the crawl: anything unexpected (a URL no parser
        accepts, a library error on odd bytes) rejects that record with ``internal_error``
        and the exception's type. Only a storage failure that would hit every record (full
        disk, read-only folder) stops the stage, as a one-line error naming the file.
        """
        if item.failure is not None:
            return self._failed(item, *item.failure)
        try:
            data, fresh_url = await self._fetch_item(item)
        except FetchFailed as exc:
            return self._failed(item, exc.reason, exc.detail)
        except ValueError as exc:  # urllib/yarl: a URL that cannot be parsed at all
            return self._failed(item, "bad_url", f"unparsable URL: {_redact_text(str(exc))}")
        except Exception as exc:  # noqa: BLE001 - a bug for one record must not stop the stage
            return self._failed(item, "internal_error", _exc_detail(exc))
        loop = asyncio.get_running_loop()
        try:
            img = await loop.run_in_executor(self._pool, _store, data, item.dest, self.cfg)
        except ImageRejected as exc:
            return self._failed(item, exc.reason, exc.detail)
        except OSError as exc:
            if exc.errno in FATAL_ERRNOS:
                raise GeopakError(
                    f"cannot write {exc.filename or item.dest}: {exc.strerror or exc}"
                ) from None
            return self._failed(item, "write_error", _exc_detail(exc))
        except Exception as exc:  # noqa: BLE001
            return self._failed(item, "internal_error", _exc_detail(exc))
        self.stats["ok"] += 1
        return DownloadOutcome(
            item.index,
            sha256=img.sha256,
            width=img.width,
            height=img.height,
            bytes=len(img.data),
            original_width=img.original_width,
            original_height=img.original_height,
            url=fresh_url,
        )

    async def _fetch_item(self, item: DownloadItem) -> tuple[bytes, str]:
        """The item's bytes and, when its URL had expired and was refreshed, the new URL to
        record (else ""). One refresh and one more fetch at most per item."""
        try:
            return await self.fetch(item.url, item.headers), ""
        except FetchFailed as exc:
            if item.refresh is None or exc.reason not in REFRESH_REASONS:
                raise
            first = exc
        try:
            fresh = await asyncio.to_thread(item.refresh)
        except Exception as exc:  # noqa: BLE001 - the API's trouble rejects this record only
            raise FetchFailed(
                first.reason, f"{first.detail}; refreshing the URL failed: {_exc_detail(exc)}"
            ) from None
        if fresh is None:
            raise FetchFailed(first.reason, f"{first.detail}; the source has no fresh URL")
        url, headers, stored = fresh
        self.stats["url_refreshed"] += 1
        try:
            return await self.fetch(url, headers), stored
        except FetchFailed as exc:
            raise FetchFailed(exc.reason, f"{exc.detail} (from the refreshed URL)") from None

    def _failed(self, item: DownloadItem, reason: str, detail: str) -> DownloadOutcome:
        self.stats[reason] += 1
        return DownloadOutcome(item.index, reason, detail[:500])


# Storage errors that would fail every record alike: the stage stops (one line) instead.
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def url_origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: two URLs with the same
    origin may share credentials, any difference (another port, https -> http) may not.
    Raises ``ValueError`` for a URL whose host or port cannot be parsed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port  # raises ValueError for a port out of range
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _join_location(base: URL, location: str) -> str:
    """The absolute URL a redirect points to, or ``bad_url`` when it cannot be a URL (a port
    out of range, an unclosed IPv6 bracket): a hostile server's header rejects one record."""
    try:
        nxt = str(base.join(URL(location)))
        url_origin(nxt)  # port and host must parse too
    except (ValueError, TypeError) as exc:
        raise FetchFailed(
            "bad_url", f"redirect to an invalid URL ({_redact_text(str(exc))[:200]})"
        ) from None
    return nxt


def _exc_detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_redact_text(str(exc))}"[:500]


def _redact_text(text: str) -> str:
    return re.sub(r"https?://\S+", lambda m: redact_url(m.group(0)), text)


OnOutcome = Callable[[DownloadOutcome], Awaitable[None] | None]


async def download_items(
    items: Iterable[DownloadItem],
    *,
    config: DownloadConfig,
    on_outcome: OnOutcome,
    allow_private_hosts: bool | None = None,
    allow_hosts: tuple[str, ...] = (),
    workers: int | None = None,
    host_limiter: HostLimiter | None = None,
    retry: RetryConfig | None = None,
) -> Counter[str]:
    """Download every item with ``config.concurrency`` workers; ``on_outcome`` is called (and
    awaited, if it is a coroutine function) once per item in completion order. Returns stats."""
    iterator = iter(items)
    async with Downloader(
        config,
        allow_private_hosts=allow_private_hosts,
        allow_hosts=allow_hosts,
        workers=workers,
        host_limiter=host_limiter,
        retry=retry,
    ) as dl:

        async def worker() -> None:
            for item in iterator:  # a shared iterator: each item is taken by one worker
                outcome = await dl.download(item)
                result = on_outcome(outcome)
                if inspect.isawaitable(result):
                    await result

        await asyncio.gather(*(worker() for _ in range(config.concurrency)))
        return dl.stats


def download_sync(
    items: Iterable[DownloadItem],
    *,
    config: DownloadConfig,
    allow_private_hosts: bool | None = None,
    allow_hosts: tuple[str, ...] = (),
    retry: RetryConfig | None = None,
) -> list[DownloadOutcome]:
    """Blocking convenience wrapper: the outcomes sorted by item index."""
    out: list[DownloadOutcome] = []
    asyncio.run(
        download_items(
            items,
            config=config,
            on_outcome=out.append,
            allow_private_hosts=allow_private_hosts,
            allow_hosts=allow_hosts,
            retry=retry,
        )
    )
    return sorted(out, key=lambda o: o.index)

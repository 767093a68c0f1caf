"""The downloader against a real loopback image host that injects every fault a crawl meets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from geopak_data.config import RETRY_KEYS, DownloadConfig, RetryConfig
from geopak_data.download import Downloader, DownloadItem, download_sync

FAST = dict(
    timeout_s=2.0,
    retries=2,
    backoff_s=0.01,
    max_backoff_s=5.0,
    max_side=256,
    concurrency=4,
    per_host=4,
    workers=1,
)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:  # loopback control routes of the test server
        return r.read().decode()


def hits(base: str, path_qs: str) -> int:
    return int(_get(f"{base}/count?path={urllib.request.quote(path_qs, safe='')}"))


def _configs(overrides: dict) -> tuple[DownloadConfig, RetryConfig]:
    """FAST with overrides, split into the download section and the shared [retry] policy."""
    merged = {**FAST, **overrides}
    retry = RetryConfig(**{k: v for k, v in merged.items() if k in RETRY_KEYS})
    return DownloadConfig(**{k: v for k, v in merged.items() if k not in RETRY_KEYS}), retry


def fetch(tmp_path: Path, url: str, *, allow: bool = True, **overrides) -> tuple:
    cfg, retry = _configs(overrides)
    dest = tmp_path / "out.jpg"
    (outcome,) = download_sync(
        [DownloadItem(0, url, dest)], config=cfg, allow_private_hosts=allow, retry=retry
    )
    return outcome, dest


def fetch_with_sleeps(url: str, dest: Path, **overrides):
    """Download one URL recording the back-off delays instead of sleeping them."""
    cfg, retry = _configs(overrides)
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def main():
        async with Downloader(cfg, allow_private_hosts=True, seed=0, retry=retry) as dl:
            dl._sleep = fake_sleep
            return await dl.download(DownloadItem(0, url, dest))

    return asyncio.run(main()), slept


def test_ok_image_stored_resized(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/i/photo.jpg")
    assert o.ok, o
    im = Image.open(dest)
    assert im.format == "JPEG" and im.size == (256, 192) == (o.width, o.height)
    assert (o.original_width, o.original_height) == (640, 480)
    assert o.bytes == dest.stat().st_size


def test_404_is_permanent(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/fault/404")
    assert o.reason == "http_404" and not dest.exists()
    assert hits(server, "/fault/404") >= 1


def test_429_retry_after_honoured_then_success(server, tmp_path):
    path = "/i/photo.jpg?status=429&retry_after=3&times=1&t=a"
    o, slept = fetch_with_sleeps(server + path, tmp_path / "a.jpg")
    assert o.ok, o
    assert slept == [3.0]  # the server's Retry-After, not our own back-off
    assert hits(server, path) == 2


def test_retry_after_capped_by_max_backoff(server, tmp_path):
    o, slept = fetch_with_sleeps(
        server + "/i/photo.jpg?status=429&retry_after=3600&times=1&t=b",
        tmp_path / "b.jpg",
        max_backoff_s=2.0,
    )
    assert o.ok and slept == [2.0]


def test_500_then_success_with_exponential_backoff(server, tmp_path):
    path = "/i/photo.jpg?status=503&times=2&t=c"
    o, slept = fetch_with_sleeps(server + path, tmp_path / "c.jpg", retries=3, backoff_s=1.0)
    assert o.ok, o
    assert hits(server, path) == 3
    assert len(slept) == 2 and 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0


def test_5xx_gives_up_after_retries(server, tmp_path):
    path = "/i/photo.jpg?status=500&times=99&t=d"
    o, slept = fetch_with_sleeps(server + path, tmp_path / "d.jpg", retries=2)
    assert o.reason == "http_5xx"
    assert hits(server, path) == 3 and len(slept) == 2


def test_slow_server_times_out(server, tmp_path):
    o, _ = fetch(tmp_path, f"{server}/i/photo.jpg?delay=3&t=e", timeout_s=0.3, retries=0)
    assert o.reason == "timeout"


def test_truncated_body_rejected(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/i/photo.jpg?truncate=1", retries=1)
    assert o.reason == "truncated" and not dest.exists()


def test_html_served_as_jpeg_rejected(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/fault/html")
    assert o.reason == "not_an_image" and not dest.exists()


def test_corrupt_jpeg_rejected(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/i/corrupt.jpg")
    assert o.reason == "corrupt_image" and not dest.exists()


def test_decompression_bomb_rejected(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/i/bomb.png")
    assert o.reason == "decompression_bomb" and not dest.exists()


@pytest.mark.parametrize(
    "name,size",
    [
        ("photo.png", (256, 192)),
        ("palette.png", (200, 150)),
        ("cmyk.jpg", (256, 171)),
        ("gray.jpg", (256, 171)),
    ],
)
def test_modes_stored_as_rgb_jpeg(server, tmp_path, name, size):
    o, dest = fetch(tmp_path, f"{server}/i/{name}")
    assert o.ok, o
    im = Image.open(dest)
    assert im.mode == "RGB" and im.format == "JPEG" and im.size == size


def test_exif_rotated_stored_upright(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/i/rotated.jpg")
    assert o.ok
    assert Image.open(dest).size == (171, 256)  # stored 600x400 + orientation 6 -> portrait
    assert (o.original_width, o.original_height) == (400, 600)


def test_noai_header_respected_by_default(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/i/photo.jpg?noai=1")
    assert o.reason == "noai_optout" and not dest.exists()
    o2, _ = fetch(tmp_path, f"{server}/i/photo.jpg?noai=1", respect_noai=False)
    assert o2.ok


def test_body_size_cap(server, tmp_path):
    o, dest = fetch(tmp_path, f"{server}/i/photo.jpg", max_bytes=2048)
    assert o.reason == "too_large" and not dest.exists()


def test_loopback_refused_without_allow_private_hosts(server, tmp_path):
    path = "/i/photo.jpg?t=private"
    o, dest = fetch(tmp_path, server + path, allow=False)
    assert o.reason == "blocked_private_address" and not dest.exists()
    assert hits(server, path) == 0  # refused before connecting
    o, _ = fetch(tmp_path, server.replace("127.0.0.1", "localhost") + path, allow=False)
    assert o.reason == "blocked_private_address"
    o, _ = fetch(tmp_path, "http://169.254.169.254/latest/meta-data/", allow=False)
    assert o.reason == "blocked_private_address"
    o, _ = fetch(tmp_path, server + path, allow=True)
    assert o.ok and hits(server, path) == 1


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/", "data:image/png;base64,AAAA"],
)
def test_bad_scheme_refused(tmp_path, url):
    o, _ = fetch(tmp_path, url, allow=True)
    assert o.reason == "bad_scheme"


def test_redirect_to_bad_scheme_refused(server, tmp_path):
    o, _ = fetch(tmp_path, f"{server}/redirect?to=file:///etc/passwd")
    assert o.reason == "bad_scheme"


def test_redirect_followed_and_rechecked(server, tmp_path):
    o, _ = fetch(tmp_path, f"{server}/redirect?to=/i/palette.png&hops=2")
    assert o.ok and (o.width, o.height) == (200, 150)
    o, _ = fetch(tmp_path, f"{server}/redirect?to=/i/palette.png&hops=9", max_redirects=3)
    assert o.reason == "too_many_redirects"


def test_redirect_to_private_address_refused(server, tmp_path):
    # the first host is explicitly trusted (a "mirror"); its redirect to another loopback
    # name must still be refused: every hop is checked.
    port = server.rsplit(":", 1)[1]
    cfg = _configs({})[0]
    url = f"{server}/redirect?to=http://localhost:{port}/i/photo.jpg"
    (o,) = download_sync(
        [DownloadItem(0, url, tmp_path / "r.jpg")],
        config=cfg,
        allow_private_hosts=False,
        allow_hosts=("127.0.0.1",),
    )
    assert o.reason == "blocked_private_address"
    (o,) = download_sync(
        [DownloadItem(0, f"{server}/i/photo.jpg", tmp_path / "r.jpg")],
        config=cfg,
        allow_private_hosts=False,
        allow_hosts=("127.0.0.1",),
    )
    assert o.ok


def test_credentials_not_forwarded_to_another_host(server, tmp_path):
    port = server.rsplit(":", 1)[1]
    target = f"http://localhost:{port}/i/photo.jpg?require_header=X-Goog-Api-Key"
    cfg = _configs({})[0]
    same = f"{server}/redirect?to=/i/photo.jpg%3Frequire_header%3DX-Goog-Api-Key"
    other = f"{server}/redirect?to={urllib.request.quote(target, safe='')}"
    outs = download_sync(
        [
            DownloadItem(0, same, tmp_path / "s.jpg", {"X-Goog-Api-Key": "k"}),
            DownloadItem(1, other, tmp_path / "o.jpg", {"X-Goog-Api-Key": "k"}),
        ],
        config=cfg,
        allow_private_hosts=True,
    )
    assert outs[0].ok, outs[0]
    assert outs[1].reason == "http_401"


def test_honest_user_agent(server, tmp_path):
    path = "/i/photo.jpg?t=ua"
    o, _ = fetch(tmp_path, server + path)
    assert o.ok
    headers = json.loads(_get(f"{server}/last-headers?path={urllib.request.quote(path, safe='')}"))
    assert headers["User-Agent"].startswith("geopak/")


def test_secrets_never_in_outcome_or_logs(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="geopak")
    o, _ = fetch(tmp_path, f"{server}/i/photo.jpg?key=SECRET123&status=503&times=99", retries=1)
    assert o.reason == "http_5xx"
    assert "SECRET123" not in o.detail
    assert "SECRET123" not in caplog.text


def test_empty_url(tmp_path):
    o, _ = fetch(tmp_path, "")
    assert o.reason == "no_url"


def test_per_host_limit_respected(tmp_path):
    from geopak_data.imageserver import start_image_server

    base, stop = start_image_server({"a.jpg": _small_jpeg()}, fixtures=False)
    try:
        cfg = _configs({"concurrency": 8, "per_host": 2})[0]
        items = [
            DownloadItem(i, f"{base}/i/a.jpg?delay=0.15&n={i}", tmp_path / f"{i}.jpg")
            for i in range(8)
        ]
        outs = download_sync(items, config=cfg, allow_private_hosts=True)
        assert all(o.ok for o in outs)
        stats = json.loads(_get(f"{base}/stats"))
        assert stats["requests"] == 8
        assert 1 <= stats["max_inflight"] <= 2
    finally:
        stop()


def _small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def test_many_items_all_accounted_for(server, tmp_path):
    urls = [
        f"{server}/i/photo.jpg?n={i}" if i % 3 else f"{server}/fault/404?n={i}" for i in range(30)
    ]
    cfg = _configs({"concurrency": 6})[0]
    outs = download_sync(
        [DownloadItem(i, u, tmp_path / f"{i}.jpg") for i, u in enumerate(urls)],
        config=cfg,
        allow_private_hosts=True,
    )
    assert [o.index for o in outs] == list(range(30))
    assert sum(o.ok for o in outs) == 20
    assert {o.reason for o in outs if not o.ok} == {"http_404"}


class _MapResolver:
    """Resolves every name to 127.0.0.1 (stands in for DNS answering with a private address)."""

    async def resolve(self, host, port=0, family=0):
        import socket

        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self):
        return None


@pytest.mark.parametrize("allow,expected", [(False, "blocked_private_address"), (True, "")])
def test_name_resolving_to_private_address_refused(server, tmp_path, allow, expected):
    port = server.rsplit(":", 1)[1]
    url = f"http://photos.example.com:{port}/i/photo.jpg?t=dns{allow}"

    async def main():
        async with Downloader(
            _configs({})[0], allow_private_hosts=allow, resolver=_MapResolver()
        ) as dl:
            return await dl.download(DownloadItem(0, url, tmp_path / "d.jpg"))

    o = asyncio.run(main())
    assert o.reason == expected
    assert hits(server, f"/i/photo.jpg?t=dns{allow}") == (1 if allow else 0)


def test_refresh_only_after_403_or_410_and_only_once(server, tmp_path):
    """A source that can re-resolve an expired signed link (``DownloadItem.refresh``) is asked
    once after a 403/410 and the image fetched from the fresh URL; other failures never ask."""
    cfg, retry = _configs({})
    calls: list[str] = []

    def refresh_to(url: str | None):
        def refresh():
            calls.append(url or "")
            return (url, {}, url + "&v=fresh") if url else None

        return refresh

    good = f"{server}/i/photo.jpg"
    items = [
        DownloadItem(0, f"{server}/i/photo.jpg?status=403&times=9", tmp_path / "a.jpg",
                     refresh=refresh_to(good + "?n=1")),
        DownloadItem(1, f"{server}/i/photo.jpg?status=410&times=9", tmp_path / "b.jpg",
                     refresh=refresh_to(f"{server}/i/photo.jpg?status=403&times=9&n=2")),
        DownloadItem(2, f"{server}/fault/404", tmp_path / "c.jpg", refresh=refresh_to(good)),
        DownloadItem(3, f"{server}/i/photo.jpg?status=403&times=9&n=3", tmp_path / "d.jpg",
                     refresh=refresh_to(None)),
        DownloadItem(4, f"{server}/i/photo.jpg?status=403&times=9&n=4", tmp_path / "e.jpg"),
    ]  # fmt: skip
    a, b, c, d, e = download_sync(items, config=cfg, allow_private_hosts=True, retry=retry)
    assert a.ok and a.url == good + "?n=1&v=fresh" and (tmp_path / "a.jpg").is_file()
    assert b.reason == "http_403" and "from the refreshed URL" in b.detail  # retried once only
    assert c.reason == "http_404" and not c.url
    assert d.reason == "http_403" and "no fresh URL" in d.detail
    assert e.reason == "http_403" and not e.url
    assert sorted(calls) == sorted(
        [good + "?n=1", f"{server}/i/photo.jpg?status=403&times=9&n=2", ""]
    )

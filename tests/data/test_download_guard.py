"""Pure helpers of the downloader: address guard, URL redaction, Retry-After, back-off, opt-out."""

from __future__ import annotations

import email.utils
import random

import pytest

from geopak_data.download import backoff_delay, parse_retry_after, redact_url, robots_optout
from geopak_data.netguard import Blocked, Guard, is_public_address


@pytest.mark.parametrize(
    "ip,public",
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("not-an-ip", False),
    ],
)
def test_is_public_address(ip, public):
    assert is_public_address(ip) is public


@pytest.mark.parametrize(
    "url,reason",
    [
        ("file:///etc/passwd", "bad_scheme"),
        ("ftp://host/x.jpg", "bad_scheme"),
        ("javascript:alert(1)", "bad_scheme"),
        ("http:///nohost", "bad_url"),
        ("http://127.0.0.1:8080/x.jpg", "blocked_private_address"),
        ("http://[::1]/x.jpg", "blocked_private_address"),
        ("http://10.0.0.5/x.jpg", "blocked_private_address"),
        ("http://localhost/x.jpg", "blocked_private_address"),
        ("https://169.254.169.254/latest/meta-data", "blocked_private_address"),
    ],
)
def test_guard_refuses(url, reason):
    with pytest.raises(Blocked) as ei:
        Guard().check_url(url)
    assert ei.value.reason == reason


def test_guard_allows_public_and_opt_in_private():
    Guard().check_url("https://live.staticflickr.com/65535/1_abc.jpg")
    Guard().check_url("http://8.8.8.8/x.jpg")
    Guard(allow_private=True).check_url("http://127.0.0.1:9/x.jpg")
    Guard(allow_hosts=["127.0.0.1"]).check_url("http://127.0.0.1:9/x.jpg")
    with pytest.raises(Blocked):
        Guard(allow_private=True).check_url("file:///etc/passwd")  # the scheme check always applies
    with pytest.raises(Blocked):
        Guard().check_addresses("evil.example", ["93.184.216.34", "127.0.0.1"])
    Guard().check_addresses("example.com", ["93.184.216.34"])


def test_redact_url_strips_credentials():
    u = "https://places.googleapis.com/v1/places/X/photos/Y/media?maxWidthPx=800&key=AIzaSECRET&skipHttpRedirect=false"
    r = redact_url(u)
    assert "AIzaSECRET" not in r and "key=" not in r
    assert "maxWidthPx=800" in r and r.startswith(
        "https://places.googleapis.com/v1/places/X/photos/Y/media"
    )
    assert "pw" not in redact_url("http://user:pw@host/x?api_key=1&token=2&oauth_signature=3")
    assert redact_url("http://host/a.jpg") == "http://host/a.jpg"


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_is_exponential_jittered_and_capped():
    rng = random.Random(1)
    for attempt in range(6):
        d = backoff_delay(attempt, base=1.0, cap=10.0, rng=rng)
        assert min(10.0, 2**attempt) * 0.5 <= d <= min(10.0, 2**attempt)
    assert backoff_delay(0, base=1.0, cap=10.0, retry_after=4.0) == 4.0
    assert backoff_delay(0, base=1.0, cap=10.0, retry_after=400.0) == 10.0


@pytest.mark.parametrize(
    "values,optout",
    [
        (["noai"], True),
        (["noimageai"], True),
        (["noindex, NoAI"], True),
        (["googlebot: noai"], False),
        (["geopak: noimageai"], True),
        (["noindex", "nofollow"], False),
        ([], False),
    ],
)
def test_robots_optout(values, optout):
    assert robots_optout(values) is optout

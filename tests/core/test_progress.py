"""Output when stderr is a log file, not a terminal: plain progress lines, one-line warnings."""

from __future__ import annotations

import logging
import warnings

import pytest

from geopak_core import progress as P


class _Err:
    """stderr as pytest captures it: a stream that is not a terminal."""

    def __init__(self, capsys: pytest.CaptureFixture[str]):
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def log_stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> _Err:
    monkeypatch.setenv("GEOPAK_NO_PROGRESS", "0")
    monkeypatch.setenv("GEOPAK_PROGRESS_INTERVAL", "0")
    return _Err(capsys)


def test_progress_prints_plain_lines_without_carriage_returns(log_stderr):
    with P.progress(total=5, desc="download x", unit="img") as bar:
        assert isinstance(bar, P.LineBar)
        for _ in range(5):
            bar.update(1)
    bar = P.progress(desc="discover y", unit="photo")
    bar.update(7)
    bar.set_postfix_str("page 3")
    bar.close()
    text = log_stderr.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(line.strip() for line in lines)  # no blank lines
    assert [ln for ln in lines if ln.startswith("download x")][-1].startswith("download x: 5/5 img")
    assert lines[-1].startswith("discover y: 7/? photo") and "page 3" in lines[-1]
    assert sum(line.startswith("download x: 5/5") for line in lines) == 1  # final line once


def test_progress_lines_are_rate_limited(log_stderr, monkeypatch):
    monkeypatch.setenv("GEOPAK_PROGRESS_INTERVAL", "3600")
    with P.progress(total=1000, desc="big", unit="img") as bar:
        for _ in range(1000):
            bar.update(1)
    lines = log_stderr.getvalue().splitlines()
    assert len(lines) <= 2 and lines[-1].startswith("big: 1000/1000")


def test_progress_can_be_switched_off(log_stderr, monkeypatch):
    monkeypatch.setenv("GEOPAK_NO_PROGRESS", "1")
    with P.progress(total=3, desc="quiet") as bar:
        bar.update(3)
    assert log_stderr.getvalue() == ""


def test_warnings_are_one_line_without_the_source_line(log_stderr):
    P.setup_logging(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = P._log_warning
            warnings.warn("weights look odd", UserWarning, stacklevel=1)
    finally:
        logging.getLogger().handlers.clear()
    lines = log_stderr.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING geopak: UserWarning: weights look odd")
    assert "warnings.warn" not in log_stderr.getvalue()

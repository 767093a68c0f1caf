"""The quick atomic writer (``atomic_write_bytes(durable=False)``) the crawl uses per image."""

from __future__ import annotations

import itertools
import os
import stat

import pytest

from geopak_core import io as gio


def test_writes_with_the_usual_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "img.jpg"  # folders made when missing
    gio.atomic_write_bytes(target, b"\xff\xd8" + bytes(100_000), durable=False)
    assert target.read_bytes() == b"\xff\xd8" + bytes(100_000)
    assert stat.S_IMODE(target.stat().st_mode) == gio.FILE_MODE
    gio.atomic_write_bytes(target, b"new", durable=False)  # replaces, whole
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["img.jpg"]


def test_a_stale_temp_with_our_name_is_skipped_and_cleaned_later(tmp_path, monkeypatch):
    monkeypatch.setattr(gio, "_TMP_SEQ", itertools.count())
    stale = tmp_path / f".img.jpg.{os.getpid()}-0.tmp"  # left by a killed run with our pid
    stale.write_bytes(b"torn")
    gio.atomic_write_bytes(tmp_path / "img.jpg", b"whole", durable=False)
    assert (tmp_path / "img.jpg").read_bytes() == b"whole"
    assert gio.clean_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.jpg"]


def test_an_error_names_the_target_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    target = tmp_path / "file" / "img.jpg"  # its folder is a file
    with pytest.raises(OSError) as err:
        gio.atomic_write_bytes(target, b"data", durable=False)
    assert str(target) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_rename_names_the_target_and_removes_the_temp(tmp_path):
    target = tmp_path / "img.jpg"
    target.mkdir()  # a folder in the way: the rename fails
    (target / "x").write_bytes(b"")
    with pytest.raises(OSError) as err:
        gio.atomic_write_bytes(target, b"data", durable=False)
    assert err.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.jpg"]

"""Issue 15 regressions: every user or machine mistake is one line (exit 2) from the real CLI,
and the work folder is left as it was."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
from support.snapshot import one_line, snapshot

from geopak_data.cli import main
from geopak_data.sources.yfcc import write_yfcc_tsv


def _meta(tmp_path, server, n=3):
    rows = [
        dict(
            photoid=700 + i,
            longitude=70.0,
            latitude=30.0,
            downloadurl=f"{server}/i/photo.jpg?cli={i}",
            title="t",
            licensename="Attribution License",
        )
        for i in range(n)
    ]
    return write_yfcc_tsv(tmp_path / "m.tsv", rows)


def _conf(tmp_path, text="", name="p.toml"):
    p = tmp_path / name
    base = "[retry]\nretries = 0\n[download]\nbatch_size = 2\nworkers = 1\n"
    p.write_bytes(text if isinstance(text, bytes) else (base + text).encode("utf-8"))
    return p


def _crawl(work, meta, conf=None, *extra):
    argv = ["crawl", "yfcc", "--work", str(work), "--metadata", str(meta), "--allow-private-hosts"]
    return main(argv + (["--config", str(conf)] if conf else []) + list(extra))


def _refused(capsys, rc, *needles):
    assert rc == 2
    line = one_line(capsys.readouterr().err)
    for n in needles:
        assert n in line, line
    return line


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (b'[download]\nuser_agent = "caf\xe9"\n', ("not UTF-8", "p.toml")),
        (b"[retry]\ntimeout_s = inf\n", ("retry.timeout_s", "finite")),
        (b"[retry]\ntimeout_s = nan\n", ("retry.timeout_s", "finite")),
        ("timeout_s = 5.0\n", ("download.timeout_s", "moved", "retry.timeout_s")),
        ('user_agent = "a\\r\\nX-Evil: 1"\n', ("download.user_agent", "control characters")),
        ("concurrency = 1000000\n", ("download.concurrency", "1..1024")),
        ("[crawl.yfcc]\nchunk_bytes = 1_000_000_000_000\n", ("crawl.yfcc.chunk_bytes",)),
        ("[shard]\nmax_shard_samples = 10_000_000_000\n", ("shard.max_shard_samples",)),
    ],
)
def test_bad_config_values_are_one_line(tmp_path, server, capsys, text, needles):
    meta = _meta(tmp_path, server)
    work = tmp_path / "w"
    assert _crawl(work, meta) == 0
    capsys.readouterr()
    before = snapshot(work)
    rc = _crawl(work, meta, _conf(tmp_path, text))
    _refused(capsys, rc, *needles)
    assert snapshot(work) == before


def test_emoji_in_a_config_string_keeps_the_work_folder_readable(tmp_path, server, capsys):
    meta = _meta(tmp_path, server, 1)
    work = tmp_path / "w"
    conf = _conf(tmp_path, 'user_agent = "geopak \U0001f600 test"\n')
    assert _crawl(work, meta, conf) == 0
    assert "\U0001f600" in (work / "pipeline.toml").read_text("utf-8")
    assert _crawl(work, meta) == 0  # the remembered config loads again
    assert "already done" in capsys.readouterr().out


def test_work_and_out_that_are_files(tmp_path, server, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(SystemExit) as ei:
        main(["filter", "--work", str(f)])
    assert ei.value.code == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as ei:
        main(["shard", "--work", str(tmp_path / "w"), "--out", str(f / "sub")])
    assert ei.value.code == 2
    assert "afile is a file, not a folder" in one_line(capsys.readouterr().err)
    assert f.read_text() == "x" and not (tmp_path / "w").exists()


def test_corrupt_manifest_is_one_line(tmp_path, server, capsys):
    meta = _meta(tmp_path, server)
    work = tmp_path / "w"
    assert _crawl(work, meta) == 0
    capsys.readouterr()
    (work / "manifest.json").write_text('{"stages": {"crawl:yfcc": ')
    before = snapshot(work)
    _refused(capsys, _crawl(work, meta), "manifest.json is damaged", "move it aside")
    assert snapshot(work) == before


def test_stale_manifest_temp_is_cleaned(tmp_path, server, capsys):
    meta = _meta(tmp_path, server)
    work = tmp_path / "w"
    assert _crawl(work, meta) == 0
    stale = work / ".manifest.json.abc123.tmp"
    stale.write_text("{half")
    assert _crawl(work, meta, None, "--force") == 0
    assert not stale.exists()


def _inject_enospc(monkeypatch, what):
    """Make writes of files whose name contains ``what`` fail as on a full disk, through the
    standard library's public ``open`` and ``Path.write_bytes`` (what every writer uses)."""
    import builtins
    import pathlib

    real_open, real_write = builtins.open, pathlib.Path.write_bytes

    def full_open(file, mode="r", *a, **kw):
        if "w" in mode and what in str(file):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(file, mode, *a, **kw)

    def full_write(self, data):
        if what in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    real_os_open = os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def full_os_open(path, flags, *a, **kw):  # the downloader writes images with os.open
        if flags & writing and what in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_os_open(path, flags, *a, **kw)

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(pathlib.Path, "write_bytes", full_write)
    monkeypatch.setattr(os, "open", full_os_open)


def test_full_disk_names_the_file_and_resumes(tmp_path, server, capsys, monkeypatch):
    meta = _meta(tmp_path, server, 4)
    work = tmp_path / "w"
    with monkeypatch.context() as m:
        _inject_enospc(m, ".jpg")
        line = _refused(capsys, _crawl(work, meta, _conf(tmp_path)), "No space left on device")
    assert "images/yfcc/" in line and ".jpg" in line and ".tmp" not in line
    assert not list(work.rglob("*.tmp"))
    # space is back: the same command finishes the crawl
    assert _crawl(work, meta) == 0
    assert "4 downloaded" in capsys.readouterr().out


def _can_mount() -> bool:
    return (
        os.geteuid() == 0
        and subprocess.run(["which", "mount"], capture_output=True).returncode == 0
    )


def _remount_read_only(mnt) -> bool:
    """Remount ``mnt`` read-only, waiting (up to ~10 s) while the kernel still calls it busy:
    a file of the refused crawl can stay open for a moment after the stage returned (a worker
    thread winding down, an object not yet collected)."""
    import gc
    import time

    for _ in range(100):
        gc.collect()
        if subprocess.run(["mount", "-o", "remount,ro,size=8m", str(mnt)]).returncode == 0:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a tiny tmpfs")
def test_full_and_read_only_disk_on_a_real_tmpfs(tmp_path, server, capsys):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    meta = _meta(tmp_path, server, 40)
    conf = _conf(tmp_path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mount refused")
    try:
        line = _refused(capsys, _crawl(mnt / "w", meta, conf), "No space left on device")
        assert str(mnt / "w") in line
        assert _remount_read_only(mnt)
        before = snapshot(mnt / "w")
        _refused(capsys, _crawl(mnt / "w", meta, conf), "Read-only file system")
        assert snapshot(mnt / "w") == before
    finally:
        subprocess.run(["umount", str(mnt)])


def test_refused_boundaries_are_not_remembered(tmp_path, server, capsys):
    # `tag --boundaries F` remembers F for later stages; a file of another country (or one
    # that is no polygon file) is refused before that, so the next stage is not silently
    # re-run on it.
    from support.fictional import write_country

    meta = _meta(tmp_path, server)
    work = tmp_path / "w"
    assert _crawl(work, meta) == 0
    capsys.readouterr()
    before = snapshot(work)
    other = write_country(tmp_path / "xfa.geojson")
    _refused(capsys, main(["tag", "--work", str(work), "--boundaries", str(other)]), "holds XFA")
    assert snapshot(work) == before
    junk = tmp_path / "junk.geojson"
    junk.write_text("no polygons here")
    _refused(capsys, _crawl(work, meta, None, "--boundaries", str(junk)), "junk.geojson")
    assert snapshot(work) == before


@pytest.mark.parametrize("source", ["flickr", "places", "commons", "mapillary"])
def test_endpoint_that_is_no_http_url_is_one_line(tmp_path, capsys, source):
    # refused by argparse at once (before: six retries with back-off, about a minute)
    work = tmp_path / "w"
    for bad in ("notaurl", "ftp://127.0.0.1/x"):
        with pytest.raises(SystemExit) as ei:
            main(["crawl", source, "--work", str(work), "--endpoint", bad])
        assert ei.value.code == 2
        line = one_line(capsys.readouterr().err)
        assert "--endpoint" in line and bad in line and "http" in line
    assert not work.exists()

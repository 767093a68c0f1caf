"""Issue 15 regressions for the crawl, driven through the real CLI against the loopback image
host: malformed URLs and long ids reject one record (never the crawl), a lost image is
fetched again, credentials never cross origins nor land in the records."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from support.snapshot import one_line, snapshot

from geopak_data.cli import main
from geopak_data.sources.yfcc import write_yfcc_tsv


def _meta(tmp_path, urls, ids=None):
    rows = [
        dict(
            photoid=(ids[i] if ids else 5000 + i),
            longitude=70.0 + i * 0.01,
            latitude=30.0,
            downloadurl=u,
            title=f"photo {i}",
            licensename="Attribution License",
        )
        for i, u in enumerate(urls)
    ]
    return write_yfcc_tsv(tmp_path / "m.tsv", rows)


def _crawl(tmp_path, meta, *extra):
    conf = tmp_path / "p.toml"
    if not conf.exists():
        conf.write_text(
            "[retry]\nretries = 0\ntimeout_s = 5.0\n[download]\nbatch_size = 2\nworkers = 1\n"
        )
    argv = ["crawl", "yfcc", "--work", str(tmp_path / "w"), "--metadata", str(meta)]
    return main([*argv, "--allow-private-hosts", "--config", str(conf), *extra])


def _rejects(work):
    t = pq.read_table(work / "crawl/yfcc/rejects.parquet").to_pylist()
    return {r["source_id"]: r for r in t}


def test_malformed_urls_reject_one_record_each(tmp_path, server, capsys):
    urls = [
        f"{server}/i/photo.jpg?ok=1",
        f"{server}/redirect?to=http://127.0.0.1:99999/x",
        f"{server}/redirect?to=http://[::1",
        "http://[::1/x.jpg",
        "http://127.0.0.1:99999/y.jpg",
    ]
    meta = _meta(tmp_path, urls)
    assert _crawl(tmp_path, meta) == 0
    out = capsys.readouterr().out
    assert "1 downloaded, 4 failed (bad_url 4)" in out
    rej = _rejects(tmp_path / "w")
    assert {r["reason"] for r in rej.values()} == {"bad_url"}
    assert all(r["detail"] for r in rej.values())
    # a rerun is a no-op, not a crash
    assert _crawl(tmp_path, meta) == 0 and "already done" in capsys.readouterr().out


def test_long_id_gets_a_bounded_key_and_file_name(tmp_path, server, capsys):
    long_id = "7" * 260
    meta = _meta(tmp_path, [f"{server}/i/photo.jpg?l=1", f"{server}/i/gray.jpg?l=2"], [long_id, 42])
    assert _crawl(tmp_path, meta) == 0
    assert "2 downloaded, 0 failed" in capsys.readouterr().out
    recs = pq.read_table(tmp_path / "w/crawl/yfcc/records.parquet").to_pylist()
    keys = {r["source_id"]: r["key"] for r in recs}
    assert keys["42"] == "yfcc-42"  # short clean ids keep their key
    assert len(keys[long_id]) <= 100 and keys[long_id].startswith("yfcc-777")
    assert all((tmp_path / "w" / r["image_path"]).is_file() for r in recs)


def test_unexpected_error_rejects_the_record_not_the_stage(tmp_path, server, capsys, monkeypatch):
    from geopak_data import imaging

    real = imaging.process_image

    def flaky(data, **kw):
        if len(data) == len(real_gray):
            raise RuntimeError("a library bug on these bytes")
        return real(data, **kw)

    from geopak_data.imageserver import fixture_images

    real_gray = fixture_images()["gray.jpg"]
    monkeypatch.setattr("geopak_data.download.process_image", flaky)
    meta = _meta(tmp_path, [f"{server}/i/photo.jpg?u=1", f"{server}/i/gray.jpg?u=2"])
    assert _crawl(tmp_path, meta) == 0
    assert "1 downloaded, 1 failed (internal_error 1)" in capsys.readouterr().out
    (r,) = _rejects(tmp_path / "w").values()
    assert r["reason"] == "internal_error" and "RuntimeError" in r["detail"]


def test_lost_image_is_fetched_again_and_verified(tmp_path, server, capsys):
    meta = _meta(tmp_path, [f"{server}/i/photo.jpg?r={i}" for i in range(3)])
    work = tmp_path / "w"
    assert _crawl(tmp_path, meta) == 0
    capsys.readouterr()
    before = snapshot(work)
    recs = pq.read_table(work / "crawl/yfcc/records.parquet").to_pylist()
    lost = work / recs[1]["image_path"]
    lost.unlink()
    # the filter notices and gives advice that works
    assert main(["filter", "--work", str(work)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "1 crawled image file(s) missing" in line and "geopak-data crawl yfcc" in line
    assert _crawl(tmp_path, meta) == 0
    assert lost.is_file()
    after = snapshot(work)
    # the work folder is back to what it was: same image bytes, same tables (only the
    # manifest's timings and the refused filter's entry differ)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }
    stage = json.loads((work / "manifest.json").read_text())["stages"]["crawl:yfcc"]
    assert stage["counts"]["refetched"] == 1


def test_credentials_stay_with_the_request(tmp_path, server, capsys):
    host = server.split("://", 1)[1]
    secret = "S3CRETVALUE"
    url = f"http://alice:{secret}@{host}/i/photo.jpg?c=1&api_key={secret}&access_token={secret}"
    meta = _meta(tmp_path, [url])
    assert _crawl(tmp_path, meta) == 0
    assert "1 downloaded" in capsys.readouterr().out
    work = tmp_path / "w"
    for p in work.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    (rec,) = pq.read_table(work / "crawl/yfcc/records.parquet").to_pylist()
    assert rec["url"] == f"http://{host}/i/photo.jpg?c=1"


def test_api_key_header_does_not_follow_to_another_port(tmp_path, server):
    import asyncio

    from geopak_data.config import load_config
    from geopak_data.download import Downloader, url_origin
    from geopak_data.imageserver import start_image_server

    other, stop = start_image_server()
    try:
        full = load_config(None, {"retry.retries": 0})
        cfg = full.download
        target = f"{other}/i/photo.jpg?o=1"

        async def go():
            async with Downloader(cfg, allow_private_hosts=True, retry=full.retry) as dl:
                await dl.fetch(f"{server}/redirect?to={target}", {"X-Goog-Api-Key": "K"})

        asyncio.run(go())
        import urllib.request

        with urllib.request.urlopen(f"{other}/last-headers?path=/i/photo.jpg%3Fo%3D1") as r:
            seen = json.loads(r.read())
        assert seen and "X-Goog-Api-Key" not in seen
    finally:
        stop()
    assert url_origin("https://h/x") != url_origin("http://h/x")
    assert url_origin("http://h/x") == url_origin("http://H:80/y")


def test_avif_is_decoded_and_heif_has_a_clear_reason(tmp_path, capsys):
    import io

    from PIL import Image, features

    from geopak_data.imageserver import start_image_server

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec (then AVIF is unsupported_format)")
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, format="AVIF")
    heif = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    base, stop = start_image_server({"a.avif": buf.getvalue(), "h.heic": heif})
    try:
        meta = _meta(tmp_path, [f"{base}/i/a.avif", f"{base}/i/h.heic"])
        assert _crawl(tmp_path, meta) == 0
    finally:
        stop()
    out = capsys.readouterr().out
    (r,) = _rejects(tmp_path / "w").values()
    assert r["reason"] == "unsupported_format" and "HEIF" in r["detail"]
    assert "1 downloaded, 1 failed (unsupported_format 1)" in out
    (rec,) = pq.read_table(tmp_path / "w/crawl/yfcc/records.parquet").to_pylist()
    assert (rec["width"], rec["height"]) == (64, 48)


def test_lost_image_that_changed_at_the_source_is_rejected_not_swapped(tmp_path, capsys):
    from geopak_data.imageserver import make_jpeg, start_image_server

    folder = tmp_path / "srv"
    folder.mkdir()
    (folder / "p.jpg").write_bytes(make_jpeg(320, 240, seed=1))
    base, stop = start_image_server(folder, fixtures=False)
    try:
        meta = _meta(tmp_path, [f"{base}/i/p.jpg"])
        work = tmp_path / "w"
        assert _crawl(tmp_path, meta) == 0
        (rec,) = pq.read_table(work / "crawl/yfcc/records.parquet").to_pylist()
        (work / rec["image_path"]).unlink()
        (folder / "p.jpg").write_bytes(make_jpeg(320, 240, seed=2))  # another photo now
        capsys.readouterr()
        assert _crawl(tmp_path, meta) == 0
    finally:
        stop()
    assert "0 downloaded, 1 failed (sha256_mismatch 1)" in capsys.readouterr().out
    (r,) = _rejects(work).values()
    assert r["reason"] == "sha256_mismatch" and rec["sha256"][:12] in r["detail"]
    assert not list((work / "images").rglob("*.jpg"))


def test_filter_rejects_one_photo_on_an_unexpected_error(tmp_path, server, capsys, monkeypatch):
    from geopak_data import quality

    meta = _meta(tmp_path, [f"{server}/i/photo.jpg?f={i}" for i in range(3)])
    assert _crawl(tmp_path, meta) == 0
    work = tmp_path / "w"
    recs = pq.read_table(work / "crawl/yfcc/records.parquet").to_pylist()
    victim = recs[1]["image_path"]
    real = quality.measure_image

    def flaky(path, **kw):
        if str(path).endswith(victim):
            raise RuntimeError("a library bug on this file")
        return real(path, **kw)

    monkeypatch.setattr(quality, "measure_image", flaky)
    assert main(["filter", "--work", str(work)]) == 0
    rej = pq.read_table(work / "filter/rejects.parquet").to_pylist()
    mine = [r for r in rej if r["key"] == recs[1]["key"]]
    assert mine and mine[0]["reason"] == "decode_failed"
    assert "RuntimeError" in mine[0]["detail"]

"""The crawl stage end to end against a loopback image host: discovery, downloads, merge,
re-runs, --retry-failed, --limit, the private-address guard, secrets and the CLI."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from geopak_data.cli import main
from geopak_data.config import load_config
from geopak_data.crawl import image_relpath, run_crawl
from geopak_data.records import DOWNLOADED_SCHEMA, REJECT_SCHEMA
from geopak_data.runner import Manifest
from geopak_data.sources.yfcc import YfccSource, write_yfcc_tsv


def cfg(**over):
    base = {
        "download.batch_size": 3,
        "retry.retries": 0,
        "retry.timeout_s": 5.0,
        "download.concurrency": 4,
        "download.workers": 1,
        "download.max_side": 128,
    }
    base.update(over)
    return load_config(None, base)


def metadata(tmp_path, server, paths, name="m.tsv"):
    rows = [
        dict(
            photoid=1000 + i,
            longitude=70.0 + i * 0.01,
            latitude=30.0,
            downloadurl=f"{server}{p}",
            title=f"photo {i}",
            licensename="Attribution License",
        )
        for i, p in enumerate(paths)
    ]
    return write_yfcc_tsv(tmp_path / name, rows)


PATHS = [
    "/i/photo.jpg?a=1",
    "/i/rotated.jpg",
    "/fault/404?a=2",
    "/i/cmyk.jpg",
    "/fault/html?a=3",
    "/i/bomb.png",
    "/i/gray.jpg",
]


def test_crawl_end_to_end_and_rerun_is_noop(tmp_path, server):
    meta = metadata(tmp_path, server, PATHS)
    work = tmp_path / "w"
    out = run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True)
    assert not out.skipped
    assert (
        out.counts["candidates"] == 7
        and out.counts["downloaded"] == 4
        and out.counts["failed"] == 3
    )
    recs = pq.read_table(work / "crawl/yfcc/records.parquet")
    rej = pq.read_table(work / "crawl/yfcc/rejects.parquet")
    assert recs.schema.equals(DOWNLOADED_SCHEMA) and rej.schema.equals(REJECT_SCHEMA)
    assert recs.column("source_id").to_pylist() == [
        "1000",
        "1001",
        "1003",
        "1006",
    ]  # candidate order
    for r in recs.to_pylist():
        p = work / r["image_path"]
        assert (
            r["image_path"]
            == image_relpath("yfcc", r["key"])
            == f"images/yfcc/{r['key'][-2:]}/{r['key']}.jpg"
        )
        assert (
            hashlib.sha256(p.read_bytes()).hexdigest() == r["sha256"]
            and p.stat().st_size == r["bytes"]
        )
        assert max(r["width"], r["height"]) <= 128 and r["license"] == "CC BY 2.0"
    rot = next(r for r in recs.to_pylist() if r["source_id"] == "1001")
    assert rot["height"] > rot["width"]  # EXIF applied
    assert dict(
        zip(rej.column("source_id").to_pylist(), rej.column("reason").to_pylist(), strict=True)
    ) == {"1002": "http_404", "1004": "not_an_image", "1005": "decompression_bomb"}
    assert set(rej.column("stage").to_pylist()) == {"crawl:yfcc"}
    cands = pq.read_table(work / "crawl/yfcc/candidates.parquet")
    assert cands.num_rows == recs.num_rows + rej.num_rows  # nothing dropped silently
    assert Manifest(work).load()["stages"]["crawl:yfcc"]["status"] == "done"

    again = run_crawl(
        source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True
    )
    assert again.skipped and "nothing to do" in again.summary
    # a speed-only setting does not redo any download
    faster = run_crawl(
        source="yfcc",
        work=work,
        config=cfg(**{"download.concurrency": 2}),
        metadata=meta,
        allow_private_hosts=True,
    )
    assert not faster.skipped and faster.counts["downloaded"] == 4
    assert pq.read_table(work / "crawl/yfcc/records.parquet").equals(recs)


def test_private_hosts_refused_by_default_and_nothing_lost(tmp_path, server):
    meta = metadata(tmp_path, server, PATHS[:3])
    work = tmp_path / "w"
    out = run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta)
    assert out.counts["downloaded"] == 0 and out.counts["failed"] == 3
    rej = pq.read_table(work / "crawl/yfcc/rejects.parquet")
    assert set(rej.column("reason").to_pylist()) == {"blocked_private_address"}
    assert not (work / "images/yfcc").exists() or not any((work / "images/yfcc").rglob("*.jpg"))


def test_retry_failed_recovers_transient_failures(tmp_path, server):
    paths = [
        "/i/photo.jpg?b=1",
        "/i/photo.jpg?status=503&times=1&b=2",
        "/i/photo.jpg?status=429&times=1&b=3",
        "/fault/404?b=4",
    ]
    meta = metadata(tmp_path, server, paths)
    work = tmp_path / "w"
    first = run_crawl(
        source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True
    )
    assert first.counts["downloaded"] == 1 and first.counts["failed"] == 3
    rej = pq.read_table(work / "crawl/yfcc/rejects.parquet")
    assert sorted(rej.column("reason").to_pylist()) == ["http_404", "http_429", "http_5xx"]
    second = run_crawl(
        source="yfcc",
        work=work,
        config=cfg(),
        metadata=meta,
        allow_private_hosts=True,
        retry_failed=True,
    )
    assert (
        second.counts["downloaded"] == 3
        and second.counts["failed"] == 1
        and second.counts["recovered"] == 2
    )
    recs = pq.read_table(work / "crawl/yfcc/records.parquet")
    assert recs.column("source_id").to_pylist() == ["1000", "1001", "1002"]
    assert pq.read_table(work / "crawl/yfcc/rejects.parquet").column("reason").to_pylist() == [
        "http_404"
    ]
    assert not (work / "crawl/yfcc/retry_pending.json").exists()


def test_limit_and_changed_candidates_prune_old_images(tmp_path, server):
    meta = metadata(tmp_path, server, ["/i/photo.jpg?c=1", "/i/gray.jpg?c=2", "/i/cmyk.jpg?c=3"])
    work = tmp_path / "w"
    out = run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True)
    assert out.counts["downloaded"] == 3
    out = run_crawl(
        source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True, limit=1
    )
    assert out.counts["candidates"] == 1 and out.counts["downloaded"] == 1
    images = sorted(p.relative_to(work).as_posix() for p in (work / "images/yfcc").rglob("*.jpg"))
    assert (
        images
        == pq.read_table(work / "crawl/yfcc/records.parquet").column("image_path").to_pylist()
    )


def test_secrets_from_request_for_never_stored(tmp_path, server, monkeypatch):
    secret = "SECRETKEY-d41d8cd98f00"

    def request_for(self, record):
        return record["url"] + f"&key={secret}", {"X-Api-Key": secret}

    monkeypatch.setattr(YfccSource, "request_for", request_for)
    meta = metadata(
        tmp_path,
        server,
        ["/i/photo.jpg?require_header=X-Api-Key&d=1", "/i/photo.jpg?status=403&times=9&d=2"],
    )
    work = tmp_path / "w"
    out = run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True)
    assert (
        out.counts["downloaded"] == 1 and out.counts["failed"] == 1
    )  # the header reached the server
    for p in work.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_restricted_source_marks_records(tmp_path, server, monkeypatch):
    monkeypatch.setattr(YfccSource, "restricted", True)
    meta = metadata(tmp_path, server, ["/i/photo.jpg?e=1"])
    work = tmp_path / "w"
    run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True)
    assert pq.read_table(work / "crawl/yfcc/records.parquet").column("restricted").to_pylist() == [
        True
    ]


def test_gldv2_crawl(tmp_path, server):
    (tmp_path / "train.csv").write_text(
        f"id,url,landmark_id\naaaa000000000001,{server}/i/photo.jpg?g=1,5\naaaa000000000002,{server}/i/gray.jpg?g=2,6\n"
    )
    (tmp_path / "marks.csv").write_text("landmark_id,lat,lon\n5,33.7294,73.0380\n6,10.0,10.0\n")
    (tmp_path / "attrib.csv").write_text(
        "id,url,author,license,title\n"
        "aaaa000000000001,https://commons.wikimedia.org/wiki/File:F.jpg,Ali,"
        "CC BY-SA 4.0(https://creativecommons.org/licenses/by-sa/4.0),File:F.jpg\n"
    )
    work = tmp_path / "w"
    out = run_crawl(
        source="gldv2",
        work=work,
        config=cfg(),
        train_csv=tmp_path / "train.csv",
        landmarks=tmp_path / "marks.csv",
        attribution_csv=tmp_path / "attrib.csv",
        allow_private_hosts=True,
    )
    assert out.counts["candidates"] == 1 and out.counts["downloaded"] == 1
    r = pq.read_table(work / "crawl/gldv2/records.parquet").to_pylist()[0]
    assert r["key"] == "gldv2-aaaa000000000001" and (r["lat"], r["lon"]) == (33.7294, 73.038)
    assert (work / r["image_path"]).is_file()


def test_cli_end_to_end(tmp_path, server, capsys):
    meta = metadata(tmp_path, server, ["/i/photo.jpg?f=1", "/fault/404?f=2"])
    work = tmp_path / "w"
    conf = tmp_path / "p.toml"
    conf.write_text("[retry]\nretries = 0\n[download]\nbatch_size = 2\nworkers = 1\n")
    rc = main(
        [
            "crawl",
            "yfcc",
            "--work",
            str(work),
            "--metadata",
            str(meta),
            "--allow-private-hosts",
            "--config",
            str(conf),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "1 downloaded, 1 failed (http_404 1)" in out
    rc = main(
        ["crawl", "yfcc", "--work", str(work), "--metadata", str(meta), "--allow-private-hosts"]
    )
    assert rc == 0 and "already done" in capsys.readouterr().out
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["stages"]["crawl:yfcc"]["counts"]["downloaded"] == 1


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(
            [
                "crawl",
                "yfcc",
                "--work",
                str(tmp_path / "w"),
                "--metadata",
                str(tmp_path / "missing.tsv"),
            ]
        )
    assert ei.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.tsv" in err
    rc = main(["crawl", "yfcc", "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "--metadata" in err and "Traceback" not in err


def test_interrupted_retry_is_finished_by_a_plain_rerun(tmp_path, server, monkeypatch):
    from geopak_data import download

    paths = [f"/i/photo.jpg?status=503&times=1&h={i}" for i in range(4)]
    meta = metadata(tmp_path, server, paths)
    work = tmp_path / "w"
    conf = cfg(**{"download.batch_size": 1, "download.concurrency": 1})
    first = run_crawl(
        source="yfcc", work=work, config=conf, metadata=meta, allow_private_hosts=True
    )
    assert first.counts["failed"] == 4

    real = download.Downloader.download
    calls = {"n": 0}

    async def dying(self, item):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash during --retry-failed")
        return await real(self, item)

    monkeypatch.setattr(download.Downloader, "download", dying)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_crawl(
            source="yfcc",
            work=work,
            config=conf,
            metadata=meta,
            allow_private_hosts=True,
            retry_failed=True,
        )
    assert (work / "crawl/yfcc/retry_pending.json").exists()
    assert (
        Manifest(work).load()["stages"]["crawl:yfcc"]["status"] == "failed"
    )  # an exception, not a kill: recorded with its error
    monkeypatch.setattr(download.Downloader, "download", real)

    resumed = run_crawl(
        source="yfcc", work=work, config=conf, metadata=meta, allow_private_hosts=True
    )
    assert resumed.counts["downloaded"] == 4 and resumed.counts["failed"] == 0
    assert not (work / "crawl/yfcc/retry_pending.json").exists()


def test_metadata_edit_without_url_change_does_not_redownload(tmp_path, server):
    from urllib.request import quote, urlopen

    path = "/i/photo.jpg?j=1"
    rows = [
        dict(
            photoid=1,
            longitude=70.0,
            latitude=30.0,
            downloadurl=server + path,
            title="old title",
            licensename="Attribution License",
        )
    ]
    meta = write_yfcc_tsv(tmp_path / "m.tsv", rows)
    work = tmp_path / "w"
    run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True)
    rows[0]["title"] = "new title"
    write_yfcc_tsv(meta, rows)
    out = run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True)
    assert not out.skipped and out.counts["downloaded"] == 1
    assert pq.read_table(work / "crawl/yfcc/records.parquet").column("title").to_pylist() == [
        "new title"
    ]
    with urlopen(f"{server}/count?path={quote(path, safe='')}", timeout=10) as r:
        assert r.read() == b"1"  # fetched once, by the first run only


def test_duplicate_photo_ids_keep_first_and_lose_no_later_row(tmp_path, server):
    # A repeated photo id early in the file must neither survive twice nor push the last rows out.
    rows = [
        dict(
            photoid=pid,
            longitude=70.0 + i * 0.01,
            latitude=30.0,
            downloadurl=f"{server}/i/photo.jpg?d={i}",
            licensename="Attribution License",
        )
        for i, pid in enumerate([1, 2, 1, 3, 4])
    ]
    meta = write_yfcc_tsv(tmp_path / "dup.tsv", rows)
    out = run_crawl(
        source="yfcc", work=tmp_path / "w", config=cfg(), metadata=meta, allow_private_hosts=True
    )
    assert out.counts["duplicates"] == 1 and out.counts["candidates"] == 4
    cands = pq.read_table(tmp_path / "w/crawl/yfcc/candidates.parquet")
    assert cands.column("source_id").to_pylist() == ["1", "2", "3", "4"]
    assert cands.column("url").to_pylist()[0].endswith("d=0")


def test_download_parts_from_before_refreshed_url_still_merge(tmp_path):
    """A work folder written before ``refreshed_url`` existed resumes: its parts read as
    having no refreshed URL (the candidate's URL is kept)."""
    import pyarrow as pa

    from geopak_core.io import PartStore
    from geopak_data.crawl import BATCH_SCHEMA, _batch_part

    old = pa.schema([f for f in BATCH_SCHEMA if f.name != "refreshed_url"])
    parts = PartStore(tmp_path / "parts")
    parts.write("b0000000", old.empty_table())
    t = _batch_part(parts, "b0000000")
    assert t.schema == BATCH_SCHEMA and t.num_rows == 0


def test_nothing_inside_the_bbox_is_an_empty_crawl_not_a_crash(tmp_path, server):
    # every row lies outside the bbox: no candidates, no download batches; the stage finishes
    # with empty tables (it crashed merging zero batches), and the rerun does nothing
    meta = write_yfcc_tsv(
        tmp_path / "paris.tsv",
        [
            dict(photoid=1, longitude=2.35, latitude=48.85, downloadurl=f"{server}/i/photo.jpg"),
            dict(photoid=2, longitude=2.29, latitude=48.86, downloadurl=f"{server}/i/gray.jpg"),
        ],
    )
    work = tmp_path / "w"
    out = run_crawl(source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True)
    assert out.counts["candidates"] == 0 and out.counts["downloaded"] == 0
    assert pq.read_table(work / "crawl" / "yfcc" / "records.parquet").num_rows == 0
    again = run_crawl(
        source="yfcc", work=work, config=cfg(), metadata=meta, allow_private_hosts=True
    )
    assert again.skipped


def test_summary_keeps_discovery_rejects_apart_from_failed_downloads(tmp_path, server):
    """Rejects of discovery (here: no licence) are not download failures: the line names
    them apart, after the failed downloads and their reasons."""
    rows = [
        dict(photoid=1, longitude=70.0, latitude=30.0, downloadurl=f"{server}/i/photo.jpg?s=1"),
        dict(photoid=2, longitude=70.1, latitude=30.0, downloadurl=f"{server}/fault/404?s=2"),
        dict(photoid=3, longitude=70.2, latitude=30.0, downloadurl=f"{server}/i/photo.jpg?s=3"),
        dict(photoid=4, longitude=70.3, latitude=30.0, downloadurl=f"{server}/i/photo.jpg?s=4"),
    ]
    for r in rows[:2]:
        r["licensename"] = "Attribution License"
    meta = write_yfcc_tsv(tmp_path / "m.tsv", rows)
    out = run_crawl(
        source="yfcc", work=tmp_path / "w", config=cfg(), metadata=meta, allow_private_hosts=True
    )
    assert (
        "1 downloaded, 1 failed (http_404 1); 2 rejected at discovery (license_not_free 2)"
        in out.summary
    )
    clean = run_crawl(
        source="yfcc",
        work=tmp_path / "w2",
        config=cfg(),
        metadata=write_yfcc_tsv(tmp_path / "m2.tsv", rows[:1]),
        allow_private_hosts=True,
    )
    assert "1 downloaded, 0 failed in" in clean.summary

"""Mapillary discovery against a loopback API v4 images endpoint.

The fake (tests/support/fakes/mapillary_server.py) refuses bboxes of 0.01 deg² or more,
pages with ``paging.next`` links that carry the access token back, caps each bbox query, and
answers errors with the Graph API's ``{"error": {...}}`` bodies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.discovery import assert_same_crawl, kill_mid_discovery_and_resume, write_crawl_conf
from support.fakes import serve
from support.fakes.mapillary_server import TOKEN, MapillaryFake

from geopak_core.io import PartStore
from geopak_data.cli import main
from geopak_data.config import load_config
from geopak_data.sources.base import NullProgress
from geopak_data.sources.mapillary import MapillarySource, strip_token, thin_sequences
from geopak_data.splits import assign_splits


def write_conf(tmp: Path, extra: str = "") -> Path:
    return write_crawl_conf(tmp, "mapillary", "limit = 10\nbox_cap = 30", extra)


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", TOKEN)


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MAPILLARY_ACCESS_TOKEN", TOKEN)
    fake = MapillaryFake(cap=30, faults=["http500", "http429"])
    tmp = tmp_path_factory.mktemp("mly")
    work = tmp / "w"
    try:
        with serve(fake.app()) as base:
            rc = main(["crawl", "mapillary", "--work", str(work), "--config", str(write_conf(tmp)),
                       "--endpoint", base, "--allow-private-hosts"])  # fmt: skip
    finally:
        mp.undo()
    assert rc == 0
    return fake, work


def test_boxes_fit_the_endpoint_pages_are_followed_and_caps_split(crawled) -> None:
    fake, work = crawled
    assert fake.violations == []
    ok = [r for r in fake.requests if r["outcome"] == "ok"]
    assert [r["outcome"] for r in fake.requests[:2]] == ["http500", "http429"]  # retried
    assert any("after" in r["params"] for r in ok)  # paging.next followed
    assert any(r["total"] >= 30 for r in ok)  # a capped box ...
    small = [r for r in ok if "after" not in r["params"]]
    widths = [
        float(r["params"]["bbox"].split(",")[2]) - float(r["params"]["bbox"].split(",")[0])
        for r in small
    ]
    assert min(widths) < 0.05  # ... was split below the initial box size
    assert all(r["auth"] == "header" for r in fake.requests)
    fields = set(ok[0]["params"]["fields"].split(","))
    assert {
        "id",
        "computed_geometry",
        "captured_at",
        "creator",
        "sequence",
        "is_pano",
        "thumb_1024_url",
    } <= fields


def test_every_image_is_kept_or_rejected_with_a_reason(crawled) -> None:
    fake, work = crawled
    cands = pq.read_table(work / "crawl/mapillary/candidates.parquet").to_pylist()
    rej = pq.read_table(work / "crawl/mapillary/rejects.parquet").to_pylist()
    ids = [c["source_id"] for c in cands] + [r["source_id"] for r in rej]
    assert len(ids) == len(set(ids)) == len(fake.images)
    reasons = {r["source_id"]: r["reason"] for r in rej}
    panos = {i.id for i in fake.images if i.is_pano}
    assert panos and all(reasons[p] == "panorama" for p in panos)
    nothumb = {i.id for i in fake.images if not i.has_thumb}
    assert all(reasons[p] == "no_thumbnail" for p in nothumb)
    assert "sequence_thinned" in reasons.values()


def test_records_licence_sequence_group_and_thinning(crawled) -> None:
    fake, work = crawled
    by_id = {i.id: i for i in fake.images}
    recs = pq.read_table(work / "crawl/mapillary/records.parquet").to_pylist()
    assert recs
    last: dict[str, tuple[float, float]] = {}
    for r in sorted(recs, key=lambda r: by_id[r["source_id"]].captured_at):
        i = by_id[r["source_id"]]
        assert r["license"] == "CC BY-SA 4.0" and r["owner"] == i.username
        assert r["group_id"] == f"mapillary-seq-{i.sequence}"
        assert i.username in r["attribution"] and "Mapillary" in r["attribution"]
        if i.has_computed:
            assert (r["lat"], r["lon"]) == pytest.approx((i.lat, i.lon))
        if i.sequence in last:  # thinning: kept frames of a sequence >= 15 m apart
            assert abs(r["lat"] - last[i.sequence][0]) * 111_320 >= 15 - 1e-6
        last[i.sequence] = (r["lat"], r["lon"])


def test_the_token_is_never_stored(crawled) -> None:
    _, work = crawled
    for p in work.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


def test_a_sequence_never_straddles_splits() -> None:
    n = 60
    keys = [f"k{i:03d}" for i in range(n)]
    group = [f"seq{i // 12}" for i in range(n)]
    rng = np.random.default_rng(0)
    res = assign_splits(
        keys=keys, province_id=np.zeros(n, np.int64), cell_id=np.arange(n) % 3,
        owner=[f"o{i}" for i in range(n)], date_taken=[""] * n,
        lat=rng.uniform(30, 31, n), lon=rng.uniform(70, 71, n),
        sha256=[""] * n, phash=[""] * n, group_id=group,
    )  # fmt: skip
    for g in set(group):
        members = [i for i in range(n) if group[i] == g]
        assert len({int(res.split[i]) for i in members}) == 1
        assert len({int(res.group[i]) for i in members}) == 1
    assert res.n_groups == 5


def test_bad_token_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", "MLY|1|wrong")
    with serve(MapillaryFake().app()) as base:
        rc = main(["crawl", "mapillary", "--work", str(tmp_path / "w"),
                   "--config", str(write_conf(tmp_path)), "--endpoint", base])  # fmt: skip
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "Traceback" not in err and "MLY|1|wrong" not in err
    assert "HTTP 401" in last and "code 190" in last and "MAPILLARY_ACCESS_TOKEN" in last


def test_missing_token_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MAPILLARY_ACCESS_TOKEN")
    rc = main(
        ["crawl", "mapillary", "--work", str(tmp_path / "w"), "--config", str(write_conf(tmp_path))]
    )
    assert rc == 2 and "MAPILLARY_ACCESS_TOKEN is not set" in capsys.readouterr().err


def test_query_auth_panoramas_included(tmp_path: Path) -> None:
    fake = MapillaryFake(cap=30)
    cfg = load_config(
        write_conf(tmp_path, 'auth = "query"\ninclude_panoramas = true\nthin_m = 0.0')
    )
    with serve(fake.app()) as base:
        src = MapillarySource(cfg, base)
        parts = PartStore(tmp_path / "parts")
        src.discover(parts, progress=NullProgress())
    assert all(r["auth"] == "query" for r in fake.requests)
    ids = set(parts.read_all().column("source_id").to_pylist())
    assert ids == {i.id for i in fake.images if i.has_thumb}


def test_strip_token_and_thinning_helpers() -> None:
    assert (
        strip_token("https://g/images?bbox=1&access_token=MLY|x&after=abc")
        == "https://g/images?bbox=1&after=abc"
    )
    recs = [
        ({"source_id": str(i), "group_id": "s", "lat": 30 + i * 5 / 111_320, "lon": 70.0}, i)
        for i in range(6)
    ]
    kept, dropped = thin_sequences(recs, 12.0)
    assert [r["source_id"] for r in kept] == ["0", "3"] and len(dropped) == 4
    assert all(d["reason"] == "sequence_thinned" for d in dropped)


@pytest.mark.slow
def test_kill9_mid_discovery_resumes_exactly(tmp_path: Path) -> None:
    import os
    import sys

    repo = Path(__file__).resolve().parents[3]
    env = dict(os.environ, GEOPAK_NO_PROGRESS="1", MAPILLARY_ACCESS_TOKEN=TOKEN)
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    conf = write_conf(tmp_path, "min_interval_s = 0.02")
    fake = MapillaryFake(cap=30)
    with serve(fake.app()) as base:

        def cmd(work: Path) -> list[str]:
            return [sys.executable, "-m", "geopak_data.cli", "crawl", "mapillary", "--work", str(work),
                    "--config", str(conf), "--endpoint", base, "--allow-private-hosts"]  # fmt: skip

        ref, work = kill_mid_discovery_and_resume(cmd, env, tmp_path, "mapillary", (5, 40))
    assert_same_crawl(ref, work, "mapillary")


def _crawl(fake: MapillaryFake, tmp: Path, work: Path, base: str | None = None) -> int:
    if base is None:
        with serve(fake.app()) as base:
            return _crawl(fake, tmp, work, base)
    return main(["crawl", "mapillary", "--work", str(work), "--config", str(write_conf(tmp)),
                 "--endpoint", base, "--allow-private-hosts"])  # fmt: skip


def _oe(url: str) -> int:
    from urllib.parse import parse_qs, urlsplit

    return int(parse_qs(urlsplit(url).query)["oe"][0], 16)


def test_expired_links_are_refreshed_once_and_recorded(tmp_path: Path) -> None:
    """Signed thumbnail links expire (403 "URL signature expired"): each download that meets
    one asks the image's node for a fresh link with the token, fetches once more, and the
    record keeps the fresh URL (never the token); candidates keep what discovery saw."""
    fake = MapillaryFake(cap=30, stale_listing=True)
    work = tmp_path / "w"
    assert _crawl(fake, tmp_path, work) == 0
    cands = pq.read_table(work / "crawl" / "mapillary" / "candidates.parquet").to_pandas()
    recs = pq.read_table(work / "crawl" / "mapillary" / "records.parquet").to_pandas()
    assert len(recs) == len(cands) > 50  # every candidate downloaded
    assert fake.expired_hits == len(cands) == len(fake.refreshes) == fake.image_hits
    assert all(r["auth"] and r["fields"] == "thumb_1024_url" for r in fake.refreshes)
    assert {r["id"] for r in fake.refreshes} == set(cands["source_id"])
    old = dict(zip(cands["key"], cands["url"], strict=True))
    for key, url in zip(recs["key"], recs["url"], strict=True):
        assert _oe(url) > _oe(old[key])  # the fresh link, not the expired one
    for p in work.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


def test_links_expired_since_the_crawl_are_refreshed_on_refetch(tmp_path: Path) -> None:
    """A finished crawl, time passes, an image file is lost: the re-fetch meets an expired
    link, refreshes it, gets the same image (sha256 checked) and records the new URL."""
    fake = MapillaryFake(cap=30)
    work = tmp_path / "w"
    with serve(fake.app()) as base:  # one endpoint: the second run is the same crawl
        assert _crawl(fake, tmp_path, work, base) == 0
        assert fake.refreshes == []  # fresh links need no refresh
        recs = pq.read_table(work / "crawl" / "mapillary" / "records.parquet").to_pandas()
        lost = recs.iloc[3]
        (work / lost["image_path"]).unlink()
        fake.expire()
        assert _crawl(fake, tmp_path, work, base) == 0
    assert [r["id"] for r in fake.refreshes] == [lost["source_id"]]
    after = pq.read_table(work / "crawl" / "mapillary" / "records.parquet").to_pandas()
    row = after[after["key"] == lost["key"]].iloc[0]
    assert row["sha256"] == lost["sha256"] and (work / row["image_path"]).is_file()
    assert _oe(row["url"]) == _oe(lost["url"]) + 1
    others = after[after["key"] != lost["key"]]
    assert others["url"].tolist() == recs[recs["key"] != lost["key"]]["url"].tolist()


def test_deleted_image_is_rejected_with_the_reason(tmp_path: Path) -> None:
    fake = MapillaryFake(cap=30, stale_listing=True)
    gone = [fake.images[3 * 12].id, fake.images[4 * 12].id]  # first frames: never thinned
    fake.gone.update(gone)
    work = tmp_path / "w"
    assert _crawl(fake, tmp_path, work) == 0
    rej = pq.read_table(work / "crawl" / "mapillary" / "rejects.parquet").to_pandas()
    mine = rej[rej["source_id"].isin(gone)]
    assert len(mine) == len(gone) and set(mine["reason"]) == {"http_403"}
    for detail in mine["detail"]:
        assert "refreshing the URL failed" in detail and "code 100" in detail
        assert TOKEN not in detail

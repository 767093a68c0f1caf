"""Wikimedia Commons discovery against a loopback MediaWiki Action API.

The fake (tests/support/fakes/commons_server.py) enforces GeoData's real limits (gsbbox area
<= 400 km², at most gslimit hits, no continuation), answers imageinfo in pieces with
``continue``, puts HTML in ``Artist``/``Credit``, and injects ``maxlag`` errors with
``Retry-After``. Completeness: every free photo is found exactly once although one spot
holds more files than a single query can return.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.discovery import assert_same_crawl, kill_mid_discovery_and_resume, write_crawl_conf
from support.fakes import serve
from support.fakes.commons_server import NON_FREE, CommonsFake, _area_m2

from geopak_core.io import PartStore
from geopak_data.cli import main
from geopak_data.config import load_config
from geopak_data.licenses import classify, is_free
from geopak_data.sources.base import NullProgress
from geopak_data.sources.commons import CommonsSource, html_text_and_link, iso_date

REPO = Path(__file__).resolve().parents[3]


def write_conf(tmp: Path, extra: str = "") -> Path:
    return write_crawl_conf(tmp, "commons", "gslimit = 50", extra)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory):
    fake = CommonsFake()
    tmp = tmp_path_factory.mktemp("commons")
    work = tmp / "w"
    with serve(fake.app()) as base:
        rc = main(
            ["crawl", "commons", "--work", str(work), "--config", str(write_conf(tmp)),
             "--endpoint", f"{base}/w/api.php", "--allow-private-hosts"]
        )  # fmt: skip
    assert rc == 0
    return fake, work


def test_every_free_file_found_once_despite_the_result_cap(crawled) -> None:
    fake, work = crawled
    cands = pq.read_table(work / "crawl/commons/candidates.parquet")
    ids = cands.column("source_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert set(ids) == fake.free_ids()
    # the cap was in the way: some box held more files than gslimit, so it was split
    searches = fake.geosearches()
    assert any(s["total"] > 50 for s in searches)
    assert all(len(s["returned"]) <= 50 for s in searches)
    recs = pq.read_table(work / "crawl/commons/records.parquet")
    assert recs.num_rows == len(ids) and fake.image_hits == len(ids)


def test_requests_respect_the_api_limits_and_etiquette(crawled) -> None:
    fake, _ = crawled
    assert all(r["outcome"] == "ok" for r in fake.requests)  # no toobig, no UA refusal
    for r in fake.requests:
        p = r["params"]
        assert p["maxlag"] == "5" and p["format"] == "json" and p["formatversion"] == "2"
        assert "geopak" in r["user_agent"] and "https://" in r["user_agent"]
    for s in fake.geosearches():
        top, left, bottom, right = (float(v) for v in s["params"]["gsbbox"].split("|"))
        assert top > bottom and right > left
        assert _area_m2(top, left, bottom, right) <= 4e8
        assert s["params"]["gsnamespace"] == "6"
    infos = [r for r in fake.requests if r["params"].get("prop") == "imageinfo"]
    assert infos and all(len(r["params"]["titles"].split("|")) <= 50 for r in infos)
    assert all(r["params"]["iiurlwidth"] == "128" for r in infos)
    assert any("iicontinue" in r["params"] for r in infos)  # continuation followed
    assert {"url", "size", "mime", "extmetadata"} <= set(infos[0]["params"]["iiprop"].split("|"))


def test_records_carry_licence_artist_and_attribution(crawled) -> None:
    fake, work = crawled
    by_id = {str(f.pageid): f for f in fake.files}
    rows = pq.read_table(work / "crawl/commons/records.parquet").to_pylist()
    for rec in rows:
        f = by_id[rec["source_id"]]
        assert rec["key"] == f"commons-{f.pageid}"
        assert rec["lat"] == pytest.approx(f.lat) and rec["lon"] == pytest.approx(f.lon)
        assert rec["license"] == f.license[0] and rec["license_url"] == f.license[1]
        assert "<" not in rec["owner"] and rec["owner"].startswith("Photographer")
        assert "via Wikimedia Commons" in rec["attribution"] and rec["owner"] in rec["attribution"]
        assert "/thumb/" in rec["url"] and rec["width"] <= 128
        assert rec["date_taken"][:4].isdigit()
    linked = [r for r in rows if "commons.wikimedia.org/wiki/User:" in r["attribution"]]
    assert linked  # the Artist link is kept


def test_excluded_files_keep_their_reasons(crawled) -> None:
    fake, work = crawled
    rej = pq.read_table(work / "crawl/commons/rejects.parquet").to_pylist()
    reasons = {r["reason"]: r for r in rej}
    assert set(reasons) == {"license_not_free", "not_a_photo", "no_thumbnail", "missing_file"}
    nf = reasons["license_not_free"]
    assert NON_FREE[0] in nf["detail"] and nf["stage"] == "crawl:commons"
    nonfree = next(f for f in fake.files if f.license is NON_FREE)
    assert nf["source_id"] == str(nonfree.pageid)


def test_maxlag_and_overload_are_waited_out(tmp_path: Path) -> None:
    fake = CommonsFake(faults=["maxlag", "http503", "maxlag"])
    cfg = load_config(write_conf(tmp_path))
    # Retry-After is honoured up to max_backoff_s (the one retry policy of every client)
    cfg.retry.max_backoff_s = 30.0
    t = FakeTime()
    with serve(fake.app()) as base:
        src = CommonsSource(cfg, f"{base}/w/api.php", sleep=t.sleep, clock=t.clock)
        parts = PartStore(tmp_path / "parts")
        src.discover(parts, progress=NullProgress())
    assert [r["outcome"] for r in fake.requests[:4]] == ["maxlag", "http503", "maxlag", "ok"]
    assert t.sleeps[0] >= 5 and t.sleeps[2] >= 5  # Retry-After: 5 honoured
    assert src.client.stats["retries"] == 3
    ids = set(parts.read_all().column("source_id").to_pylist())
    assert ids == fake.free_ids()


def test_bad_endpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(tmp_path)
    conf.write_text(conf.read_text().replace("[retry]\n", "[retry]\nretries = 0\n"))
    rc = main(["crawl", "commons", "--work", str(tmp_path / "w"), "--config", str(conf),
               "--endpoint", "http://127.0.0.1:9/w/api.php"])  # fmt: skip
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "Traceback" not in err
    assert last.startswith("geopak-data: error: commons: ") and "127.0.0.1:9/w/api.php" in last


def test_html_and_dates_and_licences() -> None:
    text, link = html_text_and_link(
        '<a href="//commons.wikimedia.org/wiki/User:A_B" title="User:A B">A&nbsp;B</a> (talk)'
    )
    assert text == "A B (talk)" and link == "https://commons.wikimedia.org/wiki/User:A_B"
    assert iso_date("2019-05-04 10:11:12") == "2019-05-04T10:11:12"
    assert (
        iso_date('<time class="dtstart" datetime="2012-03-04">4 March 2012</time>') == "2012-03-04"
    )
    assert iso_date("May 2012") == ""
    assert iso_date("taken on 2012-03-04") == "2012-03-04"
    assert classify("CC BY-SA 3.0 de").family == "by-sa"
    assert is_free("Public domain", ["PD"]) and not is_free("CC BY-NC 2.0", ["CC BY", "CC BY-SA"])
    assert not is_free("", ["CC0"]) and not is_free("GFDL", ["CC0", "CC BY-SA"])


# ----------------------------------------------------------------------------- kill -9


def _env() -> dict[str, str]:
    env = dict(os.environ, GEOPAK_NO_PROGRESS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_kill9_mid_discovery_resumes_exactly(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "min_interval_s = 0.03")
    fake = CommonsFake()
    with serve(fake.app()) as base:

        def cmd(work: Path) -> list[str]:
            return [sys.executable, "-m", "geopak_data.cli", "crawl", "commons", "--work", str(work),
                    "--config", str(conf), "--endpoint", f"{base}/w/api.php", "--allow-private-hosts"]  # fmt: skip

        ref, work = kill_mid_discovery_and_resume(cmd, _env(), tmp_path, "commons", (3, 9))
    assert_same_crawl(ref, work, "commons")

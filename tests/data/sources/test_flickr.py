"""Flickr discovery against a loopback Flickr REST API, through the real ``flickrapi`` client.

The fake (tests/support/fakes/flickr_server.py) holds a seeded world of 6,000 openly licensed photos
(4,500 of them in one ~150 m spot in one year) and enforces the real service's rules: OAuth
signatures, at most 250 per geo page, the 4,000-result cap with repeating pages, no results
for geo queries without a date window. Completeness means: every photo the fake holds is
found exactly once although no single query can return them all.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from support.fakes import serve
from support.fakes.flickr_server import FlickrFake, make_world

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore
from geopak_data.cli import main
from geopak_data.config import RETRY_KEYS, PipelineConfig, load_config
from geopak_data.ratelimit import CallBudget, backoff_delay, retry_after_seconds
from geopak_data.records import SOURCE_SCHEMA
from geopak_data.sources import get_source
from geopak_data.sources.base import NullProgress
from geopak_data.sources.flickr import FLICKR_LICENSES, FlickrSource, photo_record, pick_url

KEY = "fake-flickr-key-0123456789abcdef"
SECRET = "fake-secret-fedcba9876"
BBOX = [70.0, 30.0, 74.0, 34.0]
DEFAULT_LICENSES = {1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16}


class FakeTime:
    """A clock and sleep that only move when slept on: budgets over simulated hours, instantly."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Bar(NullProgress):
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: float = 1) -> None:
        self.n += int(n)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    monkeypatch.setenv("FLICKR_API_SECRET", SECRET)


def make_config(**flickr: object) -> PipelineConfig:
    cfg = load_config(None)
    cfg.crawl.bbox = list(BBOX)
    f = cfg.crawl.flickr
    f.min_date, f.max_date, f.window_days = "2010-01-01", "2013-12-31", 730
    cfg.retry.backoff_s = 0.5
    for k, v in flickr.items():
        setattr(cfg.retry if k in RETRY_KEYS else f, k, v)
    return cfg


def run(
    fake: FlickrFake, cfg: PipelineConfig, parts_dir: Path, **opts: object
) -> tuple[FlickrSource, PartStore, Bar]:
    with serve(fake.app()) as base:
        src = FlickrSource(cfg, f"{base}/services/rest/", **opts)
        parts = PartStore(parts_dir)
        bar = Bar()
        src.discover(parts, progress=bar)
    return src, parts, bar


def ids_of(parts: PartStore) -> list[str]:
    return parts.read_all(schema=SOURCE_SCHEMA).column("source_id").to_pylist()


def small_world(n: int = 600, hotspot_n: int = 450, **kw: object) -> list:
    return make_world(n=n, hotspot_n=hotspot_n, edge_n=12, excluded_n=40, **kw)


# ----------------------------------------------------------------------------- the big crawl


@pytest.fixture(scope="module")
def full_crawl(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("FLICKR_API_KEY", KEY)
    mp.setenv("FLICKR_API_SECRET", SECRET)
    try:
        fake = FlickrFake()
        time = FakeTime()
        src, parts, bar = run(
            fake,
            make_config(),
            tmp_path_factory.mktemp("flickr_parts"),
            sleep=time.sleep,
            clock=time.clock,
        )
        yield fake, src, parts, bar
    finally:
        mp.undo()


def test_finds_every_photo_exactly_once_despite_the_cap(full_crawl) -> None:
    fake, src, parts, bar = full_crawl
    ids = ids_of(parts)
    expected = fake.expected_ids()
    assert len(expected) == 6000
    assert len(ids) == len(set(ids)) == 6000
    assert set(ids) == expected
    assert bar.n == 6000
    # the cap was really in the way: some query reported more than it could return
    assert max(s["total"] for s in fake.searches()) > fake.cap
    units = parts.done_units()
    split_paths = {u.split("-")[2] for u in units}
    assert any("s" in p[1:] for p in split_paths), "no spatial split happened"
    assert any("t" in p[1:] for p in split_paths), (
        "no date-window split happened (hotspot needs it)"
    )
    assert src.stats["splits"] > 0 and src.stats["truncated"] == 0


def test_every_query_has_a_date_window_and_the_documented_parameters(full_crawl) -> None:
    fake, src, parts, _ = full_crawl
    searches = fake.searches()
    assert fake.violations == []
    assert searches and all(s["date_window"] for s in searches)
    for s in searches:
        p = s["params"]
        assert p["min_taken_date"] and p["max_taken_date"]
        assert p["has_geo"] == "1"
        assert int(p["per_page"]) <= 250
        assert {int(x) for x in p["license"].split(",")} == DEFAULT_LICENSES
        extras = set(p["extras"].split(","))
        assert {
            "geo",
            "license",
            "owner_name",
            "date_taken",
            "tags",
            "url_o",
            "url_l",
            "url_c",
            "url_z",
        } <= extras
        assert p["format"] == "json" and p["nojsoncallback"] == "1"
        assert "api_key" not in p  # the key travels in the signed OAuth header only
    # leaf pages never go past what a query can return
    assert all(
        int(s["params"]["page"]) * int(s["params"]["per_page"]) <= fake.cap for s in searches
    )


def test_photos_on_tile_edges_are_deduplicated(full_crawl) -> None:
    fake, src, parts, _ = full_crawl
    returned = Counter(pid for s in fake.searches() for pid in s.get("returned", []))
    # a photo on a shared edge came back from more than one query (split probes aside)...
    leaf = Counter(pid for s in fake.searches() if s["total"] <= fake.cap for pid in s["returned"])
    assert any(c > 1 for c in leaf.values())
    assert src.stats["duplicates"] > 0
    # ...but is stored once
    assert Counter(ids_of(parts)).most_common(1)[0][1] == 1
    assert set(returned) >= set(ids_of(parts))


def test_records_map_licence_url_owner_and_attribution(full_crawl) -> None:
    fake, src, parts, _ = full_crawl
    by_id = {p.id: p for p in fake.photos}
    table = parts.read_all(schema=SOURCE_SCHEMA)
    assert table.schema.equals(SOURCE_SCHEMA)
    for rec in table.slice(0, 300).to_pylist():
        p = by_id[rec["source_id"]]
        assert rec["key"] == f"flickr-{p.id}"
        assert rec["lat"] == pytest.approx(p.lat) and rec["lon"] == pytest.approx(p.lon)
        assert rec["accuracy"] == p.accuracy
        assert rec["license_id"] == str(p.license)
        assert (rec["license"], rec["license_url"]) == FLICKR_LICENSES[p.license]
        assert rec["owner"] == p.ownername
        # coarse dates keep only the precision Flickr knows (never a day for a month)
        cut = {0: 19, 4: 7, 6: 4, 8: 4}[p.granularity]
        assert rec["date_taken"] == p.taken.replace(" ", "T")[:cut]
        assert rec["date_granularity"] == p.granularity
        assert rec["attribution"].startswith(
            f"Photo by {p.ownername} on Flickr, {FLICKR_LICENSES[p.license][0]}"
        )
        assert rec["restricted"] is False
        # largest size <= 1600 px: url_h when the photo has it, else url_l
        assert rec["url"].endswith("_h.jpg" if p.has_large else "_l.jpg")


def test_pick_url_and_record_edge_cases() -> None:
    photo = {
        "url_o": "o",
        "width_o": "6000",
        "height_o": "4000",
        "url_k": "k",
        "width_k": 2048,
        "height_k": 1365,
        "url_h": "h",
        "width_h": "1600",
        "height_h": "1067",
        "url_z": "z",
        "width_z": 640,
        "height_z": 427,
    }
    assert pick_url(photo, 1600) == ("h", 1600, 1067)
    assert pick_url(photo, 1024)[0] == "z"
    assert (
        pick_url({"url_o": "o", "width_o": 5000, "height_o": 4000}, 1600)[0] == "o"
    )  # only larger: smallest
    assert pick_url({}, 1600) == ("", None, None)
    base = {
        "id": "1",
        "owner": "9@N00",
        "secret": "abc",
        "server": "7",
        "latitude": "0",
        "longitude": 0,
        "license": 4,
    }
    assert photo_record(base) is None  # null island
    rec = photo_record(
        {
            **base,
            "latitude": "31.5",
            "longitude": "74.3",
            "accuracy": "16",
            "datetaken": "2020-01-02 03:04:05",
            "datetakenunknown": "1",
        }
    )
    assert rec is not None
    assert (
        rec["url"] == "https://live.staticflickr.com/7/1_abc_b.jpg"
    )  # built from id/server/secret
    assert rec["date_taken"] == "" and rec["accuracy"] == 16 and rec["license"] == "CC BY 2.0"
    assert rec["owner"] == "9@N00"  # no ownername: the NSID


def test_the_fake_mixes_strings_and_numbers_inside_one_photo() -> None:
    fake = FlickrFake(photos=small_world(n=40, hotspot_n=0))
    mixed = next(p for p in fake.photos if not p.stringy)
    extras = {"geo", "license", "date_taken", "url_m", "url_z"}
    body = fake._photo_json(mixed, extras, "http://127.0.0.1")
    kinds = {
        type(body[k])
        for k in ("latitude", "longitude", "accuracy", "license", "width_m", "height_m")
    }
    assert kinds == {str, int} or kinds == {str, float} or kinds == {str, int, float}
    rec = photo_record(body)
    assert rec is not None and rec["lat"] == pytest.approx(mixed.lat)
    assert rec["license_id"] == str(mixed.license) and rec["accuracy"] == mixed.accuracy
    grains = Counter(p.granularity for p in make_world(n=2000, hotspot_n=0, excluded_n=0))
    assert set(grains) == {0, 4, 6, 8}  # the world holds month, year and circa dates


def test_photo_without_a_licence_field_is_refused_as_unknown(tmp_path: Path) -> None:
    photos = small_world(n=120, hotspot_n=0)
    bare_ids = {p.id for p in photos[30:40]}  # past the photos on tile edges (found twice)
    for p in photos[30:40]:
        p.license_field = False
    src, parts, _ = run(FlickrFake(photos=photos), make_config(), tmp_path / "p")
    got = set(ids_of(parts))
    assert not got & bare_ids
    assert {p.id for p in photos[:120]} - bare_ids <= got
    assert src.stats["licence_unknown"] == 10
    bare = photo_record(
        {
            "id": "5",
            "owner": "9@N00",
            "secret": "s",
            "server": "1",
            "latitude": 31.5,
            "longitude": "74.3",
        }
    )
    assert bare is not None and bare["license_id"] == "" and bare["license"] == ""
    assert "licence unknown" in bare["attribution"]  # never "Flickr licence "


def test_licence_urls_are_current() -> None:
    # flickr.photos.licenses.getInfo as the API answers it today
    assert FLICKR_LICENSES[0][1].startswith("https://www.flickrhelp.com/hc/en-us/articles/")
    assert FLICKR_LICENSES[8] == (
        "United States Government Work",
        "https://www.usa.gov/government-copyright",
    )


@pytest.mark.parametrize(
    ("taken", "granularity", "unknown", "upload", "want"),
    [
        ("2011-05-01 00:00:00", "4", "0", "1306000000", ("2011-05", 4)),
        ("2011-01-01 00:00:00", 6, 0, None, ("2011", 6)),
        ("1987-01-01 00:00:00", "8", "0", None, ("1987", 8)),
        ("2011-05-17 08:09:10", 0, "0", "1306000000", ("2011-05-17T08:09:10", 0)),
        ("4501-01-01 00:00:00", 0, "0", None, ("", None)),  # placeholder year
        ("1860-03-01 00:00:00", 0, "0", None, ("", None)),  # before 1900
        ("2012-06-01 10:00:00", 0, "0", "1306000000", ("", None)),  # a year after the upload
        ("2011-05-17 08:09:10", 0, 1, None, ("", None)),  # datetakenunknown as a number
    ],
)
def test_dates_placeholders_and_granularity(taken, granularity, unknown, upload, want) -> None:
    photo = {
        "id": "7",
        "owner": "9@N00",
        "secret": "s",
        "server": "1",
        "latitude": "31.5",
        "longitude": 74.3,
        "license": "4",
        "datetaken": taken,
        "datetakengranularity": granularity,
        "datetakenunknown": unknown,
    }
    if upload is not None:
        photo["dateupload"] = upload
    rec = photo_record(photo)
    assert rec is not None and (rec["date_taken"], rec["date_granularity"]) == want


# ----------------------------------------------------------------------------- faults


def test_transient_failures_are_retried_with_backoff(tmp_path: Path) -> None:
    fake = FlickrFake(photos=small_world(), cap=4000)
    fake.faults = ["http429", "http500", "code105", "code10", "code201", "html", "http503"]
    t = FakeTime()
    src, parts, _ = run(fake, make_config(retries=8), tmp_path / "p", sleep=t.sleep, clock=t.clock)
    assert set(ids_of(parts)) == fake.expected_ids()
    assert src.stats["retries"] == 7
    outcomes = [r["outcome"] for r in fake.requests]
    assert outcomes[:7] == ["http429", "http500", "code105", "code10", "code201", "html", "http503"]
    backoffs = [s for s in t.sleeps if s > 0]
    assert len(backoffs) == 7
    assert backoffs[3] > backoffs[0]  # exponential


def test_total_as_a_number_works_too(tmp_path: Path) -> None:
    fake = FlickrFake(photos=small_world(), total_as_string=False)
    _, parts, _ = run(fake, make_config(), tmp_path / "p", sleep=lambda s: None)
    assert set(ids_of(parts)) == fake.expected_ids()


def test_invalid_key_is_a_clear_error_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad_key = "not-a-real-key-5c1f9e"
    monkeypatch.setenv("FLICKR_API_KEY", bad_key)
    fake = FlickrFake(photos=small_world(n=50, hotspot_n=0))
    with pytest.raises(GeopakError) as err:
        run(fake, make_config(), tmp_path / "p", sleep=lambda s: None)
    msg = str(err.value)
    assert "100" in msg and "Invalid API Key" in msg and "FLICKR_API_KEY" in msg
    assert "\n" not in msg
    assert bad_key not in msg and SECRET not in msg
    assert bad_key not in caplog.text and SECRET not in caplog.text
    assert len(fake.requests) == 1  # not retried


def test_key_and_secret_stay_out_of_debug_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run(
        FlickrFake(photos=small_world(n=30, hotspot_n=0)),
        make_config(),
        tmp_path / "p",
        sleep=lambda s: None,
    )
    assert (
        "signature base string" in caplog.text and "FlickrAPI for key" in caplog.text
    )  # the clients did log...
    assert KEY not in caplog.text and SECRET not in caplog.text  # ...but scrubbed


def test_wrong_secret_fails_the_signature_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLICKR_API_SECRET", "wrong-secret-123")
    fake = FlickrFake(photos=small_world(n=50, hotspot_n=0))
    with pytest.raises(GeopakError, match=r"API error 96 .*FLICKR_API_SECRET") as err:
        run(fake, make_config(), tmp_path / "p", sleep=lambda s: None)
    assert "wrong-secret-123" not in str(err.value)


@pytest.mark.parametrize("var", ["FLICKR_API_KEY", "FLICKR_API_SECRET"])
def test_missing_credentials_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.delenv(var)
    src = FlickrSource(make_config(), "http://127.0.0.1:9/services/rest/")
    with pytest.raises(GeopakError, match=f"^{var} is not set"):
        src.discover(PartStore(tmp_path / "p"), progress=NullProgress())


def test_persistent_failure_gives_up_with_a_clear_error_and_keeps_finished_units(
    tmp_path: Path,
) -> None:
    fake = FlickrFake(photos=small_world(), fail_after=5)
    with pytest.raises(GeopakError, match="still failing after 3 attempts .*HTTP 503.*resume"):
        run(fake, make_config(retries=2), tmp_path / "p", sleep=lambda s: None)
    assert len(PartStore(tmp_path / "p").done_units()) == 5


# ----------------------------------------------------------------------------- resume


def test_killed_crawl_resumes_and_ends_with_the_uninterrupted_result(tmp_path: Path) -> None:
    world = small_world(n=900, hotspot_n=600)
    cfg = make_config(
        retries=0, per_page=100, result_cap=500, tiles=[BBOX], window_days=1461, min_tile_deg=0.1
    )
    ref_fake = FlickrFake(photos=world, cap=500)
    _, ref_parts, _ = run(ref_fake, cfg, tmp_path / "ref", sleep=lambda s: None)
    ref_calls = len(ref_fake.searches())
    assert ref_calls == len(ref_parts.done_units())  # one call per unit when nothing fails

    fake = FlickrFake(photos=world, cap=500, fail_after=ref_calls // 2)
    with pytest.raises(GeopakError):
        run(fake, cfg, tmp_path / "w", sleep=lambda s: None)
    first_run = {
        (s["params"]["bbox"], s["params"]["min_taken_date"], s["params"]["page"])
        for s in fake.searches()
        if s["outcome"] == "ok"
    }
    assert len(PartStore(tmp_path / "w").done_units()) == ref_calls // 2

    fake2 = FlickrFake(photos=world, cap=500)
    run(fake2, cfg, tmp_path / "w", sleep=lambda s: None)
    second_run = [
        (s["params"]["bbox"], s["params"]["min_taken_date"], s["params"]["page"])
        for s in fake2.searches()
    ]
    assert len(second_run) == ref_calls - ref_calls // 2  # only the missing units were asked for
    assert not first_run & set(second_run)

    resumed = PartStore(tmp_path / "w")
    assert resumed.done_units() == ref_parts.done_units()
    for unit in sorted(ref_parts.done_units()):
        # identical parts, except that each fake server ran on its own port
        got, want = resumed.read(unit), ref_parts.read(unit)
        assert got.drop_columns(["url"]).equals(want.drop_columns(["url"])), unit
        assert [urlsplit(u).path for u in got.column("url").to_pylist()] == [
            urlsplit(u).path for u in want.column("url").to_pylist()
        ]


def test_prefilled_parts_are_not_queried_again(tmp_path: Path) -> None:
    world = small_world()
    cfg = make_config(per_page=50, result_cap=200, tiles=[BBOX], window_days=1461, min_tile_deg=0.1)
    ref_fake = FlickrFake(photos=world, cap=200)
    _, ref_parts, _ = run(ref_fake, cfg, tmp_path / "ref", sleep=lambda s: None)
    units = sorted(ref_parts.done_units())
    keep = units[::3]
    (tmp_path / "w").mkdir()
    for u in keep:
        shutil.copy(ref_parts.folder / f"{u}.parquet", tmp_path / "w" / f"{u}.parquet")
    fake = FlickrFake(photos=world, cap=200)
    _, parts, _ = run(fake, cfg, tmp_path / "w", sleep=lambda s: None)
    assert len(fake.searches()) == len(units) - len(keep)
    assert parts.done_units() == set(units)
    ids = ids_of(parts)
    assert len(ids) == len(set(ids)) and set(ids) == fake.expected_ids()


# ----------------------------------------------------------------------------- budget


def test_call_budget_is_never_exceeded_in_any_hour(tmp_path: Path) -> None:
    t = FakeTime()
    fake = FlickrFake(photos=small_world(), clock=t.clock)
    src, parts, _ = run(
        fake, make_config(calls_per_hour=4), tmp_path / "p", sleep=t.sleep, clock=t.clock
    )
    stamps = [r["t"] for r in fake.requests]
    assert len(stamps) > 8
    for i in range(len(stamps) - 4):
        assert stamps[i + 4] - stamps[i] >= 3600.0  # any 5 consecutive calls span at least an hour
    assert t.now - 1_000_000.0 >= (len(stamps) // 4 - 1) * 3600.0
    assert set(ids_of(parts)) == fake.expected_ids()


def test_call_budget_unit() -> None:
    t = FakeTime()
    b = CallBudget(3, 60.0, clock=t.clock, sleep=t.sleep)
    waits = [b.acquire() for _ in range(7)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 60.0, 0.0, 0.0, 60.0])
    assert b.in_window() == 1  # the 7th call, at +120 s; the three at +60 s have left the window
    t.now += 30
    assert b.total == 7
    assert b.reserve() == 0.0 and b.reserve() == 0.0 and b.reserve() == pytest.approx(30.0)
    with pytest.raises(ValueError):
        CallBudget(0)
    assert 0.5 <= backoff_delay(0, 1.0, 60.0) <= 1.0
    assert 30.0 <= backoff_delay(10, 1.0, 60.0) <= 60.0
    assert (
        retry_after_seconds("7") == 7.0
        and retry_after_seconds("soon") is None
        and retry_after_seconds(None) is None
    )


# ----------------------------------------------------------------------------- config and secrets


def test_windows_and_tiles_are_deterministic() -> None:
    cfg = make_config(max_date="")
    src = FlickrSource(cfg)
    wins = src.windows()
    assert wins[0] == ("w20100101", 1262304000, 1262304000 + 730 * 86400)
    assert all(e - s == 730 * 86400 for _, s, e in wins)  # no window depends on today's date
    assert [t for t, _ in src.tiles()] == ["r000c000", "r000c001", "r001c000", "r001c001"]
    cfg.crawl.flickr.tiles = [[71.0, 31.0, 72.0, 32.0]]
    assert FlickrSource(cfg).tiles() == [("t000", (71.0, 31.0, 72.0, 32.0))]
    with pytest.raises(GeopakError, match="max_date"):
        FlickrSource(make_config(max_date="2009-01-01")).windows()


def test_config_rejects_geo_pages_over_250(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[crawl.flickr]\nper_page = 500\n")
    with pytest.raises(GeopakError, match=r"crawl\.flickr\.per_page"):
        load_config(p)


def test_registry_builds_the_source_and_no_secret_reaches_the_parts(
    full_crawl, tmp_path: Path
) -> None:
    fake, src, parts, _ = full_crawl
    assert isinstance(
        get_source("flickr", config=make_config(), endpoint="http://127.0.0.1:1/services/rest/"),
        FlickrSource,
    )
    assert src.request_for({"url": "https://live.staticflickr.com/1/2_3_b.jpg"}) == (
        "https://live.staticflickr.com/1/2_3_b.jpg",
        {},
    )
    assert KEY not in repr(src.extra()) and KEY not in src.describe()
    for f in Path(parts.folder).iterdir():
        blob = f.read_bytes()
        assert KEY.encode() not in blob and SECRET.encode() not in blob
        if f.suffix == ".parquet":
            text = pq.read_table(f).to_pandas().to_csv()
            assert KEY not in text and SECRET not in text


# ----------------------------------------------------------------------------- the crawl command


def test_crawl_command_end_to_end_against_the_fake(tmp_path: Path, box_boundaries: Path) -> None:
    fake = FlickrFake(photos=make_world(n=30, hotspot_n=0, edge_n=4, excluded_n=5))
    conf = tmp_path / "p.toml"
    conf.write_text(
        "[crawl]\nbbox = [70.0, 30.0, 74.0, 34.0]\n"
        '[crawl.flickr]\nmin_date = "2010-01-01"\nmax_date = "2013-12-31"\nwindow_days = 1461\ntile_deg = 2.0\n'
        "[retry]\nretries = 0\n[download]\nbatch_size = 8\nmax_side = 64\n"
    )
    work = tmp_path / "w"
    with serve(fake.app()) as base:
        argv = [
            "crawl",
            "flickr",
            "--work",
            str(work),
            "--endpoint",
            f"{base}/services/rest/",
            "--allow-private-hosts",
            "--boundaries",  # the root tiles only need some polygons over the bbox
            str(box_boundaries),
        ]
        assert main([*argv, "--config", str(conf)]) == 0
        recs = pq.read_table(work / "crawl/flickr/records.parquet")
        assert sorted(recs.column("source_id").to_pylist()) == sorted(fake.expected_ids())
        assert all((work / p).is_file() for p in recs.column("image_path").to_pylist())
        assert fake.image_hits == recs.num_rows == 30
        assert all(s["date_window"] for s in fake.searches())
        calls = len(fake.requests)
        assert main(argv) == 0  # finished: nothing to do, no API call
        assert len(fake.requests) == calls
    for f in work.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert KEY.encode() not in blob and SECRET.encode() not in blob, f


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/services/rest/"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/services/rest/"),
        ("http://127.0.0.1:8080/services/rest/", "http://127.0.0.1:8080/services/rest/"),
        ("http://127.0.0.1:8080/custom/rest", "http://127.0.0.1:8080/custom/rest"),
    ],
)
def test_endpoint_may_be_a_bare_host(endpoint: str, expected: str) -> None:
    assert FlickrSource(make_config(), endpoint).api_url == expected

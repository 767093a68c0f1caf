"""Google Places discovery against a loopback Places service: the Places API (New) over plain
HTTP and the legacy API through the real ``googlemaps`` client.

The fake (tests/support/fakes/places_server.py) enforces the real request shapes (API key, required
field mask, body limits, page tokens that are not valid at once) and answers with the real
response shapes. Photos from Google are restricted: not redistributable, key never stored.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from support.fakes import serve
from support.fakes.places_server import PlacesFake, make_places

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore
from geopak_data.cli import main
from geopak_data.config import RETRY_KEYS, PipelineConfig, load_config
from geopak_data.records import SOURCE_SCHEMA
from geopak_data.sources import get_source
from geopak_data.sources.base import NullProgress
from geopak_data.sources.places import (
    FIELD_MASK,
    LICENSE,
    PlacesSource,
    grid_points,
    parse_html_attribution,
)

KEY = "AIzaFAKE-places-key-0123456789"
ISLAMABAD = (33.6844, 73.0479)
LAHORE = (31.5204, 74.3587)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", KEY)


def make_config(**places: object) -> PipelineConfig:
    cfg = load_config(None)
    p = cfg.crawl.places
    p.anchors = [[*ISLAMABAD, "Islamabad"], [*LAHORE, "Lahore"]]
    p.radius_m, p.grid_step_km, p.grid_size = 4000.0, 5.0, 3
    cfg.retry.backoff_s = 0.01
    for k, v in places.items():
        setattr(cfg.retry if k in RETRY_KEYS else p, k, v)
    return cfg


def discover(
    fake: PlacesFake, cfg: PipelineConfig, parts_dir: Path, **opts: object
) -> tuple[PlacesSource, PartStore]:
    with serve(fake.app()) as base:
        src = PlacesSource(cfg, base, **opts)
        parts = PartStore(parts_dir)
        src.discover(parts, progress=NullProgress())
    return src, parts


def expected_new(fake: PlacesFake, cfg: PipelineConfig) -> dict[str, list[str]]:
    """What a complete New-API grid crawl must find: place id -> photo refs, first query wins."""
    p = cfg.crawl.places
    out: dict[str, list[str]] = {}
    for anchor in p.anchors:
        for _, _, lat, lon in grid_points(anchor[0], anchor[1], p.grid_size, p.grid_step_km):
            for place in fake.matching(lat, lon, p.radius_m, p.included_types)[
                : p.max_result_count
            ]:
                if place.id not in out:
                    out[place.id] = [ph.ref for ph in place.photos[: p.max_photos_per_place]]
    return out


# ----------------------------------------------------------------------------- Places API (New)


def test_new_api_grid_finds_every_reachable_photo_once(tmp_path: Path) -> None:
    fake = PlacesFake()
    cfg = make_config()
    src, parts = discover(fake, cfg, tmp_path / "p")
    table = parts.read_all(schema=SOURCE_SCHEMA)
    want = expected_new(fake, cfg)
    got_ids = table.column("source_id").to_pylist()
    assert len(got_ids) == len(set(got_ids))
    assert sorted(got_ids) == sorted(
        f"{pid}-{i}" for pid, refs in want.items() for i in range(len(refs))
    )
    assert len(want) > 20 and table.num_rows > 50
    assert src.stats["duplicates"] > 0  # overlapping circles returned places twice
    # one unit per grid point, named in crawl order
    assert sorted(parts.done_units()) == [
        f"a{a:03d}-r{r:02d}c{c:02d}" for a in range(2) for r in range(3) for c in range(3)
    ]
    # the photo's resource name is in the key-free media URL
    for rec in table.to_pylist():
        pid, i = rec["source_id"].rsplit("-", 1)
        assert f"/v1/places/{pid}/photos/{want[pid][int(i)]}/media?maxWidthPx=" in rec["url"]
        assert rec["restricted"] is True and rec["license"] == LICENSE
        assert rec["owner"] and rec["attribution"].startswith(
            f"Photo by {rec['owner']} (https://maps.google.com/maps/contrib/"
        )
        assert rec["attribution"].endswith("via Google Maps")
        assert rec["title"].startswith("Place ") and "point_of_interest" in rec["tags"]
        assert KEY not in rec["url"]


def test_new_api_requests_have_the_real_shape(tmp_path: Path) -> None:
    fake = PlacesFake()
    cfg = make_config(grid_size=1, max_result_count=7, included_types=["museum", "park"])
    discover(fake, cfg, tmp_path / "p")
    calls = fake.log("searchNearby")
    assert len(calls) == 2 and all(c["outcome"] == 200 for c in calls)
    for c in calls:
        headers = {k.lower(): v for k, v in c["headers"].items()}
        assert headers["x-goog-api-key"] == KEY
        assert headers["x-goog-fieldmask"] == FIELD_MASK
        assert headers["content-type"] == "application/json"
        assert "key" not in c["query"]
        body = c["body"]
        assert body["includedTypes"] == ["museum", "park"]
        assert body["maxResultCount"] == 7
        circle = body["locationRestriction"]["circle"]
        assert circle["radius"] == 4000.0 and set(circle["center"]) == {"latitude", "longitude"}
    assert [c["body"]["locationRestriction"]["circle"]["center"]["latitude"] for c in calls] == [
        ISLAMABAD[0],
        LAHORE[0],
    ]


def test_fake_enforces_field_mask_and_key() -> None:
    fake = PlacesFake()
    body = {
        "includedTypes": ["park"],
        "maxResultCount": 5,
        "locationRestriction": {
            "circle": {
                "center": {"latitude": ISLAMABAD[0], "longitude": ISLAMABAD[1]},
                "radius": 3000.0,
            }
        },
    }
    with serve(fake.app()) as base:
        url = f"{base}/v1/places:searchNearby"
        r = requests.post(url, json=body, headers={"X-Goog-Api-Key": KEY}, timeout=10)
        assert (
            r.status_code == 400
            and r.json()["error"]["status"] == "INVALID_ARGUMENT"
            and "FieldMask" in r.json()["error"]["message"]
        )
        r = requests.post(url, json=body, headers={"X-Goog-FieldMask": "places.id"}, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
        r = requests.post(
            url,
            json={**body, "maxResultCount": 21},
            headers={"X-Goog-Api-Key": KEY, "X-Goog-FieldMask": "places.id"},
            timeout=10,
        )
        assert r.status_code == 400
        r = requests.post(
            url,
            json=body,
            headers={"X-Goog-Api-Key": KEY, "X-Goog-FieldMask": "places.id"},
            timeout=10,
        )
        assert r.status_code == 200 and all(set(p) == {"id"} for p in r.json()["places"])


def test_new_api_media_url_redirects_to_the_image_with_the_key_added_at_fetch_time(
    tmp_path: Path,
) -> None:
    fake = PlacesFake()
    cfg = make_config(grid_size=1)
    with serve(fake.app()) as base:
        src = PlacesSource(cfg, base)
        parts = PartStore(tmp_path / "p")
        src.discover(parts, progress=NullProgress())
        rec = parts.read_all(schema=SOURCE_SCHEMA).to_pylist()[0]
        assert (
            requests.get(rec["url"], timeout=10, allow_redirects=False).status_code == 403
        )  # stored URL has no key
        url, headers = src.request_for(rec)
        assert url == rec["url"] and headers == {"X-Goog-Api-Key": KEY}
        first = requests.get(url, headers=headers, timeout=10, allow_redirects=False)
        assert first.status_code == 302 and "/gphoto/" in first.headers["Location"]
        img = requests.get(url, headers=headers, timeout=10)
        assert (
            img.status_code == 200
            and img.headers["Content-Type"] == "image/jpeg"
            and img.content[:2] == b"\xff\xd8"
        )


def test_new_api_retries_429_and_503(tmp_path: Path) -> None:
    fake = PlacesFake(new_faults=[429, 503, 429])
    sleeps = Sleeps()
    src, parts = discover(fake, make_config(grid_size=1), tmp_path / "p", sleep=sleeps)
    outcomes = [c["outcome"] for c in fake.log("searchNearby")]
    assert outcomes == [429, 503, 429, 200, 200]
    assert src.stats["retries"] == 3 and len([s for s in sleeps.calls if s > 0]) == 3
    assert len(parts.done_units()) == 2


@pytest.mark.parametrize(("key", "status"), [("AIzaWRONG-key-999", "INVALID_ARGUMENT")])
def test_new_api_bad_key_is_a_clear_error_without_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    key: str,
    status: str,
) -> None:
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", key)
    fake = PlacesFake()
    with pytest.raises(GeopakError) as err:
        discover(fake, make_config(), tmp_path / "p")
    msg = str(err.value)
    assert status in msg and "GOOGLE_MAPS_API_KEY" in msg and "\n" not in msg
    assert key not in msg and key not in caplog.text
    assert len(fake.log("searchNearby")) == 1  # not retried
    assert PartStore(tmp_path / "p").done_units() == set()


def test_missing_key_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_MAPS_API_KEY")
    src = PlacesSource(make_config(), "http://127.0.0.1:9")
    with pytest.raises(GeopakError, match="^GOOGLE_MAPS_API_KEY is not set"):
        src.discover(PartStore(tmp_path / "p"), progress=NullProgress())
    with pytest.raises(GeopakError, match="^GOOGLE_MAPS_API_KEY is not set"):
        src.request_for({"url": "http://127.0.0.1:9/v1/places/x/photos/y/media?maxWidthPx=10"})


def test_resume_queries_only_missing_grid_points(tmp_path: Path) -> None:
    cfg = make_config()
    ref_fake = PlacesFake()
    _, ref = discover(ref_fake, cfg, tmp_path / "ref")
    units = sorted(ref.done_units())
    work = PartStore(tmp_path / "w")
    for u in units[:7]:  # a crawl killed after seven grid points
        work.write(u, ref.read(u))
    fake = PlacesFake()
    _, parts = discover(fake, cfg, tmp_path / "w")
    calls = fake.log("searchNearby")
    assert len(calls) == len(units) - 7
    assert parts.done_units() == set(units)
    for u in units:
        got, want = parts.read(u), ref.read(u)
        assert got.column("source_id").to_pylist() == want.column("source_id").to_pylist(), u


# ----------------------------------------------------------------------------- legacy (googlemaps)


def legacy_config(**places: object) -> PipelineConfig:
    base = {
        "api": "legacy",
        "anchors": [[*ISLAMABAD, "Islamabad"]],
        "grid_size": 2,
        "grid_step_km": 4.0,
        "radius_m": 9000.0,
        "legacy_types": ["establishment", "museum"],
        "page_token_delay_s": 0.05,
    }
    base.update(places)
    return make_config(**base)


def test_legacy_pages_through_next_page_token_and_waits_until_it_is_valid(tmp_path: Path) -> None:
    fake = PlacesFake(places=make_places(per_center=55, centers=[ISLAMABAD]), token_delay_s=0.2)
    cfg = legacy_config()
    src, parts = discover(fake, cfg, tmp_path / "p")
    calls = fake.log("nearbysearch")
    # the token was used too early at least once (INVALID_REQUEST), then accepted
    assert fake.early_tokens >= 1 and src.stats["early_tokens"] == fake.early_tokens
    assert any(c["query"].get("pagetoken") and c["outcome"] == "OK" for c in calls)
    first_pages = [c for c in calls if "location" in c["query"]]
    assert len(first_pages) == 4 * 2  # grid points x types
    assert all(c["query"]["key"] == KEY and c["query"]["radius"] == "9000" for c in first_pages)
    # every place within reach (<= 60 per query) found once, with its one Nearby Search photo
    want: dict[str, tuple[str, int]] = {}
    for _, _, lat, lon in grid_points(*ISLAMABAD, 2, 4.0):
        for t in ("establishment", "museum"):
            for place in fake.matching(lat, lon, 9000.0, [t])[:60]:
                if place.photos:
                    want.setdefault(place.id, (place.photos[0].ref, place.photos[0].width))
    table = parts.read_all(schema=SOURCE_SCHEMA)
    got = table.column("source_id").to_pylist()
    assert sorted(got) == sorted(f"{pid}-0" for pid in want)
    assert len(want) > 40  # more than two pages' worth: pagination was needed
    for rec in table.to_pylist():
        pid = rec["source_id"][:-2]
        ref, width = want[pid]
        assert rec["url"].endswith(
            f"/maps/api/place/photo?maxwidth={min(1600, width)}&photo_reference={ref}"
        )  # never upscaled
        assert "key=" not in rec["url"] and rec["restricted"] is True and rec["license"] == LICENSE
        assert rec["attribution"].startswith(
            f"Photo by {rec['owner']} (https://maps.google.com/maps/contrib/"
        )
    assert sorted(parts.done_units())[0] == "a000-r00c00-establishment"


def test_legacy_key_stays_out_of_debug_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = PlacesFake(places=make_places(per_center=5, centers=[ISLAMABAD]))
    caplog.set_level(logging.DEBUG)
    discover(fake, legacy_config(grid_size=1, legacy_types=["establishment"]), tmp_path / "p")
    assert "/maps/api/place/nearbysearch/json" in caplog.text  # urllib3 logged the request line...
    assert KEY not in caplog.text  # ...without the key


def test_legacy_over_query_limit_is_retried_and_zero_results_is_an_empty_unit(
    tmp_path: Path,
) -> None:
    fake = PlacesFake(
        places=make_places(per_center=10, centers=[ISLAMABAD]),
        legacy_faults=["OVER_QUERY_LIMIT", "OVER_QUERY_LIMIT"],
    )
    sleeps = Sleeps()
    far = [[24.8607, 67.0011, "Karachi"]]  # no places there: ZERO_RESULTS
    src, parts = discover(
        fake,
        legacy_config(
            anchors=[[*ISLAMABAD, "Islamabad"], *far], grid_size=1, legacy_types=["establishment"]
        ),
        tmp_path / "p",
        sleep=sleeps,
    )
    outcomes = [c["outcome"] for c in fake.log("nearbysearch")]
    assert outcomes == ["OVER_QUERY_LIMIT", "OVER_QUERY_LIMIT", "OK", "ZERO_RESULTS"]
    assert src.stats["retries"] == 2 and len(sleeps.calls) == 2
    assert parts.read("a001-r00c00-establishment").num_rows == 0
    assert parts.read("a000-r00c00-establishment").num_rows == sum(
        1 for p in fake.places if p.photos
    )


def test_legacy_request_denied_is_a_clear_error_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = "AIzaBAD-legacy-key-42"
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", bad)
    fake = PlacesFake()
    with pytest.raises(GeopakError, match="REQUEST_DENIED.*GOOGLE_MAPS_API_KEY") as err:
        discover(fake, legacy_config(grid_size=1), tmp_path / "p")
    assert bad not in str(err.value)
    assert len(fake.log("nearbysearch")) == 1


def test_legacy_key_never_leaks_through_transport_errors(tmp_path: Path) -> None:
    # nothing listens on port 9: requests' error message holds the full URL, key included
    src = PlacesSource(
        legacy_config(grid_size=1, retries=1), "http://127.0.0.1:9", sleep=lambda s: None
    )
    with pytest.raises(GeopakError, match="still failing after 2 attempts") as err:
        src.discover(PartStore(tmp_path / "p"), progress=NullProgress())
    assert KEY not in str(err.value)


def test_legacy_photo_url_gets_the_key_only_at_fetch_time(tmp_path: Path) -> None:
    fake = PlacesFake(places=make_places(per_center=8, centers=[ISLAMABAD]))
    with serve(fake.app()) as base:
        src = PlacesSource(legacy_config(grid_size=1, legacy_types=["establishment"]), base)
        parts = PartStore(tmp_path / "p")
        src.discover(parts, progress=NullProgress())
        rec = parts.read_all(schema=SOURCE_SCHEMA).to_pylist()[0]
        url, headers = src.request_for(rec)
        assert url == f"{rec['url']}&key={KEY}" and headers == {}
        assert requests.get(rec["url"], timeout=10).status_code == 403
        img = requests.get(url, timeout=10)
        assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"
        assert [c["outcome"] for c in fake.log("photo")] == [403, 302]


def test_html_attribution_parsing_and_grid() -> None:
    assert parse_html_attribution(
        '<a href="https://maps.google.com/maps/contrib/7">Dana O&#39;Neil</a>'
    ) == ("Dana O'Neil", "https://maps.google.com/maps/contrib/7")
    assert parse_html_attribution("") == ("", "")
    pts = grid_points(30.0, 70.0, 3, 10.0)
    assert len(pts) == 9 and pts[4][2:] == (30.0, 70.0)
    assert pts[0][2] == pytest.approx(30.0 - 10.0 / 111.32, abs=1e-6)


def test_registry_restricted_flag_and_config_validation(tmp_path: Path) -> None:
    src = get_source("places", config=make_config(), endpoint="http://127.0.0.1:1")
    assert isinstance(src, PlacesSource) and src.restricted is True and src.name == "places"
    assert KEY not in repr(src.extra()) and KEY not in src.describe()
    # no anchors listed: generated from the country, at least one in every province
    from geopak_core.boundaries import load_boundaries
    from geopak_data.country import resolve_crawl_config
    from geopak_data.tagging import tag_points

    assert load_config(None).crawl.places.anchors == []
    anchors = resolve_crawl_config(load_config(None), "places").crawl.places.anchors
    got = tag_points([a[0] for a in anchors], [a[1] for a in anchors], load_boundaries(), 0.0)
    assert sorted(set(got.province_id.tolist())) == list(range(7))
    assert any(a[2] == "Karachi" for a in anchors)
    p = tmp_path / "x.toml"
    p.write_text("[crawl.places]\nmax_result_count = 25\n")
    with pytest.raises(GeopakError, match=r"crawl\.places\.max_result_count"):
        load_config(p)
    p.write_text('[crawl.places]\nanchors = [["x", 1.0]]\n')
    with pytest.raises(GeopakError, match=r"crawl\.places\.anchors\[0\]"):
        load_config(p)


# ----------------------------------------------------------------------------- the crawl command


def test_crawl_command_end_to_end_keeps_the_key_out_of_the_work_folder(tmp_path: Path) -> None:
    fake = PlacesFake(places=make_places(per_center=12, centers=[ISLAMABAD]))
    conf = tmp_path / "p.toml"
    conf.write_text(
        "[crawl.places]\n"
        f'anchors = [[{ISLAMABAD[0]}, {ISLAMABAD[1]}, "Islamabad"]]\n'
        "grid_size = 1\nradius_m = 9000.0\nmax_photos_per_place = 2\n"
        "[retry]\nretries = 0\n[download]\nbatch_size = 8\nmax_side = 64\n"
    )
    work = tmp_path / "w"
    with serve(fake.app()) as base:
        rc = main(
            [
                "crawl",
                "places",
                "--work",
                str(work),
                "--endpoint",
                base,
                "--allow-private-hosts",
                "--config",
                str(conf),
            ]
        )
    assert rc == 0
    recs = pq.read_table(work / "crawl/places/records.parquet").to_pylist()
    want = sum(
        min(2, len(p.photos))
        for p in fake.places
        if set(p.types) & set(load_config(None).crawl.places.included_types)
    )
    assert len(recs) == want > 0
    assert all(r["restricted"] and (work / r["image_path"]).is_file() for r in recs)
    media = fake.log("media")
    assert len(media) == want and all(
        m["outcome"] == 302 and m["headers"].get("X-Goog-Api-Key") == KEY for m in media
    )
    for f in work.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_new_endpoint_may_name_the_api_root(suffix: str) -> None:
    src = get_source("places", config=make_config(), endpoint=f"http://127.0.0.1:8080{suffix}")
    assert src.base == "http://127.0.0.1:8080"


@pytest.mark.parametrize("suffix", ["", "/maps/api", "/maps/api/place/"])
def test_legacy_endpoint_may_name_the_api_root(suffix: str) -> None:
    src = get_source(
        "places", config=make_config(api="legacy"), endpoint=f"http://127.0.0.1:8080{suffix}"
    )
    assert src.base == "http://127.0.0.1:8080"


# ----------------------------------------------------------------------------- real-data shapes


def test_place_types_are_checked_per_api_at_config_load(tmp_path: Path) -> None:
    from geopak_core.errors import ConfigError

    cfg = load_config(None)
    assert "historical_landmark" in cfg.crawl.places.included_types  # New: Table A
    assert "historical_landmark" not in cfg.crawl.places.legacy_types
    with pytest.raises(ConfigError, match=r"legacy_types.*Places API \(New\) type"):
        load_config(None, {"crawl.places.legacy_types": ["park", "historical_landmark"]})
    with pytest.raises(ConfigError, match=r"included_types.*did you mean museum"):
        load_config(None, {"crawl.places.included_types": ["musuem"]})
    with pytest.raises(ConfigError, match=r"included_types.*deprecated legacy type"):
        load_config(None, {"crawl.places.included_types": ["establishment"]})
    # a setting changed after loading is refused before any request is made
    bad = legacy_config(legacy_types=["historical_landmark"])
    with pytest.raises(GeopakError, match="legacy_types.*historical_landmark"):
        PlacesSource(bad, "http://127.0.0.1:9")


def test_legacy_crawl_with_the_default_types_never_sends_a_new_only_type(tmp_path: Path) -> None:
    fake = PlacesFake(places=make_places(per_center=10, centers=[ISLAMABAD]))
    cfg = make_config(api="legacy", anchors=[[*ISLAMABAD, "Islamabad"]], grid_size=1)
    cfg.crawl.places.radius_m = 9000.0
    src, parts = discover(fake, cfg, tmp_path / "p")
    sent = {c["query"].get("type") for c in fake.log("nearbysearch") if "location" in c["query"]}
    assert sent == set(load_config(None).crawl.places.legacy_types)
    assert all(c["outcome"] in ("OK", "ZERO_RESULTS") for c in fake.log("nearbysearch"))
    # what the fake does with the New-only type the old default sent: INVALID_REQUEST
    with serve(fake.app()) as base:
        r = requests.get(
            f"{base}/maps/api/place/nearbysearch/json",
            params={
                "location": "33.68,73.04",
                "radius": 900,
                "type": "historical_landmark",
                "key": KEY,
            },
            timeout=10,
        ).json()
    assert r["status"] == "INVALID_REQUEST" and r["html_attributions"] == []


def test_legacy_attributions_both_levels_owner_only_from_a_link(tmp_path: Path) -> None:
    places = make_places(per_center=12, centers=[ISLAMABAD])
    with_photos = [p for p in places if p.photos]
    plain, empty, linked = (p.photos[0] for p in with_photos[:3])
    fake = PlacesFake(
        places=places,
        listing_attributions=[
            'Listings by <a href="https://www.example.com/">Example Listings</a>'
        ],
        author_styles={plain.ref: "plain", empty.ref: "empty"},
    )
    _, parts = discover(
        fake, legacy_config(grid_size=1, legacy_types=["establishment"]), tmp_path / "p"
    )
    by_ref = {
        r["url"].rsplit("photo_reference=", 1)[1]: r
        for r in parts.read_all(schema=SOURCE_SCHEMA).to_pylist()
    }
    listing = "; Listings by Example Listings (https://www.example.com/)"
    a = by_ref[linked.ref]
    assert a["owner"] == linked.author
    assert a["attribution"] == (
        f"Photo by {linked.author} (https://maps.google.com/maps/contrib/{linked.author_id}) via Google Maps{listing}"
    )
    b = by_ref[plain.ref]
    assert (
        b["owner"] == "" and b["attribution"] == f"Photo by {plain.author} via Google Maps{listing}"
    )
    c = by_ref[empty.ref]
    assert c["owner"] == "" and c["attribution"] == f"Photo by unknown via Google Maps{listing}"
    assert all(r["attribution"].endswith(listing) for r in by_ref.values())


def test_new_api_plain_and_empty_author_attributions(tmp_path: Path) -> None:
    places = make_places(per_center=20, centers=[ISLAMABAD])
    photos = [ph for p in places for ph in p.photos]
    fake = PlacesFake(places=places, author_styles={photos[0].ref: "plain", photos[1].ref: "empty"})
    cfg = make_config(anchors=[[*ISLAMABAD, "Islamabad"]], grid_size=1)
    cfg.crawl.places.radius_m = 9000.0
    cfg.crawl.places.included_types = [
        "tourist_attraction",
        "park",
        "historical_landmark",
        "mosque",
        "museum",
        "restaurant",
    ]
    _, parts = discover(fake, cfg, tmp_path / "p")
    recs = {
        r["url"].split("/photos/", 1)[1].split("/media", 1)[0]: r
        for r in parts.read_all(schema=SOURCE_SCHEMA).to_pylist()
    }
    assert (
        recs[photos[0].ref]["owner"] == ""
        and photos[0].author in recs[photos[0].ref]["attribution"]
    )
    assert (
        recs[photos[1].ref]["owner"] == ""
        and "Photo by unknown" in recs[photos[1].ref]["attribution"]
    )
    others = [r for k, r in recs.items() if k not in (photos[0].ref, photos[1].ref)]
    assert others and all(r["owner"] for r in others)


@pytest.mark.parametrize("api", ["new", "legacy"])
def test_media_redirect_to_another_host_drops_the_key(tmp_path: Path, api: str) -> None:
    """Google's media endpoints redirect to an image host; the key must not follow the redirect."""
    from geopak_data.crawl import run_crawl

    fake = PlacesFake(places=make_places(per_center=6, centers=[ISLAMABAD]), image_host="localhost")
    cfg = make_config(
        api=api, anchors=[[*ISLAMABAD, "Islamabad"]], grid_size=1, max_photos_per_place=1
    )
    cfg.crawl.places.radius_m = 9000.0
    cfg.crawl.places.legacy_types = ["establishment"]
    cfg.retry.retries = 0
    work = tmp_path / "w"
    with serve(fake.app()) as base:
        assert "127.0.0.1" in base
        out = run_crawl(
            source="places", work=work, config=cfg, endpoint=base, allow_private_hosts=True
        )
    images = fake.log("image")
    assert out.counts["downloaded"] == len(images) > 0
    assert all(i["host"].startswith("localhost:") for i in images)  # the redirect crossed hosts
    for i in images:
        assert "X-Goog-Api-Key" not in i["headers"] and "key" not in i["query"]
        assert KEY not in repr(i["headers"])
    first = fake.log("media" if api == "new" else "photo")
    assert first and all(r["outcome"] == 302 for r in first)  # the key did reach the API host

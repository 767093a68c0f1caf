"""The boundary loader: formats, unit mapping, bad files, and the pinned download (loopback only)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from support.ports import refused_url

from geopak_core.boundaries import (
    DEFAULT_MANIFEST,
    MANIFEST_PATH,
    cached_path,
    load_boundaries,
    read_boundaries,
    resolve_boundaries_path,
)
from geopak_core.errors import GeopakError
from geopak_core.io import file_sha256
from geopak_core.regions import PAKISTAN

PINNED = "34c973399b464f8b43a6cfbc9255ff6d19d911477f1549d0ff0f1dcaaf63c37b"


@pytest.fixture(scope="module")
def polys(boundaries_path):
    return read_boundaries(boundaries_path)


@pytest.fixture(scope="module")
def box_polys(box_boundaries):
    """The box provinces: for the tests of file formats, projections and refusals, which need
    a valid ADM1 file but not the real borders."""
    return read_boundaries(box_boundaries)


def test_shared_file_maps_onto_contract_ids(polys, boundaries_path):
    assert list(polys["province_id"]) == list(range(7))
    assert list(polys["province"]) == list(PAKISTAN.names)
    assert polys["province_id"].dtype == np.int8
    assert polys.crs.to_epsg() == 4326
    assert all(polys.geometry.is_valid)
    assert polys.attrs["sha256"] == PINNED == file_sha256(boundaries_path)
    raw = gpd.read_file(boundaries_path)
    for _, row in raw.iterrows():  # the raw file's ISO code lands on the same id as its name
        pid = PAKISTAN.codes.index(row["shapeISO"])
        assert polys.geometry[pid].equals_exact(shapely.make_valid(row.geometry), 1e-12)


def test_manifest_pins_the_release_and_matches_builtin():
    m = json.loads(MANIFEST_PATH.read_text())
    for k in ("url", "sha256", "filename"):
        assert m[k] == DEFAULT_MANIFEST[k]
    assert m["sha256"] == PINNED
    assert m["url"].startswith("https://") and "gbOpen/PAK/ADM1" in m["url"]
    # no polygon data is committed next to the manifest
    assert not list(MANIFEST_PATH.parent.glob("*.geojson"))


def test_env_var_is_used(monkeypatch, box_boundaries, tmp_path):
    monkeypatch.setenv("GEOPAK_BOUNDARIES", str(box_boundaries))
    assert resolve_boundaries_path(None, cache_dir=tmp_path) == box_boundaries
    assert len(load_boundaries(cache_dir=tmp_path)) == 7
    monkeypatch.setenv("GEOPAK_BOUNDARIES", str(tmp_path / "nope.geojson"))
    with pytest.raises(GeopakError, match="GEOPAK_BOUNDARIES"):
        load_boundaries(cache_dir=tmp_path)
    with pytest.raises(GeopakError, match="not found"):
        load_boundaries(tmp_path / "missing.gpkg")


@pytest.mark.parametrize("driver,ext", [("GPKG", "gpkg"), ("ESRI Shapefile", "shp")])
def test_geopackage_and_shapefile(tmp_path, box_boundaries, box_polys, driver, ext):
    raw = gpd.read_file(box_boundaries)
    out = tmp_path / f"pak.{ext}"
    raw.to_file(out, driver=driver, engine="pyogrio")
    got = load_boundaries(out)
    assert list(got["province"]) == list(PAKISTAN.names)
    assert np.allclose(
        shapely.area(got.geometry.values), shapely.area(box_polys.geometry.values), rtol=1e-9
    )


def test_other_crs_is_reprojected(tmp_path, box_boundaries, box_polys):
    out = tmp_path / "pak_lcc.gpkg"
    gpd.read_file(box_boundaries).to_crs(
        "+proj=lcc +lat_1=27 +lat_2=35 +lat_0=30 +lon_0=69 +datum=WGS84 +units=m"
    ).to_file(out, driver="GPKG")
    got = load_boundaries(out)
    assert got.crs.to_epsg() == 4326
    assert np.allclose(
        shapely.area(got.geometry.values), shapely.area(box_polys.geometry.values), rtol=1e-6
    )


def _write(raw, tmp_path, name):
    p = tmp_path / name
    raw.to_file(p, driver="GeoJSON")
    return p


def test_unexpected_files_are_refused(tmp_path, box_boundaries):
    raw = gpd.read_file(box_boundaries)
    with pytest.raises(GeopakError, match=r"expected the 7 .*found 6 features.*missing Sindh"):
        load_boundaries(_write(raw[raw.shapeName != "Sindh"], tmp_path, "six.geojson"))
    with pytest.raises(GeopakError, match="appears more than once"):
        load_boundaries(
            _write(gpd.GeoDataFrame(gpd.pd.concat([raw, raw.iloc[:1]])), tmp_path, "eight.geojson")
        )
    other = raw.copy()
    other.loc[0, "shapeName"] = "Kandahar"
    other.loc[0, "shapeISO"] = "AF-KAN"
    with pytest.raises(GeopakError, match="AF-KAN / Kandahar.* not provinces of Pakistan"):
        load_boundaries(_write(other, tmp_path, "kandahar.geojson"))
    moved = raw.copy()
    moved["geometry"] = moved.geometry.translate(xoff=40)
    with pytest.raises(GeopakError, match="not Pakistan's"):
        load_boundaries(_write(moved, tmp_path, "moved.geojson"))
    junk = tmp_path / "junk.geojson"
    junk.write_text("this is not geojson")
    with pytest.raises(GeopakError, match="cannot read"):
        load_boundaries(junk)
    nonames = raw.drop(columns=["shapeName", "shapeISO"])
    with pytest.raises(GeopakError, match="no shapeName/shapeISO column"):
        load_boundaries(_write(nonames, tmp_path, "nonames.geojson"))


class _Server:
    """A loopback HTTP server serving one body at /pak.geojson and counting requests."""

    def __init__(self, body: bytes):
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                outer.requests += 1
                if self.path != "/pak.geojson":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/geo+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("GEOPAK_BOUNDARIES", raising=False)


def _manifest(url: str, sha: str = PINNED) -> dict:
    return {"url": url, "sha256": sha, "filename": "geoBoundaries-PAK-ADM1.geojson", "mirrors": []}


def test_download_verifies_and_caches(no_env, tmp_path, boundaries_path):
    srv = _Server(boundaries_path.read_bytes())
    cache = tmp_path / "cache"
    try:
        m = _manifest(srv.url + "/pak.geojson")
        got = load_boundaries(cache_dir=cache, manifest=m)
        assert list(got["province"]) == list(PAKISTAN.names)
        cached = cached_path(m, cache)
        assert cached.is_file() and file_sha256(cached) == PINNED
        assert srv.requests == 1
    finally:
        srv.close()
    # the server is gone: the verified cached copy is used without any network
    again = load_boundaries(cache_dir=cache, manifest=m)
    assert len(again) == 7 and again.attrs["sha256"] == PINNED
    assert sorted(p.name for p in cache.iterdir()) == [cached.name]  # no temp files left


def test_corrupted_cache_is_downloaded_again(no_env, tmp_path, boundaries_path):
    srv = _Server(boundaries_path.read_bytes())
    try:
        m = _manifest(srv.url + "/pak.geojson")
        cached = cached_path(m, tmp_path)
        cached.write_text("tampered")
        assert len(load_boundaries(cache_dir=tmp_path, manifest=m)) == 7
        assert file_sha256(cached) == PINNED and srv.requests == 1
    finally:
        srv.close()


def test_sha256_mismatch_is_refused(no_env, tmp_path, boundaries_path):
    body = boundaries_path.read_bytes().replace(b"Sindh", b"Sindx", 1)
    srv = _Server(body)
    try:
        m = _manifest(srv.url + "/pak.geojson")
        with pytest.raises(GeopakError, match="sha256 .* does not match the pinned") as exc:
            load_boundaries(cache_dir=tmp_path, manifest=m)
        assert "\n" not in str(exc.value)
        assert list(tmp_path.iterdir()) == []  # nothing cached, no temp file left behind
        with pytest.raises(GeopakError, match="HTTP 404"):
            load_boundaries(cache_dir=tmp_path, manifest=_manifest(srv.url + "/missing.geojson"))
    finally:
        srv.close()


def test_download_refuses_other_schemes_and_reports_unreachable(no_env, tmp_path, boundaries_path):
    with pytest.raises(GeopakError, match="only http and https"):
        load_boundaries(cache_dir=tmp_path, manifest=_manifest(boundaries_path.as_uri()))
    with (
        refused_url() as base,
        pytest.raises(GeopakError, match="--boundaries FILE or set GEOPAK_BOUNDARIES"),
    ):
        load_boundaries(cache_dir=tmp_path, manifest=_manifest(base + "/pak.geojson"))


def test_explicit_path_beats_env(monkeypatch, tmp_path, box_boundaries):
    monkeypatch.setenv("GEOPAK_BOUNDARIES", str(tmp_path / "does-not-exist.geojson"))
    gpkg = tmp_path / "p.gpkg"
    gpd.read_file(box_boundaries).to_file(gpkg, driver="GPKG")
    assert resolve_boundaries_path(gpkg) == Path(gpkg)


def test_box_provinces_load_and_tag_their_cities(box_boundaries):
    """The generated stand-in file is a valid seven-unit ADM1 file of Pakistan."""
    from support.boxprovinces import CITIES

    from geopak_core.boundaries import read_boundaries
    from geopak_core.regions import PAKISTAN

    gdf = read_boundaries(box_boundaries)
    assert list(gdf["province"]) == list(PAKISTAN.names)
    import shapely

    for name, (lat, lon) in CITIES.items():
        inside = [
            p
            for p, g in zip(gdf["province"], gdf.geometry, strict=True)
            if g.contains(shapely.Point(lon, lat))
        ]
        assert inside == [name]

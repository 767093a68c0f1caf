"""The region table: Pakistan's fixed ids, any other country's ids by code, and the file
format every artefact shares."""

from __future__ import annotations

import json
import math

import pytest
import shapely
from support import fictional

from geopak_core.boundaries import (
    boundaries_available,
    cached_path,
    check_country,
    country_manifest,
    load_boundaries,
    read_boundaries,
    region_table,
)
from geopak_core.errors import GeopakError
from geopak_core.regions import PAKISTAN, RegionTable, regions_from_cells, regions_in


@pytest.fixture
def country_file(tmp_path):
    return fictional.write_country(tmp_path / "xfa.geojson")


def test_pakistan_is_the_contract_table():
    assert PAKISTAN.country == "PAK" and PAKISTAN.n == 7
    assert PAKISTAN.names[0] == "Sindh" and PAKISTAN.codes[6] == "PK-JK"
    assert PAKISTAN.id("PK-IS") == 3 and PAKISTAN.id("kpk") == 2 and PAKISTAN.id("Sindh") == 0
    with pytest.raises(KeyError, match="Kandahar"):
        PAKISTAN.id("Kandahar")


def test_pakistan_boundaries_carry_the_table(boundaries_path):
    polys = read_boundaries(boundaries_path)
    table = region_table(polys)
    assert table.same_regions(PAKISTAN)
    assert list(polys["iso"]) == list(PAKISTAN.codes)
    assert table.bbox == PAKISTAN.bbox
    # geodesic areas: Balochistan is the largest unit, Islamabad the smallest
    assert max(range(7), key=lambda i: table.areas_km2[i]) == 5
    assert min(range(7), key=lambda i: table.areas_km2[i]) == 3
    assert 340_000 < table.areas_km2[5] < 360_000


def test_fictional_country_ids_by_code(country_file):
    polys = read_boundaries(country_file, country="xfa")
    table = region_table(polys)
    assert table.country == fictional.COUNTRY
    assert table.names == tuple(n for n, _ in fictional.REGIONS)
    assert table.codes == tuple(c for _, c in fictional.REGIONS)
    assert list(polys["province_id"]) == [0, 1, 2]
    coastal = polys.geometry[0]
    assert coastal.geom_type == "MultiPolygon" and len(coastal.geoms) == 2
    ring = polys.geometry[2]
    assert len(ring.interiors) == 1
    assert not ring.contains(shapely.Point(10.5, 1.5))
    lon0, lat0, lon1, lat1 = table.bbox
    assert lon0 < 10.0 and lat0 < -0.6 and lon1 > 12.0 and lat1 > 2.0
    # one degree at the equator is ~111 km: Eastmark is about 111 x 111 km
    assert math.isclose(table.areas_km2[1], 110.57 * 111.32, rel_tol=0.01)


def test_columns_are_configurable(tmp_path):
    doc = json.loads(fictional.write_country(tmp_path / "a.geojson").read_text())
    for f in doc["features"]:
        p = f["properties"]
        f["properties"] = {"unit": p["shapeName"], "code": p["shapeISO"]}
    path = tmp_path / "b.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(GeopakError, match="no unit name column 'shapeName'"):
        read_boundaries(path, country="XFA")
    got = read_boundaries(path, country="XFA", name_column="unit", code_column="code")
    assert region_table(got).codes == ("XF-C", "XF-E", "XF-R")
    # without codes: ordered by name
    nocode = read_boundaries(path, country="XFA", name_column="unit", code_column="none")
    assert region_table(nocode).names == ("Coastal", "Eastmark", "Ringland")


def test_wrong_country_file_is_refused(box_boundaries, country_file):
    with pytest.raises(GeopakError, match="holds PAK, not IND"):
        read_boundaries(box_boundaries, country="IND")
    with pytest.raises(GeopakError, match="holds XFA, not PAK"):
        read_boundaries(country_file)
    with pytest.raises(GeopakError, match="ISO 3166-1 alpha-3"):
        check_country("Pakistan")


def test_table_round_trips(tmp_path, country_file):
    table = region_table(read_boundaries(country_file, country="XFA"))
    table.write(tmp_path / "regions.parquet")
    back = RegionTable.read(tmp_path / "regions.parquet")
    assert back == table and back.bbox == table.bbox
    assert RegionTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    assert regions_in(tmp_path) == table
    assert RegionTable.from_dict(PAKISTAN.to_dict()) is PAKISTAN
    # older folders without regions.parquet: recovered from the cells' names
    assert regions_from_cells([1, 0, 1], ["Punjab", "Sindh", "Punjab"]) is PAKISTAN
    other = regions_from_cells([0, 1], ["Coastal", "Eastmark"])
    assert other.names == ("Coastal", "Eastmark")
    with pytest.raises(GeopakError, match="have no name"):
        regions_from_cells([0, 2], ["Coastal", "Ringland"])


def test_other_country_download_records_its_digest(tmp_path, monkeypatch, country_file):
    """An unpinned country's release is downloaded once, its digest recorded and checked."""
    monkeypatch.delenv("GEOPAK_BOUNDARIES", raising=False)
    body = country_file.read_bytes()
    m = country_manifest("XFA")
    assert m["sha256"] == "" and "gbOpen/XFA/ADM1/geoBoundaries-XFA-ADM1.geojson" in m["url"]
    assert country_manifest("PAK")["sha256"]
    assert not boundaries_available(country="XFA", cache_dir=tmp_path)
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        m = dict(m, url=f"http://127.0.0.1:{srv.server_address[1]}/x.geojson")
        got = load_boundaries(country="XFA", cache_dir=tmp_path, manifest=m)
    finally:
        srv.shutdown()
        srv.server_close()
    assert region_table(got).n == 3
    cached = cached_path(m, tmp_path)
    record = cached.with_name(cached.name + ".sha256")
    assert record.read_text().strip() == got.attrs["sha256"]
    assert boundaries_available(country="XFA", cache_dir=tmp_path)
    # offline now: the recorded copy is used
    assert region_table(load_boundaries(country="XFA", cache_dir=tmp_path, manifest=m)).n == 3


def test_id_width_follows_the_table(tmp_path):
    """int8 while the ids fit (Pakistan and most countries keep their bytes), int16 past 127
    units (Slovenia's ADM1 has ~212), refused only past int16."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from support import manyregions

    from geopak_core.regions import MAX_REGIONS
    from geopak_core.shardfmt import CELLS_SCHEMA, INDEX_SCHEMA, with_region_ids

    assert PAKISTAN.id_dtype == np.int8 and PAKISTAN.id_arrow_type == pa.int8()
    assert with_region_ids(INDEX_SCHEMA, PAKISTAN) is INDEX_SCHEMA
    PAKISTAN.write(tmp_path / "pak.parquet")
    assert pq.read_schema(tmp_path / "pak.parquet").field("province_id").type == pa.int8()

    def table(n: int) -> RegionTable:
        return RegionTable("XMR", tuple(f"r{i}" for i in range(n)), ("",) * n)

    assert table(127).id_dtype == np.int8
    wide = table(128)
    assert wide.id_dtype == np.int16
    for schema in (INDEX_SCHEMA, CELLS_SCHEMA):
        got = with_region_ids(schema, wide)
        assert got.field("province_id").type == pa.int16()
        assert got.names == schema.names
    path = manyregions.write_grid_country(tmp_path / "xmr.geojson", 212, cols=20, size=0.1)
    polys = load_boundaries(path, country="XMR")
    regions = region_table(polys)
    assert regions.n == 212 and polys["province_id"].dtype == np.int16
    assert regions.id("XM-200") == 199 and regions.name(211) == "Region 212"
    regions.write(tmp_path / "r.parquet")
    assert RegionTable.read(tmp_path / "r.parquet") == regions
    assert pq.read_schema(tmp_path / "r.parquet").field("province_id").type == pa.int16()
    assert table(MAX_REGIONS).n == MAX_REGIONS
    with pytest.raises(GeopakError, match="at most 32767"):
        table(MAX_REGIONS + 1)


def _antimeridian_country(path, west_lon=-180.0, east_lon=180.0):
    """Two island regions split at lon 180 the way geoBoundaries writes Fiji: a multipolygon
    with parts at 178..180 and -180..-179, and a region wholly at -179..-178."""

    def box(x0, y0, x1, y1):
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]

    def feat(name, code, rings):
        return {
            "type": "Feature",
            "properties": {"shapeName": name, "shapeISO": code, "shapeGroup": "XAM"},
            "geometry": {"type": "MultiPolygon", "coordinates": [[r] for r in rings]},
        }

    doc = {
        "type": "FeatureCollection",
        "features": [
            feat("Westisle", "XA-W", [box(178.0, -18.0, east_lon, -16.0),
                                      box(west_lon, -18.0, -179.0, -16.0)]),
            feat("Eastisle", "XA-E", [box(-179.0, -18.0, -178.0, -16.0)]),
        ],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def test_antimeridian_country_is_one_line_refusal(tmp_path, capsys):
    """Today a country across lon 180 would get a bbox spanning the globe and a tagging
    projection centred on the far side of the Earth: refused by name instead."""
    from geopak_data.cli import main

    path = _antimeridian_country(tmp_path / "xam.geojson")
    with pytest.raises(GeopakError, match="crosses the antimeridian") as err:
        load_boundaries(path, country="XAM")
    assert "\n" not in str(err.value) and "clip the file" in str(err.value)
    wide = _antimeridian_country(tmp_path / "wide.geojson", west_lon=-180.0, east_lon=180.5)
    with pytest.raises(GeopakError, match=r"outside -180\.\.180"):
        load_boundaries(wide, country="XAM")
    rc = main(["demo", "--work", str(tmp_path / "w"), "--country", "XAM",
               "--boundaries", str(path), "--no-train"])  # fmt: skip
    err_text = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err_text
    assert "crosses the antimeridian" in err_text.splitlines()[-1]
    # islands on both sides without a part touching 180 (Kiribati) are across it too
    apart = _antimeridian_country(tmp_path / "apart.geojson", west_lon=-179.5, east_lon=179.5)
    with pytest.raises(GeopakError, match="crosses the antimeridian"):
        load_boundaries(apart, country="XAM")
    # a country that merely reaches 180 (its widest gap is the one across 180) loads
    doc = json.loads(path.read_text())
    doc["features"] = [
        {**f, "geometry": {"type": "MultiPolygon", "coordinates": f["geometry"]["coordinates"][:1]}}
        for f in doc["features"]
    ]
    doc["features"][1]["geometry"]["coordinates"] = [
        [[[176, -18], [178, -18], [178, -16], [176, -16], [176, -18]]]
    ]
    (tmp_path / "east.geojson").write_text(json.dumps(doc))
    assert region_table(load_boundaries(tmp_path / "east.geojson", country="XAM")).n == 2

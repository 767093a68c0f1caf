"""The tag stage and `geopak-data tag` on a small filtered table."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geopak_core.errors import GeopakError
from geopak_data.cli import main
from geopak_data.config import load_config
from geopak_data.records import DOWNLOADED_SCHEMA, REJECT_SCHEMA, empty_record
from geopak_data.tag import run_tag

POINTS = [
    ("lahore", 31.5204, 74.3587, "Punjab"),
    ("pindi", 33.5973, 73.0479, "Punjab"),
    ("isb", 33.7104, 73.0551, "Islamabad Capital Territory"),
    ("muzaffarabad", 34.3700, 73.4711, "Azad Kashmir"),
    ("skardu", 35.2971, 75.6333, "Gilgit-Baltistan"),
    ("gwadar", 25.1216, 62.3254, "Balochistan"),
    ("seaview", 24.7867, 67.0408, "Sindh"),
    ("peshawar", 34.0151, 71.5249, "Khyber Pakhtunkhwa"),
    ("kabul", 34.5553, 69.2075, None),
    ("delhi", 28.6139, 77.2090, None),
    ("sea", 22.0, 64.0, None),
    ("nan", float("nan"), 70.0, "invalid"),
]


def _filtered(work):
    recs = []
    for sid, lat, lon, _ in POINTS:
        r = empty_record(
            source="flickr",
            source_id=sid,
            url=f"https://e.org/{sid}",
            lat=lat,
            lon=lon,
            license="CC BY 2.0",
        )
        r.update(image_path=f"images/flickr/{sid}.jpg", width=300, height=200)
        recs.append(r)
    t = pa.table(
        {f.name: [r.get(f.name) for r in recs] for f in DOWNLOADED_SCHEMA}, schema=DOWNLOADED_SCHEMA
    )
    t = t.append_column("phash", pa.array(["0" * 16] * len(recs))).append_column(
        "laplacian_var", pa.array([100.0] * len(recs))
    )
    (work / "filter").mkdir(parents=True)
    pq.write_table(t, work / "filter" / "records.parquet")


def test_tag_stage_outputs(tmp_path):
    work = tmp_path / "W"
    _filtered(work)
    outcome = run_tag(work=work, config=load_config(None))
    out = pq.read_table(work / "tag" / "records.parquet")
    rej = pq.read_table(work / "tag" / "rejects.parquet")
    assert rej.schema.equals(REJECT_SCHEMA)
    got = dict(
        zip(out.column("source_id").to_pylist(), out.column("province").to_pylist(), strict=True)
    )
    assert got == {sid: p for sid, _, _, p in POINTS if p and p != "invalid"}
    assert out.schema.field("province_id").type == pa.int8()
    assert out.schema.field("border_km").type == pa.float64()
    ids = dict(
        zip(out.column("source_id").to_pylist(), out.column("province_id").to_pylist(), strict=True)
    )
    assert (
        ids["lahore"] == 1 and ids["isb"] == 3 and ids["muzaffarabad"] == 6 and ids["seaview"] == 0
    )
    border = dict(
        zip(out.column("source_id").to_pylist(), out.column("border_km").to_pylist(), strict=True)
    )
    assert border["lahore"] == 0.0 and 0 < border["seaview"] < 5
    assert "phash" in out.column_names and "license" in out.column_names  # columns travel on
    reasons = dict(
        zip(rej.column("source_id").to_pylist(), rej.column("reason").to_pylist(), strict=True)
    )
    assert reasons == {
        "kabul": "outside_pakistan",
        "delhi": "outside_pakistan",
        "sea": "outside_pakistan",
        "nan": "invalid_coordinates",
    }
    assert set(rej.column("stage").to_pylist()) == {"tag"}
    assert outcome.counts["tagged"] == 8 and outcome.counts["rejected:outside_pakistan"] == 3
    assert outcome.counts["snapped"] == 1 and outcome.counts["province:Punjab"] == 2
    assert "8 tagged" in outcome.summary and "3 outside Pakistan" in outcome.summary

    again = run_tag(work=work, config=load_config(None))
    assert again.skipped


def test_boundaries_file_is_an_input(tmp_path, boundaries_path):
    work = tmp_path / "W"
    _filtered(work)
    run_tag(work=work, config=load_config(None))
    gpkg = tmp_path / "pak.gpkg"
    gpd.read_file(boundaries_path).to_file(gpkg, driver="GPKG")
    other = run_tag(work=work, config=load_config(None), boundaries=gpkg)
    assert not other.skipped and any("boundaries" in c for c in other.changes)
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["stages"]["tag"]["notes"]["boundaries"] == str(gpkg)
    wider = run_tag(
        work=work, config=load_config(None, {"tag.border_tolerance_km": 0.0}), boundaries=gpkg
    )
    assert not wider.skipped and wider.counts["snapped"] == 0  # Sea View is now outside


def test_cli(tmp_path, capsys, boundaries_path):
    work = tmp_path / "W"
    _filtered(work)
    assert main(["tag", "--work", str(work), "--boundaries", str(boundaries_path)]) == 0
    assert capsys.readouterr().out.startswith("tag: 12 in -> 8 tagged")

    with pytest.raises(SystemExit) as exc:
        main(["tag", "--work", str(work), "--boundaries", str(tmp_path / "missing.geojson")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file not found" in err

    six = tmp_path / "six.geojson"
    raw = gpd.read_file(boundaries_path)
    raw[raw.shapeName != "Punjab"].to_file(six, driver="GeoJSON")
    assert main(["tag", "--work", str(work), "--boundaries", str(six)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing Punjab" in err

    assert main(["tag", "--work", str(tmp_path / "nowhere")]) == 2
    assert "run `geopak-data filter" in capsys.readouterr().err


def test_missing_columns(tmp_path):
    work = tmp_path / "W"
    (work / "filter").mkdir(parents=True)
    pq.write_table(pa.table({"key": ["a"], "lat": [31.5]}), work / "filter" / "records.parquet")
    with pytest.raises(GeopakError, match="lacks column 'lon'"):
        run_tag(work=work, config=load_config(None))
    assert not (work / "tag" / "records.parquet").exists()


def test_all_points_vectorised_consistency(tmp_path):
    """Many records through the stage: ids agree with a fresh tagger on the same points."""
    from geopak_core.boundaries import load_boundaries
    from geopak_data.config import COAST_BBOXES
    from geopak_data.tagging import tag_points

    work = tmp_path / "W"
    rng = np.random.default_rng(3)
    n = 5000
    lat, lon = rng.uniform(23.5, 37.2, n), rng.uniform(60.8, 77.9, n)
    t = pa.table(
        {
            "key": [f"k-{i}" for i in range(n)],
            "source": ["x"] * n,
            "source_id": [str(i) for i in range(n)],
            "url": [""] * n,
            "lat": lat,
            "lon": lon,
        }
    )
    (work / "filter").mkdir(parents=True)
    pq.write_table(t, work / "filter" / "records.parquet")
    run_tag(work=work, config=load_config(None))
    out = pq.read_table(work / "tag" / "records.parquet")
    res = tag_points(lat, lon, load_boundaries(), coast_bboxes=COAST_BBOXES["PAK"])
    assert out.column("key").to_pylist() == [f"k-{i}" for i in np.flatnonzero(res.tagged)]
    assert out.column("province_id").to_pylist() == res.province_id[res.tagged].tolist()
    assert pq.read_table(work / "tag" / "rejects.parquet").num_rows == n - out.num_rows > 0


def test_land_border_rejects_say_why_and_notes_say_the_rule(tmp_path):
    """Attari (India, 4.8 km from Wagah) is rejected as outside Pakistan; the notes name the rule."""
    work = tmp_path / "W"
    POINTS.append(("attari", 31.600, 74.606, None))
    try:
        _filtered(work)
    finally:
        POINTS.pop()
    outcome = run_tag(work=work, config=load_config(None))
    rej = pq.read_table(work / "tag" / "rejects.parquet").to_pylist()
    attari = next(r for r in rej if r["source_id"] == "attari")
    assert attari["reason"] == "outside_pakistan" and "land border" in attari["detail"]
    assert outcome.counts["rejected:across_land_border"] == 1
    manifest = json.loads((work / "manifest.json").read_text())
    notes = json.dumps(manifest)
    assert "across the sea coast only" in notes and "snap_borders" in notes
    # the user can choose to snap land borders too (a new run: the tag section changed)
    both = run_tag(work=work, config=load_config(None, {"tag.snap_borders": ["coast", "land"]}))
    assert not both.skipped and both.counts["rejected:across_land_border"] == 0
    out = pq.read_table(work / "tag" / "records.parquet")
    assert "attari" in out.column("source_id").to_pylist()


def test_bad_border_config_is_a_one_line_error():
    from geopak_core.errors import ConfigError

    with pytest.raises(ConfigError, match="tag.snap_borders"):
        load_config(None, {"tag.snap_borders": ["river"]})
    with pytest.raises(ConfigError, match=r"tag.coast_bboxes\[0\]"):
        load_config(None, {"tag.coast_bboxes": [[70, 30, 60, 20]]})

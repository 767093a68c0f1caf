"""Google Landmarks v2: train.csv joined with landmark coordinates and Commons attribution."""

from __future__ import annotations

import pytest

from geopak_core.errors import GeopakError
from geopak_core.io import PartStore
from geopak_data.config import load_config
from geopak_data.sources import NullProgress, get_source


@pytest.fixture
def files(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text(
        "id,url,landmark_id\n"
        "6e158a47eb2ca3f6,https://upload.wikimedia.org/wikipedia/commons/a/a1/Badshahi.jpg,142820\n"
        "202cd79556f30760,https://upload.wikimedia.org/wikipedia/commons/b/b2/Eiffel.jpg,7\n"
        "3ad87684c99c06e1,https://upload.wikimedia.org/wikipedia/commons/c/c3/Faisal.jpg,113209\n"
        "e7f70e9c61e66af3,https://upload.wikimedia.org/wikipedia/commons/d/d4/Nowhere.jpg,999\n"
        "4b3d7a9a1f0c2e11,https://upload.wikimedia.org/wikipedia/commons/e/e5/Badshahi2.jpg,142820\n"
    )
    marks = tmp_path / "landmarks.csv"
    marks.write_text(
        "landmark_id,lat,lon,name\n"
        "142820,31.5881,74.3095,Badshahi Mosque\n"
        "113209,33.7294,73.0380,Faisal Mosque\n"
        "7,48.8584,2.2945,Eiffel Tower\n"
        "999,,,No coordinates\n"
    )
    attrib = tmp_path / "train_attribution.csv"
    attrib.write_text(
        "id,url,author,license,title\n"
        '6e158a47eb2ca3f6,https://commons.wikimedia.org/wiki/File:Badshahi.jpg,"<a href=""//commons.wikimedia.org/wiki/User:Ali"">Ali &amp; Co</a>",CC BY-SA 3.0,Badshahi Mosque at dusk\n'
        "3ad87684c99c06e1,https://commons.wikimedia.org/wiki/File:Faisal.jpg,Sara,Public domain,Faisal Mosque\n"
    )
    return train, marks, attrib


def run(tmp_path, **opts):
    src = get_source("gldv2", config=load_config(), **opts)
    parts = PartStore(tmp_path / "parts")
    src.discover(parts, progress=NullProgress())
    return parts.read_all()


def test_join_filter_and_attribution(tmp_path, files):
    train, marks, attrib = files
    t = run(tmp_path, train_csv=train, landmarks=marks, attribution_csv=attrib)
    recs = t.to_pylist()
    assert [r["source_id"] for r in recs] == [
        "6e158a47eb2ca3f6",
        "3ad87684c99c06e1",
        "4b3d7a9a1f0c2e11",
    ]  # train.csv order
    a, b, c = recs
    assert a["key"] == "gldv2-6e158a47eb2ca3f6" and a["source"] == "gldv2"
    assert (a["lat"], a["lon"]) == (31.5881, 74.3095)
    assert (
        a["owner"] == "Ali & Co"
        and a["license"] == "CC BY-SA 3.0"
        and a["title"] == "Badshahi Mosque at dusk"
    )
    assert a["url"].startswith("https://upload.wikimedia.org/")
    assert "commons.wikimedia.org/wiki/File:Badshahi.jpg" in a["attribution"]
    assert b["license"] == "Public domain" and b["owner"] == "Sara"
    assert (
        c["license"] == "" and c["title"] == "Badshahi Mosque"
    )  # no attribution row: landmark name


def test_without_attribution_licence_unknown(tmp_path, files):
    train, marks, _ = files
    t = run(tmp_path, train_csv=train, landmarks=marks)
    assert t.num_rows == 3
    assert set(t.column("license").to_pylist()) == {""}
    assert all("licence unknown" in s for s in t.column("attribution").to_pylist())


def test_user_errors(tmp_path, files):
    train, marks, _ = files
    with pytest.raises(GeopakError, match="--landmarks"):
        get_source("gldv2", config=load_config(), train_csv=train)
    with pytest.raises(GeopakError, match="not found"):
        get_source(
            "gldv2", config=load_config(), train_csv=tmp_path / "missing.csv", landmarks=marks
        )
    bad = tmp_path / "bad_marks.csv"
    bad.write_text("landmark,x,y\n1,2,3\n")
    with pytest.raises(GeopakError, match="landmark_id"):
        run(tmp_path, train_csv=train, landmarks=bad)


def test_wrong_files_refused_at_construction(tmp_path, files):
    # Header problems surface before discovery starts (so before any progress bar is drawn).
    train, marks, _ = files
    bad = tmp_path / "bad_train.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(GeopakError, match="bad_train.csv: no id column"):
        get_source("gldv2", config=load_config(), train_csv=bad, landmarks=marks)
    with pytest.raises(GeopakError, match="no landmark_id column"):
        get_source("gldv2", config=load_config(), train_csv=train, landmarks=bad)

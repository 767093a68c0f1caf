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
    # The real file's shape: Commons page URL, author as HTML or with a talk-page signature,
    # a credit string naming one or several licences with their URLs, "File:....jpg" titles.
    attrib.write_text(
        "id,url,author,license,title\n"
        '6e158a47eb2ca3f6,https://commons.wikimedia.org/wiki/File:Badshahi.jpg,"<a '
        'href=""//commons.wikimedia.org/wiki/User:Ali"">Ali &amp; Co</a>",'
        "GFDL(http://www.gnu.org/copyleft/fdl.html)/CC BY-SA "
        "3.0(https://creativecommons.org/licenses/by-sa/3.0),File:Badshahi_Mosque at dusk.JPG\n"
        "3ad87684c99c06e1,https://commons.wikimedia.org/wiki/File:Faisal.jpg,"
        '"Sara Khan (talk) 15:17, 13 July 2018 (UTC)",Public domain,File:Faisal Mosque.jpg\n'
        "4b3d7a9a1f0c2e11,https://commons.wikimedia.org/wiki/File:Badshahi2.jpg,User:Omar,"
        "GFDL(http://www.gnu.org/copyleft/fdl.html),File:Badshahi2.jpg\n"
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
    # train.csv order; 4b3d... is GFDL only (not in the Flickr policy): dropped
    assert [r["source_id"] for r in recs] == ["6e158a47eb2ca3f6", "3ad87684c99c06e1"]
    a, b = recs
    assert a["key"] == "gldv2-6e158a47eb2ca3f6" and a["source"] == "gldv2"
    assert (a["lat"], a["lon"]) == (31.5881, 74.3095)
    assert a["owner"] == "Ali & Co" and a["title"] == "Badshahi Mosque at dusk"
    assert a["url"].startswith("https://upload.wikimedia.org/")
    assert "commons.wikimedia.org/wiki/File:Badshahi.jpg" in a["attribution"]
    assert b["owner"] == "Sara Khan" and b["title"] == "Faisal Mosque"


def test_licences_parsed_all_kept_most_permissive_chosen(tmp_path, files):
    train, marks, attrib = files
    a, b = run(tmp_path, train_csv=train, landmarks=marks, attribution_csv=attrib).to_pylist()
    assert a["license"] == "CC BY-SA 3.0"
    assert a["license_url"] == "https://creativecommons.org/licenses/by-sa/3.0"
    assert a["license_id"] == "GFDL | CC BY-SA 3.0"  # every licence of the file is kept
    assert "chosen as the most permissive of GFDL, CC BY-SA 3.0" in a["attribution"]
    assert b["license"] == "Public domain" and b["license_id"] == "Public domain"


def test_licence_policy_is_flickrs(tmp_path, files):
    train, marks, attrib = files
    # a policy of CC BY only (Flickr ids 4, 11) refuses the share-alike and public-domain images
    cfg = load_config(None, {"crawl.flickr.licenses": [4, 11]})
    src = get_source("gldv2", config=cfg, train_csv=train, landmarks=marks, attribution_csv=attrib)
    parts = PartStore(tmp_path / "p2")
    src.discover(parts, progress=NullProgress())
    assert parts.read_all().num_rows == 0
    assert src.stats == {"kept": 0, "licence_refused": 3, "licence_unknown": 0}
    # the policy is part of the discovery settings (a change re-runs the crawl)
    assert src.extra()["licence_families"] == ["by"]


def test_unknown_licence_dropped_and_attribution_required(tmp_path, files):
    train, marks, attrib = files
    attrib.write_text(
        "id,url,author,license,title\n"
        "6e158a47eb2ca3f6,https://commons.wikimedia.org/wiki/File:B.jpg,Ali,Copyrighted free use,File:B.jpg\n"
    )
    src = get_source(
        "gldv2", config=load_config(), train_csv=train, landmarks=marks, attribution_csv=attrib
    )
    parts = PartStore(tmp_path / "p3")
    src.discover(parts, progress=NullProgress())
    assert parts.read_all().num_rows == 0
    assert src.stats["licence_unknown"] == 3  # no recognised licence, or no attribution row
    attrib.unlink()  # none given and none beside train.csv
    with pytest.raises(GeopakError, match="--attribution-csv"):
        get_source("gldv2", config=load_config(), train_csv=train, landmarks=marks)


def test_attribution_found_beside_train_csv(tmp_path, files):
    # The contract's command names only --train-csv and --landmarks; the release ships
    # train_attribution.csv next to train.csv, so that one is used.
    train, marks, attrib = files
    assert attrib.parent == train.parent and attrib.name == "train_attribution.csv"
    src = get_source("gldv2", config=load_config(), train_csv=train, landmarks=marks)
    assert src.attribution_csv == attrib
    assert src.inputs()["attribution_csv"] == attrib  # fingerprinted like a given one
    recs = run(tmp_path, train_csv=train, landmarks=marks).to_pylist()
    assert [r["license"] for r in recs] == ["CC BY-SA 3.0", "Public domain"]
    from geopak_data.source_registry import missing_inputs

    assert missing_inputs("gldv2", load_config(), {"train_csv": train, "landmarks": marks}) == []
    attrib.unlink()
    assert any(
        "train_attribution.csv" in m
        for m in missing_inputs("gldv2", load_config(), {"train_csv": train, "landmarks": marks})
    )


def test_odd_rows_skipped_not_fatal(tmp_path, files, caplog):
    # One broken line in a 4.1M-row train.csv, or one landmark with a coordinate that is no
    # number, must not stop the crawl: the rest is kept and the skipped rows are counted.
    train, marks, attrib = files
    with train.open("a") as fh:
        fh.write("brokenline\n")
        fh.write("aa11,https://upload.wikimedia.org/x.jpg,142820,extra-field\n")
        fh.write("bb22,,\n")
    with marks.open("a") as fh:
        fh.write("555,abc,74.3,Bad latitude\n")
        fh.write("556,31.5.4,74.3,Two dots\n")
        fh.write("557,31.5\n")
    with caplog.at_level("WARNING", logger="geopak.gldv2"):
        recs = run(tmp_path, train_csv=train, landmarks=marks, attribution_csv=attrib).to_pylist()
    assert [r["source_id"] for r in recs] == ["6e158a47eb2ca3f6", "3ad87684c99c06e1"]
    text = caplog.text
    assert "2 malformed row(s) of train.csv skipped" in text
    assert "1 malformed row(s) and 2 landmark(s) whose coordinates are no numbers" in text
    from geopak_data.sources.gldv2 import load_landmarks

    got = load_landmarks(marks, (60.0, 23.0, 78.0, 38.0))
    assert sorted(got) == ["113209", "142820"]


def test_title_and_author_cleaning():
    from geopak_data.sources.gldv2 import clean_author, clean_title

    assert clean_title("File:Minar-e-Pakistan_at_night.jpeg") == "Minar-e-Pakistan at night"
    assert clean_title("Shah Jahan Mosque.tif") == "Shah Jahan Mosque"
    assert clean_title("") == ""
    assert clean_author("Zain (talk) 09:05, 2 March 2011 (UTC)") == "Zain"
    assert clean_author("Zain (talk · contribs)") == "Zain"
    assert clean_author("User:Zain") == "Zain"
    assert clean_author('<a href="//commons.wikimedia.org/wiki/User:Z">Z &amp; Y</a>') == "Z & Y"


def test_credit_strings_like_commons():
    from geopak_data.licenses import most_permissive, parse_credit

    dual = parse_credit(
        "GFDL(http://www.gnu.org/copyleft/fdl.html)/CC BY-SA 3.0(https://creativecommons.org/licenses/by-sa/3.0)"
    )
    assert [(x.name, x.family) for x in dual] == [("GFDL", "gfdl"), ("CC BY-SA 3.0", "by-sa")]
    assert dual[0].url == "http://www.gnu.org/copyleft/fdl.html"
    assert most_permissive(dual).name == "CC BY-SA 3.0"
    multi = parse_credit(
        "GFDL (http://www.gnu.org/copyleft/fdl.html) or CC BY 3.0 (https://creativecommons.org/licenses/by/3.0)"
    )
    assert most_permissive(multi).name == "CC BY 3.0"
    assert parse_credit("CC0")[0].family == "cc0"
    assert parse_credit("CC-BY-SA-4.0")[0].url == "https://creativecommons.org/licenses/by-sa/4.0/"
    nc = parse_credit("CC BY-NC-SA 2.0(https://creativecommons.org/licenses/by-nc-sa/2.0)")
    assert nc[0].family == "by-nc-sa"
    assert parse_credit("") == []


def test_user_errors(tmp_path, files):
    train, marks, attrib = files
    with pytest.raises(GeopakError, match="--landmarks"):
        get_source("gldv2", config=load_config(), train_csv=train)
    with pytest.raises(GeopakError, match="not found"):
        get_source(
            "gldv2", config=load_config(), train_csv=tmp_path / "missing.csv", landmarks=marks
        )
    bad = tmp_path / "bad_marks.csv"
    bad.write_text("landmark,x,y\n1,2,3\n")
    with pytest.raises(GeopakError, match="landmark_id"):
        run(tmp_path, train_csv=train, landmarks=bad, attribution_csv=attrib)


def test_wrong_files_refused_at_construction(tmp_path, files):
    # Header problems surface before discovery starts (so before any progress bar is drawn).
    train, marks, _ = files
    bad = tmp_path / "bad_train.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(GeopakError, match="bad_train.csv: no id column"):
        get_source("gldv2", config=load_config(), train_csv=bad, landmarks=marks)
    with pytest.raises(GeopakError, match="no landmark_id column"):
        get_source("gldv2", config=load_config(), train_csv=train, landmarks=bad)

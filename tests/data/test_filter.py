"""The filter stage end to end on a tiny crawl: every rule, the report, reruns, the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.images import SMALL_CFG, add_record, blurred, flat, jpeg, textured, write_crawl

from geopak_core.errors import GeopakError
from geopak_data import quality
from geopak_data.cli import main
from geopak_data.config import load_config
from geopak_data.filter import run_filter
from geopak_data.records import REJECT_SCHEMA


@pytest.fixture
def crawl(tmp_path):
    """A two-source crawl where each record exercises one rule; returns (work, expected)."""
    work = tmp_path / "W"
    rows: dict = {}
    exp: dict[str, str] = {}  # key -> expected reason ('' = kept)

    def add(source, sid, data, reason, **kw):
        exp[add_record(work, rows, source, sid, data, **kw)] = reason

    for i in range(4):
        add("flickr", f"good{i}", jpeg(textured(100 + i)), "")
    add("flickr", "undated-accuracy-null", jpeg(textured(110)), "", accuracy=None, date_taken="")
    add("flickr", "tiny", jpeg(textured(111, (40, 40))), "too_small")
    add("flickr", "pano", jpeg(textured(112, (400, 80))), "bad_aspect")
    data = jpeg(textured(113))
    add("flickr", "truncated", data[: len(data) // 2], "decode_failed")
    add("flickr", "html", b"<html>403 Forbidden</html>", "decode_failed")
    # a missing file is no longer a decode_failed reject: the filter stops and says to crawl
    # again (tests/data/test_faults_crawl.py), so a lost image is recovered, never dropped
    add("flickr", "flat", jpeg(flat()), "low_entropy")
    add("flickr", "blurred", jpeg(blurred(114)), "blurry")
    add("flickr", "nan", jpeg(textured(115)), "missing_coordinates", lat=float("nan"))
    add("flickr", "nolon", jpeg(textured(116)), "missing_coordinates", lon=None)
    add("flickr", "zero", jpeg(textured(117)), "null_island", lat=0.0, lon=0.0)
    add("flickr", "range", jpeg(textured(118)), "coordinates_out_of_range", lat=95.0)
    add("flickr", "coarse", jpeg(textured(119)), "coarse_accuracy", accuracy=6)
    # exact duplicate across sources: the same bytes; the yfcc copy claims a larger original
    same = jpeg(textured(120))
    add("flickr", "dup", same, "exact_duplicate", original_width=640, original_height=480)
    add("yfcc", "dup", same, "", original_width=1280, original_height=960)
    # near duplicates: a smaller re-encode loses to the larger copy; equal sizes -> earliest date
    big = textured(121, (160, 120))
    add("flickr", "near-big", jpeg(big), "")
    add("yfcc", "near-small", jpeg(big.resize((128, 96)), 70), "near_duplicate")
    twin = textured(122)
    add("flickr", "twin-late", jpeg(twin), "near_duplicate", date_taken="2019-05-01 10:00:00")
    add("yfcc", "twin-early", jpeg(twin, 80), "", date_taken="2012-03-04 08:00:00")
    write_crawl(work, rows)
    return work, exp


def _cfg(**over):
    return load_config(None, {**SMALL_CFG, **over})


def test_every_rule_rejects_with_its_reason(crawl):
    work, exp = crawl
    outcome = run_filter(work=work, config=_cfg())
    kept = pq.read_table(work / "filter" / "records.parquet")
    rejects = pq.read_table(work / "filter" / "rejects.parquet")
    assert rejects.schema.equals(REJECT_SCHEMA)
    got = {k: "" for k in kept.column("key").to_pylist()}
    got.update(
        dict(
            zip(
                rejects.column("key").to_pylist(), rejects.column("reason").to_pylist(), strict=True
            )
        )
    )
    assert got == exp
    assert set(rejects.column("stage").to_pylist()) == {"filter"}
    details = dict(
        zip(rejects.column("key").to_pylist(), rejects.column("detail").to_pylist(), strict=True)
    )
    assert details["flickr-dup"] == "same file (sha256) as yfcc-dup"
    assert details["yfcc-near-small"].endswith("from flickr-near-big")
    assert details["flickr-twin-late"].endswith("from yfcc-twin-early")
    assert "short side" in details["flickr-tiny"] and "aspect" in details["flickr-pano"]
    # kept records keep every input column and gain the measures
    for col in (
        "license",
        "source",
        "original_width",
        "phash",
        "laplacian_var",
        "entropy",
        "indoor_prob",
    ):
        assert col in kept.column_names
    assert kept.schema.field("laplacian_var").type == pa.float64()
    assert all(len(h) == 16 for h in kept.column("phash").to_pylist())
    assert min(kept.column("laplacian_var").to_pylist()) >= 30
    assert kept.column("indoor_prob").null_count == kept.num_rows  # no weights: no scores
    assert kept.column("key").to_pylist() == sorted(kept.column("key").to_pylist())

    # counts by reason, as `geopak-data stats` reads them from the rejects table
    by_reason = Counter(rejects.column("reason").to_pylist())
    assert by_reason == Counter(r for r in exp.values() if r)
    report = json.loads((work / "filter" / "report.json").read_text())
    assert report["rejects_by_reason"] == dict(by_reason)
    assert report["input"] == len(exp) and report["kept"] == kept.num_rows
    assert outcome.counts["rejected:decode_failed"] == 2
    assert outcome.counts["kept"] == kept.num_rows


def test_indoor_check_is_reported_not_applied_without_weights(crawl):
    work, _ = crawl
    outcome = run_filter(work=work, config=_cfg())
    assert "indoor check NOT APPLIED" in outcome.summary
    assert outcome.counts["indoor_applied"] == 0 and outcome.counts["checks_not_applied"] == 1
    report = json.loads((work / "filter" / "report.json").read_text())
    assert (
        list(report["not_applied"]) == ["indoor"]
        and "NOT APPLIED" in report["not_applied"]["indoor"]
    )
    assert (
        report["checks"]["indoor"]["applied"] is False
        and report["checks"]["indoor"]["enabled"] is True
    )
    assert "NOT APPLIED" in report["checks"]["indoor"]["reason"]
    assert report["checks"]["information"]["applied"] is True
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["stages"]["filter"]["notes"]["not_applied"] == ["indoor"]
    from geopak_data import stats

    notes = stats.filter_notes(work)
    assert len(notes) == 1 and notes[0].startswith("indoor: not applied") and "weights" in notes[0]

    off = run_filter(work=work, config=_cfg(**{"filter.check_indoor": False}))
    assert "indoor check disabled" in off.summary and "NOT APPLIED" not in off.summary
    report = json.loads((work / "filter" / "report.json").read_text())
    assert report["not_applied"] == {} and "indoor" in report["disabled"]
    assert report["checks"]["indoor"]["reason"] == "disabled by filter.check_indoor = false"


def test_checks_can_be_switched_off(crawl):
    work, exp = crawl
    run_filter(
        work=work,
        config=_cfg(
            **{
                "filter.check_information": False,
                "filter.check_coordinates": False,
                "filter.check_near_duplicates": False,
                "filter.check_file": False,
            }
        ),
    )
    rejects = pq.read_table(work / "filter" / "rejects.parquet")
    reasons = Counter(rejects.column("reason").to_pylist())
    assert reasons == Counter(
        {"decode_failed": 2, "exact_duplicate": 1}
    )  # decoding is always enforced
    report = json.loads((work / "filter" / "report.json").read_text())
    assert set(report["disabled"]) == {"information", "coordinates", "near_duplicates", "file"}
    assert report["checks"]["file"]["reason"] == "disabled by filter.check_file = false"


def test_rerun_is_a_no_op_and_threshold_changes_reuse_measurements(crawl, monkeypatch):
    work, _ = crawl
    first = run_filter(work=work, config=_cfg())
    before = (work / "filter" / "records.parquet").read_bytes()
    again = run_filter(work=work, config=_cfg())
    assert again.skipped and "nothing to do" in again.summary
    assert (work / "filter" / "records.parquet").read_bytes() == before

    def no_decoding(*a, **k):
        raise AssertionError("images were measured again")

    monkeypatch.setattr(quality, "measure_image", no_decoding)
    stricter = run_filter(work=work, config=_cfg(**{"filter.min_laplacian_var": 1e9}))
    assert not stricter.skipped
    assert stricter.counts["kept"] == 0 < first.counts["kept"]
    assert stricter.counts["rejected:blurry"] >= first.counts["kept"]


def test_cli(crawl, capsys, tmp_path):
    work, _ = crawl
    cfg = tmp_path / "p.toml"
    cfg.write_text("[filter]\nmin_side = 64\nbatch_size = 4\n")
    assert main(["filter", "--work", str(work), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("filter: ") and "kept" in out and "NOT APPLIED" in out
    assert main(["filter", "--work", str(work)]) == 0  # remembered config: already done
    assert "nothing to do" in capsys.readouterr().out

    assert main(["filter", "--work", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no crawl output" in err and "geopak-data crawl" in err

    bad = tmp_path / "bad.toml"
    bad.write_text("[filter]\nclip_weights = 'nowhere.pt'\n")
    assert main(["filter", "--work", str(work), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "filter.clip_weights" in err and "not found" in err

    bad.write_text("[filter]\nphash_max_distance = 99\n")
    assert main(["filter", "--work", str(work), "--config", str(bad)]) == 2
    assert "filter.phash_max_distance" in capsys.readouterr().err


def test_not_a_crawl_table(tmp_path):
    work = tmp_path / "W"
    (work / "crawl" / "x").mkdir(parents=True)
    pq.write_table(pa.table({"key": ["a"]}), work / "crawl" / "x" / "records.parquet")
    with pytest.raises(GeopakError, match="lacks column"):
        run_filter(work=work, config=_cfg())


def test_empty_crawl(tmp_path):
    work = tmp_path / "W"
    write_crawl(work, {"flickr": []})
    outcome = run_filter(work=work, config=_cfg())
    assert outcome.counts["input"] == 0 and outcome.counts["kept"] == 0
    assert pq.read_table(work / "filter" / "records.parquet").num_rows == 0


def test_image_sizes_are_measured_not_trusted(tmp_path):
    """A record claiming 4000x3000 whose file is a thumbnail is judged on the file."""
    work = tmp_path / "W"
    rows: dict = {}
    key = add_record(
        work, rows, "flickr", "liar", jpeg(textured(5, (48, 48))), width=4000, height=3000
    )
    write_crawl(work, rows)
    run_filter(work=work, config=_cfg())
    rejects = pq.read_table(work / "filter" / "rejects.parquet").to_pylist()
    assert [(r["key"], r["reason"]) for r in rejects] == [(key, "too_small")]
    assert Image.open(work / rows["flickr"][0]["image_path"]).size == (48, 48)

"""`geopak-data stats`: tables per stage/province/source/reason/cell and a map, for W or DIR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.workfolder import fake_maps, make_work

from geopak_data import cli
from geopak_data.config import load_config
from geopak_data.shard import run_shard
from geopak_data.stats import collect_rejects, filter_notes

MAP_CALLS: list[dict] = []


@pytest.fixture(autouse=True)
def _maps_stand_in():
    """The shared plot_map (another module) stands in here: it records what it was asked to draw."""
    MAP_CALLS.clear()
    with fake_maps(MAP_CALLS):
        yield


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_work(tmp_path_factory.mktemp("stats") / "w")


def test_reject_counts_and_filter_notes(work: Path) -> None:
    rej = collect_rejects(work)
    assert rej == {
        "cluster": {"geocell_isolated": 1},
        "crawl:yfcc": {"http_404": 2, "not_an_image": 1},
        "filter": {"blur": 3, "near_duplicate": 1, "too_small": 1},
        "tag": {"outside_pakistan": 2},
    }
    assert filter_notes(work) == ["indoor: not applied (no CLIP or Places365 weights)"]


def test_filter_notes_read_the_filter_report(tmp_path: Path) -> None:
    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "report.json").write_text(
        json.dumps({"not_applied": {"indoor": "no weights"}, "ran": ["file", "blur"]})
    )
    assert filter_notes(tmp_path) == ["indoor: not applied (no weights)"]
    # Only the filter stage's own shape is read (no guessing at shapes no stage writes).
    # The filter stage's own shape: per-check dicts, not_applied (enabled but could not run), disabled.
    report = {
        "checks": {
            "file": {
                "enabled": False,
                "applied": False,
                "reason": "disabled by filter.check_file = false",
            },
            "indoor": {
                "enabled": True,
                "applied": False,
                "method": "",
                "reason": "no CLIP or Places365 weights",
            },
            "near_duplicates": {"enabled": True, "applied": True, "phash_max_distance": 4},
        },
        "not_applied": {"indoor": "no CLIP or Places365 weights"},
        "disabled": ["file"],
    }
    (tmp_path / "filter" / "report.json").write_text(json.dumps(report))
    assert filter_notes(tmp_path) == [
        "indoor: not applied (no CLIP or Places365 weights)",
        "file: not applied (disabled by filter.check_file = false)",
    ]


def test_stats_of_a_work_folder(work: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["stats", "--work", str(work)])
    out = capsys.readouterr().out
    assert rc == 0
    for text in (
        "stages",
        "crawl:yfcc",
        "cluster",
        "photos per source",
        "photos per province",
        "Sindh",
        "Balochistan",
        "outside_pakistan",
        "geocell_isolated",
        "note: filter check indoor: not applied",
        "geocells: 6",
        "max radius km",
    ):
        assert text in out, text
    assert (work / "stats" / "map.png").is_file() and f"map: {work / 'stats' / 'map.png'}" in out
    assert MAP_CALLS[-1]["points"] == 85 and MAP_CALLS[-1]["cells"] == 6


def test_stats_of_a_shard_folder_json_and_custom_map(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    run_shard(work=work, config=load_config(None), out=out)
    rc = cli.main(["stats", str(out), "--json", "--map", str(tmp_path / "m.png")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["kind"] == "dir" and report["map"] == str(tmp_path / "m.png")
    assert sum(s["samples"] for s in report["splits"]) == 83
    prov = {p["province"]: p for p in report["provinces"]}
    assert prov["Balochistan"]["photos"] == 6 and prov["Balochistan"]["test"] >= 1
    assert report["excluded"]["restricted"] == 2
    assert {"stage": "filter", "reason": "blur", "photos": 3} in report["rejects"]
    assert report["filter_notes"] and (tmp_path / "m.png").is_file()
    rc = cli.main(["stats", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "photos per province and split" in text and (out / "map.png").is_file()


def test_stats_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "d").mkdir()
    assert cli.main(["stats", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "index.parquet not found" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["stats", "--work", str(tmp_path / "d")]) == 2
    assert "manifest.json not found" in capsys.readouterr().err
    assert cli.main(["stats"]) == 2
    assert "either --work W or a shard folder" in capsys.readouterr().err


def test_stats_of_a_shard_folder_leaves_the_shard_stage_done(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # `stats DIR` must not redraw DIR/map.png: that is a shard output, and changing it made the
    # next `shard` (or `run`) redo the whole stage instead of saying "nothing to do".
    out = tmp_path / "out"
    run_shard(work=work, config=load_config(None), out=out)
    before = (out / "map.png").stat().st_mtime_ns
    MAP_CALLS.clear()
    assert cli.main(["stats", str(out)]) == 0
    assert f"map: {out / 'map.png'}" in capsys.readouterr().out
    assert not MAP_CALLS and (out / "map.png").stat().st_mtime_ns == before
    assert run_shard(work=work, config=load_config(None), out=out).skipped


def test_work_map_uses_the_remembered_polygons(tmp_path: Path) -> None:
    # `tag --boundaries F` (another country's file) is remembered; `stats --work` draws F
    from geopak_data.config import dump_toml

    w = make_work(tmp_path / "w")
    polygons = tmp_path / "mine.geojson"
    (w / "pipeline.toml").write_text(
        dump_toml(load_config(None, {"region.boundaries": str(polygons)}))
    )
    assert cli.main(["stats", "--work", str(w)]) == 0
    assert MAP_CALLS[-1]["boundaries"] == str(polygons)


def test_dir_map_uses_given_or_remembered_polygons(work: Path, tmp_path: Path) -> None:
    # another country's shard folder: --boundaries F draws on F; a folder inside a work
    # folder that remembers `region.boundaries` draws on those without being told
    from geopak_data.config import dump_toml

    out = tmp_path / "out"
    run_shard(work=work, config=load_config(None), out=out)
    polygons = tmp_path / "mine.geojson"
    polygons.write_text("{}")
    MAP_CALLS.clear()
    argv = ["stats", str(out), "--map", str(tmp_path / "m.png")]
    assert cli.main([*argv, "--boundaries", str(polygons)]) == 0
    assert MAP_CALLS[-1]["boundaries"] == str(polygons.resolve())
    assert cli.main(argv) == 0
    assert MAP_CALLS[-1]["boundaries"] is None  # remembers nothing: the default polygons
    (tmp_path / "pipeline.toml").write_text(
        dump_toml(load_config(None, {"region.boundaries": str(polygons)}))
    )
    assert cli.main(argv) == 0
    assert MAP_CALLS[-1]["boundaries"] == str(polygons)

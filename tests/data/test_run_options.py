"""`run` and `crawl` as a new user meets them: every source checked before any work, per-key
overrides, sources chosen or skipped, nothing left behind by a command that cannot start."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from geopak_data import cli
from geopak_data.config import _PATH_KEYS, load_config, parse_assignment
from geopak_data.demo import generate_source
from geopak_data.imageserver import start_image_server
from geopak_data.pipeline import check_sources, run_overrides

REPO = Path(__file__).resolve().parents[2]
PAKISTAN = REPO / "pipelines" / "pakistan.toml"
KEYS = ("FLICKR_API_KEY", "FLICKR_API_SECRET", "GOOGLE_MAPS_API_KEY", "MAPILLARY_ACCESS_TOKEN")


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in KEYS:
        monkeypatch.delenv(k, raising=False)


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@contextmanager
def _served_source(root: Path, *, n_photos: int, seed: int) -> Iterator[Path]:
    """A synthetic YFCC-style source under ``root`` whose photos a loopback image host serves
    while the block runs: its metadata file."""
    (root / "images").mkdir(parents=True)
    base, stop = start_image_server(root / "images", fixtures=False)
    try:
        yield generate_source(root, n_photos=n_photos, seed=seed, base_url=base)
    finally:
        stop()


def test_run_reports_every_unusable_source_before_any_work(no_keys, tmp_path, capsys):
    work = tmp_path / "w"
    rc, _, err = _main(capsys, "run", str(PAKISTAN), "--work", str(work))
    assert rc == 2
    lines = err.strip().splitlines()
    assert "5 of 6 sources cannot run" in lines[0]  # commons needs no key
    assert "--sources commons" in lines[0]
    per_source = {ln.split(":")[0].strip(): ln for ln in lines[1:]}
    assert set(per_source) == {"flickr", "yfcc", "gldv2", "places", "mapillary"}
    assert "MAPILLARY_ACCESS_TOKEN" in per_source["mapillary"]
    assert "FLICKR_API_KEY and FLICKR_API_SECRET are not set" in per_source["flickr"]
    assert "--set crawl.yfcc.metadata=FILE" in per_source["yfcc"]
    assert "--set crawl.gldv2.train_csv=FILE" in per_source["gldv2"]
    assert "--set crawl.gldv2.landmarks=FILE" in per_source["gldv2"]
    assert "GOOGLE_MAPS_API_KEY is not set" in per_source["places"]
    assert not work.exists()


def test_run_names_the_ready_sources(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FLICKR_API_KEY", "k")
    monkeypatch.setenv("FLICKR_API_SECRET", "s")
    monkeypatch.delenv("GOOGLE_MAPS_API_KEY", raising=False)
    monkeypatch.delenv("MAPILLARY_ACCESS_TOKEN", raising=False)
    rc, _, err = _main(capsys, "run", str(PAKISTAN), "--work", str(tmp_path / "w"))
    assert rc == 2 and "4 of 6 sources cannot run" in err
    assert "--sources flickr,commons" in err and "crawl.skip_unavailable=true" in err


def test_set_parses_toml_values_and_names_bad_keys(tmp_path, capsys):
    assert parse_assignment("download.concurrency=8") == ("download.concurrency", 8)
    assert parse_assignment("crawl.sources=['yfcc']") == ("crawl.sources", ["yfcc"])
    assert parse_assignment("shard.dataset_name=my set") == ("shard.dataset_name", "my set")
    assert parse_assignment("filter.check_indoor=false") == ("filter.check_indoor", False)
    rc, _, err = _main(capsys, "run", str(PAKISTAN), "--set", "crawl.nope=1")
    assert rc == 2 and "'crawl.nope'" in err and "unknown key" in err
    rc, _, err = _main(capsys, "run", str(PAKISTAN), "--set", "download.concurrency=many")
    assert rc == 2 and "download.concurrency" in err and "many" in err
    rc, _, err = _main(capsys, "run", str(PAKISTAN), "--set", "justakey")
    assert rc == 2 and "expected KEY=VALUE" in err


def test_overrides_reach_the_config_and_paths_are_relative_to_the_caller(
    tmp_path, monkeypatch, no_keys
):
    meta = tmp_path / "yfcc.tsv"
    meta.write_text("")
    monkeypatch.chdir(tmp_path)
    ov = run_overrides(
        sets=["crawl.yfcc.metadata=yfcc.tsv", "download.concurrency=8"],
        sources="yfcc, flickr",
        boundaries=None,
    )
    cfg = load_config(PAKISTAN, ov)
    assert cfg.crawl.sources == ["yfcc", "flickr"]
    assert cfg.crawl.yfcc.metadata == str(meta.resolve())
    assert cfg.download.concurrency == 8
    ready, problems = check_sources(cfg)
    assert ready == ["yfcc"] and len(problems) == 1 and problems[0].startswith("flickr: ")


def test_run_with_sources_set_and_skip_switch_crawls_what_it_can(no_keys, tmp_path, capsys):
    with _served_source(tmp_path / "src", n_photos=12, seed=1) as meta:
        work = tmp_path / "w"
        rc, _, err = _main(
            capsys,
            "run",
            str(PAKISTAN),
            "--work",
            str(work),
            "--set",
            f"crawl.yfcc.metadata={meta}",
            "--set",
            "crawl.skip_unavailable=true",
            "--sources",  # not commons: it needs no key and would reach the real service
            "flickr,yfcc,gldv2,places",
            "--until",
            "crawl",
            "--allow-private-hosts",
        )
    assert rc == 0, err
    # one warning line per skipped source, then only yfcc ran
    skipped = re.findall(r"skipping source (\w+):", err)
    assert skipped == ["flickr", "gldv2", "places"]
    remembered = tomllib.loads((work / "pipeline.toml").read_text())
    assert remembered["crawl"]["sources"] == ["yfcc"]
    assert remembered["crawl"]["yfcc"]["metadata"] == str(meta)
    assert (work / "crawl" / "yfcc" / "records.parquet").is_file()
    assert not (work / "crawl" / "flickr").exists()


def test_crawl_without_a_key_leaves_no_work_folder(no_keys, tmp_path, capsys):
    work = tmp_path / "w"
    rc, _, err = _main(capsys, "crawl", "flickr", "--work", str(work), "--config", str(PAKISTAN))
    assert rc == 2 and "FLICKR_API_KEY and FLICKR_API_SECRET are not set" in err
    assert "\n" not in err.strip()
    assert not work.exists()
    rc, _, err = _main(capsys, "crawl", "yfcc", "--work", str(work))
    assert rc == 2 and "--metadata FILE or set crawl.yfcc.metadata" in err
    assert not work.exists()


def test_a_stage_without_its_input_creates_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _main(capsys, "cluster", "--work", "nowhere")
    assert rc == 2 and "run the earlier stage first" in err
    assert not (tmp_path / "nowhere").exists()


def test_pakistan_toml_names_every_local_file():
    """Every config key that is a local file is set or has a commented placeholder."""
    text = PAKISTAN.read_text()
    sections: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        m = re.match(r"^\[([\w.]+)\]", line)
        if m:
            current = m.group(1)
            continue
        sections[current] = sections.get(current, "") + line + "\n"
    for section, name in _PATH_KEYS:
        if (section, name) == ("tag", "boundaries"):
            continue  # deprecated alias of region.boundaries
        body = sections.get(section, "")
        assert re.search(rf"^#?\s*{name}\s*=", body, re.M), f"[{section}] {name} missing"


def test_each_source_has_its_own_help(capsys):
    texts = {}
    for name in ("flickr", "places", "yfcc", "gldv2"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["crawl", name, "--help"])
        assert exc.value.code == 0
        texts[name] = capsys.readouterr().out
    assert len(set(texts.values())) == 4
    assert "FLICKR_API_KEY" in texts["flickr"] and "example:" in texts["flickr"]
    assert "GOOGLE_MAPS_API_KEY" in texts["places"] and "restricted" in texts["places"]
    assert "--metadata" in texts["yfcc"] and "--endpoint" not in texts["yfcc"]
    assert "--train-csv" in texts["gldv2"] and "--metadata" not in texts["gldv2"]
    for t in texts.values():
        assert "``" not in t and "(default: 0 = all)" in t


def test_a_stage_summary_is_printed_once(no_keys, tmp_path, capsys):
    with _served_source(tmp_path / "src", n_photos=6, seed=2) as meta:
        argv = ["crawl", "yfcc", "--work", str(tmp_path / "w"), "--metadata", str(meta)]
        rc, out, err = _main(capsys, *argv, "--allow-private-hosts")
        assert rc == 0, err
        assert (out + err).count(" candidates (0 duplicates), ") == 1  # the summary, on stdout
        assert " candidates (0 duplicates), " in out
        rc, out, err = _main(capsys, *argv, "--allow-private-hosts")
    assert rc == 0 and (out + err).count("nothing to do") == 1


def test_boundaries_advice_names_only_options_the_command_has(tmp_path):
    from geopak_core import boundaries as B

    parser = cli.build_parser()
    args = parser.parse_args(["filter", "--work", str(tmp_path)])
    assert not hasattr(args, "boundaries")
    try:
        # what cli.main declares for a command without --boundaries
        B.set_cli_advice(boundaries_flag=hasattr(args, "boundaries"))
        assert "--boundaries" not in B.offline_advice()
        assert "GEOPAK_BOUNDARIES" in B.offline_advice()
    finally:
        B.set_cli_advice(boundaries_flag=True)
    for argv in (
        ["run", str(PAKISTAN)],
        ["demo"],
        ["tag", "-w", "w"],
        ["crawl", "yfcc", "-w", "w"],
        ["stats", "-w", "w"],
    ):
        assert hasattr(parser.parse_args(argv), "boundaries"), argv
    assert B.offline_advice().startswith("pass --boundaries FILE")


def test_run_and_demo_take_boundaries(tmp_path, box_boundaries, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ov = run_overrides(boundaries=box_boundaries)
    cfg = load_config(PAKISTAN, ov)
    assert cfg.region.boundaries == str(box_boundaries.resolve())

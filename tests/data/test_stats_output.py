"""`stats` as a user reads it: headed tables in pipeline order, within 100 columns, the same
tables after a no-op rerun of the stages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.workfolder import fake_maps, make_work

from geopak_core.clihelp import text_table
from geopak_data import cli
from geopak_data.pipeline import summary_table
from geopak_data.runner import StageOutcome


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_work(tmp_path_factory.mktemp("stats_out") / "w")


def _stats(work: Path, capsys: pytest.CaptureFixture[str]) -> str:
    with fake_maps([]):
        assert cli.main(["stats", "--work", str(work)]) == 0
    return capsys.readouterr().out


def test_stats_tables_fit_100_columns_in_pipeline_order(work, capsys):
    out = _stats(work, capsys)
    assert max(len(line) for line in out.splitlines()) <= 100
    stage_block = out.split("\nstages\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert stage_block[0].split() == ["stage", "status", "seconds", "counts"]
    assert set(stage_block[1].strip()) == {"-"}
    names = [ln.split()[0] for ln in stage_block[2:] if ln[:3] != "   " and ln.strip()]
    order = ["crawl", "filter", "tag", "cluster", "shard"]
    ranks = [order.index(n.split(":")[0]) for n in names if n.split(":")[0] in order]
    assert ranks == sorted(ranks) and len(ranks) >= 4
    rejects = out.split("\nreject reasons\n", 1)[1].split("\n\n", 1)[0].splitlines()
    stages = [
        ln.split()[0] for ln in rejects[2:] if ln.strip() and not ln.strip().startswith("note")
    ]
    assert [order.index(s.split(":")[0]) for s in stages] == sorted(
        order.index(s.split(":")[0]) for s in stages
    )
    # every table has a heading row and a rule under it
    for title in ("photos per source and stage", "reject reasons"):
        block = out.split(f"\n{title}", 1)[1].split("\n\n", 1)[0].splitlines()
        assert re.fullmatch(r"\s*-+", block[2]), title


def test_stats_is_the_same_after_a_second_look(work, capsys):
    assert _stats(work, capsys) == _stats(work, capsys)


def test_text_table_wraps_only_the_last_column():
    rows = [{"name": "crawl:flickr", "n": 12, "notes": "word " * 40}]
    text = text_table(rows, width=60)
    lines = text.splitlines()
    assert lines[0].startswith("name") and set(lines[1]) == {"-"}
    assert all(len(line) <= 60 for line in lines) and len(lines) > 3
    assert lines[3].startswith(" " * len("crawl:flickr  12  "))


def test_run_summary_table_is_headed_and_narrow():
    counts = {f"count_{i}": i * 1000 for i in range(12)} | {"reason:x": 1}
    table = summary_table([StageOutcome("filter", True, counts, "s", 0.0)])
    lines = table.splitlines()
    assert lines[0].split() == ["stage", "status", "seconds", "counts"]
    assert max(map(len, lines)) <= 100 and "skipped (done)" in table and "reason:x" not in table

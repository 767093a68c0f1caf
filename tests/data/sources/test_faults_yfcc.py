"""Issue 15 regressions for the YFCC metadata reader, through the real CLI: a line longer
than a block stays linear, malformed lines are counted, an empty file and blank lines are
the same one-line error, Parquet text coordinates are read like the TSV's, and nested
Parquet coordinates are a one-line error."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.snapshot import one_line, snapshot

from geopak_data.cli import main
from geopak_data.sources.yfcc import YFCC_COLUMNS, scan_blocks, write_yfcc_parquet, yfcc_line

GOOD = dict(
    photoid=1,
    longitude=70.0,
    latitude=30.0,
    downloadurl="http://127.0.0.1:1/a.jpg",
    licensename="Attribution License",
)


def _crawl(tmp_path, meta, chunk=4096):
    conf = tmp_path / "p.toml"
    conf.write_text(f"[crawl.yfcc]\nchunk_bytes = {chunk}\n[retry]\nretries = 0\n")
    argv = ["crawl", "yfcc", "--work", str(tmp_path / "w"), "--metadata", str(meta)]
    return main([*argv, "--config", str(conf), "--allow-private-hosts", "--limit", "0"])


def test_long_line_is_linear_and_malformed_lines_are_counted(tmp_path, capsys):
    lines = [
        yfcc_line(GOOD, 0),
        "x" * 2_000_000,  # one line far longer than a 4 KiB block
        yfcc_line(dict(GOOD, photoid=2), 1),
        "a\tb\tc",  # wrong column count
        yfcc_line(dict(GOOD, photoid=3, latitude="north"), 2),  # coordinates no number
        "",
        yfcc_line(dict(GOOD, photoid=4), 3),
    ]
    meta = tmp_path / "m.tsv"
    meta.write_text("\n".join(lines) + "\n")
    blocks = list(scan_blocks(meta, (60, 20, 80, 40), chunk_bytes=4096))
    assert sum(b.malformed for b in blocks) == 3
    assert sorted(r["photoid"] for b in blocks for r in b.kept.to_pylist()) == ["1", "2", "4"]
    assert _crawl(tmp_path, meta) == 0
    counts = json.loads((tmp_path / "w/manifest.json").read_text())["stages"]["crawl:yfcc"]
    assert counts["counts"]["malformed_lines"] == 3 and counts["counts"]["candidates"] == 3
    assert "3 malformed line(s)" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_long_line_cost_grows_linearly(tmp_path, monkeypatch, suffix):
    """Work, not wall-clock: the bytes searched for line ends stay proportional to the line
    (it was quadratic: every 4 KiB read searched the whole line again), for a plain file
    (memory-mapped) and a compressed one (read into a growing buffer)."""
    import gzip

    import geopak_data.sources.yfcc as y

    searched = {"bytes": 0}
    real = y._rfind_newline

    def counting(buf, start, end):
        searched["bytes"] += end - start
        return real(buf, start, end)

    monkeypatch.setattr(y, "_rfind_newline", counting)
    p = tmp_path / f"m.tsv{suffix}"
    data = (yfcc_line(GOOD) + "\n" + "x" * 1_000_000 + "\n").encode()
    p.write_bytes(gzip.compress(data) if suffix else data)
    assert sum(len(b) for b in y._raw_blocks(p, 4096)) == len(data)
    assert 1_000_000 <= searched["bytes"] < 3 * 1_000_000


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_and_blank_lines_are_the_same_error(tmp_path, capsys, content):
    meta = tmp_path / "m.tsv"
    meta.write_text(content)
    assert _crawl(tmp_path, meta) == 2
    assert "empty metadata file" in one_line(capsys.readouterr().err)
    assert "crawl/yfcc/records.parquet" not in snapshot(tmp_path / "w")


def test_parquet_text_coordinates_read_like_the_tsv(tmp_path, capsys):
    rows = [dict(GOOD, photoid=i) for i in range(1, 4)]
    tsv_meta = tmp_path / "m.parquet"
    write_yfcc_parquet(tsv_meta, rows)
    t = pq.read_table(tsv_meta)
    lat = pa.array([" 31.51 ", "30.0", "not a number"])
    t = t.set_column(t.schema.get_field_index("latitude"), "latitude", lat)
    pq.write_table(t, tsv_meta)
    blocks = list(scan_blocks(tsv_meta, (60, 20, 80, 40)))
    kept = {r["photoid"]: r["latitude"] for b in blocks for r in b.kept.to_pylist()}
    assert kept == {"1": pytest.approx(31.51), "2": pytest.approx(30.0)}
    assert _crawl(tmp_path, tsv_meta) == 0


@pytest.mark.parametrize("nested", ["list", "struct"])
def test_nested_parquet_coordinates_are_one_line(tmp_path, capsys, nested):
    rows = [dict(GOOD, photoid=i) for i in range(1, 3)]
    meta = tmp_path / "m.parquet"
    write_yfcc_parquet(meta, rows)
    t = pq.read_table(meta)
    col = pa.array([[30.0], [31.0]]) if nested == "list" else pa.array([{"v": 30.0}, {"v": 31.0}])
    t = t.set_column(t.schema.get_field_index("latitude"), "latitude", col)
    pq.write_table(t, meta)
    assert _crawl(tmp_path, meta) == 2
    line = one_line(capsys.readouterr().err)
    assert "'latitude'" in line and nested in line
    assert len(YFCC_COLUMNS) == 25


def test_row_without_a_known_licence_is_a_discovery_reject(tmp_path):
    """An empty or unrecognised licence never reaches the candidates (hence the shards): it
    is rejected at discovery with the licence reason the other sources use."""
    rows = [
        dict(GOOD, photoid=1),
        dict(GOOD, photoid=2, licensename=""),
        dict(GOOD, photoid=3, licensename="Some Licence"),
        dict(
            GOOD,
            photoid=4,
            licensename="",
            licenseurl="http://creativecommons.org/licenses/by-sa/2.0/",
        ),
        dict(GOOD, photoid=5, licensename="All Rights Reserved"),
    ]
    meta = tmp_path / "m.tsv"
    meta.write_text("\n".join(yfcc_line(r, i) for i, r in enumerate(rows)) + "\n")
    assert _crawl(tmp_path, meta) == 0
    cands = pq.read_table(tmp_path / "w/crawl/yfcc/candidates.parquet")
    assert sorted(cands.column("source_id").to_pylist()) == ["1", "4"]
    assert "" not in cands.column("license").to_pylist()
    rej = pq.read_table(tmp_path / "w/crawl/yfcc/rejects.parquet").to_pylist()
    got = {r["source_id"] for r in rej if r["reason"] == "license_not_free"}
    assert got == {"2", "3", "5"}
    detail = {r["source_id"]: r["detail"] for r in rej if r["reason"] == "license_not_free"}
    assert "unknown" in detail["2"] and "Some Licence" in detail["3"]


@pytest.mark.parametrize("kind", ["folder", "devnull", "missing"])
def test_metadata_that_is_no_file_says_what_it_is(tmp_path, capsys, kind):
    path = {"folder": str(tmp_path), "devnull": "/dev/null", "missing": str(tmp_path / "no.tsv")}[
        kind
    ]
    argv = ["crawl", "yfcc", "--work", str(tmp_path / "w"), "--metadata", path]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage error
        rc = exc.code
    assert rc == 2
    err = one_line(capsys.readouterr().err)
    want = {"folder": "is a folder", "devnull": "is not a regular file", "missing": "not found"}
    assert want[kind] in err and path in err

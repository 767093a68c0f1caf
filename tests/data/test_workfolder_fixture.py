"""The test fixture in support.workfolder is what it claims to be."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from support.workfolder import make_work


def test_fixture_is_consistent(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    t = pq.read_table(work / "cluster" / "records.parquet").to_pylist()
    assert len({r["key"] for r in t}) == len(t)
    assert all((work / r["image_path"]).is_file() for r in t)
    assert sum(r["restricted"] for r in t) == 2

"""The shard folder format module: names, the deterministic tar writer, the cell_id check,
stats.json, and the model tower's toy folder written in the very same format."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from geopak_core import shardfmt
from geopak_core.errors import GeopakError


def _reference_tar(samples: list[tuple[str, bytes, bytes]]) -> bytes:
    """What the standard library writes for the same members (the format the tars promise)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|") as tf:
        for key, jpg, meta in samples:
            for ext, payload in (("jpg", jpg), ("json", meta)):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(payload)
                ti.mtime, ti.mode = shardfmt.TAR_MTIME, shardfmt.TAR_MODE
                ti.uname = ti.gname = shardfmt.TAR_USER
                tf.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


SAMPLES = [
    ("yfcc_000001", b"\xff\xd8" + bytes(range(256)) * 3, b'{"key":"yfcc_000001"}'),
    ("k" * 120, b"x" * 512, b"{}"),  # a long name: PAX extended header
    ("empty_payload", b"", b'{"a":1}'),
]


def test_names() -> None:
    assert shardfmt.shard_file_name("val", 7) == "geopak-val-000007.tar"
    assert shardfmt.shard_name("train", 0) == "train/geopak-train-000000.tar"
    assert shardfmt.SPLITS == ("train", "val", "test")


def test_write_tar_matches_tarfile_byte_for_byte_and_the_size_formula(tmp_path: Path) -> None:
    path = tmp_path / "train" / "geopak-train-000000.tar"
    seen: list[dict[str, int]] = []
    ident = shardfmt.write_tar(path, SAMPLES, on_ready=seen.append)
    data = path.read_bytes()
    assert data == _reference_tar(SAMPLES)
    expected = shardfmt.tar_size(
        sum(shardfmt.sample_tar_bytes(k, len(j), len(m)) for k, j, m in SAMPLES)
    )
    assert len(data) == expected == ident["size"]
    assert seen == [ident] and shardfmt.file_identity(path) == ident  # inode kept by the rename
    assert not list(tmp_path.rglob("*.tmp"))
    with tarfile.open(path) as tf:
        assert [m.name for m in tf] == [f"{k}.{e}" for k, _, _ in SAMPLES for e in ("jpg", "json")]


def test_write_tar_same_as_webdataset_tarwriter(tmp_path: Path) -> None:
    """The shards written before this module existed came from webdataset.TarWriter."""
    import webdataset as wds

    buf = io.BytesIO()
    w = wds.TarWriter(buf, user="geopak", group="geopak", mode=0o444, mtime=0, encoder=False)
    for key, jpg, meta in SAMPLES:
        w.write({"__key__": key, "jpg": jpg, "json": meta})
    w.close()
    out = io.BytesIO()
    shardfmt.write_samples(out, SAMPLES)
    assert out.getvalue() == buf.getvalue()


def test_member_header_fast_path_is_tarfiles_header() -> None:
    """The template-built ustar header is exactly what ``tarfile`` writes, at every edge: name
    lengths 0..110 (100 is the last without PAX), non-ASCII and control characters, sizes at
    block edges and beyond what the ustar size field holds."""
    import random
    import string

    rng = random.Random(7)
    names = ["", "a", "yfcc_000001.jpg", "x" * 99, "y" * 100, "z" * 101, "photo é.jpg", "t\tab"]
    names += [
        "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 110)))
        for _ in range(300)
    ]
    sizes = [0, 1, 511, 512, 513, 30_000, 8**11 - 1, 8**11, 2**40]
    for name in names:
        for size in sizes + [rng.randint(0, 10**9)]:
            ti = tarfile.TarInfo(name)
            ti.size = size
            ti.mtime, ti.mode = shardfmt.TAR_MTIME, shardfmt.TAR_MODE
            ti.uname = ti.gname = shardfmt.TAR_USER
            want = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            assert shardfmt.member_header(name, size) == want, (name, size)


def test_sample_tar_sizes_is_sample_tar_bytes_for_many() -> None:
    keys = ["k" * n for n in range(0, 130)] + ["é" * 3, "x" * 94 + "é"]
    jpg = [(7 * i * i) % 5000 for i in range(len(keys))]
    js = [(13 * i) % 700 for i in range(len(keys))]
    got = shardfmt.sample_tar_sizes(keys, jpg, js)
    assert got.tolist() == [
        shardfmt.sample_tar_bytes(k, a, b) for k, a, b in zip(keys, jpg, js, strict=True)
    ]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def broken():
        yield SAMPLES[0]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        shardfmt.write_tar(tmp_path / "a.tar", broken())
    assert list(tmp_path.iterdir()) == []


def test_cell_id_order() -> None:
    assert shardfmt.cell_id_order([2, 0, 1]).tolist() == [1, 2, 0]
    with pytest.raises(GeopakError, match="x.parquet: cell_id must be contiguous from 0; re-run"):
        shardfmt.cell_id_order([0, 2], where="x.parquet", hint="re-run")
    with pytest.raises(GeopakError, match="contiguous"):
        shardfmt.cell_id_order([1, 1])


def test_stats_document_counts_and_keys() -> None:
    index = pd.DataFrame(
        {
            "split": ["train", "train", "val"],
            "province_id": [0, 1, 0],
            "cell_id": [0, 1, 0],
            "source": ["yfcc", "yfcc", "flickr"],
            "license": ["CC BY 2.0", "CC0", "CC0"],
            "restricted": [False, False, True],
            "date_taken": ["2010-01-02 10:00:00", "", "2014-05-01"],
        }
    )
    cells = pd.DataFrame(
        {"cell_id": [0, 1], "province_id": [0, 1], "radius_km": [3.0, 9.0], "urban": [True, False]}
    )
    doc = shardfmt.stats_document(
        index=index,
        cells=cells,
        shard_sizes={"train/geopak-train-000000.tar": 10240, "val/geopak-val-000000.tar": 10240},
        dataset="t",
        geopak_version="0",
    )
    assert tuple(doc) == shardfmt.STATS_KEYS
    assert doc["splits"]["train"] == {"samples": 2, "shards": 1, "bytes": 10240}
    assert doc["cells"][0]["total"] == 2 and doc["cells"][0]["val"] == 1
    assert doc["provinces"][0]["cells"] == 1 and doc["provinces"][1]["total"] == 1
    assert doc["licenses"] == {"CC BY 2.0": 1, "CC0": 2} and doc["restricted_included"] == 1
    assert doc["years"] == {"dated": 2, "undated": 1, "first": 2010, "last": 2014, "median": 2014}
    synthetic = shardfmt.stats_document(
        index=index, cells=cells, shard_sizes={}, dataset="t", geopak_version="0", synthetic=True
    )
    assert synthetic["synthetic"] is True and "synthetic" in shardfmt.STATS_OPTIONAL


def test_toy_shard_folder_is_written_in_the_real_format(tmp_path: Path) -> None:
    """geopak_model.testing's folder: same index schema, json field order, stats keys, cells."""
    from geopak_model.testing import make_toy_shards

    out = make_toy_shards(tmp_path / "toy", n=60, per_shard=10)
    index = pq.read_table(out / "index.parquet")
    assert index.schema.equals(shardfmt.INDEX_SCHEMA)
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == set(shardfmt.STATS_KEYS) | {"synthetic"} and stats["synthetic"] is True
    assert stats["samples"] == index.num_rows == 60
    cells = pq.read_table(out / "cells.parquet").to_pandas()
    assert list(cells.columns[: len(shardfmt.CELL_COLUMNS)]) == list(shardfmt.CELL_COLUMNS)
    assert {"n_train", "n_val", "n_test"} <= set(cells.columns)
    assert int(cells["n_samples"].sum()) == 60
    first = shardfmt.list_shards(out, "train")[0]
    meta = next(iter(shardfmt.scan_json(first)))
    assert tuple(meta)[: len(shardfmt.JSON_FIELDS)] == shardfmt.JSON_FIELDS
    rows = index.to_pandas()
    for split in shardfmt.SPLITS:
        names = sorted(set(rows.loc[rows["split"] == split, "shard"]))
        assert names == [p.relative_to(out).as_posix() for p in shardfmt.list_shards(out, split)]
    assert np.all(rows["bytes"] > 0) and rows["sha256"].str.len().eq(64).all()


def test_counts_by_value_and_split_are_the_groupby_counts() -> None:
    """stats.json's per-province/cell/source counts (numpy) equal a pandas groupby's."""

    def reference(index: pd.DataFrame, col: str) -> dict:
        out: dict = {}
        for (value, split), cnt in index.groupby([col, "split"]).size().items():
            out.setdefault(value, {s: 0 for s in shardfmt.SPLITS})[str(split)] = int(cnt)
        for v in out.values():
            v["total"] = sum(v[s] for s in shardfmt.SPLITS)
        return out

    rng = np.random.default_rng(5)
    for n in (1, 7, 500):
        index = pd.DataFrame(
            {
                "split": rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1]),
                "province_id": pd.array(rng.integers(0, 7, n), dtype="int8"),
                "cell_id": pd.array(rng.integers(0, 40, n), dtype="int32"),
                "source": pd.array(rng.choice(["yfcc", "flickr", "Zeta", "é"], n), dtype="str"),
            }
        )
        for col in ("province_id", "cell_id", "source"):
            got, want = shardfmt._by(index, col), reference(index, col)
            assert got == want and list(got) == list(want)
    assert shardfmt._by(index.iloc[:0], "source") == {}

"""Verified shards are remembered (in the user cache, never in the shard folder): a second
open of a folder reads no tar, and every change to a tar (same-size damage with its mtime put
back, truncation, replacement) or to what the index expects of it is verified again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geopak_core import shardfmt, verified
from geopak_core.verified import VerifiedShards, record_file
from geopak_model.testing import make_toy_shards


@pytest.fixture
def folder(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("GEOPAK_CACHE", str(tmp_path / "cache"))
    made = tmp_path_factory.getbasetemp() / "verified-toy"
    if not made.exists():
        make_toy_shards(made, n=60, per_shard=12, seed=3)
    out = tmp_path / "shards"
    shutil.copytree(made, out)
    return out


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tars verify_shard really opens."""
    seen: list[str] = []
    real = shardfmt.verify_shard

    def counting(path: Path, *a, **k) -> str:
        seen.append(path.name)
        return real(path, *a, **k)

    monkeypatch.setattr(shardfmt, "verify_shard", counting)
    return seen


def _tars(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.tar"))


def test_second_open_reads_no_tar(folder: Path, reads: list[str]) -> None:
    assert shardfmt.verify_folder(folder) == {}
    assert len(reads) == len(_tars(folder)) > 3 and record_file(folder).is_file()
    reads.clear()
    assert shardfmt.verify_folder(folder) == {}
    assert reads == []
    assert shardfmt.verify_folder(folder, cache=False) == {} and len(reads) == len(_tars(folder))
    reads.clear()  # a check without sha256 is another expectation: verified (once) on its own
    assert shardfmt.verify_folder(folder, check_sha256=False) == {} and len(reads) > 0
    reads.clear()
    assert shardfmt.verify_folder(folder, check_sha256=False) == {} and reads == []


def test_a_damaged_tar_with_its_mtime_put_back_is_caught(folder: Path, reads: list[str]) -> None:
    assert shardfmt.verify_folder(folder) == {}
    tar = _tars(folder)[1]
    st = tar.stat()
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF  # inside the first image: same size, wrong sha256
    tar.write_bytes(bytes(data))
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime as it was; ctime moves anyway
    reads.clear()
    bad = shardfmt.verify_folder(folder)
    name = tar.relative_to(folder).as_posix()
    assert list(bad) == [name] and "sha256" in bad[name][1]
    assert reads == [tar.name]  # only the changed one was read again
    assert list(shardfmt.verify_folder(folder)) == [name]  # a bad shard is never remembered


def test_truncation_and_replacement_are_caught(folder: Path) -> None:
    assert shardfmt.verify_folder(folder) == {}
    first, second = _tars(folder)[:2]
    with open(first, "r+b") as fh:
        fh.truncate(first.stat().st_size // 2)
    shutil.copyfile(_tars(folder)[3], second)  # another (sound) tar in its place
    bad = shardfmt.verify_folder(folder)
    assert set(bad) == {p.relative_to(folder).as_posix() for p in (first, second)}


def test_a_changed_index_verifies_again(folder: Path, reads: list[str]) -> None:
    assert shardfmt.verify_folder(folder) == {}
    index = pq.read_table(folder / "index.parquet")
    sha = index.column("sha256").to_pylist()
    sha[0] = "0" * 64
    index = index.set_column(index.schema.get_field_index("sha256"), "sha256", pa.array(sha))
    pq.write_table(index, folder / "index.parquet")
    reads.clear()
    bad = shardfmt.verify_folder(folder)
    assert len(bad) == 1 and "sha256" in next(iter(bad.values()))[1]
    assert len(reads) == 1  # only the shard whose expectation changed


def test_the_shard_folder_is_left_as_it_was(folder: Path) -> None:
    before = sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))
    assert shardfmt.verify_folder(folder) == {} and shardfmt.verify_folder(folder) == {}
    assert (
        sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*")) == before
    )


def test_an_unwritable_cache_only_costs_the_re_read(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: list[str]
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GEOPAK_CACHE", str(tmp_path / "file"))  # a file: no folder there
    assert shardfmt.verify_folder(folder) == {} and shardfmt.verify_folder(folder) == {}
    assert len(reads) == 2 * len(_tars(folder))


def test_old_records_are_pruned(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verified, "KEEP", 2)
    for i in range(4):
        copy = folder.parent / f"copy{i}"
        shutil.copytree(folder, copy)
        assert shardfmt.verify_folder(copy) == {}
    assert len(list(record_file(folder).parent.glob("*.json"))) == 2


def test_a_damaged_record_is_no_record(folder: Path, reads: list[str]) -> None:
    assert shardfmt.verify_folder(folder) == {}
    record_file(folder).write_text("{not json")
    reads.clear()
    assert shardfmt.verify_folder(folder) == {} and len(reads) == len(_tars(folder))
    assert VerifiedShards(folder).known_good("x", [1], "y") is False

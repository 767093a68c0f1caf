"""Issue 15 regressions for the shard folder's readers on the data side: `publish --dry-run`
and `stats DIR` verify the tars against index.parquet, and publish never follows a link out
of the shard folder. Each through the real CLI: one line, exit 2, nothing changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.snapshot import one_line, snapshot
from support.workfolder import fake_maps, make_work

from geopak_data.cli import main
from geopak_data.config import load_config
from geopak_data.shard import run_shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fp")
    with fake_maps():
        work = make_work(root / "w")
        run_shard(work=work, config=load_config(None), out=root / "shards")
    return root / "shards"


@pytest.fixture(autouse=True)
def _hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _copy(shards: Path, tmp_path: Path) -> Path:
    out = tmp_path / "s"
    shutil.copytree(shards, out)
    return out


def _dry(folder: Path) -> list[str]:
    return ["publish", str(folder), "--repo-id", "org/geopak", "--dry-run"]


def test_sound_folder_passes(shards, capsys):
    assert main(_dry(shards)) == 0
    assert main(["stats", str(shards)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("command", ["publish", "stats"])
def test_truncated_tar_is_named(shards, tmp_path, capsys, command):
    folder = _copy(shards, tmp_path)
    tar = sorted((folder / "train").glob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    before = snapshot(folder)
    argv = _dry(folder) if command == "publish" else ["stats", str(folder)]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{command}: " in line and tar.name in line
    assert snapshot(folder) == before


def test_extra_tar_not_in_the_index_is_refused(shards, tmp_path, capsys):
    folder = _copy(shards, tmp_path)
    src = sorted((folder / "train").glob("*.tar"))[0]
    shutil.copy(src, folder / "train" / "geopak-train-000099.tar")
    assert main(_dry(folder)) == 2
    assert "not listed in index.parquet" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("where", ["file", "hidden", "dir"])
def test_links_out_of_the_folder_are_refused(shards, tmp_path, capsys, where):
    folder = _copy(shards, tmp_path)
    secret = tmp_path / "token"
    secret.write_text("hf_SECRET")
    if where == "file":
        (folder / "notes.txt").symlink_to(secret)
    elif where == "hidden":
        (folder / "train" / ".x").symlink_to(secret)
    else:
        (folder / "extra").symlink_to(tmp_path, target_is_directory=True)
    before = snapshot(folder)
    assert main(_dry(folder)) == 2
    out = capsys.readouterr()
    line = one_line(out.err)
    assert "symbolic link" in line and "outside the shard folder" in line
    assert "hf_SECRET" not in out.out + out.err
    assert snapshot(folder) == before


def test_link_inside_the_folder_is_not_listed_twice(shards, tmp_path, capsys):
    folder = _copy(shards, tmp_path)
    (folder / "README-link.md").symlink_to(folder / "README.md")
    assert main(_dry(folder)) == 0
    assert "README-link.md" not in capsys.readouterr().out

"""`geopak-data publish`: everything up to the upload call is real; the Hub client is a stand-in."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from support.workfolder import make_work

from geopak_core.errors import GeopakError
from geopak_data import cli
from geopak_data.config import load_config
from geopak_data.publish import IGNORE_PATTERNS, plan_publish, publish
from geopak_data.shard import run_shard

TOKEN = "hf_FAKEtokenFAKEtokenFAKEtoken123"


class StandInApi:
    """Records calls with the HfApi signatures geopak uses."""

    def __init__(
        self, token: str | None = None, *, large: bool = True, fail: Exception | None = None
    ) -> None:
        self.token = token
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail
        if not large:
            self.upload_large_folder = None  # type: ignore[assignment] - huggingface_hub 2.x shape

    def create_repo(
        self,
        repo_id: str,
        *,
        repo_type: str | None = None,
        private: bool | None = None,
        exist_ok: bool = False,
        **kw,
    ) -> str:
        self.calls.append(
            (
                "create_repo",
                {
                    "repo_id": repo_id,
                    "repo_type": repo_type,
                    "private": private,
                    "exist_ok": exist_ok,
                },
            )
        )
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_large_folder(
        self, *, repo_id: str, folder_path: str, repo_type: str, ignore_patterns=None, **kw
    ) -> None:
        if self.fail:
            raise self.fail
        self.calls.append(
            (
                "upload_large_folder",
                {
                    "repo_id": repo_id,
                    "folder_path": folder_path,
                    "repo_type": repo_type,
                    "ignore_patterns": ignore_patterns,
                },
            )
        )

    def upload_folder(
        self, *, repo_id: str, folder_path: str, repo_type: str, ignore_patterns=None, **kw
    ) -> None:
        if self.fail:
            raise self.fail
        self.calls.append(
            (
                "upload_folder",
                {
                    "repo_id": repo_id,
                    "folder_path": folder_path,
                    "repo_type": repo_type,
                    "ignore_patterns": ignore_patterns,
                },
            )
        )


# the map drawing is another module's (and tested there); keep these runs fast
pytestmark = pytest.mark.usefixtures("maps_stand_in")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pub")
    work = make_work(root / "w")
    clean = root / "clean"
    run_shard(work=work, config=load_config(None), out=clean)
    restricted = root / "restricted"
    run_shard(
        work=work, config=load_config(None, {"shard.include_restricted": True}), out=restricted
    )
    return clean, restricted


@pytest.fixture(autouse=True)
def _hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored login from the machine
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_dry_run_validates_and_lists_sizes(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    clean, _ = folders
    (clean / ".cache").mkdir(exist_ok=True)
    (clean / ".cache" / "junk").write_text("x")  # hidden files are never uploaded
    rc = cli.main(["publish", str(clean), "--repo-id", "geopak/geopak-pk", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    for f in (
        "README.md",
        "index.parquet",
        "cells.parquet",
        "stats.json",
        "train/geopak-train-000000.tar",
        "val/geopak-val-000000.tar",
    ):
        assert f in out
    assert ".cache" not in out and "dry run: card OK" in out
    size = (clean / "index.parquet").stat().st_size
    assert f"{size / 1000:,.1f} KB" in out
    plan = plan_publish(clean)
    assert plan.total_bytes == sum(
        p.stat().st_size for p in clean.rglob("*") if p.is_file() and ".cache" not in p.parts
    )


def test_restricted_content_refused_unless_allowed(folders: tuple[Path, Path]) -> None:
    _, restricted = folders
    with pytest.raises(GeopakError, match="2 restricted photo"):
        publish(restricted, repo_id="org/name", dry_run=True)
    plan = publish(restricted, repo_id="org/name", dry_run=True, allow_restricted=True)
    assert plan.restricted == 2


@pytest.mark.parametrize("large", [True, False])
def test_upload_calls_the_client(folders: tuple[Path, Path], large: bool) -> None:
    clean, _ = folders
    api = StandInApi(large=large)
    publish(clean, repo_id="org/name", api=api, private=True)
    assert api.calls[0] == (
        "create_repo",
        {"repo_id": "org/name", "repo_type": "dataset", "private": True, "exist_ok": True},
    )
    name, kw = api.calls[1]
    assert name == ("upload_large_folder" if large else "upload_folder")
    assert kw == {
        "repo_id": "org/name",
        "folder_path": str(clean),
        "repo_type": "dataset",
        "ignore_patterns": IGNORE_PATTERNS,
    }


def test_token_from_env_never_printed(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import huggingface_hub

    clean, _ = folders
    made: list[StandInApi] = []

    def factory(token=None, **kw):
        api = StandInApi(token)
        made.append(api)
        return api

    monkeypatch.setattr(huggingface_hub, "HfApi", factory)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    rc = cli.main(["publish", str(clean), "--repo-id", "org/name", "-v"])
    captured = capsys.readouterr()
    assert rc == 0 and made and made[0].token == TOKEN
    assert [c[0] for c in made[0].calls] == ["create_repo", "upload_large_folder"]
    assert TOKEN not in captured.out + captured.err
    assert "uploaded to https://huggingface.co/datasets/org/name" in captured.out


def test_failed_upload_is_one_line_without_token(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    clean, _ = folders
    api = StandInApi(fail=RuntimeError(f"401 Unauthorized for token {TOKEN}\nmore"))
    with pytest.raises(GeopakError) as exc:
        publish(clean, repo_id="org/name", api=api)
    msg = str(exc.value)
    assert TOKEN not in msg and "\n" not in msg and "run the same command again" in msg


def test_missing_token_and_bad_inputs(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clean, _ = folders
    with pytest.raises(GeopakError, match="no Hugging Face token"):
        publish(clean, repo_id="org/name")
    with pytest.raises(GeopakError, match="ORG/NAME"):
        publish(clean, repo_id="just-a-name", dry_run=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = cli.main(["publish", str(empty), "--repo-id", "org/name", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "README.md is missing" in err and len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    shutil.copytree(clean, broken)
    next(broken.glob("train/*.tar")).unlink()
    with pytest.raises(GeopakError, match="data_files|missing"):
        plan_publish(broken)


def test_synthetic_dataset_refused_unless_allowed(tmp_path: Path, capsys) -> None:
    """The demo's generated photos say so in the card, stats and every sample; publish refuses."""
    work = make_work(tmp_path / "w")
    out = tmp_path / "synthetic"
    run_shard(work=work, config=load_config(None, {"shard.synthetic": True}), out=out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["synthetic"] is True
    card = (out / "README.md").read_text()
    assert "**Synthetic data.**" in card and "- synthetic" in card.split("---")[1]
    with tarfile.open(next((out / "train").glob("*.tar"))) as tf:
        meta = json.loads(tf.extractfile(next(m for m in tf if m.name.endswith(".json"))).read())
    assert meta["synthetic"] is True
    with pytest.raises(GeopakError, match="synthetic dataset.*--allow-synthetic"):
        publish(out, repo_id="org/name", dry_run=True)
    capsys.readouterr()
    rc = cli.main(["publish", str(out), "--repo-id", "org/name", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "--allow-synthetic" in err and len(err.strip().splitlines()) == 1
    plan = publish(out, repo_id="org/name", dry_run=True, allow_synthetic=True)
    assert plan.samples == stats["samples"]


def test_real_data_has_no_synthetic_marks(folders: tuple[Path, Path]) -> None:
    clean, _ = folders
    assert "synthetic" not in json.loads((clean / "stats.json").read_text())
    assert "Synthetic data" not in (clean / "README.md").read_text()
    with tarfile.open(next((clean / "train").glob("*.tar"))) as tf:
        meta = json.loads(tf.extractfile(next(m for m in tf if m.name.endswith(".json"))).read())
    assert "synthetic" not in meta

"""Shard folders written before URLs were stripped at discovery can carry credentials in
every sample's json: ``publish`` (and ``--dry-run``) refuses them with one line naming the
sample, and ``shard --force`` rebuilds the folder without them."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.snapshot import one_line, snapshot
from support.workfolder import fake_maps, make_work

from geopak_data import shardplan
from geopak_data.cli import main
from geopak_data.config import load_config
from geopak_data.publish import plan_publish
from geopak_data.shard import run_shard

SECRET = "S3CRETVALUE"


def _old_work(root: Path) -> tuple[Path, list[str]]:
    """A work folder whose records kept credentials (crawled before they were stripped)."""
    work = make_work(root / "w")
    path = work / "cluster/records.parquet"
    t = pq.read_table(path).to_pandas()
    t.loc[3, "url"] = f"http://alice:{SECRET}@127.0.0.1:1/yfcc/x.jpg"
    t.loc[7, "url"] = f"http://127.0.0.1:1/yfcc/y.jpg?size=m&api_key={SECRET}"
    t.loc[9, "license_url"] = f"https://licences.example/by?token={SECRET}"
    pq.write_table(pq.read_table(path).from_pandas(t, preserve_index=False), path)
    return work, [str(t.loc[i, "key"]) for i in (3, 7, 9)]


@pytest.fixture(autouse=True)
def _hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _secret_in_tars(folder: Path) -> bool:
    for tar in folder.rglob("*.tar"):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json") and SECRET.encode() in tf.extractfile(m).read():
                    return True
    return False


def test_old_folder_is_refused_then_rebuilt_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work, keys = _old_work(tmp_path)
    out = tmp_path / "shards"
    cfg = load_config(None)
    with fake_maps(), monkeypatch.context() as m:  # the shard stage of before: nothing stripped
        m.setattr(shardplan, "without_credentials", lambda rec: (dict(rec), ""))
        run_shard(work=work, config=cfg, out=out)
    assert _secret_in_tars(out)  # what such a folder looks like
    before = snapshot(out)
    argv = ["publish", str(out), "--repo-id", "org/geopak"]
    for extra in (["--dry-run"], []):
        assert main([*argv, *extra]) == 2
        line = one_line(capsys.readouterr().err)
        assert "has credentials in its" in line and SECRET not in line
        assert any(f"sample {k} " in line for k in keys) and "(and 2 more sample(s))" in line
        assert "geopak-data shard" in line and "--force" in line
    assert snapshot(out) == before  # nothing changed, nothing uploaded (no token was asked)
    # the shard stage of today leaves them out: rebuilt with --force, the folder publishes
    with fake_maps():
        run_shard(work=work, config=cfg, out=out, force=True)
    assert not _secret_in_tars(out)
    index = pq.read_table(out / "index.parquet").to_pandas().set_index("key")
    assert index.loc[keys[0], "url"] == "http://127.0.0.1:1/yfcc/x.jpg"
    assert index.loc[keys[1], "url"] == "http://127.0.0.1:1/yfcc/y.jpg?size=m"
    assert index.loc[keys[2], "license_url"] == "https://licences.example/by"
    assert plan_publish(out, allow_restricted=True).samples == len(index)
    assert main([*argv, "--dry-run", "--allow-restricted"]) == 0

"""The shard map is drawn once per set of inputs: a rebuild with the same points, cells,
title, regions and polygons copies the PNG drawn before (byte for byte), any change to them
draws again, and GEOPAK_MAP_CACHE=0 always draws."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from support.workfolder import make_work

from geopak_data import mapcache, shard
from geopak_data.config import load_config
from geopak_data.shard import run_shard


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Titles of the maps really drawn (in the parent: no fork, so the count is seen here)."""
    from geopak_data import sidejob

    monkeypatch.setenv("GEOPAK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(mapcache.ENV, raising=False)
    monkeypatch.setattr(sidejob, "FORK", False)
    calls: list[str] = []
    real = shard.draw_map

    def counting(out, plan, cells, config, regions):
        calls.append(config.shard.dataset_name)
        return real(out, plan, cells, config, regions)

    monkeypatch.setattr(shard, "draw_map", counting)
    return calls


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_inputs_reuse_the_map_changed_inputs_draw_again(
    tmp_path: Path, drawn: list[str], boundaries_path: Path
) -> None:
    polygons = tmp_path / "pak.geojson"
    shutil.copyfile(boundaries_path, polygons)

    def cfg(**kw):
        return load_config(None, {"region.boundaries": str(polygons), **kw})

    work = make_work(tmp_path / "w")
    run_shard(work=work, config=cfg(**{"shard.max_shard_samples": 20}), out=tmp_path / "a")
    assert drawn == ["geopak"] and list((tmp_path / "cache" / "maps").glob("*.png"))
    # another folder, another shard size: the same points and cells, the same map
    run_shard(work=work, config=cfg(**{"shard.max_shard_samples": 7}), out=tmp_path / "b")
    assert drawn == ["geopak"]
    assert _sha(tmp_path / "b" / "map.png") == _sha(tmp_path / "a" / "map.png")
    assert "](map.png)" in (tmp_path / "b" / "README.md").read_text()
    # another title: drawn again
    run_shard(work=work, config=cfg(**{"shard.dataset_name": "other"}), out=tmp_path / "c")
    assert drawn == ["geopak", "other"]
    # the polygon file touched: drawn again
    st = polygons.stat()
    os.utime(polygons, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime, a new ctime
    run_shard(work=work, config=cfg(**{"shard.max_shard_samples": 20}), out=tmp_path / "d")
    assert drawn == ["geopak", "other", "geopak"]
    assert _sha(tmp_path / "d" / "map.png") == _sha(tmp_path / "a" / "map.png")


def test_the_cache_can_be_turned_off(
    tmp_path: Path, drawn: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mapcache.ENV, "0")
    work = make_work(tmp_path / "w")
    run_shard(work=work, config=load_config(None), out=tmp_path / "a")
    run_shard(work=work, config=load_config(None), out=tmp_path / "b", force=True)
    assert drawn == ["geopak", "geopak"] and not (tmp_path / "cache" / "maps").exists()


def test_a_missing_cached_file_is_drawn(tmp_path: Path, drawn: list[str]) -> None:
    work = make_work(tmp_path / "w")
    run_shard(work=work, config=load_config(None), out=tmp_path / "a")
    for p in (tmp_path / "cache" / "maps").glob("*.png"):
        p.unlink()
    run_shard(work=work, config=load_config(None), out=tmp_path / "b", force=True)
    assert drawn == ["geopak", "geopak"] and (tmp_path / "b" / "map.png").is_file()

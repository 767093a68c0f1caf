"""`geopak-data shard`: the shard folder a researcher downloads (contract "Shard folder")."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.contract import CELL_COLUMNS, SAMPLE_JSON
from support.workfolder import make_work

from geopak_core.errors import GeopakError
from geopak_core.shardfmt import JSON_FIELDS
from geopak_data.config import load_config
from geopak_data.shard import run_shard

NAME = re.compile(r"^(train|val|test)/geopak-\1-\d{6}\.tar$")
REPO = Path(__file__).resolve().parents[2]


def _cfg(**over):
    return load_config(
        None, {"shard.max_shard_samples": 20, **{f"shard.{k}": v for k, v in over.items()}}
    )


def read_tars(folder: Path) -> dict[str, dict]:
    """key -> {shard, json, jpg, order} straight from the tar files with tarfile."""
    out: dict[str, dict] = {}
    for tar in sorted(folder.glob("*/geopak-*.tar")):
        rel = tar.relative_to(folder).as_posix()
        with tarfile.open(tar) as tf:
            names = tf.getnames()
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        keys = [n[: -len(".jpg")] for n in names if n.endswith(".jpg")]
        assert names == [f"{k}.{ext}" for k in keys for ext in ("jpg", "json")]
        for pos, k in enumerate(keys):
            out[k] = {
                "shard": rel,
                "json": json.loads(members[f"{k}.json"]),
                "jpg": members[f"{k}.jpg"],
                "pos": pos,
            }
    return out


def identity(folder: Path) -> dict[str, tuple[int, int, str]]:
    return {
        p.relative_to(folder).as_posix(): (
            p.stat().st_ino,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.glob("*/*.tar"))
    }


# the map drawing is another module's (and tested there); keep these runs fast
pytestmark = pytest.mark.usefixtures("maps_stand_in")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shard")
    work = make_work(root / "w")
    out = root / "out"
    outcome = run_shard(work=work, config=_cfg(), out=out)
    assert not outcome.skipped and outcome.counts["samples"] == 83
    return work, out


def test_layout_names_and_no_temp_files(built: tuple[Path, Path]) -> None:
    _, out = built
    for f in ("index.parquet", "cells.parquet", "stats.json", "README.md"):
        assert (out / f).is_file()
    tars = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tar"))
    assert tars and all(NAME.match(t) for t in tars)
    for split in ("train", "val", "test"):
        nums = sorted(int(t[-10:-4]) for t in tars if t.startswith(split + "/"))
        assert nums == list(range(len(nums))) and nums  # zero-padded, contiguous from 0
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]
    # not mkstemp's 0600: a shared or published dataset folder must be readable by others
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.rglob("*") if p.is_file())


def test_members_json_fields_and_image_bytes(built: tuple[Path, Path]) -> None:
    work, out = built
    tars = read_tars(out)
    recs = {r["key"]: r for r in pq.read_table(work / "cluster" / "records.parquet").to_pylist()}
    assert len(tars) == 83
    for key, s in tars.items():
        meta = s["json"]
        assert list(meta) == list(JSON_FIELDS) and SAMPLE_JSON <= set(meta)
        assert meta["key"] == key and "." not in key and "/" not in key
        r = recs[key]
        assert hashlib.sha256(s["jpg"]).hexdigest() == r["sha256"]
        assert Image.open(io.BytesIO(s["jpg"])).size == (meta["width"], meta["height"])
        assert (meta["lat"], meta["lon"], meta["source_id"], meta["owner"], meta["url"]) == (
            r["lat"],
            r["lon"],
            r["source_id"],
            r["owner"],
            r["url"],
        )
        assert meta["license"] and meta["license_url"] and meta["attribution"]
        assert meta["split"] == s["shard"].split("/")[0]
    assert not any(k.startswith("places-") for k in tars)  # restricted excluded by default
    # Samples of one split are shuffled, not in key order.
    train = sorted(
        (s["shard"], s["pos"], k) for k, s in tars.items() if s["json"]["split"] == "train"
    )
    assert [k for *_, k in train] != sorted(k for *_, k in train)


def test_shard_limits(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = built
    for tar in out.glob("*/*.tar"):
        with tarfile.open(tar) as tf:
            assert len(tf.getnames()) // 2 <= 20
    work = make_work(tmp_path / "w")
    out2 = tmp_path / "out"
    run_shard(work=work, config=_cfg(max_shard_bytes=12_000, max_shard_samples=10_000), out=out2)
    sizes = [p.stat().st_size for p in out2.glob("*/*.tar")]
    assert len(sizes) > 3 and max(sizes) <= 12_000  # the byte limit came first


def test_index_matches_every_tar_sample(built: tuple[Path, Path]) -> None:
    _, out = built
    tars = read_tars(out)
    index = pq.read_table(out / "index.parquet").to_pylist()
    assert len(index) == len(tars) == len({r["key"] for r in index})
    for row in index:
        s = tars[row["key"]]
        assert row["shard"] == s["shard"] and row["split"] == s["json"]["split"]
        assert {f: row[f] for f in JSON_FIELDS} == s["json"]
        assert row["sha256"] == hashlib.sha256(s["jpg"]).hexdigest()


def test_readable_by_webdataset(built: tuple[Path, Path]) -> None:
    import webdataset as wds

    _, out = built
    index = {r["key"]: r for r in pq.read_table(out / "index.parquet").to_pylist()}
    seen = {}
    for split in ("train", "val", "test"):
        urls = [str(p) for p in sorted((out / split).glob("*.tar"))]
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"):
            meta = sample["json"]
            row = index[sample["__key__"]]
            assert {f: row[f] for f in JSON_FIELDS} == meta and meta["split"] == split
            assert sample["jpg"].size == (row["width"], row["height"])
            seen[sample["__key__"]] = split
    assert len(seen) == len(index)


def test_readable_by_datasets(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    _, out = built
    index = {r["key"]: r for r in pq.read_table(out / "index.parquet").to_pylist()}
    ds = datasets.load_dataset("webdataset", data_dir=str(out), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation", "test"}
    n = 0
    for hub_split, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        for ex in ds[hub_split]:
            row = index[ex["__key__"]]
            assert {f: row[f] for f in JSON_FIELDS} == ex["json"] and row["split"] == split
            assert ex["jpg"].size == (row["width"], row["height"])
            n += 1
    assert n == len(index)
    # Loading the folder itself goes through the card's `configs` (what the Hub does).
    ds2 = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache2"))
    assert {k: v.num_rows for k, v in ds2.items()} == {k: v.num_rows for k, v in ds.items()}


def test_cells_table(built: tuple[Path, Path]) -> None:
    _, out = built
    cells = pq.read_table(out / "cells.parquet").to_pandas()
    for c in CELL_COLUMNS:
        assert c in cells.columns
    assert cells["cell_id"].tolist() == list(range(len(cells)))
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert (
        cells["n_samples"].tolist() == np.bincount(index["cell_id"], minlength=len(cells)).tolist()
    )
    assert (cells["n_train"] + cells["n_val"] + cells["n_test"]).tolist() == cells[
        "n_samples"
    ].tolist()


def test_stats_json(built: tuple[Path, Path]) -> None:
    _, out = built
    stats = json.loads((out / "stats.json").read_text())
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert stats["samples"] == len(index) == sum(v["samples"] for v in stats["splits"].values())
    assert stats["excluded"] == {"restricted": 2, "removal_list": 0}
    assert stats["rejects"]["filter"] == {"blur": 3, "near_duplicate": 1, "too_small": 1}
    assert stats["rejects"]["crawl:yfcc"]["http_404"] == 2 and stats["rejects_total"] == 11
    assert any("indoor" in n and "not applied" in n for n in stats["filter_notes"])
    assert len(stats["config_hash"]) == 16 and stats["shard_config_hash"]
    prov = {p["province"]: p for p in stats["provinces"]}
    assert prov["Sindh"]["total"] == int((index["province_id"] == 0).sum())
    for name in ("Balochistan", "Gilgit-Baltistan"):  # rare provinces still in every split
        assert min(prov[name]["train"], prov[name]["val"], prov[name]["test"]) >= 1
    assert {s: v["total"] for s, v in stats["sources"].items()} == index[
        "source"
    ].value_counts().to_dict()
    assert stats["groups"]["largest"] >= 5


def test_bursts_and_duplicates_share_a_split(built: tuple[Path, Path]) -> None:
    work, out = built
    recs = pq.read_table(work / "cluster" / "records.parquet").to_pandas()
    index = pq.read_table(out / "index.parquet").to_pandas().set_index("key")
    for owners in (["burst-owner"], ["dup-a", "dup-b"], ["exact-a", "exact-b"]):
        keys = recs[recs["owner"].isin(owners)]
        if owners == ["burst-owner"]:
            keys = keys[keys["cell_id"] == 0]  # the one 30 km away is not part of the burst
        splits = index.loc[keys["key"], "split"]
        groups = index.loc[keys["key"], "group"]
        assert len(keys) >= 2 and splits.nunique() == 1 and groups.nunique() == 1


def test_rerun_is_a_noop_and_output_is_deterministic(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    work, out = built
    before = identity(out)
    again = run_shard(work=work, config=_cfg(), out=out)
    assert again.skipped and "nothing to do" in again.summary
    assert identity(out) == before
    # A fresh build elsewhere gives byte-identical tars and tables.
    work2 = tmp_path / "w2"
    shutil.copytree(work, work2, ignore=shutil.ignore_patterns("shard", "manifest.json", ".*"))
    other = tmp_path / "other"
    run_shard(work=work2, config=_cfg(), out=other)
    assert {k: v[2] for k, v in identity(other).items()} == {k: v[2] for k, v in before.items()}
    for f in ("index.parquet", "stats.json", "cells.parquet"):
        assert (other / f).read_bytes() == (out / f).read_bytes(), f


def test_removal_list_rebuilds_only_affected_shards(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    out = tmp_path / "out"
    removal = tmp_path / "removal.txt"
    removal.write_text("# requests\n")
    cfg = _cfg(removal_list=str(removal))
    run_shard(work=work, config=cfg, out=out)
    before = identity(out)
    tars = read_tars(out)
    victim = next(
        k
        for k, s in sorted(tars.items())
        if s["shard"].startswith("train/") and k.startswith("yfcc-")
    )
    victim_shard = tars[victim]["shard"]
    flickr_victim = next(
        k
        for k, s in sorted(tars.items())
        if s["shard"] == victim_shard and k.startswith("flickr-") and k != victim
    )
    removal.write_text(
        f"# requests\n{victim}\nflickr:{flickr_victim.split('-', 1)[1]}  # by source:id\n"
    )
    recs = {r["key"]: r for r in pq.read_table(work / "cluster" / "records.parquet").to_pylist()}
    (
        work / recs[victim]["image_path"]
    ).unlink()  # the operator may delete the removed photo's file too
    outcome = run_shard(work=work, config=cfg, out=out)
    assert not outcome.skipped and outcome.counts["written"] == 1 and outcome.counts["removed"] == 2
    after = identity(out)
    assert set(after) == set(before)
    for name in before:
        if name == victim_shard:
            assert after[name][2] != before[name][2]
        else:
            assert after[name] == before[name], f"{name} was rewritten"
    now = read_tars(out)
    assert victim not in now and flickr_victim not in now and len(now) == len(tars) - 2
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert victim not in set(index["key"]) and len(index) == len(now)
    assert json.loads((out / "stats.json").read_text())["excluded"]["removal_list"] == 2


def test_deleted_tar_is_rebuilt_alone(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    out = tmp_path / "out"
    run_shard(work=work, config=_cfg(), out=out)
    before = identity(out)
    gone = sorted(before)[0]
    (out / gone).unlink()
    outcome = run_shard(work=work, config=_cfg(), out=out)
    assert not outcome.skipped and outcome.counts["written"] == 1
    after = identity(out)
    assert after[gone][2] == before[gone][2]
    assert {k: v for k, v in after.items() if k != gone} == {
        k: v for k, v in before.items() if k != gone
    }


def test_include_restricted(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    out = tmp_path / "out"
    run_shard(work=work, config=_cfg(include_restricted=True), out=out)
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert index["restricted"].sum() == 2 and set(index.loc[index["restricted"], "source"]) == {
        "places"
    }
    assert json.loads((out / "stats.json").read_text())["restricted_included"] == 2


def test_bad_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(GeopakError, match="run cluster first"):
        run_shard(work=work, config=_cfg(), out=tmp_path / "o")
    work = make_work(tmp_path / "w2")
    with pytest.raises(GeopakError, match="removal list not found"):
        run_shard(
            work=work, config=_cfg(removal_list=str(tmp_path / "nope.txt")), out=tmp_path / "o"
        )
    img = next((work / "images" / "yfcc").rglob("*.jpg"))
    img.unlink()
    with pytest.raises(GeopakError, match="image file"):
        run_shard(work=work, config=_cfg(), out=tmp_path / "o")


def test_changed_image_bytes_are_caught(tmp_path: Path) -> None:
    work = make_work(tmp_path / "w")
    img = next((work / "images" / "yfcc").rglob("*.jpg"))
    img.write_bytes(img.read_bytes() + b"\0")
    with pytest.raises(GeopakError, match="sha256 mismatch"):
        run_shard(work=work, config=_cfg(), out=tmp_path / "o")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GEOPAK_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "geopak_data.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_cli_help_and_errors(tmp_path: Path) -> None:
    r = _cli("shard", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--out" in r.stdout and "--work" in r.stdout
    (tmp_path / "w").mkdir()
    r = _cli("shard", "--work", "w", "--out", "o", cwd=tmp_path)
    assert r.returncode != 0 and "run cluster first" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_small_splits_get_enough_shards_for_loader_workers(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """shard.min_shards_per_split (default 8): a val split of 9 photos is 8 tars, so WebLoader
    with 2 workers (each wants a shard of its own) reads every sample exactly once."""
    import webdataset as wds

    _, out = built
    index = pq.read_table(out / "index.parquet").to_pandas()
    for split in ("val", "test"):
        n = int((index["split"] == split).sum())
        tars = sorted((out / split).glob("*.tar"))
        assert len(tars) == min(8, n) and len(tars) >= 2
        ds = wds.WebDataset([str(t) for t in tars], shardshuffle=False).to_tuple("__key__", "json")
        loader = wds.WebLoader(ds, batch_size=None, num_workers=2)
        keys = [k for k, _ in loader]
        assert sorted(keys) == sorted(index.loc[index["split"] == split, "key"])


def test_the_shard_stage_does_not_import_torch(tmp_path: Path) -> None:
    """Writing tars needs no deep-learning stack (webdataset would pull in torch)."""
    work = make_work(tmp_path / "w")
    code = (
        "import sys\n"
        "from geopak_data.config import load_config\n"
        "from geopak_data.shard import run_shard\n"
        f"run_shard(work={str(work)!r}, config=load_config(None), out={str(tmp_path / 'o')!r})\n"
        "bad = sorted(m for m in ('torch', 'webdataset') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]

"""The ``cluster`` stage and its command: outputs per contract, resumable, deterministic."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.contract import CELL_COLUMNS

from geopak_core.geo import haversine_km
from geopak_core.regions import PAKISTAN
from geopak_data.cli import main
from geopak_data.records import REJECT_SCHEMA


def write_tag_records(work, seed: int = 0):
    """A small W/tag/records.parquet: two cities, rural scatter, two lone photos."""
    rng = np.random.default_rng(seed)
    parts = [
        (31.55 + rng.normal(0, 0.03, 300), 74.35 + rng.normal(0, 0.035, 300), 1),
        (24.86 + rng.normal(0, 0.025, 200), 67.01 + rng.normal(0, 0.03, 200), 0),
        (rng.uniform(26.0, 29.0, 80), rng.uniform(63.0, 67.0, 80), 5),
        (np.array([25.0, 28.8]), np.array([61.2, 69.9]), 5),
    ]
    lat = np.concatenate([p[0] for p in parts])
    lon = np.concatenate([p[1] for p in parts])
    pid = np.concatenate([np.full(len(p[0]), p[2], dtype=np.int8) for p in parts])
    n = len(lat)
    table = pa.table(
        {
            "key": [f"yfcc-{i}" for i in range(n)],
            "source": ["yfcc"] * n,
            "source_id": [str(i) for i in range(n)],
            "url": [f"http://127.0.0.1/{i}.jpg" for i in range(n)],
            "lat": lat,
            "lon": lon,
            "license": ["CC BY 2.0"] * n,
            "province": [PAKISTAN.names[p] for p in pid],
            "province_id": pa.array(pid, pa.int8()),
            "border_km": np.full(n, 10.0),
        }
    )
    (work / "tag").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, work / "tag" / "records.parquet")
    return table


@pytest.fixture()
def cfg_file(tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_text("[cluster]\nmin_cluster_size = 10\nmin_samples = 4\n")
    return path


def test_cluster_command_writes_contract_outputs(tmp_path, cfg_file, capsys):
    work = tmp_path / "W"
    src = write_tag_records(work)
    assert main(["cluster", "--work", str(work), "--config", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "cells" in out and "violations 0" in out

    cdir = work / "cluster"
    cells = pq.read_table(cdir / "cells.parquet")
    for col in CELL_COLUMNS + ("neighbours", "crs", "limit_km", "center_key"):
        assert col in cells.column_names
    assert cells.schema.field("neighbours").type == pa.list_(pa.int32())
    meta = json.loads(cells.schema.metadata[b"geopak"])
    assert set(meta["crs"]) == {"Sindh", "Punjab", "Balochistan"}
    c = cells.to_pandas()
    assert np.array_equal(c["cell_id"].to_numpy(), np.arange(len(c)))
    assert (c["province"] == [PAKISTAN.names[p] for p in c["province_id"]]).all()

    recs = pq.read_table(cdir / "records.parquet")
    assert recs.column_names == src.column_names + ["cell_id"]  # every input column travels on
    assert recs.schema.field("cell_id").type == pa.int32()
    rejects = pq.read_table(cdir / "rejects.parquet")
    assert rejects.schema.equals(REJECT_SCHEMA)
    assert set(rejects.column("reason").to_pylist()) == {"geocell_isolated"}
    assert {"yfcc-580", "yfcc-581"} <= set(rejects.column("key").to_pylist())  # the two lone photos
    assert recs.num_rows + rejects.num_rows == src.num_rows

    r = recs.to_pandas()
    cid = r["cell_id"].to_numpy()
    assert np.array_equal(np.bincount(cid, minlength=len(c)), c["n_samples"].to_numpy())
    d = haversine_km(
        r["lat"], r["lon"], c["center_lat"].to_numpy()[cid], c["center_lon"].to_numpy()[cid]
    )
    assert (d <= c["limit_km"].to_numpy()[cid]).all()
    assert (r["province_id"].to_numpy() == c["province_id"].to_numpy()[cid]).all()
    keys = dict(zip(r["key"], zip(r["lat"], r["lon"], strict=True), strict=True))
    assert all(
        keys[k] == (la, lo)
        for k, la, lo in zip(c["center_key"], c["center_lat"], c["center_lon"], strict=True)
    )

    report = json.loads((cdir / "report.json").read_text())
    assert report["violations"]["total"] == 0
    assert report["n_cells"] == len(c)
    assert report["isolated"]["rejected"] == rejects.num_rows
    assert set(report["cells_per_province"]) == {"Sindh", "Punjab", "Balochistan"}
    assert (cdir / "cells.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a finished stage does nothing and says so
    assert main(["cluster", "--work", str(work)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_same_input_same_bytes(tmp_path, cfg_file):
    outs = []
    for name in ("A", "B"):
        work = tmp_path / name
        write_tag_records(work)
        assert main(["cluster", "--work", str(work), "--config", str(cfg_file)]) == 0
        outs.append(work / "cluster")
    for f in ("cells.parquet", "records.parquet", "rejects.parquet"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes()


def test_config_change_reruns_and_changed_input_reruns(tmp_path, cfg_file, capsys):
    work = tmp_path / "W"
    write_tag_records(work)
    assert main(["cluster", "--work", str(work), "--config", str(cfg_file)]) == 0
    capsys.readouterr()
    cfg_file.write_text(
        '[cluster]\nmin_cluster_size = 10\nmin_samples = 4\ntarget_cells = {"Punjab" = 2}\n'
    )
    assert main(["cluster", "--work", str(work), "--config", str(cfg_file)]) == 0
    assert "nothing to do" not in capsys.readouterr().out
    cells = pq.read_table(work / "cluster" / "cells.parquet").to_pandas()
    assert (cells["province"] == "Punjab").sum() >= 2
    write_tag_records(work, seed=1)
    assert main(["cluster", "--work", str(work)]) == 0
    assert "nothing to do" not in capsys.readouterr().out


def test_missing_or_bad_input_is_one_line_error(tmp_path, capsys):
    work = tmp_path / "W"
    assert main(["cluster", "--work", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tag" in err
    (work / "tag").mkdir(parents=True)
    pq.write_table(pa.table({"key": ["a"], "lat": [31.0]}), work / "tag" / "records.parquet")
    assert main(["cluster", "--work", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing column" in err and "province_id" in err
    assert not (work / "cluster" / "cells.parquet").exists()


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cluster", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--work" in out and "radius" in out

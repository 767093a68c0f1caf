"""A fictional country end to end: crawl yfcc -> filter -> tag -> cluster -> shard -> train
tiny -> eval -> predict, with its own three regions (one a multipolygon with an island, one
with a hole) in every artefact, and the border rule applied to its coast and its land border."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import fictional
from support.tinytrain import train_tiny_phase1

from geopak_core.boundaries import load_boundaries, region_table
from geopak_core.regions import RegionTable
from geopak_data.cluster import run_cluster
from geopak_data.crawl import run_crawl
from geopak_data.demo import generate_source
from geopak_data.filter import run_filter
from geopak_data.imageserver import start_image_server
from geopak_data.runner import work_config
from geopak_data.shard import run_shard
from geopak_data.synthetic import country_locations
from geopak_data.tag import run_tag

REPO = Path(__file__).resolve().parents[2]
NAMES = tuple(n for n, _ in fictional.REGIONS)
CODES = tuple(c for _, c in fictional.REGIONS)
# 2.2 km north of the land border (inside the neighbour) and 2.2 km off the south coast
LAND_POINT = {"lat": 2.02, "lon": 11.3, "place": "across the land border", "palette": 1}
COAST_POINT = {"lat": -0.02, "lon": 10.5, "place": "off the coast", "palette": 0}
ISLAND_POINT = {"lat": -0.45, "lon": 11.0, "place": "the island", "palette": 0}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("xfa")
    boundaries = fictional.write_country(root / "xfa-adm1.geojson")
    polys = load_boundaries(boundaries, country=fictional.COUNTRY)
    locations = country_locations(polys, fictional.COUNTRY, 240, seed=5)
    locations += [LAND_POINT, COAST_POINT, ISLAND_POINT]
    (root / "source" / "images").mkdir(parents=True)
    base, stop = start_image_server(root / "source" / "images", fixtures=False)
    try:
        meta = generate_source(
            root / "source",
            n_photos=len(locations),
            seed=5,
            base_url=base,
            locations=locations,
            bad_records=False,
        )
        work = root / "w"
        cfg = work_config(
            work,
            REPO / "pipelines" / "demo.toml",
            overrides={
                "crawl.yfcc.metadata": str(meta),
                "region.country": fictional.COUNTRY,
                "region.boundaries": str(boundaries),
                # the south coast and the island are sea coast; the north edge is a land border
                "tag.coast_bboxes": [[9.5, -1.0, 12.5, 0.3]],
            },
        )
        run_crawl(source="yfcc", work=work, config=cfg, allow_private_hosts=True)
    finally:
        stop()
    run_filter(work=work, config=cfg)
    tag = run_tag(work=work, config=cfg)
    run_cluster(work=work, config=cfg)
    run_shard(work=work, config=cfg, out=work / "shards")
    return {
        "work": work,
        "shards": work / "shards",
        "tag": tag,
        "polys": polys,
        "boundaries": boundaries,
    }


def _meta_rows(path: Path) -> list[dict]:
    with tarfile.open(path) as tf:
        return [json.loads(tf.extractfile(m).read()) for m in tf if m.name.endswith(".json")]


def test_region_table_in_every_data_artefact(run):
    work, shards = run["work"], run["shards"]
    expected = region_table(run["polys"])
    assert expected.names == NAMES and expected.codes == CODES
    for folder in (work / "tag", work / "cluster", shards):
        t = RegionTable.read(folder / "regions.parquet")
        assert t == expected, folder
        raw = pq.read_table(folder / "regions.parquet").to_pydict()
        assert raw["province_id"] == [0, 1, 2]
        assert raw["province"] == list(NAMES) and raw["iso"] == list(CODES)
    cells = pq.read_table(shards / "cells.parquet").to_pandas()
    assert set(cells["province_id"]) == {0, 1, 2}
    assert all(NAMES[p] == n for p, n in zip(cells["province_id"], cells["province"], strict=True))
    index = pq.read_table(shards / "index.parquet").to_pandas()
    assert all(NAMES[p] == n for p, n in zip(index["province_id"], index["province"], strict=True))
    tar = sorted((shards / "train").glob("*.tar"))[0]
    for m in _meta_rows(tar):
        assert m["province"] == NAMES[m["province_id"]]
    stats = json.loads((shards / "stats.json").read_text())
    assert stats["regions"]["file"] == "regions.parquet"
    assert stats["regions"]["country"] == fictional.COUNTRY and stats["regions"]["count"] == 3
    assert [p["province"] for p in stats["provinces"]] == list(NAMES)
    card = (shards / "README.md").read_text()
    assert "regions.parquet" in card and "Pakistan" not in card.split("## ")[0]
    for name, code in fictional.REGIONS:
        assert name in card and code in card


def test_coast_snapped_land_border_rejected(run):
    work = run["work"]
    tagged = pq.read_table(work / "tag" / "records.parquet").to_pandas()
    rejects = pq.read_table(work / "tag" / "rejects.parquet").to_pandas()

    def row(table, point):
        hit = (np.abs(table["lat"] - point["lat"]) < 1e-6) & (
            np.abs(table["lon"] - point["lon"]) < 1e-6
        )
        return table[hit]

    coast = row(tagged, COAST_POINT)
    assert len(coast) == 1 and coast["province"].iat[0] == "Coastal"
    assert coast["border_km"].iat[0] == pytest.approx(2.21, abs=0.05)
    assert len(row(tagged, ISLAND_POINT)) == 1  # the island is Coastal's
    assert row(tagged, ISLAND_POINT)["province"].iat[0] == "Coastal"
    rej = rejects[rejects["key"].isin(row(_crawled(work), LAND_POINT)["key"])]
    assert list(rej["reason"]) == ["outside_country"]
    assert "land border" in rej["detail"].iat[0]
    assert run["tag"].counts["rejected:across_land_border"] == 1
    assert {f"province:{n}" for n in NAMES} <= set(run["tag"].counts)


def _crawled(work: Path):
    return pq.read_table(work / "filter" / "records.parquet").to_pandas()


def test_train_eval_predict_name_the_regions(run, tmp_path):
    from geopak_model.checkpoint import load_checkpoint
    from geopak_model.evaluate import evaluate_checkpoint
    from geopak_model.predictor import GeopakPredictor

    shards = run["shards"]
    best = train_tiny_phase1(shards, tmp_path, epochs=4, batch_size=32)
    model, payload = load_checkpoint(best)
    assert payload["provinces"] == list(NAMES)
    assert model.province_head[-1].out_features == 3
    assert RegionTable.from_dict(payload["cells"]["regions"]).codes == CODES

    res = evaluate_checkpoint(
        shards=shards, checkpoint=best, split="test", num_workers=0, device="cpu"
    )
    assert set(res["province_acc_by_province"]) <= set(NAMES)
    assert res["n"] > 0

    tar = sorted((shards / "test").glob("*.tar"))[0]
    with tarfile.open(tar) as tf:
        jpgs = [tf.extractfile(m).read() for m in tf if m.name.endswith(".jpg")][:4]
    import io

    from PIL import Image

    p = GeopakPredictor(checkpoint_path=best, device="cpu")
    assert p.shapes is None  # GEOPAK_BOUNDARIES holds Pakistan's polygons: not this country's
    own = GeopakPredictor(checkpoint_path=best, device="cpu", boundaries=run["boundaries"])
    assert own.shapes is not None and sorted(own.shapes.geoms) == [0, 1, 2]
    for ans in p.predict_many([Image.open(io.BytesIO(b)).convert("RGB") for b in jpgs]):
        assert ans["province"] == NAMES[ans["province_id"]]
        assert all(h["province"] in NAMES for h in ans["hypotheses"])


@pytest.mark.slow
def test_demo_for_another_country(tmp_path, monkeypatch):
    """``geopak-data demo --country`` with the country's boundaries at hand (no training)."""
    from geopak_core.errors import GeopakError
    from geopak_data.demo import run_demo

    path = fictional.write_country(tmp_path / "xfa.geojson")
    report = run_demo(
        work=tmp_path / "w",
        n_photos=150,
        seed=2,
        train=False,
        country=fictional.COUNTRY,
        boundaries=path,
    )
    shards = Path(report["shards"])
    assert RegionTable.read(shards / "regions.parquet").names == NAMES
    index = pq.read_table(shards / "index.parquet").to_pandas()
    assert set(index["province"]) == set(NAMES) and len(index) > 100
    # the environment holds Pakistan's polygons: another country without its own file is refused
    with pytest.raises(GeopakError, match="holds PAK, not IND"):
        run_demo(work=tmp_path / "w2", n_photos=50, train=False, country="IND")
    monkeypatch.delenv("GEOPAK_BOUNDARIES")
    monkeypatch.setenv("GEOPAK_BOUNDARIES_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(GeopakError, match="no boundaries for NPL on this machine"):
        run_demo(work=tmp_path / "w3", n_photos=50, train=False, country="NPL")


@pytest.mark.slow
def test_demo_for_another_country_evaluates_with_its_polygons(tmp_path, caplog):
    """The demo's evaluation and predictions keep answers inside the region they name with the
    country's own file, not $GEOPAK_BOUNDARIES (Pakistan's here): no "province check off"."""
    from geopak_data.demo import run_demo

    path = fictional.write_country(tmp_path / "xfa.geojson")
    with caplog.at_level("WARNING"):
        report = run_demo(
            work=tmp_path / "w",
            n_photos=150,
            seed=3,
            epochs=2,
            country=fictional.COUNTRY,
            boundaries=path,
        )
    assert report["metrics"]["n"] > 0
    assert "province check off" not in caplog.text
    assert "drawn without province polygons" not in caplog.text

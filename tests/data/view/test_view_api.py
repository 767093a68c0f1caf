"""The viewer's JSON API on a toy shard folder, a work folder and a tiny checkpoint."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import pytest_asyncio
from PIL import Image
from support.viewdata import make_view_data

from geopak_data.imageserver import make_bomb_png, make_jpeg
from geopak_data.view.dataset import ViewData
from geopak_data.view.server import build_app

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def view_data(tmp_path_factory) -> tuple[Path, Path]:
    import torch

    torch.set_num_threads(1)
    return make_view_data(tmp_path_factory.mktemp("view"))


@pytest_asyncio.fixture
async def client(aiohttp_client, view_data, box_boundaries):
    from geopak_model import GeopakPredictor

    shards, ckpt = view_data
    app = build_app(
        ViewData.open(shards),
        predictor=GeopakPredictor(ckpt, device="cpu"),
        boundaries=box_boundaries,
        upload_bytes=256 * 1024,
    )
    return await aiohttp_client(app)


async def test_samples_are_the_index_as_columns(client, view_data):
    index = pq.read_table(view_data[0] / "index.parquet").to_pandas()
    r = await client.get("/api/samples")
    body = await r.json()
    assert r.status == 200 and body["n"] == len(index)
    assert sorted(body["key"]) == sorted(index["key"])
    splits = body["categories"]["split"]
    assert [splits["labels"][c] for c in splits["codes"]] == index.set_index("key").loc[
        body["key"], "split"
    ].tolist()
    r = await client.get("/api/samples", params={"split": "val"})
    assert (await r.json())["n"] == int((index["split"] == "val").sum())


async def test_records_page_and_counts(client, view_data):
    index = pq.read_table(view_data[0] / "index.parquet").to_pandas()
    r = await client.get("/api/samples", params={"format": "records", "limit": "5", "offset": "2"})
    page = await r.json()
    assert page["n"] == len(index) and len(page["samples"]) == 5
    assert {"license", "owner", "lat", "lon", "province"} <= set(page["samples"][0])
    counts = await (await client.get("/api/counts", params={"split": "train"})).json()
    assert counts["n"] == int((index["split"] == "train").sum())
    assert sum(counts["province"].values()) == counts["n"]
    r = await client.get("/api/samples", params={"format": "records", "limit": "x"})
    assert r.status == 400


async def test_sample_detail_and_image_come_from_the_tar(client, view_data):
    index = pq.read_table(view_data[0] / "index.parquet").to_pandas()
    key = index["key"].iloc[7]
    detail = await (await client.get(f"/api/sample/{key}")).json()
    assert (
        detail["license"] == index["license"].iloc[7] and detail["owner"] == index["owner"].iloc[7]
    )
    r = await client.get(f"/api/image/{key}")
    assert r.status == 200 and r.content_type == "image/jpeg"
    body = await r.read()
    assert Image.open(io.BytesIO(body)).size[0] > 0
    import hashlib

    if "sha256" in index.columns:  # real shard folders always record it
        assert hashlib.sha256(body).hexdigest() == index["sha256"].iloc[7]
    assert (await client.get("/api/sample/nope")).status == 404
    assert (await client.get("/api/image/nope")).status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/server.py",
        "/vendor/leaflet/../../../../etc/passwd",
        "/api/image/..%2F..%2Findex.parquet",
    ],
)
async def test_no_path_traversal(client, path):
    r = await client.get(path)
    assert r.status in (403, 404)
    assert b"root:" not in await r.read()


async def test_predict_an_upload_and_a_dataset_photo(client, view_data):
    index = pq.read_table(view_data[0] / "index.parquet").to_pandas()
    key = index["key"].iloc[3]
    r = await client.get("/api/predict", params={"key": key})
    body = await r.json()
    assert r.status == 200, body
    assert {"lat", "lon", "province", "confidence", "hypotheses"} <= set(body)
    assert body["truth"]["key"] == key and body["distance_km"] >= 0
    photo = await (await client.get(f"/api/image/{key}")).read()
    from aiohttp import FormData

    form = FormData()
    form.add_field("image", photo, filename="p.jpg", content_type="image/jpeg")
    up = await (await client.post("/api/predict", data=form)).json()
    if "sha256" in index.columns:
        assert up["truth"]["key"] == key  # recognised by its bytes
    assert up["lat"] == pytest.approx(body["lat"], abs=1e-3)
    other = make_jpeg(80, 60, seed=5)
    anon = await (await client.post("/api/predict", data=other)).json()
    assert "truth" not in anon and -90 <= anon["lat"] <= 90


@pytest.mark.parametrize(
    "payload, status, needle",
    [
        (b"<!DOCTYPE html><html></html>", 400, "not_an_image"),
        (make_bomb_png(), 400, "decompression_bomb"),
        (b"\xff\xd8\xff" + b"\x00" * 300 * 1024, 413, "too large"),
    ],
)
async def test_bad_uploads_are_refused_with_a_reason(client, payload, status, needle):
    r = await client.post("/api/predict", data=payload)
    assert r.status == status
    assert needle in (await r.json())["error"]


async def test_cells_and_meta(client, view_data):
    cells = pq.read_table(view_data[0] / "cells.parquet").to_pandas()
    rows = await (await client.get("/api/cells")).json()
    assert len(rows) == len(cells) and {"center_lat", "radius_km"} <= set(rows[0])
    meta = await (await client.get("/api/meta")).json()
    assert meta["kind"] == "shards" and meta["model"]["checkpoint"].endswith("best.pt")
    regions = await (await client.get("/api/regions")).json()
    assert regions["type"] == "FeatureCollection" and len(regions["features"]) == 7


async def test_predict_without_a_model_says_how(aiohttp_client, view_data):
    client = await aiohttp_client(build_app(ViewData.open(view_data[0])))
    r = await client.post("/api/predict", data=make_jpeg(40, 40))
    assert r.status == 409 and "--checkpoint" in (await r.json())["error"]


def _work_folder(root: Path) -> Path:
    from support.workfolder import make_work

    return make_work(root)


async def test_work_folder_shows_records_and_rejects(aiohttp_client, tmp_path):
    work = _work_folder(tmp_path / "w")
    client = await aiohttp_client(build_app(ViewData.open(work)))
    meta = await (await client.get("/api/meta")).json()
    records = pq.read_table(work / "cluster" / "records.parquet")
    assert meta["kind"] == "work" and meta["n_samples"] == records.num_rows
    key = records.column("key")[0].as_py()
    assert (await client.get(f"/api/image/{key}")).status == 200
    rej = await (await client.get("/api/rejects")).json()
    total = sum(pq.read_table(p).num_rows for p in work.rglob("rejects.parquet"))
    assert rej["n"] == total and sum(r["count"] for r in rej["reasons"]) == total


async def test_open_refuses_what_is_not_a_dataset(tmp_path):
    from geopak_core.errors import GeopakError

    with pytest.raises(GeopakError, match="neither a shard folder"):
        ViewData.open(tmp_path)
    (tmp_path / "index.parquet").write_text(json.dumps({}))
    with pytest.raises(GeopakError, match="not a readable Parquet"):
        ViewData.open(tmp_path)

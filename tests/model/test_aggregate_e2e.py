"""Aggregation, calibration and retrieval end to end on a tiny model trained on toy shards.

One short phase-1 run from the embedding cache (class-weighted, as training is by default)
gives a checkpoint that training itself calibrated on val; geopak-eval then scores mean /
best / mode / refine on the same test images, and the predictor answers inside the
province it names for every test image.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from geopak_model import eval_cli
from geopak_model.aggregate import ProvinceShapes
from geopak_model.checkpoint import load_checkpoint
from geopak_model.data import open_shard_folder
from geopak_model.embed import load_features
from geopak_model.evaluate import evaluate_checkpoint
from geopak_model.predictor import GeopakPredictor
from geopak_model.retrieval import RetrievalIndex, embedding, index_path_for, refine
from geopak_model.train import train

pytestmark = pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")


@pytest.fixture(scope="module")
def run(toy_shards, toy_features, tmp_path_factory):
    from support.threads import single_thread

    out = tmp_path_factory.mktemp("agg") / "p1"
    with single_thread():
        train(
            out=out, phase=1, shards=toy_shards, features=toy_features, epochs=6, eval_every=3,
            batch_size=16, num_workers=0, seed=0, plots=False,
        )  # fmt: skip
    return out / "best.pt"


def test_training_stores_a_calibration_fitted_on_val(run):
    model, payload = load_checkpoint(run)
    cal = payload["calibration"]
    assert cal["method"] == "logit_adjustment+temperature"
    assert len(cal["log_prior_shift"]) == 7 and any(v != 0 for v in cal["log_prior_shift"])
    assert cal["fit"]["n"] > 0
    assert cal["fit"]["nll_after"] <= cal["fit"]["nll_before"] + 1e-9
    assert model.calibration is not None and model.calibration.temperature > 0


def test_eval_reports_every_aggregation_side_by_side(run, toy_shards, toy_features, capsys):
    rc = eval_cli.main(
        ["--shards", str(toy_shards), "--checkpoint", str(run), "--features", str(toy_features),
         "--json", "--build-index", "--workers", "0"]
    )  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["inference"]["aggregate"] == "mode"
    assert set(res["by_aggregate"]) == {"mean", "best", "mode", "refine"}
    for row in res["by_aggregate"].values():
        for k in ("median_km", "mean_km", "acc_25km", "acc_200km", "province_acc", "province_ece"):
            assert row[k] is not None and row[k] >= 0
    mode = res["by_aggregate"]["mode"]
    assert res["median_km"] == pytest.approx(mode["median_km"])  # the headline is mode's
    assert res["province_acc"] == pytest.approx(mode["province_acc"])
    assert 0 <= res["province_ece"] <= 1
    info = res["inference"]["retrieval"]
    assert info["n"] == open_shard_folder(toy_shards).size("train") and info["memory_bytes"] > 0
    assert index_path_for(run).is_file()
    # a refined headline when asked; without an index --refine is a one-line error
    res_r = evaluate_checkpoint(
        shards=toy_shards, checkpoint=run, features=toy_features, num_workers=0, refine=True
    )
    assert res_r["median_km"] == pytest.approx(res["by_aggregate"]["refine"]["median_km"])


def test_answers_lie_in_the_province_they_name(run, toy_shards, boundaries_path):
    index = pq.read_table(toy_shards / "index.parquet").to_pandas()
    test = index[index["split"] == "test"]
    images = []
    for row in test.itertuples():
        with tarfile.open(toy_shards / row.shard) as tar:
            data = tar.extractfile(f"{row.key}.jpg").read()
        images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    p = GeopakPredictor(run, device="cpu", boundaries=boundaries_path)
    answers = p.predict_many(images, batch_size=32)
    shapes = ProvinceShapes.load(boundaries_path)
    lat = np.array([a["lat"] for a in answers])
    lon = np.array([a["lon"] for a in answers])
    pid = np.array([a["province_id"] for a in answers])
    assert shapes.inside(lat, lon, pid).all()
    for a in answers:
        assert sum(h["probability"] for h in a["hypotheses"]) == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= a["confidence"] <= 1.0


def test_refinement_recovers_training_locations_of_near_copies(run, toy_shards, toy_features):
    model, _ = load_checkpoint(run)
    folder = open_shard_folder(toy_shards)
    train_f = load_features(toy_features, "train", folder=folder, model=model)
    from geopak_model.data import LoaderSpec, feature_batches
    from geopak_model.retrieval import build_index

    spec = LoaderSpec(batch_size=64, shuffle=False, augment_seeded=False, num_workers=0)
    index = build_index(model, feature_batches(train_f, spec), None, torch.device("cpu"))
    assert len(index) == len(train_f)
    g = torch.Generator().manual_seed(0)
    clip = train_f.clip + 1e-3 * torch.randn(train_f.clip.shape, generator=g)  # near-copies
    places = train_f.places + 1e-3 * torch.randn(train_f.places.shape, generator=g)
    with torch.no_grad():
        outputs = model.heads(clip, places)
        from geopak_model.inference import answer

        base = answer(outputs, model, mode="mode")
        own = refine(base, embedding(outputs), index, threshold=0.999)
        # the near-copy's own cell as the chosen one, to check every image
        forced = refine({**base, "cell_id": train_f.cell_id}, embedding(outputs), index, 0.999)
    want_lat, want_lon = train_f.lat.double().numpy(), train_f.lon.double().numpy()
    assert bool(forced["refined"].all())
    # every answer is exactly its training photo's location (not just near it)
    np.testing.assert_array_equal(forced["lat"].numpy(), want_lat)
    np.testing.assert_array_equal(forced["lon"].numpy(), want_lon)
    # with the model's own choice of cell: exact wherever that is the true cell
    hit = (base["cell_id"] == train_f.cell_id).numpy()
    assert hit.mean() > 0.5
    assert own["refined"].numpy()[hit].all()
    np.testing.assert_array_equal(own["lat"].numpy()[hit], want_lat[hit])
    np.testing.assert_array_equal(own["lon"].numpy()[hit], want_lon[hit])


def test_a_far_query_is_not_refined():
    emb = np.eye(4, dtype=np.float32)[[0, 1, 2]]
    index = RetrievalIndex.build(emb, [30.0, 31.0, 32.0], [70.0, 71.0, 72.0], [0, 0, 1], 2, "x")
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    res = {
        "lat": torch.tensor([29.0, 29.0]),
        "lon": torch.tensor([69.0, 69.0]),
        "cell_id": torch.tensor([0, 1]),
    }
    r = refine(res, q, index, threshold=0.9)
    assert r["refined"].tolist() == [True, False]
    assert r["lat"].tolist() == [30.0, 29.0] and r["lon"].tolist() == [70.0, 69.0]


def test_cli_aggregate_flags(run, toy_shards, tmp_path, capsys):
    from geopak_model import predict_cli

    img = tmp_path / "x.jpg"
    Image.new("RGB", (64, 64), (200, 60, 50)).save(img)
    assert predict_cli.main([str(img), "-c", str(run), "--best", "--aggregate", "mean"]) == 2
    assert "contradicts" in capsys.readouterr().err
    for agg in ("mean", "best", "mode"):
        assert predict_cli.main([str(img), "-c", str(run), "--json", "--aggregate", agg]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["province"] and -90 <= r["lat"] <= 90
    other = tmp_path / "other.pt"
    other.write_bytes(run.read_bytes())  # same weights, but no index next to it
    rc = eval_cli.main(["--shards", str(toy_shards), "--checkpoint", str(other), "--refine"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--build-index" in err and len(err.splitlines()) == 1


def test_search_over_several_cells():
    emb = np.eye(3, dtype=np.float32)
    index = RetrievalIndex.build(emb, [30.0, 31.0, 32.0], [70.0, 71.0, 72.0], [0, 1, 2], 3, "x")
    q = torch.tensor([[0.0, 0.0, 1.0]])
    sim, row = index.search(q, torch.tensor([[0, 2, -1]]))
    assert sim[0] == pytest.approx(1.0) and index.lat[row[0]] == 32.0
    sim, row = index.search(q, torch.tensor([[0, 1, -1]]))
    assert sim[0] == pytest.approx(0.0)

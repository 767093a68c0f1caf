"""Training: a tiny model learns the toy data and beats both baselines; cache == images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.threads import single_thread

from geopak_model import data as D
from geopak_model.checkpoint import load_checkpoint
from geopak_model.embed import encoder_fingerprint, load_features
from geopak_model.evaluate import evaluate_checkpoint, predict_batches
from geopak_model.inference import predict_batch
from geopak_model.train import TrainStep, lr_factor, train

pytestmark = pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, warmup=10, total=110, min_ratio=0.01) for s in range(0, 130)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.01 + 0.99 * 0.5, rel=1e-6)  # half-way through the cosine
    assert f[110] == pytest.approx(0.01) and f[129] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))


def test_tiny_model_beats_both_baselines(toy_shards, toy_features, tmp_path, one_thread):
    """Phase 0 then phase 1 (chained with load_from), trained on the embedding cache."""
    common = dict(
        shards=toy_shards, features=toy_features, batch_size=16, num_workers=0, seed=0, plots=False
    )
    p0 = train(out=tmp_path / "p0", phase=0, epochs=3, **common)
    assert p0["best"]["province_acc"] > 0.8
    p1 = train(
        out=tmp_path / "p1",
        phase=1,
        epochs=12,
        eval_every=3,
        load_from=tmp_path / "p0" / "best.pt",
        **common,
    )
    assert p1["step"] == 12 * 13  # 202 train images / 16 per batch = 13 steps per epoch

    rows = [
        json.loads(line) for line in (tmp_path / "p1" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [3, 6, 9, 12]
    last = rows[-1]
    base = last["baselines"]
    floor_km = min(base["densest_cell"]["median_km"], base["geographic_median"]["median_km"])
    floor_acc = max(base["densest_cell"]["province_acc"], base["geographic_median"]["province_acc"])
    assert last["median_km"] < 0.25 * floor_km, (last["median_km"], floor_km)
    assert last["province_acc"] > floor_acc + 0.3, (last["province_acc"], floor_acc)
    assert last["cell_top1"] > base["densest_cell"]["cell_top1"]

    # the selected checkpoint, scored end to end on the held-out test split
    res = evaluate_checkpoint(
        shards=toy_shards, checkpoint=tmp_path / "p1" / "best.pt", split="test", num_workers=0
    )
    tb = res["baselines"]
    assert res["n"] == D.open_shard_folder(toy_shards).size("test")
    assert res["median_km"] < 0.25 * min(
        tb["densest_cell"]["median_km"], tb["geographic_median"]["median_km"]
    )
    assert (
        res["province_acc"]
        > max(tb["densest_cell"]["province_acc"], tb["geographic_median"]["province_acc"]) + 0.3
    )
    # the metrics file of the best step agrees with the best.pt it selected
    best = min(rows, key=lambda r: r["median_km"])
    _, payload = load_checkpoint(tmp_path / "p1" / "best.pt")
    assert payload["extra"]["train"]["step"] == best["step"]
    log = [
        json.loads(line) for line in (tmp_path / "p1" / "train_log.jsonl").read_text().splitlines()
    ]
    assert log[-1]["loss"] < log[0]["loss"]


def test_cache_and_images_give_the_same_outputs(toy_shards, toy_features, one_thread):
    """Same weights, same images: heads on cached features == heads on freshly encoded pixels,
    and the evaluation path == the end-to-end predict_batch."""
    model, _ = load_checkpoint(toy_features / "model.pt")
    folder = D.open_shard_folder(toy_shards)
    feats = load_features(toy_features, "val", folder=folder, model=model)
    spec = D.LoaderSpec(batch_size=50, shuffle=False, augment_seeded=False)
    img = next(D.image_batches(folder.shards("val"), model.transforms(train=False), spec))
    pos = {k: i for i, k in enumerate(feats.key)}
    fb = feats.batch(torch.tensor([pos[k] for k in img["key"]]))
    model.eval()
    with torch.inference_mode():
        c, p = model.encode(img["clip"], img["places"])
        # Different batch sizes pick different float32 kernels: equal within float32 rounding.
        torch.testing.assert_close(fb["clip_feat"], c, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fb["places_feat"], p, rtol=1e-4, atol=1e-5)
        from_img, from_cache = model.heads(c, p), model.heads(fb["clip_feat"], fb["places_feat"])
        for k in ("province_logits", "cell_logits", "fused", "aux_latlon"):
            torch.testing.assert_close(from_img[k], from_cache[k], rtol=1e-4, atol=1e-4)
    # the training loss is the same whichever way the batch arrives
    step = TrainStep(model, torch.ones(7), phase=1).eval()
    with torch.no_grad():
        li, _ = step(img)
        lc, _ = step({**fb, "key": img["key"]})
    assert float(li) == pytest.approx(float(lc), rel=1e-4, abs=1e-5)
    # evaluation from the cache reproduces the end-to-end predictor on the same images
    pc = predict_batches(model, [{**fb, "key": img["key"]}], torch.device("cpu"))
    e2e = predict_batch(model, img["clip"], img["places"])
    # The two feature paths differ by float32 rounding (~1e-7), so a decision can only differ
    # where the model is at a tie: compare every row whose top two provinces are apart.
    top2 = torch.topk(torch.softmax(from_cache["province_logits"].float(), -1), 2).values
    clear = (top2[:, 0] - top2[:, 1] > 1e-3).numpy()
    assert clear.mean() > 0.5  # the comparison covers most rows
    np.testing.assert_allclose(
        pc.array("pred_lat")[clear], e2e["lat"].numpy()[clear], rtol=0, atol=1e-4
    )
    np.testing.assert_array_equal(
        pc.array("pred_province")[clear], e2e["province_id"].numpy()[clear]
    )


def test_features_from_other_encoders_are_refused(toy_shards, toy_features, tmp_path, one_thread):
    from geopak_core.errors import GeopakError
    from geopak_model.factory import make_model

    other, _ = make_model(folder=D.open_shard_folder(toy_shards), preset="tiny", seed=123)
    assert (
        encoder_fingerprint(other)
        != json.loads((toy_features / "manifest.json").read_text())["encoder_fingerprint"]
    )
    from geopak_model.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(GeopakError, match="different encoder"):
        train(
            shards=toy_shards,
            out=tmp_path / "run",
            phase=1,
            features=toy_features,
            load_from=tmp_path / "other.pt",
            num_workers=0,
            max_steps=1,
        )
    with pytest.raises(GeopakError, match="phases 0 and 1"):
        train(
            shards=toy_shards,
            out=tmp_path / "run2",
            phase=2,
            features=toy_features,
            num_workers=0,
            max_steps=1,
        )


def test_phase2_from_images_trains_encoder_tails_only(toy_shards, tmp_path, one_thread):
    """A short phase-2 run from pixels (augmentation, grad accumulation, balanced sampling):
    the last blocks move, the stems stay frozen, files are written."""
    with single_thread():
        from geopak_model.factory import make_model

        start, _ = make_model(folder=D.open_shard_folder(toy_shards), preset="tiny", seed=0)
    from geopak_model.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "start.pt", start)
    s = train(
        shards=toy_shards, out=tmp_path / "p2", phase=2, load_from=tmp_path / "start.pt", epochs=1, max_steps=3,
        batch_size=8, grad_accum=2, balance="both", num_workers=0, plots=True, shuffle_buffer=50,
    )  # fmt: skip
    assert s["step"] == 3
    end, _ = load_checkpoint(tmp_path / "p2" / "last.pt")
    a, b = start.state_dict(), end.state_dict()
    assert not torch.equal(
        a["places.net.layer4.1.conv2.weight"], b["places.net.layer4.1.conv2.weight"]
    )
    assert torch.equal(a["places.net.conv1.weight"], b["places.net.conv1.weight"])
    assert torch.equal(a["clip.visual.conv1.weight"], b["clip.visual.conv1.weight"])
    for name in (
        "loss_curves.png",
        "val_error_cdf.png",
        "val_province_accuracy.png",
        "val_confusion.png",
    ):
        png = tmp_path / "p2" / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embed_resumes_a_partial_cache(toy_shards, tmp_path, one_thread):
    """A cache with a part missing (a killed embed) is completed with identical features."""
    from geopak_model.embed import embed

    out = tmp_path / "feats"
    first = embed(shards=toy_shards, out=out, preset="tiny", splits=("val",), num_workers=0, seed=4)
    assert first["parts_written"] == len(D.open_shard_folder(toy_shards).shards("val"))
    part = sorted((out / "val").glob("*.npz"))[0]
    before = dict(np.load(part))
    part.unlink()
    (out / "val" / ".stale.npz.tmp").write_bytes(b"torn")  # what a kill mid-write leaves
    again = embed(shards=toy_shards, out=out, splits=("val",), num_workers=0)
    assert again["parts_written"] == 1 and again["parts_skipped"] == first["parts_written"] - 1
    after = dict(np.load(part))
    assert before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) for k in before
    )
    assert not list((out / "val").glob("*.tmp"))


def test_base_preset_on_cpu_says_it_is_slow(toy_shards, tmp_path, caplog, one_thread):
    """A CPU user who omits --preset gets base: the log must point them at tiny / a GPU.
    (A tiny-sized config named base.toml keeps this fast; the check reads config.preset.)"""
    from geopak_model.config import PRESETS_DIR

    cfg = tmp_path / "base.toml"
    cfg.write_text((PRESETS_DIR / "tiny.toml").read_text())
    common = dict(
        shards=toy_shards,
        phase=0,
        max_steps=1,
        batch_size=8,
        num_workers=0,
        plots=False,
        device="cpu",
    )
    with caplog.at_level("WARNING", logger="geopak_model.train"):
        train(out=tmp_path / "b", model_config=str(cfg), **common)
    assert "--preset tiny" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="geopak_model.train"):
        train(out=tmp_path / "t", preset="tiny", **common)
    assert "--preset tiny" not in caplog.text


def test_resume_of_a_finished_run_says_more_epochs_are_not_trained(
    toy_shards, toy_features, tmp_path, caplog, one_thread
):
    """A finished run is not extended by a larger --epochs (its schedule is over): it says
    so in one line naming how to go on, instead of ignoring the value silently."""
    common = dict(
        shards=toy_shards, features=toy_features, out=tmp_path / "r", phase=0, num_workers=0
    )
    train(epochs=1, max_steps=2, plots=False, **common)
    with caplog.at_level("INFO", logger="geopak_model.train"):
        again = train(epochs=1, resume=True, **common)
    assert "nothing to do" in caplog.text and "does not continue" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="geopak_model.train"):
        more = train(epochs=3, resume=True, **common)
    warned = [r for r in caplog.records if "does not continue" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert "--epochs 3" in warned[0].getMessage() and "--load-from" in warned[0].getMessage()
    assert more["step"] == again["step"] == 2


def test_final_table_says_its_ece_is_uncalibrated(
    toy_shards, toy_features, tmp_path, caplog, one_thread
):
    """The calibration line (best.pt) and the final table (last step, as trained) name which
    ECE each figure is, so the two numbers do not read as a contradiction."""
    with caplog.at_level("INFO"):
        train(
            shards=toy_shards,
            features=toy_features,
            out=tmp_path / "r",
            phase=0,
            epochs=1,
            max_steps=2,
            num_workers=0,
            plots=False,
        )
    text = caplog.text
    assert "uncalibrated -> " in text and " calibrated" in text
    assert "final validation (step 2, last weights, province confidence uncalibrated)" in text
    assert text.index("uncalibrated -> ") < text.index("final validation")

"""Mixture-of-hypotheses inference on hand-set head outputs (a real tiny model supplies the
cell geometry and the offset head, whose zero-initialised last layer gives exact offsets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geopak_model.cells import CellTable
from geopak_model.config import load_model_config
from geopak_model.inference import (
    H_CELL,
    H_LAT,
    H_PROB,
    H_PROVINCE,
    joint_cell_probs,
    mixture_of_hypotheses,
    predict_batch,
    predict_features,
)
from geopak_model.model import GeopakModel

torch.set_num_threads(1)  # 2 shared cores: more threads only spin
KM_PER_DEG = math.pi * 6371.0088 / 180.0

# Sindh: cells 0, 1, 2; Punjab: cells 3, 4; Balochistan: cell 5. No cells elsewhere.
LAT = [24.86, 25.40, 27.70, 31.52, 30.20, 30.18]
LON = [67.00, 68.37, 68.86, 74.36, 71.47, 66.99]


@pytest.fixture(scope="module")
def model() -> GeopakModel:
    torch.manual_seed(0)
    cells = CellTable(
        cell_id=np.arange(6),
        province_id=[0, 0, 0, 1, 1, 5],
        center_lat=LAT,
        center_lon=LON,
        radius_km=[5, 10, 20, 8, 30, 50],
    )
    m = GeopakModel(load_model_config("tiny"), cells)
    return m.eval()


def outputs(prov_p: list[float], cell_p: list[float], b: int = 1) -> dict[str, torch.Tensor]:
    """Head outputs whose softmaxes are exactly the given probabilities (log of them)."""
    lp = torch.log(torch.tensor(prov_p).clamp_min(1e-12))
    lc = torch.log(torch.tensor(cell_p).clamp_min(1e-12))
    return {
        "fused": torch.randn(b, 512),
        "province_logits": lp.repeat(b, 1),
        "cell_logits": lc.repeat(b, 1),
    }


def test_mean_and_best_on_hand_set_probabilities(model):
    # P(Sindh) 0.6, P(Punjab) 0.3, P(Balochistan) 0.1; P(cell | province) as below.
    out = outputs([0.6, 0.3, 0, 0, 0, 0.1, 0], [0.5, 0.3, 0.2, 0.9, 0.1, 1.0])
    with torch.no_grad():
        r = mixture_of_hypotheses(
            out, model, model.cells, top_provinces=2, top_cells=2, mode="mean"
        )
    joint = {0: 0.6 * 0.5, 1: 0.6 * 0.3, 3: 0.3 * 0.9, 4: 0.3 * 0.1}  # Balochistan is third: out
    z = sum(joint.values())
    lat = sum(p * LAT[c] for c, p in joint.items()) / z
    lon = sum(p * LON[c] for c, p in joint.items()) / z
    assert r["lat"].item() == pytest.approx(lat, abs=1e-4) and r["lon"].item() == pytest.approx(
        lon, abs=1e-4
    )
    assert r["province_id"].item() == 0 and r["confidence"].item() == pytest.approx(0.6, abs=1e-6)
    assert r["cell_id"].item() == 0
    h = r["hypotheses"][0]
    assert h.shape == (4, 5)
    assert h[:, H_CELL].tolist() == [0, 3, 1, 4]  # most probable first
    assert h[:, H_PROVINCE].tolist() == [0, 1, 0, 1]
    # joint probabilities, normalised over the listed hypotheses (they sum to 1)
    np.testing.assert_allclose(
        h[:, H_PROB].numpy(), np.array([0.3, 0.27, 0.18, 0.03]) / 0.78, rtol=1e-5
    )
    np.testing.assert_allclose(h[:, H_LAT].numpy(), [LAT[0], LAT[3], LAT[1], LAT[4]], atol=1e-5)

    with torch.no_grad():
        best = mixture_of_hypotheses(out, model, top_provinces=2, top_cells=2, mode="best")
    assert (best["lat"].item(), best["lon"].item()) == pytest.approx((LAT[0], LON[0]), abs=1e-5)


def test_best_hypothesis_can_come_from_the_second_province(model):
    # Sindh 0.55 spread over three cells (0.183 each); Punjab 0.45 concentrated on cell 3 (0.405).
    out = outputs([0.55, 0.45, 0, 0, 0, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0.9, 0.1, 1.0])
    with torch.no_grad():
        mean = mixture_of_hypotheses(out, model, top_provinces=2, top_cells=5, mode="mean")
        best = mixture_of_hypotheses(out, model, top_provinces=2, top_cells=5, mode="best")
    assert mean["province_id"].item() == 0 and mean["confidence"].item() == pytest.approx(
        0.55, abs=1e-6
    )
    assert best["province_id"].item() == 1 and best["confidence"].item() == pytest.approx(
        0.45, abs=1e-6
    )
    assert best["cell_id"].item() == 3 and best["lat"].item() == pytest.approx(LAT[3], abs=1e-5)
    # The mean lands between the provinces, where neither hypothesis is.
    assert LAT[2] < mean["lat"].item() < LAT[3]
    # P x K rows; Sindh has 3 cells and Punjab 2, so 2 + 3 of the 10 rows are padding.
    h = mean["hypotheses"][0]
    assert h.shape == (10, 5)
    pad = h[:, H_CELL] < 0
    assert (
        int(pad.sum()) == 5
        and bool((h[pad, H_PROB] == 0).all())
        and bool((h[pad, H_PROVINCE] == -1).all())
    )


def test_provinces_without_cells_are_never_chosen(model):
    # Gilgit-Baltistan (4) is the most probable province but has no cells in this table.
    out = outputs([0.1, 0.2, 0, 0, 0.6, 0.1, 0], [0.5, 0.3, 0.2, 0.9, 0.1, 1.0])
    with torch.no_grad():
        r = mixture_of_hypotheses(out, model, top_provinces=2, top_cells=1)
    assert r["province_id"].item() == 1  # Punjab, the best province that has cells
    assert r["confidence"].item() == pytest.approx(0.2, abs=1e-6)
    assert sorted(r["hypotheses"][0, :, H_PROVINCE].tolist()) == [1.0, 5.0]


def test_offsets_shift_each_hypothesis_by_its_own_radius(model):
    out = outputs([0.6, 0.4, 0, 0, 0, 0, 0], [0.5, 0.3, 0.2, 0.9, 0.1, 1.0])
    head = model.offset_head[-1]
    saved = head.bias.detach().clone()
    try:
        with torch.no_grad():
            head.bias.copy_(torch.tensor([math.atanh(0.5), 0.0]))  # Δlat = +0.5 radius, Δlon = 0
            r = mixture_of_hypotheses(out, model, top_provinces=2, top_cells=1, mode="mean")
    finally:
        with torch.no_grad():
            head.bias.copy_(saved)
    h = r["hypotheses"][0]
    assert h[:, H_CELL].tolist() == [3, 0]  # joint 0.4 * 0.9 = 0.36 before 0.6 * 0.5 = 0.3
    np.testing.assert_allclose(
        h[:, H_LAT].numpy(),
        [LAT[3] + 0.5 * 8 / KM_PER_DEG, LAT[0] + 0.5 * 5 / KM_PER_DEG],
        atol=1e-5,
    )
    lat = (0.36 * h[0, H_LAT] + 0.3 * h[1, H_LAT]) / 0.66
    assert r["lat"].item() == pytest.approx(lat.item(), abs=1e-5)


def test_joint_cell_probs(model):
    out = outputs([0.6, 0.3, 0, 0, 0, 0.1, 0], [0.5, 0.3, 0.2, 0.9, 0.1, 1.0])
    p = joint_cell_probs(out, model)
    np.testing.assert_allclose(p[0].numpy(), [0.3, 0.18, 0.12, 0.27, 0.03, 0.1], rtol=1e-5)


def test_predict_batch_end_to_end_keeps_mode_and_needs_no_labels(model):
    torch.manual_seed(3)
    clip, places = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    model.train()
    try:
        r = predict_batch(model, clip, places)
        assert model.training  # restored
        assert r["lat"].shape == (4,) and r["hypotheses"].shape == (4, 10, 5)
        assert not r["lat"].requires_grad
        # Answers lie within the hull of the candidate cells (zero offsets at init).
        assert bool(((r["lat"] >= min(LAT) - 1e-4) & (r["lat"] <= max(LAT) + 1e-4)).all())
        # The same answers from cached features (embedding cache path) and from single images.
        with torch.no_grad():
            feats = model.encode(clip, places)
        rf = predict_features(model, *feats)
        torch.testing.assert_close(rf["lat"], r["lat"])
        one = predict_batch(model, clip[:1], places[:1], mode="best", top_provinces=1, top_cells=1)
        assert one["hypotheses"].shape == (1, 1, 5)
    finally:
        model.eval()
    with pytest.raises(ValueError, match="mode"):
        mixture_of_hypotheses(outputs([1, 0, 0, 0, 0, 0, 0], [1] * 6), model, mode="median")

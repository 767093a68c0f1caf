"""The four losses against hand-computed values (independent math, not the code under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geopak_core.geo import haversine_km
from geopak_model.cells import CellTable
from geopak_model.config import load_model_config
from geopak_model.losses import (
    aux_loss,
    cell_loss,
    haversine_km_torch,
    offset_loss,
    phase_lambdas,
    province_class_weights,
    province_loss,
    smoothed_cell_targets,
    total_loss,
)

torch.set_num_threads(1)  # 2 shared cores: more threads only spin
KM_PER_DEG = math.pi * 6371.0088 / 180.0  # 111.19508 km along a meridian


# float32 results against float64 references (or float32 sums in another order) agree to a
# few ulps, not bit for bit: rel=1e-5 leaves room for other CPUs' vector kernels.


def test_haversine_reference_distances():
    d = haversine_km_torch(24.8607, 67.0011, 31.5204, 74.3587)  # Karachi -> Lahore
    assert d.item() == pytest.approx(1033.0, abs=0.5)
    assert haversine_km_torch(30.0, 70.0, 30.1, 70.0).item() == pytest.approx(
        0.1 * KM_PER_DEG, rel=1e-4
    )
    assert haversine_km_torch(0.0, 0.0, 0.0, 90.0).item() == pytest.approx(
        math.pi / 2 * 6371.0088, rel=1e-5
    )
    # Broadcasting, and agreement with the numpy implementation the data pipeline uses.
    lat = torch.tensor([24.86, 33.68, 35.92])
    lon = torch.tensor([67.0, 73.05, 74.31])
    got = haversine_km_torch(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    ref = haversine_km(
        lat.numpy()[:, None], lon.numpy()[:, None], lat.numpy()[None, :], lon.numpy()[None, :]
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-3)


def test_haversine_gradient_finite_at_zero_distance():
    pred = torch.tensor([[30.0, 70.0], [31.0, 71.0]], requires_grad=True)
    d = haversine_km_torch(
        pred[:, 0], pred[:, 1], torch.tensor([30.0, 31.5]), torch.tensor([70.0, 71.0])
    )
    d.sum().backward()
    assert d[0].item() == 0.0
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[1, 0].item() == pytest.approx(
        -KM_PER_DEG, rel=1e-3
    )  # moving north shortens it


def test_province_class_weights():
    w = province_class_weights([100, 50, 0, 50, 0, 0, 0])
    np.testing.assert_allclose(w.numpy(), [200 / 300, 200 / 150, 0, 200 / 150, 0, 0, 0], rtol=1e-6)
    w = province_class_weights([400, 100, 0, 0, 0, 0, 0], power=0.5)
    np.testing.assert_allclose(
        w.numpy(), [math.sqrt(500 / 800), math.sqrt(500 / 200), 0, 0, 0, 0, 0], rtol=1e-6
    )
    assert province_class_weights([5, 5, 5, 5, 5, 5, 5]).tolist() == [1.0] * 7
    with pytest.raises(ValueError):
        province_class_weights([1, 2, 3], num_provinces=7)
    assert province_class_weights([1, 1, 2], num_provinces=3).shape == (3,)  # any region count


def test_province_loss_hand_computed():
    logits = torch.tensor([[2.0, 0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0, 0]])
    target = torch.tensor([0, 3])
    z0, z1 = math.exp(2) + 6, math.exp(1) + 6
    ce0, ce1 = -math.log(math.exp(2) / z0), -math.log(1 / z1)
    assert province_loss(logits, target).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    w = torch.tensor([0.5, 1, 1, 3.0, 1, 1, 1])
    assert province_loss(logits, target, w).item() == pytest.approx(
        (0.5 * ce0 + 3 * ce1) / 3.5, rel=1e-5
    )
    # Label smoothing s: (1 - s) * CE + s * mean_c(-log p_c); literal value for sample 0.
    s = 0.1
    mean_nll = (ce0 + 6 * math.log(z0)) / 7
    got = province_loss(logits[:1], target[:1], smoothing=s).item()
    assert got == pytest.approx((1 - s) * ce0 + s * mean_nll, rel=1e-5)
    assert got == pytest.approx(0.76588, abs=1e-4)


def _cells() -> CellTable:
    # Province 0: cells 0 (30.0, 70.0) and 1 (30.1, 70.0); province 1: cell 2 (31.0, 74.0).
    return CellTable(
        cell_id=[0, 1, 2],
        province_id=[0, 0, 1],
        center_lat=[30.0, 30.1, 31.0],
        center_lon=[70.0, 70.0, 74.0],
        radius_km=[5.0, 5.0, 5.0],
        n_samples=[30, 10, 20],
    )


def test_smoothed_targets_and_cell_loss_hand_computed():
    cells = _cells()
    centers = torch.tensor(np.stack([cells.center_lat, cells.center_lon], 1), dtype=torch.float32)
    cell_province = torch.tensor(cells.province_id)
    lat, lon, prov = torch.tensor([30.0]), torch.tensor([70.0]), torch.tensor([0])
    tau = 10.0
    # d = [0, 11.1195 km]: q ∝ [1, exp(-1.11195)], nothing on the other province's cell.
    e = math.exp(-0.1 * KM_PER_DEG / tau)
    q_ref = [1 / (1 + e), e / (1 + e), 0.0]
    q = smoothed_cell_targets(lat, lon, cell_province[None, :] == prov[:, None], centers, tau)
    np.testing.assert_allclose(q[0].numpy(), q_ref, rtol=1e-5, atol=1e-7)
    assert q_ref[0] == pytest.approx(0.75249, abs=1e-5)
    # Uniform prediction inside the province: KL = Σ q log(q / 0.5). Cell 2's logit is irrelevant.
    logits = torch.tensor([[0.0, 0.0, 9.0]])
    kl_ref = sum(qk * math.log(qk / 0.5) for qk in q_ref[:2])
    assert cell_loss(logits, lat, lon, prov, cell_province, centers, tau).item() == pytest.approx(
        kl_ref, rel=1e-4
    )
    assert kl_ref == pytest.approx(0.13357, abs=1e-4)
    # Predicting q exactly gives zero loss; a photo far from its province's cells still works.
    exact = torch.log(torch.tensor([[q_ref[0], q_ref[1], 1.0]]))
    assert cell_loss(exact, lat, lon, prov, cell_province, centers, tau).item() == pytest.approx(
        0.0, abs=1e-6
    )
    far = cell_loss(
        logits, torch.tensor([36.0]), torch.tensor([75.0]), prov, cell_province, centers, tau
    )
    assert torch.isfinite(far) and far.item() > 0


def test_offset_and_aux_losses():
    centers = torch.tensor([[30.0, 70.0], [31.0, 74.0]])
    off = torch.tensor([[0.1, 0.0], [0.0, 0.0]])
    # Cell 0 + (0.1, 0) lands on (30.1, 70): 0 km; cell 1 + 0 is 0.1° of latitude from (31.1, 74).
    got = offset_loss(
        off, torch.tensor([0, 1]), centers, torch.tensor([30.1, 31.1]), torch.tensor([70.0, 74.0])
    )
    assert got.item() == pytest.approx(0.1 * KM_PER_DEG / 2, rel=1e-3)
    aux = aux_loss(
        torch.tensor([[24.8607, 67.0011]]), torch.tensor([31.5204]), torch.tensor([74.3587])
    )
    assert aux.item() == pytest.approx(1033.0, abs=0.5)


def test_total_loss_weights_and_phase0():
    cells = _cells()
    cfg = load_model_config(
        "tiny",
        lambda_prov=1.0,
        lambda_cell=2.0,
        lambda_off=0.5,
        lambda_aux=0.1,
        tau_km=10.0,
        province_smoothing=0.0,
    )
    torch.manual_seed(0)
    outputs = {
        "province_logits": torch.randn(2, 7, requires_grad=True),
        "cell_logits": torch.randn(2, 3, requires_grad=True),
        "offset": torch.zeros(2, 2, requires_grad=True),
        "aux_latlon": torch.tensor([[30.0, 70.0], [30.0, 70.0]], requires_grad=True),
    }
    batch = {
        "lat": torch.tensor([30.0, 31.0]),
        "lon": torch.tensor([70.0, 74.0]),
        "province_id": torch.tensor([0, 1]),
        "cell_id": torch.tensor([0, 2]),
    }
    total, parts = total_loss(outputs, batch, cells, cfg)
    assert set(parts) == {"prov", "cell", "off", "aux", "total"}
    expected = parts["prov"] + 2.0 * parts["cell"] + 0.5 * parts["off"] + 0.1 * parts["aux"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["off"].item() == pytest.approx(0.0, abs=1e-6)  # offsets zero, photos on centers
    # Default class weights come from the cell table's n_samples: province counts [40, 20].
    w = province_class_weights([40, 20, 0, 0, 0, 0, 0])
    assert parts["prov"].item() == pytest.approx(
        province_loss(outputs["province_logits"], batch["province_id"], w).item(), rel=1e-5
    )
    total.backward()
    assert outputs["cell_logits"].grad.abs().sum() > 0
    # Phase 0 trains the province path only.
    total0, parts0 = total_loss(outputs, batch, cells, cfg, phase=0)
    assert set(parts0) == {"prov", "total"} and total0.item() == pytest.approx(parts["prov"].item())
    assert phase_lambdas(cfg, 1) == {"prov": 1.0, "cell": 2.0, "off": 0.5, "aux": 0.1}
    # Without outputs["offset"] and without a model there is no way to compute the offset loss.
    with pytest.raises(ValueError, match="offset"):
        total_loss({k: v for k, v in outputs.items() if k != "offset"}, batch, cells, cfg)

"""mean / best / mode aggregation on hand-built hypotheses (issue 17's photo, in miniature).

Cells: Gilgit (35.90, 74.35; Gilgit-Baltistan) and two neighbouring cells near Sukkur
(28.10, 68.80 and 27.95, 68.95; Sindh, ~22 km apart). With the hypotheses split between
the north and the south, the seed's weighted mean lands in Punjab, between the two, in a
province the model never named; ``mode`` answers inside the heavier group.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopak_core.geo import haversine_km
from geopak_model.aggregate import ProvinceShapes, group_modes, spherical_mean
from geopak_model.cells import CellTable
from geopak_model.config import load_model_config
from geopak_model.inference import H_PROB, mixture_of_hypotheses
from geopak_model.model import GeopakModel

torch.set_num_threads(1)

GILGIT = (35.90, 74.35)
SUKKUR_A = (28.10, 68.80)
SUKKUR_B = (27.95, 68.95)


@pytest.fixture(scope="module")
def model() -> GeopakModel:
    torch.manual_seed(0)
    cells = CellTable(
        cell_id=np.arange(3),
        province_id=[4, 0, 0],
        center_lat=[GILGIT[0], SUKKUR_A[0], SUKKUR_B[0]],
        center_lon=[GILGIT[1], SUKKUR_A[1], SUKKUR_B[1]],
        radius_km=[20.0, 20.0, 20.0],
    )
    return GeopakModel(load_model_config("tiny"), cells).eval()  # zero offsets at init


@pytest.fixture(scope="module")
def shapes(box_boundaries) -> ProvinceShapes:
    # the box provinces hold Sukkur (Sindh), Gilgit (Gilgit-Baltistan) and the point between
    # them (Punjab) as the real ones do, and leave the Arabian Sea point outside Sindh
    return ProvinceShapes.load(box_boundaries)


def heads(p_sindh: float, p_gb: float, sukkur_split: float) -> dict[str, torch.Tensor]:
    """Head outputs with P(Sindh), P(GB) and P(cell A | Sindh) = sukkur_split."""
    prov = torch.full((7,), 1e-6)
    prov[0], prov[4] = p_sindh, p_gb
    prov[1] = max(1e-6, 1.0 - p_sindh - p_gb)  # Punjab: probable, but it has no cells here
    cell = torch.tensor([1.0, sukkur_split, 1.0 - sukkur_split])
    return {
        "fused": torch.randn(1, 512),
        "province_logits": prov.log()[None],
        "cell_logits": cell.log()[None],
    }


def run(out, model, mode):
    with torch.no_grad():
        return mixture_of_hypotheses(out, model, top_provinces=2, top_cells=2, mode=mode)


def test_mode_answers_inside_the_heavier_mode_and_mean_lands_between(model, shapes):
    # The photo: Sindh 0.47 over two Sukkur cells (0.25, 0.22), Gilgit-Baltistan 0.37.
    out = heads(0.47, 0.37, 0.25 / 0.47)
    mean, best, mode = (run(out, model, m) for m in ("mean", "best", "mode"))

    # mode: the Sukkur pair (mass 0.47) outweighs Gilgit (0.37); its weighted spherical mean
    w = torch.tensor([0.25, 0.22], dtype=torch.float64)
    expect = spherical_mean(torch.tensor([SUKKUR_A, SUKKUR_B], dtype=torch.float64), w)
    assert mode["province_id"].item() == 0
    assert mode["lat"].item() == pytest.approx(expect[0].item(), abs=1e-4)
    assert mode["lon"].item() == pytest.approx(expect[1].item(), abs=1e-4)
    assert float(haversine_km(mode["lat"].item(), mode["lon"].item(), *SUKKUR_A)) < 25
    # best: Gilgit alone is the single most probable hypothesis
    assert best["province_id"].item() == 4
    assert (best["lat"].item(), best["lon"].item()) == pytest.approx(GILGIT, abs=1e-4)
    # mean: between the two, far from both, in Punjab (which had no hypothesis)
    m = (mean["lat"].item(), mean["lon"].item())
    assert SUKKUR_A[0] < m[0] < GILGIT[0]
    assert min(haversine_km(*m, *GILGIT), haversine_km(*m, *SUKKUR_A)) > 300
    assert shapes.inside([m[0]], [m[1]], [1]).all()  # Punjab
    assert shapes.inside([mode["lat"].item()], [mode["lon"].item()], [0]).all()  # Sindh
    # probabilities of the listed hypotheses sum to 1; confidence is P(reported province)
    assert mode["hypotheses"][0, :, H_PROB].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert mode["confidence"].item() == pytest.approx(0.47, abs=1e-5)
    assert best["confidence"].item() == pytest.approx(0.37, abs=1e-5)


def test_a_split_mode_still_wins_over_a_heavier_single_hypothesis(model):
    # Gilgit 0.40 is the best single hypothesis; Sukkur's two cells hold 0.30 + 0.30.
    out = heads(0.60, 0.40, 0.5)
    assert run(out, model, "best")["province_id"].item() == 4
    mode = run(out, model, "mode")
    assert mode["province_id"].item() == 0 and mode["cell_id"].item() in (1, 2)


def test_grouping_rule_links_within_two_radii_and_never_chains():
    # A, B 40 km apart (link 2 * (10 + 10) = 40 km: joined); C 40 km beyond B: B's, not A's
    lat = torch.tensor([[30.0, 30.0 + 40 / 111.195, 30.0 + 80 / 111.195, 24.0]])
    pts = torch.stack([lat, torch.full_like(lat, 70.0)], dim=-1)
    prob = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    radius = torch.full((1, 4), 10.0)
    valid = torch.tensor([[True, True, True, False]])
    modes = group_modes(pts, prob, radius, valid)
    assert modes[0].tolist() == [0, 0, 2, -1]  # C leads its own mode: no chain through B


def test_answers_that_leave_their_province_fall_back_inside(model, shapes):
    from geopak_model.aggregate import keep_inside

    # A point in the Arabian Sea, claimed for Sindh, with Sukkur as the fallback.
    r = {
        "lat": torch.tensor([23.5]),
        "lon": torch.tensor([65.5]),
        "province_id": torch.tensor([0]),
        "fallback_latlon": torch.tensor([[[23.6, 65.6], [SUKKUR_A[0], SUKKUR_A[1]]]]),
    }
    assert keep_inside(r, shapes) == 1
    assert (r["lat"].item(), r["lon"].item()) == pytest.approx(SUKKUR_A, abs=1e-5)
    assert keep_inside(r, shapes) == 0  # now inside: left alone

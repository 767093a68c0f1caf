"""Calibrated province posteriors: logit adjustment for the training prior + temperature.

A deliberately class-weighted toy classifier: three overlapping Gaussian classes with a
70 / 20 / 10 prior, a linear model trained with inverse-frequency class weights (what
``balance = "weights"`` does). It over-predicts the rare classes, so its confidence is off;
the calibration fitted on val must bring the test ECE down, and recover α near 1 (the
theory: subtract exactly log w).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopak_model.calibration import Calibration, fit_calibration, log_prior_shift, nll
from geopak_model.losses import province_class_weights
from geopak_model.metrics import expected_calibration_error

torch.set_num_threads(1)
PRIOR = np.array([0.7, 0.2, 0.1])
MEANS = np.array([[0.0, 0.0], [1.2, 0.0], [0.0, 1.2]])


def draw(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = rng.choice(3, size=n, p=PRIOR)
    x = MEANS[y] + rng.normal(0.0, 1.0, size=(n, 2))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def ece(logits: np.ndarray, y: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return expected_calibration_error(p.max(1), p.argmax(1) == y)


@pytest.fixture(scope="module")
def weighted_model():
    rng = np.random.default_rng(0)
    x, y = draw(6000, rng)
    counts = np.bincount(y.numpy(), minlength=3)
    w = province_class_weights(np.pad(counts, (0, 4)), 1.0)[:3]  # the training code's weights
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 3)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y, weight=w)
        loss.backward()
        return loss

    opt.step(closure)
    return lin, w


def test_calibration_brings_ece_down_on_a_class_weighted_model(weighted_model):
    lin, w = weighted_model
    rng = np.random.default_rng(1)
    (xv, yv), (xt, yt) = draw(3000, rng), draw(3000, rng)
    with torch.no_grad():
        lv, lt = lin(xv).numpy(), lin(xt).numpy()
    cal = fit_calibration(lv, yv.numpy(), log_prior_shift(w))
    calibrated = cal.apply(torch.from_numpy(lt)).numpy()
    before, after = ece(lt, yt.numpy()), ece(calibrated, yt.numpy())
    assert after < 0.5 * before, (before, after)
    assert nll(calibrated, yt.numpy()) < nll(lt, yt.numpy())
    assert 0.75 <= cal.alpha <= 1.25  # the prior correction the theory predicts
    assert cal.fit["ece_after"] < cal.fit["ece_before"]


def test_identity_when_nothing_needs_correcting():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 4000)
    logits = np.log(np.full((4000, 3), 1 / 3))  # uniform, and the classes are uniform
    cal = fit_calibration(logits, y, None)
    assert cal.alpha == 0.0
    assert cal.temperature == pytest.approx(1.0, rel=0.1) or np.allclose(logits, logits[0])


def test_round_trip_through_plain_data():
    cal = Calibration(log_prior_shift=[0.5, -0.2, 0.0], alpha=0.75, temperature=1.4, fit={"n": 3})
    back = Calibration.from_dict(cal.to_dict())
    x = torch.randn(4, 3)
    torch.testing.assert_close(back.apply(x), cal.apply(x))
    assert Calibration.from_dict(None) is None


def test_prior_shift_of_weights_and_sampling():
    s = log_prior_shift(torch.tensor([2.0, 0.5, 0.0]), np.array([1.0, 2.0, 0.0]))
    np.testing.assert_allclose(s, [np.log(2.0), 0.0, 0.0], atol=1e-6)
    assert log_prior_shift(None, None) == []


@pytest.mark.parametrize(
    "bad",
    [{"alpha": 1.0}, {"log_prior_shift": ["x"]}, {"log_prior_shift": [0.0], "temperature": 0.0},
     {"log_prior_shift": [float("nan")]}],
)  # fmt: skip
def test_malformed_calibration_is_one_line_error(bad):
    from geopak_core.errors import GeopakError

    with pytest.raises(GeopakError, match="calibration"):
        Calibration.from_dict(bad)

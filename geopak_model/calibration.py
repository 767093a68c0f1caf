"""Calibrated province probabilities: what ``confidence`` means.

Training with class weights w_c (weighted cross-entropy) or with balanced sampling (province
c shown f_c times as often) moves the minimiser of the loss from the true posterior p(c | x)
to q(c | x) ∝ p(c | x) · w_c · f_c: the head learns a *changed prior*, over-stating the rare
provinces it was told to care about. Logit adjustment (Menon et al., 2021) undoes it exactly:
logits − log(w_c · f_c). What it cannot undo (label smoothing, over-fitting, a short run) a
temperature absorbs. So the calibrated posterior is

    softmax((logits − α · log_prior_shift) / T)

with ``log_prior_shift`` = log(w · f) known from the training run, and (α, T) fitted on val by
minimising the negative log-likelihood (α = 1, T = 1 is the pure theory; α = 0 ignores the
shift). The fit is a small grid, deterministic, and never looks at test. The result travels
inside the checkpoint as plain data (``payload["calibration"]``, see checkpoint.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .metrics import expected_calibration_error

log = logging.getLogger(__name__)

_ALPHAS = np.round(np.arange(0.0, 1.51, 0.125), 4)
_TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 97))


@dataclass
class Calibration:
    """(logits − alpha · log_prior_shift) / temperature, then softmax."""

    log_prior_shift: list[float]
    alpha: float = 1.0
    temperature: float = 1.0
    fit: dict[str, Any] | None = None  # what the val fit measured (n, nll/ece before and after)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated logits (same shape); softmax them for probabilities."""
        shift = torch.tensor(self.log_prior_shift, dtype=torch.float32, device=logits.device)
        if shift.numel() == 0:
            shift = torch.zeros(logits.shape[-1], device=logits.device)
        return (logits.float() - self.alpha * shift) / self.temperature

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a weights_only checkpoint."""
        return {
            "method": "logit_adjustment+temperature",
            "log_prior_shift": [float(x) for x in self.log_prior_shift],
            "alpha": float(self.alpha),
            "temperature": float(self.temperature),
            "fit": dict(self.fit or {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calibration | None:
        """From a checkpoint's plain data; malformed data is one GeopakError (a damaged or
        hand-edited checkpoint must not fail later, mid-prediction)."""
        from geopak_core.errors import GeopakError

        if not data:
            return None
        try:
            cal = cls(
                log_prior_shift=[float(x) for x in data["log_prior_shift"]],
                alpha=float(data.get("alpha", 1.0)),
                temperature=float(data.get("temperature", 1.0)),
                fit=dict(data.get("fit") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GeopakError(f"checkpoint calibration is malformed ({exc!r})") from None
        values = [cal.alpha, cal.temperature, *cal.log_prior_shift]
        if not (np.all(np.isfinite(values)) and cal.temperature > 0):
            raise GeopakError(
                "checkpoint calibration holds non-finite values or a temperature <= 0"
            )
        return cal


def province_probs(model: Any, province_logits: torch.Tensor) -> torch.Tensor:
    """P(province | image) under the model's calibration (plain softmax when it has none)."""
    cal = getattr(model, "calibration", None)
    logits = cal.apply(province_logits) if cal is not None else province_logits.float()
    return torch.softmax(logits, dim=1)


def log_prior_shift(province_weights: Any = None, balance_factors: Any = None) -> list[float]:
    """log(w_c · f_c): the prior change that class weights and balanced sampling make.
    Provinces with weight or factor 0 never appear as a target; their shift is 0."""
    w = np.ones(0)
    for part in (province_weights, balance_factors):
        if part is None:
            continue
        a = np.asarray(part.cpu() if isinstance(part, torch.Tensor) else part, dtype=np.float64)
        w = a if w.size == 0 else w * a
    if w.size == 0:
        return []
    return [float(x) for x in np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), 0.0)]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits)."""
    lp = _log_softmax(np.asarray(logits, dtype=np.float64))
    return float(-lp[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def _ece_of(logits: np.ndarray, labels: np.ndarray) -> float:
    p = np.exp(_log_softmax(logits))
    return expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == labels) or 0.0


def fit_calibration(
    logits: npt.ArrayLike, labels: npt.ArrayLike, shift: list[float] | None = None
) -> Calibration:
    """(α, T) minimising val NLL on a grid (α in 0..1.5, T log-spaced 0.05..20).

    Without a known prior shift only the temperature is fitted. Ties go to the smaller α and
    the T nearest 1, so a model that needs no correction keeps the identity.
    """
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    c = x.shape[1]
    s = np.asarray(shift if shift else [0.0] * c, dtype=np.float64)
    if s.size != c:
        raise ValueError(f"prior shift has {s.size} values, the logits {c} classes")
    alphas = _ALPHAS if np.any(s != 0) else np.array([0.0])
    best = (nll(x, y), 0.0, 1.0)
    for a in alphas:
        adj = x - a * s
        for t in _TEMPERATURES:
            v = nll(adj / t, y)
            if v < best[0] - 1e-9:
                best = (v, float(a), float(t))
    _, a, t = best
    fitted = (x - a * s) / t
    fit = {
        "n": int(y.size),
        "nll_before": nll(x, y),
        "nll_after": nll(fitted, y),
        "ece_before": _ece_of(x, y),
        "ece_after": _ece_of(fitted, y),
    }
    return Calibration(log_prior_shift=[float(v) for v in s], alpha=a, temperature=t, fit=fit)


@torch.inference_mode()
def collect_province_logits(
    model: Any, batches: Iterable[Mapping[str, Any]], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Raw (uncalibrated) province logits and true province ids over ``batches``."""
    was = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in batches:
            if "clip_feat" in batch:
                cf, pf = batch["clip_feat"].to(device), batch["places_feat"].to(device)
            else:
                cf, pf = model.encode(batch["clip"].to(device), batch["places"].to(device))
            logits.append(model.heads(cf, pf)["province_logits"].float().cpu().numpy())
            labels.append(batch["province_id"].cpu().numpy())
    finally:
        model.train(was)
    if not logits:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    return np.concatenate(logits), np.concatenate(labels).astype(np.int64)


def calibrate_model(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device,
    shift: list[float] | None = None,
) -> Calibration | None:
    """Fit on ``batches`` (val) and attach the result to ``model.calibration``."""
    x, y = collect_province_logits(model, batches, device)
    if y.size == 0:
        return None
    cal = fit_calibration(x, y, shift)
    model.calibration = cal
    f = cal.fit or {}
    log.info(
        "calibrated province posterior on %d val images: alpha %.3g, T %.3g, NLL %.3f -> %.3f, "
        "ECE %.3f uncalibrated -> %.3f calibrated",
        f.get("n", 0), cal.alpha, cal.temperature, f.get("nll_before", 0), f.get("nll_after", 0),
        f.get("ece_before", 0), f.get("ece_after", 0),
    )  # fmt: skip
    return cal


def default_shift(model: Any, province_counts: Any) -> list[float]:
    """The prior shift of a checkpoint that does not record one: the default training
    (``balance = "weights"``: class weights with the config's power, no resampling)."""
    from .losses import province_class_weights

    cal = getattr(model, "calibration", None)
    if cal is not None and cal.log_prior_shift:
        return list(cal.log_prior_shift)
    return log_prior_shift(
        province_class_weights(province_counts, model.config.province_weight_power)
    )

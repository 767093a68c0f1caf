"""The four GEOPAK losses as small pure functions, and their weighted total.

* province: weighted cross-entropy, weights ∝ (1 / class frequency) ** power, so Balochistan
  and Azad Kashmir are not drowned by Sindh; optional label smoothing.
* cell: KL(q ‖ p) over the true province's cells, where p is the province head's softmax and
  q(k) ∝ exp(−(d(k, true) − min_j d(j, true)) / τ) with haversine d in km: confusing a
  neighbouring cell costs less than confusing one across the province.
* offset: haversine km between (true cell center + predicted offset) and the true location.
* aux: haversine km between the auxiliary head's (lat, lon) and the true location.

All distances are computed in at least float32 (bf16 cannot resolve a few km at 30°N).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geopak_core.geo import EARTH_RADIUS_KM

from .cells import CellTable
from .config import ModelConfig
from .model import conditional_cell_log_probs

_EPS_A = 1e-18  # below this haversine "a" the distance is ~0 (< 0.02 m); sqrt' would be inf


def _f32(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t if t.dtype == torch.float64 else t.float()


def haversine_km_torch(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> torch.Tensor:
    """Great-circle distance in km (R = 6371.0088), broadcasting, with finite gradients.

    The naive 2R·asin(√a) has an infinite derivative at a = 0 (prediction exactly on the
    target), which would turn a whole batch's gradients into NaN; such entries return 0 with
    zero gradient instead.
    """
    lat1, lon1, lat2, lon2 = (torch.deg2rad(_f32(v)) for v in (lat1, lon1, lat2, lon2))
    a = (
        torch.sin((lat2 - lat1) / 2) ** 2
        + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    )
    ok = a > _EPS_A
    a_safe = torch.where(ok, a, torch.ones_like(a)).clamp(max=1.0)
    d = 2.0 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a_safe))
    return torch.where(ok, d, torch.zeros_like(d))


def province_class_weights(
    counts: Any, power: float = 1.0, num_provinces: int | None = None
) -> torch.Tensor:
    """Per-province CE weights ∝ (1 / frequency) ** power, scaled so a balanced dataset gets
    all ones (w_c = (N / (C · n_c)) ** power over the C provinces present). Provinces with no
    samples get weight 0 (they never appear as a target). ``num_provinces``: the region
    table's size, checked against ``counts`` when given."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64), dtype=torch.float64)
    if num_provinces is not None and n.numel() != int(num_provinces):
        raise ValueError(f"expected {int(num_provinces)} province counts, got {n.numel()}")
    present = n > 0
    if not bool(present.any()):
        raise ValueError("all province counts are zero")
    w = torch.zeros_like(n)
    w[present] = (n.sum() / (present.sum() * n[present])) ** power
    return w.float()


def province_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Weighted cross-entropy (torch's definition: mean weighted by the targets' weights)."""
    w = None if weights is None else weights.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(
        logits.float(), target.long(), weight=w, label_smoothing=float(smoothing)
    )


def smoothed_cell_targets(
    true_lat: torch.Tensor,
    true_lon: torch.Tensor,
    in_province: torch.Tensor,
    centers: torch.Tensor,
    tau_km: float,
) -> torch.Tensor:
    """q (B, N): softmax of −(d − d_min)/τ over the cells where ``in_province`` (B, N) is True.

    ``in_province[b]`` marks the cells of sample b's true province; other cells get q = 0.
    Subtracting d_min changes nothing mathematically but keeps exp() in range for far photos.
    """
    d = haversine_km_torch(
        true_lat[:, None], true_lon[:, None], centers[None, :, 0], centers[None, :, 1]
    )
    d = d.masked_fill(~in_province, float("inf"))
    d_min = d.min(dim=1, keepdim=True).values
    logits = (-(d - d_min) / float(tau_km)).masked_fill(~in_province, float("-inf"))
    q = torch.softmax(logits, dim=1)
    return torch.nan_to_num(q, nan=0.0)  # a row with no cells at all: no target, no loss


def cell_loss(
    cell_logits: torch.Tensor,
    true_lat: torch.Tensor,
    true_lon: torch.Tensor,
    true_province: torch.Tensor,
    cell_province: torch.Tensor,
    centers: torch.Tensor,
    tau_km: float,
) -> torch.Tensor:
    """Mean over the batch of KL(q ‖ p) on the true province's cells, p = P(cell | province)."""
    in_province = cell_province[None, :] == true_province[:, None].long()
    q = smoothed_cell_targets(true_lat, true_lon, in_province, centers, tau_km)
    log_p = conditional_cell_log_probs(cell_logits, cell_province)
    kl = torch.xlogy(q, q) - q * log_p.masked_fill(~in_province, 0.0)
    return kl.sum(dim=1).mean()


def offset_loss(
    offset: torch.Tensor,
    cell_ids: torch.Tensor,
    centers: torch.Tensor,
    true_lat: torch.Tensor,
    true_lon: torch.Tensor,
) -> torch.Tensor:
    """Mean haversine km between (center of ``cell_ids`` + offset) and the true location."""
    pred = centers[cell_ids.long()] + offset.float()
    return haversine_km_torch(pred[:, 0], pred[:, 1], true_lat, true_lon).mean()


def aux_loss(
    aux_latlon: torch.Tensor, true_lat: torch.Tensor, true_lon: torch.Tensor
) -> torch.Tensor:
    """Mean haversine km of the auxiliary (lat, lon) regression."""
    return haversine_km_torch(aux_latlon[:, 0], aux_latlon[:, 1], true_lat, true_lon).mean()


def phase_lambdas(config: ModelConfig, phase: int | None) -> dict[str, float]:
    """Loss weights for a phase. Phase 0 trains the province path only: the other heads are
    frozen then, but their losses would still push gradients into the shared fusion layer."""
    lam = {
        "prov": config.lambda_prov,
        "cell": config.lambda_cell,
        "off": config.lambda_off,
        "aux": config.lambda_aux,
    }
    if phase == 0:
        lam.update(cell=0.0, off=0.0, aux=0.0)
    return lam


def total_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cells: CellTable,
    config: ModelConfig,
    *,
    model: torch.nn.Module | None = None,
    province_weights: torch.Tensor | None = None,
    phase: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """λ_prov·L_prov + λ_cell·L_cell + λ_off·L_off + λ_aux·L_aux, and the detached parts.

    ``batch`` holds ``lat``, ``lon``, ``province_id``, ``cell_id`` tensors. The offset is
    teacher-forced on the true cell: ``outputs["offset"]`` (from ``model(..., cell_ids=...)``)
    or, when absent, computed with ``model.offset``. ``province_weights`` defaults to
    ``province_class_weights`` of the cell table's ``n_samples`` (power from the config).
    Terms whose λ is 0 are skipped entirely.
    """
    device = outputs["province_logits"].device
    lat, lon = batch["lat"].to(device), batch["lon"].to(device)
    prov, cell = batch["province_id"].to(device).long(), batch["cell_id"].to(device).long()
    centers = torch.tensor(
        np.stack([cells.center_lat, cells.center_lon], axis=1), dtype=torch.float32, device=device
    )
    cell_province = torch.as_tensor(cells.province_id, device=device)
    lam = phase_lambdas(config, phase)

    if province_weights is None and config.province_weight_power > 0:
        counts = cells.province_counts()
        if counts is not None and counts.sum() > 0:
            province_weights = province_class_weights(
                counts, config.province_weight_power, cells.num_provinces
            )

    parts: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=device)
    if lam["prov"] > 0:
        parts["prov"] = province_loss(
            outputs["province_logits"], prov, province_weights, config.province_smoothing
        )
    if lam["cell"] > 0:
        parts["cell"] = cell_loss(
            outputs["cell_logits"], lat, lon, prov, cell_province, centers, config.tau_km
        )
    if lam["off"] > 0:
        off = outputs.get("offset")
        if off is None:
            if model is None:
                raise ValueError(
                    "total_loss needs outputs['offset'] or model= to compute the offset loss"
                )
            off = model.offset(outputs["fused"], cell, prov)
        parts["off"] = offset_loss(off, cell, centers, lat, lon)
    if lam["aux"] > 0:
        parts["aux"] = aux_loss(outputs["aux_latlon"], lat, lon)
    for name, value in parts.items():
        total = total + lam[name] * value
    detached = {k: v.detach() for k, v in parts.items()}
    detached["total"] = total.detach()
    return total, detached

"""Mixture-of-hypotheses inference: what every reported distance is measured on.

For each image: the top-P provinces, the top-K cells within each, one refined coordinate per
candidate (cell center + the offset head's output for that cell), and the joint probability
P(i) = P(province | image) · P(cell | image, province) with the province posterior
calibrated (calibration.py). The answer aggregates the candidates (aggregate.py): ``mode``
(default) answers inside the heaviest geographic mode, ``best`` with the single most
probable candidate, ``mean`` with the seed's probability-weighted mean (kept for
comparison: between two distant hypotheses it lands where neither believes in). Nothing
here reads a label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .aggregate import AGGREGATES, keep_inside, mode_answer
from .calibration import province_probs
from .cells import CellTable
from .model import GeopakModel, conditional_cell_log_probs

# Columns of the ``hypotheses`` tensor.
H_PROVINCE, H_CELL, H_LAT, H_LON, H_PROB = range(5)


def joint_cell_probs(model_outputs: Mapping[str, torch.Tensor], model: GeopakModel) -> torch.Tensor:
    """P(cell) = P(province of cell) · P(cell | province), (B, N); rows sum to ~1 over the
    provinces that have cells. What cell top-1/top-5 accuracy should rank."""
    p_prov = province_probs(model, model_outputs["province_logits"])
    cond = conditional_cell_log_probs(model_outputs["cell_logits"], model.cell_province).exp()
    return p_prov[:, model.cell_province] * cond


def mixture_of_hypotheses(
    model_outputs: Mapping[str, torch.Tensor],
    model: GeopakModel,
    cells: CellTable | None = None,
    top_provinces: int = 2,
    top_cells: int = 5,
    mode: str = "mode",
) -> dict[str, torch.Tensor]:
    """Answer from head outputs (``model.heads``/``forward``): a dict of tensors

    * ``lat``, ``lon`` (B,) degrees: the answer under the aggregation ``mode`` (``mean``:
      weighted mean of all hypotheses; ``best``: the most probable one; ``mode``: the
      weighted spherical mean of the heaviest geographic mode, see aggregate.py);
    * ``province_id`` (B,): the top province ("mean"), the best hypothesis' province
      ("best"), the heaviest mode's province ("mode");
    * ``confidence`` (B,): the calibrated P(province_id | image);
    * ``cell_id`` (B,): the most probable hypothesis behind the answer (for "mode": the best
      of the chosen mode), the cell retrieval refinement works in;
    * ``province_probs`` (B, C): calibrated;
    * ``hypotheses`` (B, P·K, 5): rows (province_id, cell_id, lat, lon, prob), most probable
      first; prob is the joint P(i) normalised over the listed hypotheses (sums to 1). Where
      a province has fewer than K cells the spare rows are padding: province_id = cell_id =
      -1, prob = 0, lat = lon = 0;
    * ``fallback_latlon`` (B, F, 2): where the answer goes if polygons say it left its
      province (aggregate.keep_inside), most preferred first.

    Provinces without any cell cannot be chosen (there is no head to refine them).
    """
    if mode not in AGGREGATES:
        raise ValueError(f"mode must be one of {', '.join(AGGREGATES)}, got {mode!r}")
    if cells is not None and cells.num_cells != model.cell_centers.shape[0]:
        raise ValueError(
            f"cell table has {cells.num_cells} cells, the model {model.cell_centers.shape[0]}"
        )
    P, K = int(top_provinces), int(top_cells)
    fused = model_outputs["fused"]
    B, N = model_outputs["cell_logits"].shape
    cell_province = model.cell_province
    dev = fused.device

    p_prov = province_probs(model, model_outputs["province_logits"])  # (B, C regions), calibrated
    C = p_prov.shape[1]
    has_cells = torch.bincount(cell_province, minlength=C) > 0
    P = min(P, int(has_cells.sum()))
    sel_prob, sel_prov = p_prov.masked_fill(~has_cells, -1.0).topk(P, dim=1)  # (B, P)

    cond = conditional_cell_log_probs(model_outputs["cell_logits"], cell_province)  # (B, N)
    in_sel = cell_province[None, None, :] == sel_prov[:, :, None]  # (B, P, N)
    k = min(K, N)
    cell_logp, cell_idx = (
        cond[:, None, :].masked_fill(~in_sel, float("-inf")).topk(k, dim=2)
    )  # (B, P, k)
    valid = torch.isfinite(cell_logp)
    joint = torch.where(valid, sel_prob[:, :, None] * cell_logp.exp(), torch.zeros_like(cell_logp))

    cell_ids = torch.where(valid, cell_idx, torch.zeros_like(cell_idx)).reshape(B, P * k)
    prov_ids = sel_prov[:, :, None].expand(B, P, k).reshape(B, P * k)
    joint, valid = joint.reshape(B, P * k), valid.reshape(B, P * k)
    joint = joint / joint.sum(dim=1, keepdim=True).clamp_min(1e-30)
    pred = (
        model.cell_centers[cell_ids] + model.offset(fused, cell_ids, prov_ids).float()
    )  # (B, M, 2)

    # most probable first: what the table shows and the order mode grouping takes leaders in
    order = joint.argsort(dim=1, descending=True, stable=True)
    joint, valid = joint.gather(1, order), valid.gather(1, order)
    cell_ids, prov_ids = cell_ids.gather(1, order), prov_ids.gather(1, order)
    pred = pred.gather(1, order[:, :, None].expand(-1, -1, 2))
    rows = torch.arange(B, device=dev)
    answer, province_id, pick, member = _aggregate(
        mode, model, pred, joint, cell_ids, prov_ids, valid, sel_prov, C
    )

    hyp = torch.stack(
        [
            torch.where(valid, prov_ids, -1).float(),
            torch.where(valid, cell_ids, -1).float(),
            torch.where(valid, pred[..., 0], 0.0),
            torch.where(valid, pred[..., 1], 0.0),
            joint,
        ],
        dim=2,
    )
    if k < K:  # fewer cells in the whole table than K: pad to the documented P·K rows
        pad = torch.zeros(B, P * (K - k), 5, device=dev)
        pad[..., H_PROVINCE] = -1
        pad[..., H_CELL] = -1
        hyp = torch.cat([hyp, pad], dim=1)

    best_cell = cell_ids[rows, pick]
    return {
        "lat": answer[:, 0],
        "lon": answer[:, 1],
        "province_id": province_id,
        "confidence": p_prov[rows, province_id],
        "cell_id": best_cell,
        "province_probs": p_prov,
        "hypotheses": hyp,
        "fallback_latlon": torch.stack([pred[rows, pick], model.cell_centers[best_cell]], dim=1),
        # the cells behind the answer (-1 padded): where retrieval refinement may look
        "answer_cells": torch.where(member & valid, cell_ids, -1),
    }


def _aggregate(
    mode: str,
    model: GeopakModel,
    pred: torch.Tensor,
    joint: torch.Tensor,
    cell_ids: torch.Tensor,
    prov_ids: torch.Tensor,
    valid: torch.Tensor,
    sel_prov: torch.Tensor,
    num_provinces: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(answer (B, 2), province_id (B,), row of the hypothesis behind it (B,), rows that make
    the answer (B, M) bool) on rows sorted most probable first."""
    B, M = joint.shape
    first = torch.zeros(B, dtype=torch.long, device=joint.device)  # rows are sorted: 0 is best
    only_first = (torch.arange(M, device=joint.device) == 0).expand(B, M)
    if mode == "mean":
        return (joint[:, :, None] * pred).sum(dim=1), sel_prov[:, 0], first, only_first
    if mode == "best":
        return pred[:, 0], prov_ids[:, 0], first, only_first
    radius = model.cell_radius_km[cell_ids].clamp_min(model.config.offset_min_radius_km)
    m = mode_answer(pred, joint, torch.where(valid, prov_ids, 0), radius, valid, num_provinces)
    return m["latlon"], m["province_id"], m["best"], m["member"]


def answer(
    outputs: Mapping[str, torch.Tensor],
    model: GeopakModel,
    *,
    mode: str = "mode",
    top_provinces: int | None = None,
    top_cells: int | None = None,
    shapes: Any = None,
    index: Any = None,
) -> dict[str, torch.Tensor]:
    """The full answer from head outputs: aggregation, the province-polygon check (when
    ``shapes`` is given) and retrieval refinement (when a ``retrieval.RetrievalIndex`` is)."""
    cfg = model.config
    r = mixture_of_hypotheses(
        outputs,
        model,
        top_provinces=cfg.top_provinces if top_provinces is None else top_provinces,
        top_cells=cfg.top_cells if top_cells is None else top_cells,
        mode=mode,
    )
    if mode != "mean":  # the seed's mean is kept as it was, for comparison
        keep_inside(r, shapes)
    if index is not None:  # duck-typed: retrieval.py builds on this module, not the reverse
        r = index.refine_outputs(r, outputs)
    return r


def _run(
    model: GeopakModel,
    fn: Callable[[], Mapping[str, torch.Tensor]],
    top_provinces: int | None,
    top_cells: int | None,
    mode: str | None,
    **kw: Any,
) -> dict[str, torch.Tensor]:
    """Evaluate ``fn()`` -> head outputs in eval mode and inference_mode, restoring the mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return answer(
                fn(),
                model,
                mode=model.config.inference_mode if mode is None else mode,
                top_provinces=top_provinces,
                top_cells=top_cells,
                **kw,
            )
    finally:
        model.train(was_training)


def _device(model: GeopakModel) -> torch.device:
    return model.cell_centers.device


def predict_batch(
    model: GeopakModel,
    clip_pixels: torch.Tensor,
    places_pixels: torch.Tensor,
    top_provinces: int | None = None,
    top_cells: int | None = None,
    mode: str | None = None,
    *,
    shapes: Any = None,
    index: Any = None,
) -> dict[str, torch.Tensor]:
    """Images -> answers, end to end. Defaults (P, K, mode) come from the model's config;
    inputs are moved to the model's device; the model's train/eval mode is left as found.
    ``shapes`` (aggregate.ProvinceShapes) keeps answers inside their province; ``index``
    (retrieval.RetrievalIndex) refines them."""
    dev = _device(model)
    return _run(
        model,
        lambda: model(clip_pixels.to(dev), places_pixels.to(dev)),
        top_provinces,
        top_cells,
        mode,
        shapes=shapes,
        index=index,
    )


def predict_features(
    model: GeopakModel,
    clip_feat: torch.Tensor,
    places_feat: torch.Tensor,
    top_provinces: int | None = None,
    top_cells: int | None = None,
    mode: str | None = None,
    *,
    shapes: Any = None,
    index: Any = None,
) -> dict[str, torch.Tensor]:
    """As ``predict_batch`` from cached encoder features (the embedding cache)."""
    dev = _device(model)
    return _run(
        model,
        lambda: model.heads(clip_feat.to(dev), places_feat.to(dev)),
        top_provinces,
        top_cells,
        mode,
        shapes=shapes,
        index=index,
    )

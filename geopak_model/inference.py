"""Mixture-of-hypotheses inference: what every reported distance is measured on.

For each image: the top-P provinces, the top-K cells within each, one refined coordinate per
candidate (cell center + the offset head's output for that cell), and the joint probability
P(i) = P(province | image) · P(cell | image, province). The answer is either the
probability-weighted mean of the candidates (``mode="mean"``, the seed's default) or the
single most probable candidate (``mode="best"``: a mean of two distant hypotheses can land
between them, somewhere neither hypothesis believes in). Nothing here reads a label.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from geopak_core.regions import NUM_PROVINCES

from .cells import CellTable
from .model import GeopakModel, conditional_cell_log_probs

# Columns of the ``hypotheses`` tensor.
H_PROVINCE, H_CELL, H_LAT, H_LON, H_PROB = range(5)


def joint_cell_probs(model_outputs: Mapping[str, torch.Tensor], model: GeopakModel) -> torch.Tensor:
    """P(cell) = P(province of cell) · P(cell | province), (B, N); rows sum to ~1 over the
    provinces that have cells. What cell top-1/top-5 accuracy should rank."""
    p_prov = torch.softmax(model_outputs["province_logits"].float(), dim=1)
    cond = conditional_cell_log_probs(model_outputs["cell_logits"], model.cell_province).exp()
    return p_prov[:, model.cell_province] * cond


def mixture_of_hypotheses(
    model_outputs: Mapping[str, torch.Tensor],
    model: GeopakModel,
    cells: CellTable | None = None,
    top_provinces: int = 2,
    top_cells: int = 5,
    mode: str = "mean",
) -> dict[str, torch.Tensor]:
    """Answer from head outputs (``model.heads``/``forward``): a dict of tensors

    * ``lat``, ``lon`` (B,) degrees: the answer (weighted mean, or best hypothesis);
    * ``province_id`` (B,): the top province ("mean") or the best hypothesis' province ("best");
    * ``confidence`` (B,): P(province_id | image);
    * ``cell_id`` (B,): the most probable hypothesis' cell;
    * ``province_probs`` (B, 7);
    * ``hypotheses`` (B, P·K, 5): rows (province_id, cell_id, lat, lon, prob), most probable
      first; prob is the joint P(i), un-normalised. Where a province has fewer than K cells
      the spare rows are padding: province_id = cell_id = -1, prob = 0, lat = lon = 0.

    Provinces without any cell cannot be chosen (there is no head to refine them).
    """
    if mode not in ("mean", "best"):
        raise ValueError(f"mode must be 'mean' or 'best', got {mode!r}")
    if cells is not None and cells.num_cells != model.cell_centers.shape[0]:
        raise ValueError(
            f"cell table has {cells.num_cells} cells, the model {model.cell_centers.shape[0]}"
        )
    P, K = int(top_provinces), int(top_cells)
    fused = model_outputs["fused"]
    B, N = model_outputs["cell_logits"].shape
    cell_province = model.cell_province
    dev = fused.device

    p_prov = torch.softmax(model_outputs["province_logits"].float(), dim=1)  # (B, 7)
    has_cells = torch.bincount(cell_province, minlength=NUM_PROVINCES) > 0
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
    pred = (
        model.cell_centers[cell_ids] + model.offset(fused, cell_ids, prov_ids).float()
    )  # (B, M, 2)

    best = joint.argmax(dim=1)
    rows = torch.arange(B, device=dev)
    if mode == "mean":
        w = joint / joint.sum(dim=1, keepdim=True)
        answer = (w[:, :, None] * pred).sum(dim=1)
        province_id = sel_prov[:, 0]
    else:
        answer = pred[rows, best]
        province_id = prov_ids[rows, best]

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
    order = joint.argsort(dim=1, descending=True, stable=True)
    hyp = hyp.gather(1, order[:, :, None].expand(-1, -1, 5))
    if k < K:  # fewer cells in the whole table than K: pad to the documented P·K rows
        pad = torch.zeros(B, P * (K - k), 5, device=dev)
        pad[..., H_PROVINCE] = -1
        pad[..., H_CELL] = -1
        hyp = torch.cat([hyp, pad], dim=1)

    return {
        "lat": answer[:, 0],
        "lon": answer[:, 1],
        "province_id": province_id,
        "confidence": p_prov[rows, province_id],
        "cell_id": cell_ids[rows, best],
        "province_probs": p_prov,
        "hypotheses": hyp,
    }


def _run(
    model: GeopakModel, fn, top_provinces: int | None, top_cells: int | None, mode: str | None
) -> dict[str, torch.Tensor]:
    """Evaluate ``fn()`` -> head outputs in eval mode and inference_mode, restoring the mode."""
    cfg = model.config
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            outputs = fn()
            return mixture_of_hypotheses(
                outputs,
                model,
                top_provinces=cfg.top_provinces if top_provinces is None else top_provinces,
                top_cells=cfg.top_cells if top_cells is None else top_cells,
                mode=cfg.inference_mode if mode is None else mode,
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
) -> dict[str, torch.Tensor]:
    """Images -> answers, end to end. Defaults (P, K, mode) come from the model's config;
    inputs are moved to the model's device; the model's train/eval mode is left as found."""
    dev = _device(model)
    return _run(
        model,
        lambda: model(clip_pixels.to(dev), places_pixels.to(dev)),
        top_provinces,
        top_cells,
        mode,
    )


def predict_features(
    model: GeopakModel,
    clip_feat: torch.Tensor,
    places_feat: torch.Tensor,
    top_provinces: int | None = None,
    top_cells: int | None = None,
    mode: str | None = None,
) -> dict[str, torch.Tensor]:
    """As ``predict_batch`` from cached encoder features (the embedding cache)."""
    dev = _device(model)
    return _run(
        model,
        lambda: model.heads(clip_feat.to(dev), places_feat.to(dev)),
        top_provinces,
        top_cells,
        mode,
    )

"""End-to-end evaluation of a model on one split of a shard folder, with its baselines.

The prediction path is the predictor's: pixels (or their cached encoder features) go through
the heads and the mixture of hypotheses, and nothing read from the label (true cell, true
province) reaches it. Labels are used afterwards, only to score. The same report carries
the two constant baselines computed from the training split, so a number is never read
without its floor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopak_core.errors import GeopakError
from geopak_core.geo import haversine_km

from . import metrics as M
from .data import ShardFolder
from .runtime import autocast

log = logging.getLogger(__name__)

TOPK_CELLS = 5


def ranked_cells(
    outputs: Mapping[str, torch.Tensor], model: Any, k: int = TOPK_CELLS
) -> torch.Tensor:
    """Cells ordered by joint probability P(province) * P(cell | province), top k: (B, k)."""
    from .inference import joint_cell_probs

    joint = joint_cell_probs(outputs, model)
    return joint.topk(min(k, joint.shape[1]), dim=-1).indices


@dataclass
class Answers:
    """One aggregation's per-sample answers (row-aligned with the Predictions' truths)."""

    lat: list[np.ndarray] = field(default_factory=list)
    lon: list[np.ndarray] = field(default_factory=list)
    province: list[np.ndarray] = field(default_factory=list)
    confidence: list[np.ndarray] = field(default_factory=list)

    def add(self, pred: Mapping[str, Any]) -> None:
        self.lat.append(_np(pred["lat"]).astype(np.float64))
        self.lon.append(_np(pred["lon"]).astype(np.float64))
        self.province.append(_np(pred["province_id"]).astype(np.int64))
        self.confidence.append(_np(pred["confidence"]))

    def array(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0)


@dataclass
class Predictions:
    """Per-sample answers and truths of one evaluated split, row-aligned."""

    key: list[str] = field(default_factory=list)
    pred_lat: list[np.ndarray] = field(default_factory=list)
    pred_lon: list[np.ndarray] = field(default_factory=list)
    pred_province: list[np.ndarray] = field(default_factory=list)
    confidence: list[np.ndarray] = field(default_factory=list)
    ranked: list[np.ndarray] = field(default_factory=list)
    true_lat: list[np.ndarray] = field(default_factory=list)
    true_lon: list[np.ndarray] = field(default_factory=list)
    true_province: list[np.ndarray] = field(default_factory=list)
    true_cell: list[np.ndarray] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_parts: dict[str, float] = field(default_factory=dict)
    # every aggregation measured on the same images (geopak-eval's by_aggregate)
    by_aggregate: dict[str, Answers] = field(default_factory=dict)

    def array(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0)

    def __len__(self) -> int:
        return len(self.key)

    def errors_km(self) -> np.ndarray:
        return haversine_km(
            self.array("pred_lat"),
            self.array("pred_lon"),
            self.array("true_lat"),
            self.array("true_lon"),
        )


def _encode(model: Any, batch: Mapping[str, Any], device: torch.device):
    if "clip_feat" in batch:
        return batch["clip_feat"].to(device), batch["places_feat"].to(device)
    return model.encode(batch["clip"].to(device), batch["places"].to(device))


def _answers(
    model: Any, outputs: Mapping[str, torch.Tensor], names: Iterable[str], shapes: Any, index: Any
) -> dict[str, dict[str, Any]]:
    """Each named aggregation of the same head outputs ("refine" = mode + retrieval)."""
    from .inference import answer

    return {
        name: answer(
            outputs,
            model,
            mode="mode" if name == "refine" else name,
            shapes=shapes,
            index=index if name == "refine" else None,
        )
        for name in names
    }


@torch.inference_mode()
def predict_batches(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device,
    *,
    amp: bool = True,
    loss_fn: Any = None,
    progress_bar: Any = None,
    aggregate: str | None = None,
    compare: Iterable[str] = (),
    shapes: Any = None,
    index: Any = None,
) -> Predictions:
    """Run the model over batches of pixels (``clip``/``places``) or features (``clip_feat``).

    The headline answer uses ``aggregate`` (default: the model config's); every name in
    ``compare`` (mean, best, mode, refine) is also scored on the same images, from the same
    head outputs, into ``Predictions.by_aggregate``. ``shapes`` keeps answers inside their
    province, ``index`` enables "refine".

    ``loss_fn(outputs_with_offset, batch) -> (total, parts)`` optionally also measures the
    training loss on these samples (the offset is then evaluated at the *true* cell, as in
    training; that loss is a diagnostic, never part of the prediction).
    """
    aggregate = aggregate or model.config.inference_mode
    names = list(dict.fromkeys([aggregate, *compare]))
    was_training = model.training
    model.eval()
    out = Predictions(by_aggregate={n: Answers() for n in compare})
    try:
        for batch in batches:
            with autocast(device, amp):
                outputs = model.heads(*_encode(model, batch, device))
                answers = _answers(model, outputs, names, shapes, index)
                ranked = ranked_cells(outputs, model)
                if loss_fn is not None:
                    _add_loss(out, model, outputs, batch, device, loss_fn)
            pred = answers[aggregate]
            for name in compare:
                out.by_aggregate[name].add(answers[name])
            out.key += list(batch["key"])
            out.pred_lat.append(_np(pred["lat"]).astype(np.float64))
            out.pred_lon.append(_np(pred["lon"]).astype(np.float64))
            out.pred_province.append(_np(pred["province_id"]).astype(np.int64))
            out.confidence.append(_np(pred["confidence"]))
            out.ranked.append(_np(ranked).astype(np.int64))
            out.true_lat.append(_np(batch["lat"]))
            out.true_lon.append(_np(batch["lon"]))
            out.true_province.append(_np(batch["province_id"]).astype(np.int64))
            out.true_cell.append(_np(batch["cell_id"]).astype(np.int64))
            if progress_bar is not None:
                progress_bar.update(len(batch["key"]))
    finally:
        model.train(was_training)
    return out


def _add_loss(
    out: Predictions,
    model: Any,
    outputs: Mapping[str, Any],
    batch: Mapping[str, torch.Tensor],
    device: torch.device,
    loss_fn: Callable[..., Any],
):
    labels = {k: batch[k].to(device) for k in ("lat", "lon", "province_id", "cell_id")}
    outputs = {
        **outputs,
        "offset": model.offset(outputs["fused"], labels["cell_id"], labels["province_id"]),
    }
    total, parts = loss_fn(outputs, labels)
    n = len(batch["key"])
    out.loss_sum += float(total) * n
    for k, v in parts.items():
        out.loss_parts[k] = out.loss_parts.get(k, 0.0) + float(v) * n


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return (
            x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
        )
    return np.asarray(x)


def baseline_answers_for(folder: ShardFolder) -> dict[str, dict[str, Any]]:
    """The two constant answers from the folder's training split (labels only, no image read)."""
    import pyarrow.parquet as pq

    train = folder.labels("train")
    if len(train["key"]) == 0:
        raise GeopakError(
            f"{folder.root}: the train split is empty; baselines need training labels"
        )
    cells = pq.read_table(
        folder.cells_path, columns=["cell_id", "province_id", "center_lat", "center_lon"]
    ).to_pandas()
    cells = cells.sort_values("cell_id")
    return M.baseline_answers(
        train_cell_ids=train["cell_id"],
        train_lat=train["lat"],
        train_lon=train["lon"],
        cell_province=cells["province_id"].to_numpy(),
        cell_lat=cells["center_lat"].to_numpy(),
        cell_lon=cells["center_lon"].to_numpy(),
        k=TOPK_CELLS,
    )


def report(
    preds: Predictions,
    baselines: Mapping[str, Mapping[str, Any]] | None,
    province_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The contract's metrics for the model, and the same for each baseline on these samples
    (per-region accuracy named by ``province_names``, the region table's names)."""
    truth = {
        "true_lat": preds.array("true_lat"),
        "true_lon": preds.array("true_lon"),
        "true_province": preds.array("true_province"),
        "true_cell": preds.array("true_cell"),
    }
    out = M.compute_metrics(
        pred_lat=preds.array("pred_lat"),
        pred_lon=preds.array("pred_lon"),
        pred_province=preds.array("pred_province"),
        ranked_cells=np.concatenate(preds.ranked) if preds.ranked else np.zeros((0, TOPK_CELLS)),
        province_names=province_names,
        **truth,
    )
    correct = preds.array("pred_province") == truth["true_province"]
    out["province_ece"] = M.expected_calibration_error(preds.array("confidence"), correct)
    if preds.by_aggregate:
        out["by_aggregate"] = {
            name: M.aggregate_metrics(
                pred_lat=a.array("lat"),
                pred_lon=a.array("lon"),
                pred_province=a.array("province"),
                confidence=a.array("confidence"),
                true_lat=truth["true_lat"],
                true_lon=truth["true_lon"],
                true_province=truth["true_province"],
            )
            for name, a in preds.by_aggregate.items()
        }
    if baselines:
        out["baselines"] = M.baseline_metrics(baselines, province_names=province_names, **truth)
    if len(preds) and preds.loss_parts:
        out["val_loss"] = preds.loss_sum / len(preds)
        out["val_loss_parts"] = {k: v / len(preds) for k, v in preds.loss_parts.items()}
    return out


def write_plots(
    preds: Predictions,
    result: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]] | None,
    folder: str | Path,
    prefix: str = "",
    province_names: Sequence[str] | None = None,
) -> list[Path]:
    """Error CDF (model and baselines), per-province accuracy and the confusion matrix."""
    from . import plots

    folder = Path(folder)
    errors = {"model": preds.errors_km()}
    for name, ans in (baselines or {}).items():
        errors[name] = haversine_km(
            ans["lat"], ans["lon"], preds.array("true_lat"), preds.array("true_lon")
        )
    by = {"model": result.get("province_acc_by_province", {})}
    for name, res in (result.get("baselines") or {}).items():
        by[name] = res.get("province_acc_by_province", {})
    return [
        plots.error_cdf(errors, folder / f"{prefix}error_cdf.png"),
        plots.province_accuracy(by, folder / f"{prefix}province_accuracy.png", province_names),
        plots.confusion(
            M.confusion_matrix(
                preds.array("true_province"),
                preds.array("pred_province"),
                len(province_names) if province_names is not None else M.PAKISTAN.n,
            ),
            folder / f"{prefix}confusion.png",
            province_names,
        ),
    ]


def evaluate_checkpoint(
    *,
    shards: str | Path,
    checkpoint: str | Path,
    split: str = "test",
    batch_size: int = 64,
    device: str | None = "auto",
    num_workers: int = 2,
    features: str | Path | None = None,
    plots_dir: str | Path | None = None,
    amp: bool = True,
    aggregate: str = "mode",
    refine: bool = False,
    build_index: bool = False,
    calibrate: bool = False,
    boundaries: str | Path | bool | None = None,
    skip_bad_shards: bool = False,
) -> dict[str, Any]:
    """What ``geopak-eval`` prints: the checkpoint's end-to-end metrics on ``split`` of the
    shard folder, with both baselines (from the folder's train split) on the same samples,
    and ``by_aggregate``: mean / best / mode (and refine, when the checkpoint has a retrieval
    index) scored on the same images in the same pass.

    ``calibrate`` first fits the province calibration on val and stores it in the checkpoint
    (for checkpoints trained before training did so itself); ``build_index`` first builds the
    retrieval index next to the checkpoint (train embeddings, threshold fitted on val).
    ``boundaries``: polygons that keep answers inside their province (None: the local file
    of ``GEOPAK_BOUNDARIES``/the cache when there is one; False: none).
    """
    from geopak_core.progress import progress

    from .aggregate import ProvinceShapes, check_aggregate
    from .data import open_shard_folder
    from .factory import make_model
    from .runtime import resolve_device

    check_aggregate(aggregate)
    folder = open_shard_folder(shards, skip_bad_shards=skip_bad_shards)
    folder.require_split(split)
    dev = resolve_device(device)
    model, payload = make_model(checkpoint=checkpoint, folder=folder, device=dev)
    batches_of = _batch_source(model, folder, features, batch_size, num_workers)
    if calibrate:
        from .calibration import default_shift

        folder.require_split("val")
        shift = default_shift(model, folder.province_counts("train"))
        calibrate_checkpoint(checkpoint, batches_of("val"), dev, shift)
        model, payload = make_model(checkpoint=checkpoint, folder=folder, device=dev)
    country = model.cells.regions.country or "PAK"
    shapes = None if boundaries is False else ProvinceShapes.load(boundaries or None, country)
    index = _retrieval_index(model, checkpoint, batches_of, dev, shapes, build=build_index)
    if refine and index is None:
        raise GeopakError(
            f"--refine needs a retrieval index next to {checkpoint}; build it with --build-index"
        )
    compare = ["mean", "best", "mode"] + (["refine"] if index is not None else [])
    headline = "refine" if refine else aggregate
    with progress(total=folder.size(split) or None, desc=f"eval {split}", unit="img") as bar:
        preds = predict_batches(
            model, batches_of(split), dev, amp=amp, progress_bar=bar,
            aggregate=headline, compare=compare, shapes=shapes, index=index,
        )  # fmt: skip
    if len(preds) == 0:
        raise GeopakError(f"split '{split}' of {folder.root} has no samples")
    baselines = baseline_answers_for(folder)
    names = model.cells.regions.names
    result = report(preds, baselines, names)
    cfg = model.config
    cal = getattr(model, "calibration", None)
    result = {
        "split": split,
        "checkpoint": str(checkpoint),
        "skipped_samples": folder.skipped(split),
        "encoders": model.encoder_provenance,
        "inference": {
            "top_provinces": cfg.top_provinces,
            "top_cells": cfg.top_cells,
            "mode": headline,
            "aggregate": headline,
            "province_check": shapes is not None,
            "calibration": cal.to_dict() if cal is not None else None,
            "retrieval": index.describe() if index is not None else None,
        },
        **result,
    }
    if plots_dir is not None:
        result["plots"] = [
            str(p)
            for p in write_plots(
                preds, result, baselines, plots_dir, prefix=f"{split}_", province_names=names
            )
        ]
    return result


def _batch_source(model: Any, folder: Any, features: Any, batch_size: int, num_workers: int):
    """split -> batches of cached features (when ``features``) or of decoded images."""
    from .data import LoaderSpec, feature_batches, image_batches
    from .embed import load_features

    spec = LoaderSpec(
        batch_size=batch_size, shuffle=False, augment_seeded=False, num_workers=num_workers
    )

    def batches(split: str) -> Iterable[Mapping[str, Any]]:
        if features is not None:
            return feature_batches(load_features(features, split, folder=folder, model=model), spec)
        return image_batches(folder.shards(split), model.transforms(train=False), spec)

    return batches


def _retrieval_index(
    model: Any,
    checkpoint: str | Path,
    batches_of: Callable[[str], Iterable[Mapping[str, Any]]],
    dev: torch.device,
    shapes: Any,
    *,
    build: bool,
) -> Any:
    """The checkpoint's retrieval index: built (and saved next to it) when asked, else loaded
    when present; an index of other weights is ignored with a warning (and rebuilt on ask)."""
    from .retrieval import RetrievalIndex, build_index, index_path_for

    path = index_path_for(checkpoint)
    if build:
        index = build_index(model, batches_of("train"), batches_of("val"), dev, shapes=shapes)
        index.save(path)
        info = index.describe()
        log.info(
            "retrieval index: %d photos x %d dims, %.1f MiB in memory, %.1f MiB on disk (%s); val threshold %.4f",
            info["n"], info["dim"], info["memory_bytes"] / 2**20, path.stat().st_size / 2**20, path,
            index.threshold,
        )  # fmt: skip
        return index
    if not path.is_file():
        return None
    try:
        return RetrievalIndex.load(path, model=model)
    except GeopakError as exc:
        log.warning("ignoring the retrieval index: %s", exc)
        return None


def calibrate_checkpoint(
    path: Any, batches: Iterable[Mapping[str, Any]], device: torch.device, shift: list[float]
) -> Any:
    """Fit the calibration of the checkpoint at ``path`` on ``batches`` (val) and store it in
    that file (atomically, through checkpoint.save_checkpoint, its ``extra`` kept)."""
    from .calibration import calibrate_model
    from .checkpoint import save_checkpoint
    from .factory import make_model

    model, payload = make_model(checkpoint=path, device=device)
    cal = calibrate_model(model, batches, device, shift)
    if cal is not None:
        save_checkpoint(path, model.cpu(), extra=payload.get("extra"))
    return cal

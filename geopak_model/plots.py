"""PNG figures for a run: loss curves, error CDF, per-province accuracy, confusion matrix.

matplotlib with the Agg backend only (no display needed; safe in workers and CI). Every
function writes one file atomically and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from geopak_core.io import atomic_path  # noqa: E402
from geopak_core.regions import PAKISTAN  # noqa: E402

from .metrics import ACC_THRESHOLDS_KM  # noqa: E402


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def loss_curves(
    train_log: Sequence[Mapping[str, Any]],
    evals: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
) -> Path:
    """Training loss per logged step, validation loss and val median km per evaluation."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train_log:
        ax1.plot(
            [r["step"] for r in train_log], [r["loss"] for r in train_log], label="train", lw=1
        )
    val = [e for e in evals if e.get("val_loss") is not None]
    if val:
        ax1.plot([e["step"] for e in val], [e["val_loss"] for e in val], "o-", label="val")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("total loss")
    ax1.set_title("loss")
    ax1.legend()
    med = [e for e in evals if e.get("median_km") is not None]
    if med:
        ax2.plot([e["step"] for e in med], [e["median_km"] for e in med], "o-", label="model")
        for name, style in (("densest_cell", "--"), ("geographic_median", ":")):
            base = [
                (e["step"], e["baselines"][name]["median_km"])
                for e in med
                if name in e.get("baselines", {})
            ]
            if base:
                ax2.plot(*zip(*base, strict=True), style, label=name.replace("_", " "))
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("val median error (km)")
    ax2.set_title("validation median km")
    ax2.legend()
    return _save(fig, path)


def error_cdf(errors_km: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Share of images within x km, log x axis, one curve per predictor."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, err in errors_km.items():
        e = np.sort(np.asarray(err, dtype=np.float64))
        if e.size:
            ax.step(
                np.maximum(e, 0.01),
                np.arange(1, e.size + 1) / e.size,
                where="post",
                label=name.replace("_", " "),
            )
    for t in ACC_THRESHOLDS_KM:
        ax.axvline(t, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("error (km)")
    ax.set_ylabel("share of images within error")
    ax.set_ylim(0, 1)
    ax.set_title("error CDF")
    ax.legend()
    return _save(fig, path)


def province_accuracy(
    by_predictor: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    province_names: Sequence[str] | None = None,
) -> Path:
    """Grouped bars: accuracy within each true province, one bar per predictor (regions in
    the region table's id order; ``province_names`` default: Pakistan's)."""
    order = tuple(province_names) if province_names is not None else PAKISTAN.names
    names = [p for p in order if any(p in d for d in by_predictor.values())]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4.5))
    width = 0.8 / max(1, len(by_predictor))
    x = np.arange(len(names))
    for i, (pred, accs) in enumerate(by_predictor.items()):
        ax.bar(
            x + i * width, [accs.get(p, 0.0) for p in names], width, label=pred.replace("_", " ")
        )
    ax.set_xticks(
        x + width * (len(by_predictor) - 1) / 2,
        [n.replace(" ", "\n", 1) for n in names],
        fontsize=8,
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("province accuracy by true province")
    ax.legend()
    return _save(fig, path)


def confusion(
    matrix: np.ndarray, path: str | os.PathLike, province_names: Sequence[str] | None = None
) -> Path:
    """Row-normalised province confusion matrix with the raw counts written in each cell."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    k = m.shape[0]
    names = tuple(province_names) if province_names is not None else PAKISTAN.names
    labels = [names[i] if i < len(names) else str(i) for i in range(k)]
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    int(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("province confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)

"""End-to-end evaluation figures and the two constant baselines (pure numpy, no torch).

Every distance here is the haversine distance between the predictor's final (lat, lon) and
the photo's true location: the contract forbids reading a number without its floor, so the
same function also scores two predictors that ignore the image entirely (the training set's
densest cell centre and its geographic median) on exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from geopak_core.geo import EARTH_RADIUS_KM, haversine_km
from geopak_core.regions import PAKISTAN

ACC_THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750)
METRIC_KEYS: tuple[str, ...] = (
    "n",
    "median_km",
    "mean_km",
    "p90_km",
    *(f"acc_{t}km" for t in ACC_THRESHOLDS_KM),
    "province_acc",
    "province_acc_by_province",
    "cell_top1",
    "cell_top5",
)


def distance_metrics(
    pred_lat: npt.ArrayLike,
    pred_lon: npt.ArrayLike,
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
) -> dict[str, float]:
    """Median/mean/p90 error and the share of samples within 1/25/200/750 km."""
    err = haversine_km(pred_lat, pred_lon, true_lat, true_lon)
    return distance_summary(err)


def distance_summary(err_km: npt.ArrayLike) -> dict[str, Any]:
    """Summary of an array of errors in km (the median is the contract's headline number)."""
    err = np.asarray(err_km, dtype=np.float64)
    if err.size == 0:
        out: dict[str, Any] = {"n": 0, "median_km": None, "mean_km": None, "p90_km": None}
        out.update({f"acc_{t}km": None for t in ACC_THRESHOLDS_KM})
        return out
    out = {
        "n": int(err.size),
        "median_km": float(np.median(err)),
        "mean_km": float(np.mean(err)),
        "p90_km": float(np.percentile(err, 90)),
    }
    for t in ACC_THRESHOLDS_KM:
        out[f"acc_{t}km"] = float(np.mean(err <= t))
    return out


def province_accuracy(
    true_province: npt.ArrayLike,
    pred_province: npt.ArrayLike,
    province_names: Sequence[str] | None = None,
) -> tuple[float | None, dict[str, float]]:
    """Overall accuracy and accuracy per true province (name -> acc, provinces present only).

    ``province_names`` is the region table's names by id (default: Pakistan's).

    Per-province figures are recall within each true province, so a model that always answers
    Sindh scores 1.0 there and 0.0 everywhere else instead of hiding behind Sindh's share.
    """
    t = np.asarray(true_province, dtype=np.int64)
    p = np.asarray(pred_province, dtype=np.int64)
    if t.size == 0:
        return None, {}
    names = tuple(province_names) if province_names is not None else PAKISTAN.names
    by: dict[str, float] = {}
    for pid in range(len(names)):
        mask = t == pid
        if mask.any():
            by[names[pid]] = float(np.mean(p[mask] == pid))
    return float(np.mean(t == p)), by


ECE_BINS = 15
AGGREGATE_KEYS: tuple[str, ...] = (
    "median_km",
    "mean_km",
    "acc_25km",
    "acc_200km",
    "province_acc",
    "province_ece",
)


def expected_calibration_error(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int = ECE_BINS
) -> float | None:
    """ECE with equal-width confidence bins: Σ_b |b|/n · |accuracy(b) − mean confidence(b)|.

    The gap between "the model says 80 %" and "it is right 80 % of the time", averaged over
    the images; 0 is perfectly calibrated.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return None
    idx = np.clip((conf * bins).astype(np.int64), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(ok[m].mean() - conf[m].mean())
    return float(total / conf.size)


def aggregate_metrics(
    *,
    pred_lat: npt.ArrayLike,
    pred_lon: npt.ArrayLike,
    pred_province: npt.ArrayLike,
    confidence: npt.ArrayLike,
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    true_province: npt.ArrayLike,
) -> dict[str, Any]:
    """One aggregation's row of ``by_aggregate``: distances, province accuracy and the
    calibration error of its confidence (plus the remaining distance figures)."""
    out = distance_metrics(pred_lat, pred_lon, true_lat, true_lon)
    acc, _ = province_accuracy(true_province, pred_province)
    out["province_acc"] = acc
    correct = np.asarray(pred_province) == np.asarray(true_province)
    out["province_ece"] = expected_calibration_error(confidence, correct)
    return out


def cell_topk(true_cell: npt.ArrayLike, ranked_cells: npt.ArrayLike, k: int) -> float | None:
    """Share of samples whose true cell is among the first k columns of ``ranked_cells``."""
    t = np.asarray(true_cell, dtype=np.int64)
    r = np.asarray(ranked_cells, dtype=np.int64)
    if t.size == 0:
        return None
    r = r.reshape(t.size, -1)[:, :k]
    return float(np.mean((r == t[:, None]).any(axis=1)))


def confusion_matrix(
    true_province: npt.ArrayLike, pred_province: npt.ArrayLike, num_classes: int = PAKISTAN.n
) -> np.ndarray:
    """Counts[true, pred] as an int64 (num_classes, num_classes) array (one row per region)."""
    t = np.asarray(true_province, dtype=np.int64)
    p = np.asarray(pred_province, dtype=np.int64)
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def compute_metrics(
    *,
    pred_lat: npt.ArrayLike,
    pred_lon: npt.ArrayLike,
    pred_province: npt.ArrayLike,
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    true_province: npt.ArrayLike,
    true_cell: npt.ArrayLike | None = None,
    ranked_cells: npt.ArrayLike | None = None,
    province_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The contract's metric set for one predictor on one split.

    ``ranked_cells`` is (n, >=5): each sample's cells ordered by the predictor's joint
    probability; without it the cell figures are None.
    """
    out = distance_metrics(pred_lat, pred_lon, true_lat, true_lon)
    acc, by = province_accuracy(true_province, pred_province, province_names)
    out["province_acc"] = acc
    out["province_acc_by_province"] = by
    if true_cell is not None and ranked_cells is not None:
        out["cell_top1"] = cell_topk(true_cell, ranked_cells, 1)
        out["cell_top5"] = cell_topk(true_cell, ranked_cells, 5)
    else:
        out["cell_top1"] = None
        out["cell_top5"] = None
    return out


# ---------------------------------------------------------------------------------------------
# Baselines: constant answers derived from the training split only.


def _to_xyz(lat: npt.ArrayLike, lon: npt.ArrayLike) -> np.ndarray:
    la, lo = (
        np.radians(np.asarray(lat, dtype=np.float64)),
        np.radians(np.asarray(lon, dtype=np.float64)),
    )
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _to_latlon(xyz: np.ndarray) -> tuple[float, float]:
    x, y, z = xyz / np.linalg.norm(xyz)
    return float(np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))), float(np.degrees(np.arctan2(y, x)))


def geographic_median(
    lat: npt.ArrayLike, lon: npt.ArrayLike, *, iters: int = 200, tol_km: float = 1e-4
) -> tuple[float, float]:
    """The point minimising the summed great-circle distance to all (lat, lon) (Weiszfeld).

    Iterates on the unit sphere: each step is the normalised mean of the points weighted by
    1/distance. For data spanning one country (all in one hemisphere) it converges to the
    spherical geometric median, the best constant answer for mean km.
    """
    pts = _to_xyz(lat, lon)
    if pts.size == 0:
        raise ValueError("geographic_median of no points")
    cur = pts.mean(axis=0)
    cur /= np.linalg.norm(cur)
    for _ in range(iters):
        d = np.arccos(np.clip(pts @ cur, -1.0, 1.0)) * EARTH_RADIUS_KM
        w = 1.0 / np.maximum(d, 1e-6)
        nxt = (pts * w[:, None]).sum(axis=0)
        nxt /= np.linalg.norm(nxt)
        step = np.arccos(np.clip(float(nxt @ cur), -1.0, 1.0)) * EARTH_RADIUS_KM
        cur = nxt
        if step < tol_km:
            break
    return _to_latlon(cur)


def constant_predictor_metrics(
    lat: float,
    lon: float,
    province_id: int,
    ranked_cells: Sequence[int],
    *,
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    true_province: npt.ArrayLike,
    true_cell: npt.ArrayLike | None = None,
    province_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of a predictor that gives the same answer for every image."""
    n = len(np.asarray(true_lat))
    ranked = np.tile(np.asarray(ranked_cells, dtype=np.int64)[None, :], (n, 1))
    return compute_metrics(
        pred_lat=np.full(n, lat),
        pred_lon=np.full(n, lon),
        pred_province=np.full(n, int(province_id)),
        true_lat=true_lat,
        true_lon=true_lon,
        true_province=true_province,
        true_cell=true_cell,
        ranked_cells=ranked if true_cell is not None else None,
        province_names=province_names,
    )


def baseline_answers(
    *,
    train_cell_ids: npt.ArrayLike,
    train_lat: npt.ArrayLike,
    train_lon: npt.ArrayLike,
    cell_province: npt.ArrayLike,
    cell_lat: npt.ArrayLike,
    cell_lon: npt.ArrayLike,
    k: int = 5,
) -> dict[str, dict[str, Any]]:
    """The two constant answers, derived from the training split alone.

    ``densest_cell``: the centre of the cell holding most training samples, its province, and
    the k densest cells as its cell ranking. ``geographic_median``: the training set's
    spherical geometric median, the province of the cell centre nearest to it, and the k cells
    nearest to it as its ranking.
    """
    cell_province = np.asarray(cell_province, dtype=np.int64)
    cell_lat = np.asarray(cell_lat, dtype=np.float64)
    cell_lon = np.asarray(cell_lon, dtype=np.float64)
    counts = np.bincount(np.asarray(train_cell_ids, dtype=np.int64), minlength=cell_lat.size)
    # stable order: most samples first, ties broken by the lower cell id
    dense_rank = np.lexsort((np.arange(counts.size), -counts))[:k]
    top = int(dense_rank[0])
    mlat, mlon = geographic_median(train_lat, train_lon)
    near_rank = np.argsort(haversine_km(mlat, mlon, cell_lat, cell_lon), kind="stable")[:k]
    return {
        "densest_cell": {
            "lat": float(cell_lat[top]),
            "lon": float(cell_lon[top]),
            "province_id": int(cell_province[top]),
            "ranked_cells": [int(c) for c in dense_rank],
        },
        "geographic_median": {
            "lat": mlat,
            "lon": mlon,
            "province_id": int(cell_province[int(near_rank[0])]),
            "ranked_cells": [int(c) for c in near_rank],
        },
    }


def baseline_metrics(
    answers: Mapping[str, Mapping[str, Any]],
    *,
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    true_province: npt.ArrayLike,
    true_cell: npt.ArrayLike | None = None,
    province_names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score each constant answer of :func:`baseline_answers` on a split."""
    return {
        name: constant_predictor_metrics(
            a["lat"],
            a["lon"],
            a["province_id"],
            a["ranked_cells"],
            true_lat=true_lat,
            true_lon=true_lon,
            true_province=true_province,
            true_cell=true_cell,
            province_names=province_names,
        )
        for name, a in answers.items()
    }


# ---------------------------------------------------------------------------------------------
# Presentation


def _fmt(v: Any, key: str) -> str:
    if v is None:
        return "-"
    if key == "n":
        return str(int(v))
    if key.endswith("_km"):
        return f"{v:,.1f}"
    if key.endswith("_ece"):
        return f"{v:.3f}"
    return f"{100.0 * v:.1f}%"


def format_table(
    model: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """A fixed-width table: one row per metric, one column for the model and each baseline."""
    baselines = baselines or {}
    cols = ["model", *baselines.keys()]
    sources = [model, *baselines.values()]
    keys = [k for k in METRIC_KEYS if k != "province_acc_by_province"]
    if any("province_ece" in s for s in sources):  # next to the accuracy it qualifies
        keys.insert(keys.index("province_acc") + 1, "province_ece")
    provinces: list[str] = []  # in region-id order: the order the dicts were filled in
    for s in sources:
        for p in s.get("province_acc_by_province") or {}:
            if p not in provinces:
                provinces.append(p)
    rows: list[list[str]] = []
    for k in keys:
        rows.append([k, *(_fmt(s.get(k), k) for s in sources)])
    if provinces:  # a sub-heading, so the indented rows say what they are
        rows.append(["province_acc by province:", *("" for _ in sources)])
    for p in provinces:
        rows.append(
            [
                f"  {p}",
                *(_fmt((s.get("province_acc_by_province") or {}).get(p), "acc") for s in sources),
            ]
        )
    return _aligned(["metric", *cols], rows, strip=True)


def _aligned(header: list[str], rows: list[list[str]], *, strip: bool = False) -> str:
    """Columns padded to their widest cell, the first left-aligned, the rest right-aligned,
    a rule under the header; ``strip`` drops the trailing blanks of the body rows."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    body = [line(r).rstrip() if strip else line(r) for r in rows]
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *body])


def _ratio(key: str, value: Any, ref: Any) -> str:
    """How many times better than the reference: ref/value for km and ECE, value/ref else."""
    if value is None or ref is None:
        return "-"
    lower_better = key.endswith("_km") or key.endswith("_ece")
    num, den = (ref, value) if lower_better else (value, ref)
    return f"{num / den:.2f}x" if den else "-"


def format_aggregate_table(
    by_aggregate: Mapping[str, Mapping[str, Any]], reference: str = "mean"
) -> str:
    """One row per aggregation, one column per figure, each with its ratio to ``reference``
    (> 1: better than the seed's weighted mean)."""
    names = list(by_aggregate)
    ref = by_aggregate.get(reference, {})
    header = ["aggregate", *AGGREGATE_KEYS, f"median vs {reference}"]
    rows = []
    for name in names:
        row = by_aggregate[name]
        rows.append(
            [
                name,
                *(_fmt(row.get(k), k) for k in AGGREGATE_KEYS),
                _ratio("median_km", row.get("median_km"), ref.get("median_km")),
            ]
        )
    return _aligned(header, rows)

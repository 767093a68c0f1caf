"""The metric set and baselines on hand-made numbers (values worked out by hand in comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geopak_core.geo import EARTH_RADIUS_KM, haversine_km
from geopak_model import metrics as M

KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180.0  # 111.1951 km per degree of latitude


def test_haversine_reference_distance():
    # Karachi -> Lahore, the reference figure
    assert haversine_km(24.8607, 67.0011, 31.5204, 74.3587) == pytest.approx(1033, abs=1)


def test_distance_metrics_hand_case():
    # six photos on the 70E meridian; predictions off by 0, 0.005, 0.1, 1, 5 and 10 degrees of
    # latitude: errors 0, 0.556, 11.12, 111.2, 556.0 and 1112.0 km
    true_lat = np.full(6, 30.0)
    offs = np.array([0.0, 0.005, 0.1, 1.0, 5.0, 10.0])
    out = M.distance_metrics(true_lat + offs, np.full(6, 70.0), true_lat, np.full(6, 70.0))
    assert out["n"] == 6
    # median of six = mean of 3rd and 4th = (11.12 + 111.20) / 2
    assert out["median_km"] == pytest.approx((0.1 + 1.0) / 2 * KM_PER_DEG, rel=1e-9)
    assert out["mean_km"] == pytest.approx(offs.sum() / 6 * KM_PER_DEG, rel=1e-9)
    # numpy's linear p90 of six values: position 4.5, halfway between 5 and 10 degrees
    assert out["p90_km"] == pytest.approx(7.5 * KM_PER_DEG, rel=1e-9)
    assert out["acc_1km"] == pytest.approx(2 / 6)
    assert out["acc_25km"] == pytest.approx(3 / 6)
    assert out["acc_200km"] == pytest.approx(4 / 6)
    assert out["acc_750km"] == pytest.approx(5 / 6)


def test_province_accuracy_is_recall_per_true_province():
    true = [0, 0, 1, 1, 5, 5]
    pred = [0, 1, 1, 1, 0, 5]
    acc, by = M.province_accuracy(true, pred)
    assert acc == pytest.approx(4 / 6)
    assert by == {"Sindh": 0.5, "Punjab": 1.0, "Balochistan": 0.5}


def test_cell_topk_and_confusion():
    true = [3, 1, 4]
    ranked = [[3, 0, 1, 2, 5], [0, 2, 1, 7, 8], [0, 1, 2, 5, 6]]
    assert M.cell_topk(true, ranked, 1) == pytest.approx(1 / 3)
    assert M.cell_topk(true, ranked, 5) == pytest.approx(2 / 3)
    m = M.confusion_matrix([0, 0, 1, 5], [0, 1, 1, 0])
    assert m.shape == (7, 7)
    assert m[0, 0] == 1 and m[0, 1] == 1 and m[1, 1] == 1 and m[5, 0] == 1 and m.sum() == 4


def _one_photo(true_lon: float, **cells) -> dict:
    """The metrics of one Punjab photo at (30, ``true_lon``) answered (30, 70), province right."""
    return M.compute_metrics(
        pred_lat=[30.0],
        pred_lon=[70.0],
        pred_province=[1],
        true_lat=[30.0],
        true_lon=[true_lon],
        true_province=[1],
        **cells,
    )


def test_compute_metrics_has_contract_keys():
    out = _one_photo(true_lon=70.0, true_cell=[2], ranked_cells=[[2, 1, 0, 3, 4]])
    assert set(M.METRIC_KEYS) <= set(out)
    assert out["median_km"] == 0.0 and out["province_acc"] == 1.0 and out["cell_top1"] == 1.0


def test_geographic_median_hand_cases():
    # symmetric cross around (30, 70): the median is the centre
    lat = [30.0, 30.0, 31.0, 29.0]
    lon = [69.0, 71.0, 70.0, 70.0]
    mlat, mlon = M.geographic_median(lat, lon)
    assert mlat == pytest.approx(30.0, abs=0.01) and mlon == pytest.approx(70.0, abs=1e-6)
    # three photos at one spot and one far away: the geometric median stays at the cluster
    # (the mean would move a quarter of the way)
    mlat, mlon = M.geographic_median([25.0, 25.0, 25.0, 35.0], [67.0, 67.0, 67.0, 67.0])
    assert haversine_km(mlat, mlon, 25.0, 67.0) < 1.0


def test_geographic_median_beats_mean_on_summed_distance():
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.normal(24.9, 0.1, 80), rng.normal(34.0, 1.0, 20)])
    lon = np.concatenate([rng.normal(67.0, 0.1, 80), rng.normal(73.0, 1.0, 20)])
    mlat, mlon = M.geographic_median(lat, lon)
    cost = haversine_km(mlat, mlon, lat, lon).sum()
    assert cost < haversine_km(lat.mean(), lon.mean(), lat, lon).sum()
    for dlat, dlon in ((0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05)):  # a local minimum
        assert cost <= haversine_km(mlat + dlat, mlon + dlon, lat, lon).sum() + 1e-6


def test_baselines_hand_case():
    # cells: 0 Karachi (Sindh), 1 Lahore (Punjab), 2 Quetta (Balochistan)
    cell_lat, cell_lon, cell_prov = [24.86, 31.52, 30.18], [67.01, 74.36, 66.97], [0, 1, 5]
    # training set: 3 photos in Karachi, 2 in Lahore
    ans = M.baseline_answers(
        train_cell_ids=[0, 0, 0, 1, 1],
        train_lat=[24.86, 24.86, 24.86, 31.52, 31.52],
        train_lon=[67.01, 67.01, 67.01, 74.36, 74.36],
        cell_province=cell_prov,
        cell_lat=cell_lat,
        cell_lon=cell_lon,
        k=2,
    )
    dense = ans["densest_cell"]
    assert (dense["lat"], dense["lon"], dense["province_id"], dense["ranked_cells"]) == (
        24.86,
        67.01,
        0,
        [0, 1],
    )
    med = ans["geographic_median"]
    assert haversine_km(med["lat"], med["lon"], 24.86, 67.01) < 1.0  # majority point wins
    assert med["province_id"] == 0 and med["ranked_cells"][0] == 0

    # test split: one photo in Karachi, one in Quetta
    res = M.baseline_metrics(
        ans,
        true_lat=[24.86, 30.18],
        true_lon=[67.01, 66.97],
        true_province=[0, 5],
        true_cell=[0, 2],
    )
    d = res["densest_cell"]
    assert d["n"] == 2
    assert d["province_acc"] == 0.5
    assert d["province_acc_by_province"] == {"Sindh": 1.0, "Balochistan": 0.0}
    assert d["acc_1km"] == 0.5
    far = float(haversine_km(24.86, 67.01, 30.18, 66.97))  # ~591.6 km
    assert d["median_km"] == pytest.approx(far / 2)
    assert d["cell_top1"] == 0.5 and d["cell_top5"] == 0.5


def test_format_table_lists_every_metric():
    row = _one_photo(true_lon=70.5)
    text = M.format_table(row, {"densest_cell": row})
    for key in ("median_km", "acc_25km", "province_acc", "cell_top5", "Punjab", "densest_cell"):
        assert key in text
    assert "100.0%" in text and "-" in text


def test_format_table_has_headings_for_every_block():
    row = _one_photo(true_lon=70.5)
    lines = M.format_table(row, {"densest_cell": row}).splitlines()
    assert lines[0].split() == ["metric", "model", "densest_cell"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    block = next(i for i, ln in enumerate(lines) if ln.startswith("province_acc by province:"))
    assert all(ln.startswith("  ") for ln in lines[block + 1 :])  # the provinces follow it

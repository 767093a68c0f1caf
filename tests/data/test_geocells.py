"""Geocells: every promise holds on synthetic dense cities + sparse countryside in toy provinces."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from geopak_core.errors import ConfigError, GeopakError
from geopak_core.geo import haversine_km
from geopak_data.config import ClusterConfig, load_config
from geopak_data.geocells import (
    CELL_COLUMNS,
    PROVINCE_AREA_KM2,
    _Province,
    assign_to_cells,
    build_geocells,
    cell_distance_matrix,
    check_cells,
    neighbour_counts,
    target_cells_for,
)

KM_LAT = 110.574


def _blob(rng, lat, lon, n, sd_km):
    return (
        lat + rng.normal(0.0, sd_km / KM_LAT, n),
        lon + rng.normal(0.0, sd_km / (111.32 * np.cos(np.radians(lat))), n),
    )


def make_data(seed: int = 0):
    """Three toy provinces: a dense city split by a province border, a second city, rural
    scatter, a far group of 6 photos and 2 lone photos."""
    rng = np.random.default_rng(seed)
    lats, lons, pids = [], [], []

    def add(lat, lon, p):
        lats.append(np.asarray(lat))
        lons.append(np.asarray(lon))
        pids.append(np.full(len(lat), p, dtype=np.int8))

    # Dense city (Lahore-like) straddling a border at lon 74.35: west -> 1 (Punjab), east -> 3.
    la, lo = _blob(rng, 31.55, 74.35, 1600, 4.0)
    add(la[lo < 74.35], lo[lo < 74.35], 1)
    add(la[lo >= 74.35], lo[lo >= 74.35], 3)
    # A second city in Sindh (Karachi-like) and rural scatter around it.
    la, lo = _blob(rng, 24.86, 67.01, 700, 3.0)
    add(la, lo, 0)
    add(rng.uniform(24.5, 26.5, 250), rng.uniform(67.5, 69.5, 250), 0)
    # Sparse Balochistan: scattered rural photos over a large area.
    add(rng.uniform(26.0, 29.0, 220), rng.uniform(63.0, 67.0, 220), 5)
    # A far group of 6 photos within ~3 km (becomes its own cell) and 2 lone photos.
    add(29.9 + rng.normal(0, 0.01, 6), 61.5 + rng.normal(0, 0.01, 6), 5)
    add(np.array([25.0, 28.8]), np.array([61.2, 69.9]), 5)
    return np.concatenate(lats), np.concatenate(lons), np.concatenate(pids)


CFG = ClusterConfig(min_cluster_size=15, min_samples=5)


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def result(data):
    lat, lon, pid = data
    return build_geocells(lat, lon, pid, CFG, n_jobs=1)


def _members(res, cid):
    return np.flatnonzero(res.cell_of_point == cid)


def test_cells_table_has_contract_columns(result):
    cells = result.cells
    assert tuple(cells.columns) == CELL_COLUMNS
    assert np.array_equal(cells["cell_id"].to_numpy(), np.arange(len(cells)))
    assert len(cells) > 20
    assert cells["province_id"].dtype == np.int8
    assert cells["n_samples"].sum() == (result.cell_of_point >= 0).sum()
    # deterministic ordering: by province, then centre latitude
    key = list(zip(cells["province_id"], cells["center_lat"], strict=True))
    assert key == sorted(key)
    assert all(c.startswith("+proj=laea") for c in cells["crs"])


def test_every_radius_within_its_limit(data, result):
    lat, lon, pid = data
    cells = result.cells
    for row in cells.itertuples():
        m = _members(result, row.cell_id)
        assert len(m) == row.n_samples
        d = haversine_km(lat[m], lon[m], row.center_lat, row.center_lon)
        assert d.max() == pytest.approx(row.radius_km)
        assert row.limit_km == (CFG.urban_radius_km if row.urban else CFG.rural_radius_km)
        assert d.max() <= row.limit_km
    chk = check_cells(lat, lon, pid, result.cell_of_point, cells)
    assert chk["total"] == 0
    assert result.report["violations"]["total"] == 0


def test_dense_city_cells_are_urban_and_small(result):
    cells = result.cells
    near_city = haversine_km(cells["center_lat"], cells["center_lon"], 31.55, 74.35) < 3.0
    assert near_city.sum() >= 2
    assert cells["urban"][near_city].all()
    assert (cells["radius_km"][near_city] <= 5.0).all()
    # rural scatter in Balochistan makes rural cells with radii far above the urban limit
    baloch = cells[cells["province_id"] == 5]
    assert not baloch["urban"].any()
    assert baloch["radius_km"].max() > 5.0


def test_urban_flag_follows_the_density_rule(data, result):
    """A cell is urban iff more than half its photos have >= N other photos within r km."""
    lat, lon, pid = data
    for row in result.cells.sample(n=15, random_state=0).itertuples():
        m = _members(result, row.cell_id)
        same = np.flatnonzero(pid == row.province_id)
        d = haversine_km(lat[m][:, None], lon[m][:, None], lat[same][None, :], lon[same][None, :])
        counts = (d < CFG.urban_density_radius_km).sum(axis=1) - 1
        frac = (counts >= CFG.urban_density_min_neighbours).mean()
        if abs(frac - 0.5) > 0.1:  # far from the tie, projection rounding cannot flip it
            assert row.urban == (frac > 0.5)


def test_centre_is_a_member_photo(data, result):
    lat, lon, _ = data
    ci = result.cells["center_index"].to_numpy()
    assert np.array_equal(result.cell_of_point[ci], result.cells["cell_id"].to_numpy())
    assert np.array_equal(lat[ci], result.cells["center_lat"].to_numpy())
    assert np.array_equal(lon[ci], result.cells["center_lon"].to_numpy())


def test_no_cell_crosses_a_province_border(data, result):
    _, _, pid = data
    cells = result.cells
    kept = result.cell_of_point >= 0
    assert np.array_equal(pid[kept], cells["province_id"].to_numpy()[result.cell_of_point[kept]])
    # the city split by the border has cells on both sides, none shared
    assert set(cells["province_id"]) >= {1, 3}


def test_isolated_points_rejected_and_group_forms_cell(data, result):
    lat, lon, _ = data
    n = len(lat)
    lone = [n - 2, n - 1]
    group = np.arange(n - 8, n - 2)
    assert (result.cell_of_point[lone] == -1).all()
    assert result.rejected[lone].all()
    gcells = set(result.cell_of_point[group].tolist())
    assert len(gcells) == 1 and -1 not in gcells
    row = result.cells.iloc[gcells.pop()]
    assert row.isolated and row.n_samples == 6
    iso = result.report["isolated"]
    assert iso["rejected"] == int(result.rejected.sum()) >= 2
    assert iso["cells"] >= 1
    assert result.report["n_rejected"] == int(result.rejected.sum())
    assert (result.cells["n_samples"] >= CFG.min_isolated).all()


def test_min_isolated_is_configurable(data):
    lat, lon, pid = data
    sel = pid == 5  # the sparse province only: quick
    strict = build_geocells(
        lat[sel], lon[sel], pid[sel], dataclasses.replace(CFG, min_isolated=10), n_jobs=1
    )
    group = np.arange(sel.sum() - 8, sel.sum() - 2)
    assert (strict.cell_of_point[group] == -1).all()  # 6 < 10: the group is rejected too
    lenient = build_geocells(
        lat[sel], lon[sel], pid[sel], dataclasses.replace(CFG, min_isolated=1), n_jobs=1
    )
    assert not lenient.rejected.any()
    assert lenient.report["violations"]["total"] == 0


def test_deterministic(data, result):
    lat, lon, pid = data
    again = build_geocells(lat, lon, pid, CFG, n_jobs=2)
    pd.testing.assert_frame_equal(again.cells, result.cells)
    assert np.array_equal(again.cell_of_point, result.cell_of_point)


def test_same_cells_whatever_the_row_order(data, result):
    lat, lon, pid = data
    perm = np.random.default_rng(5).permutation(len(lat))
    shuffled = build_geocells(lat[perm], lon[perm], pid[perm], CFG, n_jobs=1)
    cols = [c for c in CELL_COLUMNS if c != "center_index"]
    pd.testing.assert_frame_equal(shuffled.cells[cols], result.cells[cols])
    assert np.array_equal(shuffled.cell_of_point, result.cell_of_point[perm])


def test_min_samples_per_cell_yields_to_radius():
    """Photos in clumps 150 km apart can never make a 40-photo cell within 50 km: the cells stay
    small rather than break the radius."""
    rng = np.random.default_rng(1)
    lat = np.concatenate([np.full(8, 25.0 + i * 1.4) + rng.normal(0, 0.02, 8) for i in range(5)])
    lon = np.concatenate([np.full(8, 64.0) + rng.normal(0, 0.02, 8) for _ in range(5)])
    pid = np.full(len(lat), 5)
    res = build_geocells(lat, lon, pid, dataclasses.replace(CFG, min_samples_per_cell=40), n_jobs=1)
    assert len(res.cells) == 5
    assert (res.cells["n_samples"] == 8).all()
    assert (res.cells["radius_km"] <= 50.0).all()
    assert res.report["cells_below_min_samples"] == 5


def test_big_min_samples_never_grows_dense_cells_past_the_urban_limit(data):
    lat, lon, pid = data
    sel = pid == 0
    res = build_geocells(
        lat[sel],
        lon[sel],
        pid[sel],
        dataclasses.replace(CFG, min_samples_per_cell=10_000),
        n_jobs=1,
    )
    assert res.report["violations"]["total"] == 0
    urban = res.cells[res.cells["urban"]]
    assert len(urban) >= 1 and (urban["radius_km"] <= 5.0).all()


def test_target_cells_override_and_formula():
    cfg = ClusterConfig()
    t, src = target_cells_for(5, 3627, cfg)
    expected = round(10.0 * 3627 / 1000 + 1.0 * PROVINCE_AREA_KM2[5] / 10000)
    assert (t, src) == (min(expected, 3627 // 40), "formula")
    assert target_cells_for(5, 10, cfg) == (1, "formula")  # never more cells than photos allow
    assert target_cells_for(
        3, 5000, dataclasses.replace(cfg, target_cells={"Islamabad Capital Territory": 7})
    ) == (7, "config")

    rng = np.random.default_rng(2)  # 600 photos spread over ~30 km: one cell could hold them all
    lat, lon = _blob(rng, 30.2, 67.0, 600, 8.0)
    pid = np.full(600, 5)
    one, many = (
        build_geocells(
            lat,
            lon,
            pid,
            dataclasses.replace(
                CFG, target_cells={"Balochistan": n}, urban_density_min_neighbours=1000
            ),
            n_jobs=1,
        )
        for n in (1, 10)
    )
    assert len(one.cells) == 1
    assert len(many.cells) == 10
    assert one.report["provinces"]["Balochistan"]["target_source"] == "config"
    for r in (one, many):
        assert r.report["violations"]["total"] == 0


def test_assign_to_cells(data, result):
    lat, lon, pid = data
    cells = result.cells
    # every cell's own centre goes back to it
    got = assign_to_cells(cells["center_lat"], cells["center_lon"], cells["province_id"], cells)
    assert np.array_equal(got, cells["cell_id"].to_numpy())
    assert got.dtype == np.int32
    # kept photos land in a cell of their province whose centre is within its limit
    kept = np.flatnonzero(result.cell_of_point >= 0)[::7]
    a = assign_to_cells(lat[kept], lon[kept], pid[kept], cells)
    assert (a >= 0).all()
    assert np.array_equal(cells["province_id"].to_numpy()[a], pid[kept])
    d = haversine_km(
        lat[kept], lon[kept], cells["center_lat"].to_numpy()[a], cells["center_lon"].to_numpy()[a]
    )
    assert (d <= cells["limit_km"].to_numpy()[a]).all()
    # far away, or in a province without cells: -1
    far = assign_to_cells([36.0, 31.55], [62.0, 74.30], [5, 4], cells)
    assert far.tolist() == [-1, -1]


def test_assign_prefers_nearest_cell_within_its_limit():
    cells = pd.DataFrame(
        {
            "cell_id": [0, 1],
            "province_id": [1, 1],
            "center_lat": [31.0, 31.0],
            "center_lon": [74.0, 74.3],
            "urban": [True, False],
        }
    )
    x = 74.0 + 6.0 / (111.32 * np.cos(np.radians(31.0)))  # 6 km east of the urban cell
    got = assign_to_cells(
        [31.0, 31.0, 33.0], [x, 74.01, 74.0], [1, 1, 1], pa.Table.from_pandas(cells)
    )
    assert got.tolist() == [1, 0, -1]
    assert assign_to_cells([31.0], [74.01], [2], cells).tolist() == [-1]  # other province


def test_assign_finds_a_far_rural_cell_behind_many_urban_ones():
    """Twenty urban cells 6-9 km away (limit 5 km) hide a rural cell 30 km away (limit 50 km)."""
    rng = np.random.default_rng(6)
    ang = rng.uniform(0, 2 * np.pi, 20)
    dist = rng.uniform(6.0, 9.0, 20)
    lat0, lon0 = 31.0, 74.0
    km_lon = 111.32 * np.cos(np.radians(lat0))
    clat = np.r_[lat0 + dist * np.sin(ang) / KM_LAT, lat0]
    clon = np.r_[lon0 + dist * np.cos(ang) / km_lon, lon0 + 30.0 / km_lon]
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(21),
            "province_id": 1,
            "center_lat": clat,
            "center_lon": clon,
            "limit_km": np.r_[np.full(20, 5.0), 50.0],
        }
    )
    assert assign_to_cells([lat0], [lon0], [1], cells).tolist() == [20]


def test_cell_distance_matrix_and_neighbours(result):
    cells = result.cells
    d = cell_distance_matrix(cells)
    n = len(cells)
    assert d.shape == (n, n)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    assert d[0, 1] == pytest.approx(
        float(
            haversine_km(
                cells.center_lat[0], cells.center_lon[0], cells.center_lat[1], cells.center_lon[1]
            )
        )
    )
    shuffled = pa.Table.from_pandas(
        cells.iloc[::-1][["cell_id", "center_lat", "center_lon"]], preserve_index=False
    )
    assert np.array_equal(
        cell_distance_matrix(shuffled), d
    )  # rows follow cell_id, not storage order
    for i in (0, n // 2, n - 1):
        nb = cells["neighbours"][i]
        assert len(nb) == CFG.neighbours_k and i not in nb and nb.dtype == np.int32
        others = np.delete(np.arange(n), i)
        expected = others[np.lexsort((others, d[i, others]))][: CFG.neighbours_k]
        assert np.array_equal(nb, expected)


def test_neighbour_counts_capped_and_exact():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 5000, (400, 2))
    got = neighbour_counts(xy, 800.0, cap=10, n_jobs=1)
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    exact = (d < 800.0).sum(axis=1) - 1
    assert np.array_equal(got, np.minimum(exact, 10))


def test_duplicate_heavy_input_terminates_and_holds():
    rng = np.random.default_rng(4)
    lat = np.concatenate(
        [np.full(300, 33.7), np.full(200, 33.9), 33.7 + rng.uniform(-0.6, 0.6, 40)]
    )
    lon = np.concatenate(
        [np.full(300, 73.1), np.full(200, 73.0), 73.1 + rng.uniform(-0.6, 0.6, 40)]
    )
    res = build_geocells(lat, lon, np.full(len(lat), 3), CFG, n_jobs=1)
    assert res.report["violations"]["total"] == 0
    # photos at exactly one spot always share a cell, and no two cells share a centre
    assert len(set(res.cell_of_point[:300])) == 1 and len(set(res.cell_of_point[300:500])) == 1
    assert not res.cells.duplicated(["center_lat", "center_lon"]).any()


def test_one_spot_stack_bigger_than_the_target_size_stays_one_cell():
    lat = np.concatenate([np.full(3000, 30.0), [30.02]])
    lon = np.concatenate([np.full(3000, 67.0), [67.0]])
    res = build_geocells(
        lat, lon, np.full(len(lat), 5), dataclasses.replace(CFG, min_isolated=1), n_jobs=1
    )
    assert len(set(res.cell_of_point[:3000])) == 1  # HDBSCAN alone parts such a stack in two
    assert not res.cells.duplicated(["center_lat", "center_lon"]).any()
    assert res.report["violations"]["total"] == 0


def test_bad_input_is_a_clear_error():
    with pytest.raises(GeopakError, match="invalid coordinates"):
        build_geocells([31.0, np.nan], [74.0, 74.0], [1, 1], CFG)
    with pytest.raises(GeopakError, match="province_id outside"):
        build_geocells([31.0], [74.0], [9], CFG)
    with pytest.raises(GeopakError, match="differ in length"):
        build_geocells([31.0, 31.1], [74.0], [1, 1], CFG)


def test_empty_input_gives_no_cells():
    res = build_geocells(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int8), CFG)
    assert len(res.cells) == 0 and tuple(res.cells.columns) == CELL_COLUMNS
    assert res.report["n_cells"] == 0 and res.report["violations"]["total"] == 0


def test_cluster_config_validation(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nmin_isolated = 0\n")
    with pytest.raises(ConfigError, match="cluster.min_isolated"):
        load_config(bad)
    bad.write_text('[cluster]\ntarget_cells = {"Atlantis" = 3}\n')
    with pytest.raises(ConfigError, match="cluster.target_cells"):
        load_config(bad)


def test_big_province_clusters_a_sample_and_still_keeps_every_promise(data):
    lat, lon, pid = data
    # the city photos of Punjab and all of Sindh, as one province of > 1000 photos
    sel = np.concatenate([np.flatnonzero(pid == 1), np.flatnonzero(pid == 0)])
    lat, lon, pid = lat[sel], lon[sel], np.full(len(sel), 0)
    assert len(lat) > 1000
    cfg = dataclasses.replace(CFG, hdbscan_max_points=1000)
    a = build_geocells(lat, lon, pid, cfg, n_jobs=1)
    b = build_geocells(lat, lon, pid, cfg, n_jobs=2)
    assert a.report["provinces"]["Sindh"]["hdbscan_points"] == 1000
    assert a.report["violations"]["total"] == 0
    pd.testing.assert_frame_equal(a.cells, b.cells)
    sampling = a.report["sampling"]
    assert sampling["max_points"] == 1000
    assert sampling["provinces"] == {
        "Sindh": {"photos": len(lat), "clustered": 1000, "labelled_by_nearest": len(lat) - 1000}
    }
    assert sampling["labelled_by_nearest"] == len(lat) - 1000


def test_medoid_is_the_member_with_the_smallest_summed_distance(data):
    lat, lon, pid = data
    sel = np.flatnonzero(pid == 1)
    prov = _Province(lat[sel], lon[sel], CFG, 1)
    for size in (3, 50, 256, 700):
        idx = np.arange(min(size, len(sel)))
        p = prov.xy[idx]
        if len(idx) <= 256:  # exact: every member scored against every member
            cost = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1)).sum(axis=1)
            assert prov.medoid(idx) == idx[int(np.argmin(cost))]
        else:  # sampled: still a member, and near the best
            m = prov.medoid(idx)
            cost = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1)).sum(axis=1)
            assert m in idx and cost[m] <= cost.min() * 1.05

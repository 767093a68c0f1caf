"""Province tagging by polygon: well-known places, foreign places, the border tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import Geod

from geopak_core.boundaries import read_boundaries
from geopak_data.config import COAST_BBOXES
from geopak_data.tagging import ProvinceTagger, TagResult, border_rule, tag_points

COAST = COAST_BBOXES["PAK"]

PLACES = {
    # name: (lat, lon, expected province)
    "Karachi Saddar": (24.8607, 67.0011, "Sindh"),
    "Clifton, Karachi": (24.8138, 67.0300, "Sindh"),
    "Sea View beach, Karachi": (
        24.7867,
        67.0408,
        "Sindh",
    ),  # on the sand, just past the coarse coastline
    "Hyderabad": (25.3960, 68.3578, "Sindh"),
    "Sukkur": (27.7052, 68.8574, "Sindh"),
    "Lahore": (31.5204, 74.3587, "Punjab"),
    "Multan": (30.1575, 71.5249, "Punjab"),
    "Faisalabad": (31.4504, 73.1350, "Punjab"),
    "Rawalpindi Saddar": (33.5973, 73.0479, "Punjab"),
    "Murree": (33.9070, 73.3943, "Punjab"),
    "Islamabad Blue Area": (33.7104, 73.0551, "Islamabad Capital Territory"),
    "Faisal Mosque": (33.7295, 73.0372, "Islamabad Capital Territory"),
    "Peshawar": (34.0151, 71.5249, "Khyber Pakhtunkhwa"),
    "Abbottabad": (34.1688, 73.2215, "Khyber Pakhtunkhwa"),
    "Chitral": (35.8518, 71.7864, "Khyber Pakhtunkhwa"),
    "Mingora, Swat": (34.7717, 72.3602, "Khyber Pakhtunkhwa"),
    "Muzaffarabad": (34.3700, 73.4711, "Azad Kashmir"),
    "Mirpur": (33.1479, 73.7517, "Azad Kashmir"),
    "Gilgit": (35.9208, 74.3083, "Gilgit-Baltistan"),
    "Skardu": (35.2971, 75.6333, "Gilgit-Baltistan"),
    "Karimabad, Hunza": (36.3167, 74.6500, "Gilgit-Baltistan"),
    "Quetta": (30.1798, 66.9750, "Balochistan"),
    "Gwadar": (25.1216, 62.3254, "Balochistan"),
    "Turbat": (26.0031, 63.0440, "Balochistan"),
    "Chaman": (30.9210, 66.4597, "Balochistan"),
}
FOREIGN = {
    "Delhi": (28.6139, 77.2090),
    "Amritsar": (31.6340, 74.8723),
    "Kabul": (34.5553, 69.2075),
    "Kandahar": (31.6289, 65.7372),
    "Jalalabad": (34.4265, 70.4515),
    "Zahedan": (29.4963, 60.8629),
    "Kashgar": (39.4704, 75.9898),
    "Arabian Sea": (22.0, 64.0),
    "Arabian Sea off Karachi": (24.2, 66.6),
}


@pytest.fixture(scope="module")
def polys(boundaries_path):
    return read_boundaries(boundaries_path)


@pytest.fixture(scope="module")
def tagger(polys):
    return ProvinceTagger(polys, 5.0, coast_bboxes=COAST)


def test_well_known_places_land_in_their_unit(tagger):
    lat = np.array([v[0] for v in PLACES.values()])
    lon = np.array([v[1] for v in PLACES.values()])
    res = tagger.tag(lat, lon)
    got = dict(zip(PLACES, res.province_names(), strict=True))
    assert got == {k: v[2] for k, v in PLACES.items()}
    assert res.province_id.dtype == np.int8
    assert (res.border_km[res.status == TagResult.INSIDE] == 0).all()


def test_foreign_places_are_rejected(tagger):
    lat = np.array([v[0] for v in FOREIGN.values()])
    lon = np.array([v[1] for v in FOREIGN.values()])
    res = tagger.tag(lat, lon)
    assert (res.province_id == -1).all()
    assert (res.status == TagResult.OUTSIDE).all()
    assert list(res.province_names()) == [""] * len(FOREIGN)


def _offshore(polys, km: float) -> tuple[float, float]:
    """A point ``km`` out to sea from the coast nearest a point in the Arabian Sea off Karachi."""
    country = shapely.union_all(polys.geometry.values)
    sea = shapely.Point(66.80, 24.60)
    assert not country.contains(sea)
    coast = shapely.shortest_line(sea, country.boundary).coords[1]
    geod = Geod(ellps="WGS84")
    az, _, _ = geod.inv(coast[0], coast[1], sea.x, sea.y)
    lon, lat, _ = geod.fwd(coast[0], coast[1], az, km * 1000.0)
    return lat, lon


def test_just_offshore_gets_the_nearest_province(polys, tagger):
    pts = [_offshore(polys, km) for km in (0.5, 3.0, 4.9, 5.2, 8.0)]
    res = tagger.tag([p[0] for p in pts], [p[1] for p in pts])
    assert list(res.province_names()) == ["Sindh", "Sindh", "Sindh", "", ""]
    assert list(res.status) == [TagResult.SNAPPED] * 3 + [TagResult.OUTSIDE] * 2
    # border_km is the great-circle distance to the border, in km
    assert np.allclose(res.border_km[:4], [0.5, 3.0, 4.9, 5.2], atol=0.02)
    assert np.isnan(res.border_km[4])  # far beyond the band: not measured
    strict = ProvinceTagger(polys, 2.0, coast_bboxes=COAST).tag([pts[1][0]], [pts[1][1]])
    assert strict.province_id[0] == -1  # the tolerance is configurable
    wide = tag_points([pts[4][0]], [pts[4][1]], polys, tolerance_km=10.0, coast_bboxes=COAST)
    assert wide.province_names()[0] == "Sindh" and abs(wide.border_km[0] - 8.0) < 0.03


def test_invalid_coordinates(tagger):
    res = tagger.tag([np.nan, 0.0, 95.0, 31.5], [74.3, 0.0, 74.3, np.nan])
    assert (res.status == TagResult.INVALID).all()
    assert (res.province_id == -1).all()


def test_vectorised_matches_a_naive_loop(polys, tagger):
    rng = np.random.default_rng(7)
    n = 4000
    lon = rng.uniform(60.5, 78.2, n)
    lat = rng.uniform(23.3, 37.4, n)
    res = tagger.tag(lat, lon)
    naive = np.full(n, -1)
    for i in range(n):  # the slow reference the tagger must agree with
        p = shapely.Point(lon[i], lat[i])
        for pid, g in zip(polys["province_id"], polys.geometry, strict=True):
            if g.contains(p):
                naive[i] = pid
                break
    inside = naive >= 0
    assert inside.sum() > 500
    assert (res.province_id[inside] == naive[inside]).all()
    assert (res.status[inside] == TagResult.INSIDE).all()
    outside = ~inside
    snapped = res.status == TagResult.SNAPPED
    assert (snapped <= outside).all()
    assert (res.border_km[snapped] <= 5.0).all()
    # every snapped point really is within 5 km of its province (checked in a local metric frame)
    for i in np.flatnonzero(snapped):
        g = polys.geometry[int(res.province_id[i])]
        near = shapely.ops.nearest_points(g.boundary, shapely.Point(lon[i], lat[i]))[0]
        d = Geod(ellps="WGS84").inv(lon[i], lat[i], near.x, near.y)[2] / 1000
        assert d <= 5.2


def test_lookup_grid_agrees_with_the_exact_path(tagger):
    """The grid only short-cuts cells it proved pure; it must never change an answer."""
    from geopak_data.tagging import _GRID_DEG

    x0, y0, x1, y1 = tagger.zone_bounds
    rng = np.random.default_rng(11)
    lon = rng.uniform(x0, x1, 30000)
    lat = rng.uniform(y0, y1, 30000)
    # plus points exactly on level-1 and level-2 cell edges and corners
    ex = x0 + np.arange(0, (x1 - x0) / _GRID_DEG, 0.25) * _GRID_DEG
    ey = y0 + np.arange(0, (y1 - y0) / _GRID_DEG, 0.25) * _GRID_DEG
    gx, gy = np.meshgrid(ex[::7], ey[::7])
    lon = np.r_[lon, gx.ravel(), ex, np.full(ey.size, x0 + 123 * _GRID_DEG)]
    lat = np.r_[lat, gy.ravel(), np.full(ex.size, y0 + 57 * _GRID_DEG), ey]
    fast = tagger.tag(lat, lon)
    n = lat.size
    pid = np.full(n, -1, dtype=np.int8)
    border = np.full(n, np.nan)
    status = np.full(n, TagResult.OUTSIDE, dtype=np.int8)
    tagger._exact(np.arange(n), lat, lon, pid, border, status)
    assert (fast.province_id == pid).all()
    assert (fast.status == status).all()
    assert np.array_equal(fast.border_km, border, equal_nan=True)
    assert (status == TagResult.INSIDE).sum() > 5000 and (status == TagResult.SNAPPED).sum() > 50


# ----------------------------------------------------------------------------- border kinds
# Towns just across Pakistan's land borders (GeoNames-style coordinates, all < 5 km out).
ACROSS_LAND = {
    "Kupwara (India)": (34.03, 74.26),
    "Khem Karan (India)": (31.146, 74.556),
    "Attari (India)": (31.600, 74.606),
    "Dera Baba Nanak (India)": (32.035, 75.027),
}


def test_land_border_points_are_not_snapped(tagger):
    lat = np.array([v[0] for v in ACROSS_LAND.values()])
    lon = np.array([v[1] for v in ACROSS_LAND.values()])
    res = tagger.tag(lat, lon)
    assert (res.province_id == -1).all() and (res.status == TagResult.OUTSIDE).all()
    assert list(res.kind_names()) == ["land"] * len(ACROSS_LAND)
    assert ((res.border_km > 0) & (res.border_km < 5.0)).all()  # within the old tolerance


def test_snapping_across_land_is_an_explicit_choice(polys):
    lat = np.array([v[0] for v in ACROSS_LAND.values()])
    lon = np.array([v[1] for v in ACROSS_LAND.values()])
    both = ProvinceTagger(polys, 5.0, snap_borders=("coast", "land"), coast_bboxes=COAST)
    res = both.tag(lat, lon)
    assert (res.status == TagResult.SNAPPED).all()
    assert set(res.province_names()) <= {"Punjab", "Azad Kashmir"}
    # without coast boxes no border is coast, so the sea point is rejected too
    sea = _offshore(polys, 1.0)
    bare = ProvinceTagger(polys, 5.0).tag([sea[0]], [sea[1]])
    assert bare.status[0] == TagResult.OUTSIDE and bare.kind_names()[0] == "land"
    with pytest.raises(ValueError, match="border kind"):
        ProvinceTagger(polys, 5.0, snap_borders=("river",))


def test_offshore_points_snap_across_the_coast(polys, tagger):
    res = tagger.tag([_offshore(polys, 1.0)[0]], [_offshore(polys, 1.0)[1]])
    assert res.status[0] == TagResult.SNAPPED and res.kind_names()[0] == "coast"


def _squares():
    """A generic two-province country far from any real one's shape: an outer province with
    a square hole and an inner province in the hole, a ~2 km gap (a digitising sliver) between."""
    import geopandas as gpd

    outer = shapely.Polygon(
        [(66, 27), (68, 27), (68, 29), (66, 29)],
        holes=[[(66.9, 27.9), (67.1, 27.9), (67.1, 28.1), (66.9, 28.1)]],
    )
    inner = shapely.box(66.92, 27.92, 67.08, 28.08)
    return gpd.GeoDataFrame(
        {"province": ["A", "B"], "province_id": [0, 1]},
        geometry=[shapely.segmentize(outer, 0.01), shapely.segmentize(inner, 0.01)],
        crs="EPSG:4326",
    )


def test_coast_comes_from_the_configured_boxes_and_slivers_snap():
    squares = _squares()
    # the south edge (lat 27) is coast, every other edge a land border
    t = ProvinceTagger(squares, 5.0, coast_bboxes=[(65.5, 26.5, 68.5, 27.2)])
    lat = np.array([26.98, 28.0, 28.0, 28.0])
    lon = np.array([67.0, 68.02, 66.91, 64.0])
    res = t.tag(lat, lon)
    assert list(res.kind_names()) == ["coast", "land", "internal", ""]
    snapped, outside = TagResult.SNAPPED, TagResult.OUTSIDE
    assert list(res.status) == [snapped, outside, snapped, outside]
    assert list(res.province_id) == [0, -1, 0, -1]
    assert np.allclose(res.border_km[:2], [2.22, 1.97], atol=0.05)


def test_border_rule_says_which_rule_applies():
    assert "across the sea coast only" in border_rule(5.0, ["coast"], COAST)
    assert "land border are rejected" in border_rule(5.0, ["coast"], COAST)
    assert "3 configured" in border_rule(5.0, ["coast"], COAST)
    assert "coast and land borders" in border_rule(5.0, ["land", "coast"], COAST)
    assert "no border tolerance" in border_rule(0.0, ["coast"], COAST)
    assert "no border tolerance" in border_rule(5.0, [], COAST)

"""The shared map: draws offline, with or without province polygons, from several input shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from geopak_data.maps import plot_map

CELLS = pd.DataFrame(
    {
        "cell_id": [0, 1, 2],
        "province_id": [1, 1, 5],
        "center_lat": [31.55, 31.40, 28.0],
        "center_lon": [74.35, 73.10, 65.0],
        "radius_km": [4.0, 30.0, 50.0],
        "urban": [True, False, False],
    }
)


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _near(pixels, rgb, tol=40):
    return int((np.abs(pixels - np.array(rgb)).sum(axis=2) < tol).sum())


def test_map_with_everything_and_no_polygons(tmp_path):
    rng = np.random.default_rng(0)
    lat = 31.5 + rng.normal(0, 0.2, 500)
    lon = 74.0 + rng.normal(0, 0.2, 500)
    urban_cell = CELLS.iloc[[0]].assign(center_lat=31.5, center_lon=74.0, radius_km=5.0)
    base = plot_map(tmp_path / "base.png", boundaries=False, points=(lat, lon), title="photos")
    full = plot_map(
        tmp_path / "full.png",
        boundaries=False,
        points=pd.DataFrame({"lat": lat, "lon": lon, "province_id": np.full(500, 1)}),
        cells=urban_cell,
        predictions=[{"lat": 31.6, "lon": 74.1, "label": "guess", "color": "#00ff00"}],
        title="photos",
    )
    assert base.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a, b = _pixels(base), _pixels(full)
    assert a.shape[2] == 3 and b.shape[0] > 200
    assert _near(a, (192, 57, 43)) == 0 and _near(b, (192, 57, 43)) > 20  # the urban cell's circle
    assert _near(a, (0, 255, 0)) == 0 and _near(b, (0, 255, 0)) > 20  # the prediction's star
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_map_over_polygons(tmp_path, box_boundaries):
    table = pa.table(
        {
            "lat": [24.86, 31.55, 33.7],
            "lon": [67.01, 74.35, 73.05],
            "province_id": pa.array([0, 1, 3], pa.int8()),
        }
    )
    with_poly = plot_map(
        tmp_path / "poly.png", boundaries=box_boundaries, points=table, cells=CELLS
    )
    without = plot_map(tmp_path / "none.png", boundaries=False, points=table, cells=CELLS)
    a, b = _pixels(with_poly), _pixels(without)
    assert a.shape != b.shape or np.abs(a - b).sum() > 0  # the polygons are drawn


def test_default_boundaries_load_from_environment(tmp_path, box_boundaries, monkeypatch):
    monkeypatch.setenv("GEOPAK_BOUNDARIES", str(box_boundaries))
    default = _pixels(plot_map(tmp_path / "d.png", cells=CELLS))
    explicit = _pixels(plot_map(tmp_path / "e.png", boundaries=box_boundaries, cells=CELLS))
    assert default.shape == explicit.shape and np.array_equal(default, explicit)


def test_unavailable_polygons_still_draw(tmp_path):
    out = plot_map(
        tmp_path / "m.png", boundaries=tmp_path / "nope.geojson", points=([30.0], [70.0])
    )
    assert _pixels(out).size > 0


def test_empty_map_is_pakistan(tmp_path):
    out = plot_map(tmp_path / "sub" / "empty.png", boundaries=False, title="nothing yet")
    assert out.exists() and out.parent.name == "sub"

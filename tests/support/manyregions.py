"""A generated country with more first-level units than an int8 holds (Slovenia has ~212).

``XMR`` (user-assigned ISO 3166-1 alpha-3) is a grid of ``n`` small square regions
(``size`` degrees each, ``cols`` per row) north-east of lon 30, lat 10. Codes ``XM-001`` ..
sort in grid order, so region ``i`` of the grid gets id ``i``; the GeoJSON lists them in
reverse, so the tests see ids assigned by code, not by file order.
"""

from __future__ import annotations

import json
from pathlib import Path

COUNTRY = "XMR"
ORIGIN = (30.0, 10.0)  # lon, lat of the grid's south-west corner


def box(i: int, *, cols: int = 15, size: float = 0.2) -> tuple[float, float, float, float]:
    """(min lon, min lat, max lon, max lat) of region ``i``."""
    row, col = divmod(i, cols)
    x0, y0 = ORIGIN[0] + col * size, ORIGIN[1] + row * size
    return (x0, y0, x0 + size, y0 + size)


def name(i: int) -> str:
    return f"Region {i + 1:03d}"


def code(i: int) -> str:
    return f"XM-{i + 1:03d}"


def write_grid_country(path: Path, n: int = 150, *, cols: int = 15, size: float = 0.2) -> Path:
    """Write ``n`` box regions as a geoBoundaries-shaped ADM1 GeoJSON."""
    feats = []
    for i in reversed(range(n)):
        x0, y0, x1, y1 = box(i, cols=cols, size=size)
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        feats.append(
            {
                "type": "Feature",
                "properties": {
                    "shapeName": name(i),
                    "shapeISO": code(i),
                    "shapeGroup": COUNTRY,
                    "shapeType": "ADM1",
                },
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}), "utf-8")
    return path

"""Seven box-shaped stand-ins for Pakistan's provinces, written as GeoJSON by the tests.

For the tests that need *a* valid ADM1 file of Pakistan (names, codes, seven units, shapes
to draw or look up) but not the real borders: they run without the geoBoundaries file.
Each box holds the province's largest city, so a lookup of those cities gives the right
province; nothing near a real border is meaningful.
"""

from __future__ import annotations

import json
from pathlib import Path

# name, ISO 3166-2, (min lon, min lat, max lon, max lat)
BOXES = (
    ("Sindh", "PK-SD", (66.5, 23.7, 71.0, 28.5)),
    ("Punjab", "PK-PB", (69.5, 28.5, 75.5, 33.0)),
    ("Khyber Pakhtunkhwa", "PK-KP", (69.5, 33.0, 72.8, 36.0)),
    ("Islamabad Capital Territory", "PK-IS", (72.8, 33.5, 73.3, 33.9)),
    ("Gilgit-Baltistan", "PK-GB", (72.8, 35.0, 77.5, 37.0)),
    ("Balochistan", "PK-BA", (61.0, 28.5, 69.5, 31.0)),
    ("Azad Kashmir", "PK-JK", (73.3, 33.0, 74.8, 35.0)),
)
CITIES = {  # (lat, lon) of a city inside each box
    "Sindh": (24.86, 67.01),
    "Punjab": (31.55, 74.35),
    "Khyber Pakhtunkhwa": (34.01, 71.58),
    "Islamabad Capital Territory": (33.70, 73.05),
    "Gilgit-Baltistan": (35.92, 74.31),
    "Balochistan": (30.18, 66.97),
    "Azad Kashmir": (34.37, 73.47),
}


def write_box_provinces(path: Path) -> Path:
    """Write the seven boxes as a geoBoundaries-shaped GeoJSON (``shapeName``/``shapeISO``)."""
    feats = []
    for name, iso, (x0, y0, x1, y1) in BOXES:
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        feats.append(
            {
                "type": "Feature",
                "properties": {"shapeName": name, "shapeISO": iso, "shapeGroup": "PAK"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path

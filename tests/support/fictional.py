"""A small fictional country for tests: three first-level regions, written as GeoJSON.

``XFA`` (a user-assigned ISO 3166-1 alpha-3 code) lies on the equator east of the
antimeridian-free zone around lon 10..12, lat 0..2, with the sea to the south and a land
neighbour (``XNB``) to the north:

* ``Coastal`` (``XF-C``): the southern strip, a multipolygon with an offshore island;
* ``Ringland`` (``XF-R``): the north-west block, a polygon with a hole (a lake);
* ``Eastmark`` (``XF-E``): the north-east block.

Written in an order that is not the id order, so the tests see ids assigned by code.
"""

from __future__ import annotations

import json
from pathlib import Path

COUNTRY = "XFA"
# id order: by ISO 3166-2 code
REGIONS = (("Coastal", "XF-C"), ("Eastmark", "XF-E"), ("Ringland", "XF-R"))
BBOX = (10.0, 0.0, 12.0, 2.0)  # the mainland

COASTAL_MAIN = [[10.0, 0.0], [12.0, 0.0], [12.0, 1.0], [10.0, 1.0], [10.0, 0.0]]
ISLAND = [[10.8, -0.6], [11.2, -0.6], [11.2, -0.3], [10.8, -0.3], [10.8, -0.6]]
RING_OUTER = [[10.0, 1.0], [11.0, 1.0], [11.0, 2.0], [10.0, 2.0], [10.0, 1.0]]
RING_HOLE = [[10.4, 1.4], [10.6, 1.4], [10.6, 1.6], [10.4, 1.6], [10.4, 1.4]]
EAST = [[11.0, 1.0], [12.0, 1.0], [12.0, 2.0], [11.0, 2.0], [11.0, 1.0]]
# the land neighbour, north of the country (shares the lat 2.0 edge)
NEIGHBOUR = [[10.0, 2.0], [12.0, 2.0], [12.0, 3.0], [10.0, 3.0], [10.0, 2.0]]

# (lat, lon, region name) of points well inside each region
INSIDE = [
    (0.5, 10.5, "Coastal"),
    (-0.45, 11.0, "Coastal"),  # on the island
    (1.2, 10.2, "Ringland"),
    (1.8, 10.8, "Ringland"),
    (1.5, 11.5, "Eastmark"),
]
IN_HOLE = (1.5, 10.5)  # the lake: no region


def _feature(name: str, code: str, geometry: dict, group: str = COUNTRY) -> dict:
    return {
        "type": "Feature",
        "properties": {
            "shapeName": name,
            "shapeISO": code,
            "shapeGroup": group,
            "shapeType": "ADM1",
        },
        "geometry": geometry,
    }


def features() -> list[dict]:
    return [
        _feature("Ringland", "XF-R", {"type": "Polygon", "coordinates": [RING_OUTER, RING_HOLE]}),
        _feature("Eastmark", "XF-E", {"type": "Polygon", "coordinates": [EAST]}),
        _feature(
            "Coastal",
            "XF-C",
            {"type": "MultiPolygon", "coordinates": [[COASTAL_MAIN], [ISLAND]]},
        ),
    ]


def write_country(path: Path) -> Path:
    """Write the country's ADM1 GeoJSON to ``path``."""
    doc = {"type": "FeatureCollection", "features": features()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), "utf-8")
    return path


def write_neighbour(path: Path) -> Path:
    """The land neighbour's outline (ADM0) as GeoJSON."""
    doc = {
        "type": "FeatureCollection",
        "features": [
            _feature(
                "Neighbourland", "XN-A", {"type": "Polygon", "coordinates": [NEIGHBOUR]}, "XNB"
            )
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), "utf-8")
    return path

"""Shared pytest fixtures: the province polygons (from GEOPAK_BOUNDARIES) and quiet progress."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_DEFAULT_BOUNDARIES = REPO.parent / "shared" / "boundaries" / "geoBoundaries-PAK-ADM1.geojson"

os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")
if "GEOPAK_BOUNDARIES" not in os.environ and _DEFAULT_BOUNDARIES.exists():
    os.environ["GEOPAK_BOUNDARIES"] = str(_DEFAULT_BOUNDARIES)
elif (
    os.environ.get("GEOPAK_BOUNDARIES") and not Path(os.environ["GEOPAK_BOUNDARIES"]).is_absolute()
):
    os.environ["GEOPAK_BOUNDARIES"] = str(Path(os.environ["GEOPAK_BOUNDARIES"]).resolve())


@pytest.fixture(scope="session")
def boundaries_path() -> Path:
    """The geoBoundaries PAK ADM1 file the tests use (never committed to the repo)."""
    p = Path(os.environ.get("GEOPAK_BOUNDARIES", ""))
    if not p.is_file():
        raise RuntimeError(
            "set GEOPAK_BOUNDARIES to the geoBoundaries PAK ADM1 GeoJSON (see README)"
        )
    return p


@pytest.fixture(scope="session")
def box_boundaries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven box-shaped provinces the tests generate (no geoBoundaries file needed)."""
    from support.boxprovinces import write_box_provinces

    return write_box_provinces(tmp_path_factory.mktemp("boxes") / "provinces.geojson")


@pytest.fixture(autouse=True)
def _fresh_boundaries_advice():
    """A command run in-process declares whether it has ``--boundaries``
    (``boundaries.set_cli_advice``); each test starts from the library default again, so the
    advice a test expects does not depend on which CLI an earlier test ran."""
    from geopak_core import boundaries

    saved = dict(boundaries._ADVICE)
    yield
    boundaries._ADVICE.update(saved)

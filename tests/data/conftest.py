"""Fixtures shared by the data-tower tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The loopback image host with its built-in fixtures (photos, faults, redirects), one per
    test module: its base URL."""
    from geopak_data.imageserver import start_image_server

    base, stop = start_image_server()
    yield base
    stop()


@pytest.fixture(scope="module")
def maps_stand_in() -> Iterator[None]:
    """``maps.plot_map`` replaced by a stand-in for a whole module (``pytestmark =
    pytest.mark.usefixtures("maps_stand_in")``): for tests whose subject is not the map."""
    from support.workfolder import fake_maps

    with fake_maps():
        yield

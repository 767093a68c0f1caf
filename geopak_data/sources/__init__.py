"""Crawl sources and their registry.

``get_source(name, config=..., endpoint=..., **opts)`` builds a source by name. Sources are
imported lazily so ``geopak-data --help`` stays instant and a missing optional client library
only matters for the source that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from geopak_core.errors import GeopakError

from ..config import PipelineConfig
from .base import NullProgress, Progress, Source, discovery_rejects, write_unit

# name -> (module, class)
SOURCES: dict[str, tuple[str, str]] = {
    "flickr": ("geopak_data.sources.flickr", "FlickrSource"),
    "places": ("geopak_data.sources.places", "PlacesSource"),
    "yfcc": ("geopak_data.sources.yfcc", "YfccSource"),
    "gldv2": ("geopak_data.sources.gldv2", "Gldv2Source"),
    "commons": ("geopak_data.sources.commons", "CommonsSource"),
    "mapillary": ("geopak_data.sources.mapillary", "MapillarySource"),
}


def get_source(
    name: str, *, config: PipelineConfig, endpoint: str | None = None, **opts: Any
) -> Source:
    """The source called ``name`` built with the pipeline config, an endpoint override and
    source-specific options (e.g. ``metadata=`` for yfcc, ``train_csv=`` for gldv2)."""
    if name not in SOURCES:
        raise GeopakError(f"unknown source {name!r} (one of {', '.join(SOURCES)})")
    module_name, cls_name = SOURCES[name]
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    return cls(config, endpoint, **opts)


__all__ = [
    "SOURCES",
    "NullProgress",
    "Progress",
    "Source",
    "discovery_rejects",
    "get_source",
    "write_unit",
]

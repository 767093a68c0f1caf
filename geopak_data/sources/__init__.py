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
from ..source_registry import SOURCES
from .base import NullProgress, Progress, Source, discovery_rejects, write_unit


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

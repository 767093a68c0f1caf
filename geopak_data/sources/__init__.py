"""Crawl sources: the factory over the registry (``geopak_data/source_registry.py``: names,
the restricted flag, what each source needs, its help).

``get_source(name, config=..., endpoint=..., **opts)`` builds a source by name. Sources are
imported lazily so ``geopak-data --help`` stays instant and a missing optional client library
only matters for the source that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from geopak_core.errors import GeopakError

from ..config import PipelineConfig
from ..source_registry import (
    SOURCES,
    FileInput,
    SourceSpec,
    missing_inputs,
    restricted_sources,
    source_names,
)
from .base import NullProgress, Progress, Source, discovery_rejects, write_unit


def get_source(
    name: str, *, config: PipelineConfig, endpoint: str | None = None, **opts: Any
) -> Source:
    """The source called ``name`` built with the pipeline config, an endpoint override and
    source-specific options (e.g. ``metadata=`` for yfcc, ``train_csv=`` for gldv2)."""
    if name not in SOURCES:
        raise GeopakError(f"unknown source {name!r} (one of {', '.join(SOURCES)})")
    spec = SOURCES[name]
    module = importlib.import_module(spec.module)
    cls = getattr(module, spec.cls)
    return cls(config, endpoint, **opts)


__all__ = [
    "SOURCES",
    "FileInput",
    "NullProgress",
    "Progress",
    "Source",
    "SourceSpec",
    "discovery_rejects",
    "get_source",
    "missing_inputs",
    "restricted_sources",
    "source_names",
    "write_unit",
]

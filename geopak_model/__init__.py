"""geopak_model: the GEOPAK dual-encoder network, its training and its inference.

``from geopak_model import GeopakPredictor`` is the contract's entry point. Heavy modules
(torch, open_clip) load on first use, so ``geopak_model.config`` stays cheap to import.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GeopakPredictor": ("geopak_model.predictor", "GeopakPredictor"),
    "GeopakModel": ("geopak_model.model", "GeopakModel"),
    "build_model": ("geopak_model.model", "build_model"),
    "ModelConfig": ("geopak_model.config", "ModelConfig"),
    "load_model_config": ("geopak_model.config", "load_model_config"),
    "CellTable": ("geopak_model.cells", "CellTable"),
    "save_checkpoint": ("geopak_model.checkpoint", "save_checkpoint"),
    "load_checkpoint": ("geopak_model.checkpoint", "load_checkpoint"),
    "mixture_of_hypotheses": ("geopak_model.inference", "mixture_of_hypotheses"),
    "predict_batch": ("geopak_model.inference", "predict_batch"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geopak_model' has no attribute {name!r}")

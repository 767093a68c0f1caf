"""Self-contained, safely loadable checkpoints.

One file holds everything ``geopak-predict`` needs (config, cell table, province list,
preprocessing, weights) plus optional training state under ``extra``. The payload is only
tensors and plain Python containers, so it loads with ``torch.load(weights_only=True)``: a
checkpoint downloaded from somewhere cannot run code on the machine that opens it. Files
that need arbitrary unpickling are refused. Writes are atomic (temp file + rename), so a run
killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopak_core.errors import GeopakError, not_a_file
from geopak_core.io import atomic_path

from .cells import CellTable
from .config import ModelConfig
from .model import GeopakModel

log = logging.getLogger(__name__)

FORMAT = "geopak-checkpoint"
FORMAT_VERSION = 1
_PLAIN = (
    str,
    int,
    float,
    bool,
    bytes,
    type(None),
    torch.Tensor,
    torch.dtype,
    torch.Size,
    torch.device,
)


def _check_plain(obj: Any, where: str) -> None:
    """Fail at save time, not at resume time, on anything weights_only loading would refuse."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str | int | float | bool | type(None)):
                raise TypeError(
                    f"checkpoint {where} has a key of type {type(k).__name__}; use plain types"
                )
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, list | tuple | set):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint {where} is a {type(obj).__module__}.{type(obj).__name__}; store only tensors "
        "and plain containers (e.g. torch.from_numpy(...))"
    )


def tensor_digest(state_dict: Mapping[str, Any]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order. torch.save's
    zip is stored uncompressed and torch.load checks no CRC, so flipped bytes in a weight load
    silently; this digest, stored beside the weights, makes such a file refused."""
    import hashlib

    h = hashlib.sha256(b"geopak-tensors-v1\0")
    for name, t in sorted(_tensors(state_dict, "")):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{t.numel()}\0".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _tensors(obj: Any, where: str) -> list[tuple[str, torch.Tensor]]:
    """Every tensor inside nested mappings/sequences, with a path naming it."""
    if isinstance(obj, torch.Tensor):
        return [(where, obj)]
    if isinstance(obj, Mapping):
        return [x for k, v in obj.items() for x in _tensors(v, f"{where}/{k}")]
    if isinstance(obj, list | tuple):
        return [x for i, v in enumerate(obj) for x in _tensors(v, f"{where}[{i}]")]
    return []


def make_payload(model: GeopakModel, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict for ``model``: plain types plus tensors and integrity digests, so it loads
    with ``weights_only`` and a corrupted file is detected rather than half-loaded."""
    state = model.state_dict()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "cells": model.cells.to_dict(),
        "provinces": list(model.cells.regions.names),  # also in cells["regions"], with codes
        "preprocessing": {k: dict(v) for k, v in model.preprocess.items()},
        "phase": int(model.phase),
        "state_dict": state,
        "extra": dict(extra or {}),
        "encoders": {k: dict(v) for k, v in model.encoder_provenance.items()},
        # additive integrity fields: older checkpoints without them still load
        "cells_sha256": model.cells.digest(),
        "tensors_sha256": tensor_digest({"state_dict": state, "extra": extra or {}}),
    }
    calibration = getattr(model, "calibration", None)
    if calibration is not None:  # additive: older readers ignore it (calibration.py)
        payload["calibration"] = calibration.to_dict()
    _check_plain(payload, "payload")
    return payload


def save_checkpoint(
    path: str | Path, model: GeopakModel, *, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (and ``extra`` training state) to ``path`` atomically; returns the path."""
    payload = make_payload(model, extra)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_payload(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's payload, loaded with weights_only=True, validated as GEOPAK's."""
    p = Path(path)
    if not p.is_file():
        raise GeopakError(not_a_file(p, "checkpoint"))
    if not zipfile.is_zipfile(p):  # torch.save's format; raw/legacy pickles are never opened
        raise GeopakError(f"{p}: not a readable checkpoint (not a torch.save zip archive)")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise GeopakError(
                f"{p}: refused: the file holds pickled Python objects ({found.group(1)}) that are "
                "not tensors or plain data (unsafe to load)"
            ) from None
        raise GeopakError(
            f"{p}: not a readable checkpoint (its pickle holds data that weights-only loading does not accept)"
        ) from None
    except Exception as exc:  # not a zip / truncated / wrong magic: all mean "not our file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeopakError(
            f"{p}: not a readable checkpoint ({first.split('. ')[0][:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise GeopakError(f"{p}: not a GEOPAK checkpoint (no '{FORMAT}' header)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GeopakError(
            f"{p}: checkpoint format version {version!r} is newer than this geopak understands ({FORMAT_VERSION})"
        )
    missing = [k for k in ("config", "cells", "state_dict") if k not in payload]
    if missing:
        raise GeopakError(f"{p}: checkpoint is missing {', '.join(missing)}")
    _verify(payload, p)
    return payload


def _verify(payload: dict[str, Any], p: Path) -> None:
    """Refuse a checkpoint whose bytes changed after it was written (tensor digest), and one
    whose config asks for absurd sizes, before any network is allocated."""
    stored = payload.get("tensors_sha256")
    state = payload["state_dict"]
    if not isinstance(state, Mapping):
        raise GeopakError(f"{p}: checkpoint state_dict is not a table of tensors")
    if stored is not None and stored != tensor_digest(
        {"state_dict": state, "extra": payload.get("extra", {})}
    ):
        raise GeopakError(
            f"{p}: checkpoint is corrupted (its weights do not match their recorded sha256); use another copy"
        )
    if stored is None:
        log.info("%s: checkpoint from an older geopak (no tensor checksum); not verified", p)
    try:
        ModelConfig.from_dict(payload["config"])
    except GeopakError as exc:
        raise GeopakError(f"{p}: refused: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise GeopakError(f"{p}: refused: unreadable config ({exc})") from None


def model_from_payload(payload: dict[str, Any], path: str | Path = "<checkpoint>") -> GeopakModel:
    """Rebuild the model a payload describes; a damaged, foreign or mismatched payload is one
    line naming ``path``, never a model with silently wrong weights."""
    try:
        config = ModelConfig.from_dict(payload["config"])
        cells = CellTable.from_dict(payload["cells"])
    except GeopakError as exc:
        raise GeopakError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise GeopakError(f"{path}: unreadable config or cell table ({exc})") from None
    if cells.num_cells > 1_000_000:
        raise GeopakError(f"{path}: refused: {cells.num_cells} geocells is not a GEOPAK model")
    stored = payload.get("cells_sha256")
    if stored is not None and stored != cells.digest():
        raise GeopakError(
            f"{path}: checkpoint is corrupted (its cell table does not match its sha256)"
        )
    names = list(cells.regions.names)
    if list(payload.get("provinces", names)) != names:
        raise GeopakError(
            f"{path}: province list {payload.get('provinces')} differs from its region table {names}"
        )
    model = GeopakModel(config, cells)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise GeopakError(
            f"{path}: weights do not match the stored config ({str(exc).splitlines()[0]})"
        ) from None
    model.set_phase(int(payload.get("phase", 1)))
    model.encoder_provenance = {k: dict(v) for k, v in (payload.get("encoders") or {}).items()}
    from .calibration import Calibration

    try:
        model.calibration = Calibration.from_dict(payload.get("calibration"))
    except GeopakError as exc:
        raise GeopakError(f"{path}: {exc}") from None
    return model


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[GeopakModel, dict[str, Any]]:
    """(model in eval mode on ``map_location``, payload). The payload's ``extra`` holds
    whatever training state was saved with it."""
    payload = read_payload(path, map_location="cpu")
    model = model_from_payload(payload, path).to(map_location)
    model.eval()
    return model, payload


# ----------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG state as plain data, for ``extra``."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    if "python" in state:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

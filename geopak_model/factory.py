"""The one way a GEOPAK model comes into being: from a checkpoint, or built from a config.

Training, the embedding cache, evaluation and the predictor all call :func:`make_model`, so
"which model is this" has one answer: a checkpoint is rebuilt from its own config and cell
table (and checked against the shard folder it is used with); otherwise a preset or TOML file
plus the folder's cell table make a fresh, seeded network whose encoders carry the weights the
config names (see :mod:`weights`; ``random_init`` says random on purpose).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from geopak_core.errors import GeopakError, not_a_file

from .model import GeopakModel


def model_config_for(
    *, preset: str = "base", model_config: str | None = None, random_init: bool = False
) -> Any:
    """The ModelConfig of a preset or TOML file; ``random_init`` drops every named weight."""
    from .config import RANDOM_INIT_OVERRIDES, load_model_config

    overrides = dict(RANDOM_INIT_OVERRIDES) if random_init else {}
    return load_model_config(model_config or preset, **overrides)


def make_model(
    *,
    checkpoint: str | Path | None = None,
    folder: Any = None,
    preset: str = "base",
    model_config: str | None = None,
    seed: int = 0,
    random_init: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[GeopakModel, dict[str, Any]]:
    """(model on ``device``, checkpoint payload without its weights, or {} for a new model).

    A loaded model is in eval mode, a new one in train mode (PyTorch's default). ``folder``
    (a ShardFolder) supplies the cell table of a new model and is checked against a loaded one.
    """
    from .checkpoint import load_checkpoint

    if checkpoint:
        if not Path(checkpoint).is_file():
            raise GeopakError(not_a_file(checkpoint, "checkpoint"))
        model, payload = load_checkpoint(checkpoint, map_location=device)
        if folder is not None:  # same ids, centres and provinces, not just the same count
            from .cells import CellTable

            model.cells.require_same(
                CellTable.from_parquet(folder.cells_path),
                what=str(checkpoint),
                where=str(folder.cells_path),
                advice="use it with the shard folder it was made for",
            )
        payload = {k: v for k, v in payload.items() if k != "state_dict"}
        return model, payload
    if folder is None:
        raise GeopakError("a new model needs a shard folder (its geocells size the heads)")
    from .cells import CellTable
    from .model import build_model

    cfg = model_config_for(preset=preset, model_config=model_config, random_init=random_init)
    cells = CellTable.from_parquet(folder.cells_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, cells)
    return model.to(device), {}

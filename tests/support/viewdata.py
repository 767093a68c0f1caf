"""Data the viewer tests serve: a toy shard folder and a tiny checkpoint on its cells."""

from __future__ import annotations

from pathlib import Path


def make_view_data(root: Path, *, n: int = 120) -> tuple[Path, Path]:
    """(shard folder, checkpoint): toy shards with ``n`` samples and a random tiny model."""
    import torch

    from geopak_model.cells import CellTable
    from geopak_model.checkpoint import save_checkpoint
    from geopak_model.config import load_model_config
    from geopak_model.model import GeopakModel
    from geopak_model.testing import make_toy_shards

    shards = make_toy_shards(root / "shards", n=n, per_shard=30, seed=3)
    torch.manual_seed(0)
    model = GeopakModel(load_model_config("tiny"), CellTable.from_parquet(shards / "cells.parquet"))
    ckpt = save_checkpoint(root / "ckpt" / "best.pt", model)
    return shards, ckpt

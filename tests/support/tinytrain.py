"""A tiny model trained on a shard folder the quick way: embed once, phase 1 on the cache."""

from __future__ import annotations

from pathlib import Path


def train_tiny_phase1(shards: Path, tmp: Path, *, epochs: int, batch_size: int) -> Path:
    """Embed ``shards`` with the ``tiny`` preset into ``tmp/f`` and train phase 1 from that
    cache into ``tmp/r`` on one CPU thread; returns the run's ``best.pt``."""
    import torch

    from geopak_model.embed import embed
    from geopak_model.train import train

    torch.set_num_threads(1)
    common = dict(shards=shards, num_workers=0, seed=0, device="cpu")
    embed(out=tmp / "f", preset="tiny", **common)
    train(
        out=tmp / "r",
        phase=1,
        features=tmp / "f",
        epochs=epochs,
        batch_size=batch_size,
        plots=False,
        **common,
    )
    return tmp / "r" / "best.pt"

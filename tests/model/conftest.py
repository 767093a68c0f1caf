"""Shared fixtures for the training/evaluation tests .

Shard folders are generated once per session by :func:`geopak_model.testing.make_toy_shards`
(colour = province, stripes = cell, shading = offset), in exactly the contract's layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.threads import single_thread

from geopak_model.testing import make_toy_shards


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 images (~200 train), 4 provinces, 10 cells, 40 images per shard."""
    return make_toy_shards(tmp_path_factory.mktemp("toy") / "shards", n=300, per_shard=40, seed=0)


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 images (~85 train) for tests that train from pixels several times."""
    return make_toy_shards(tmp_path_factory.mktemp("small") / "shards", n=120, per_shard=24, seed=1)


@pytest.fixture(scope="session")
def toy_features(toy_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedding cache of ``toy_shards`` under a seeded random ``tiny`` model."""
    from geopak_model.embed import embed

    out = tmp_path_factory.mktemp("feats") / "feats"
    with single_thread():
        embed(shards=toy_shards, out=out, preset="tiny", seed=0, num_workers=0)
    return out


@pytest.fixture
def one_thread():
    with single_thread():
        yield

"""Shared fixtures for the training/evaluation tests (import into a test module to use).

``toy_shards`` is one small shard folder in the contract's layout, generated once per test
session by :func:`geopak_model.testing.make_toy_shards` (colour = province, stripes = cell).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geopak_model.testing import make_toy_shards


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_shards(tmp_path_factory.mktemp("toy") / "shards", n=300, per_shard=40, seed=0)


@pytest.fixture(autouse=False)
def one_thread():
    """Keep torch to one thread: the test machine is shared, and results stay reproducible."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

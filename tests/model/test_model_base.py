"""The ``base`` preset (CLIP ViT-B/16 + ResNet-50 Places365) builds and runs one CPU forward pass."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from geopak_model.cells import CellTable
from geopak_model.config import RANDOM_INIT_OVERRIDES, load_model_config
from geopak_model.model import build_model

pytestmark = pytest.mark.slow

torch.set_num_threads(1)  # 2 shared cores: more threads only spin


def test_base_preset_one_forward_pass():
    torch.manual_seed(0)
    cells = CellTable(
        cell_id=np.arange(3),
        province_id=[0, 1, 4],
        center_lat=[24.86, 31.52, 35.92],
        center_lon=[67.0, 74.36, 74.31],
        radius_km=[5.0, 10.0, 40.0],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random encoders: no weight files in tests
        model = build_model(load_model_config("base", **RANDOM_INIT_OVERRIDES), cells)
    model.eval()
    assert (model.clip_dim, model.places_dim) == (512, 2048)
    assert model.clip.visual.image_size == (224, 224) and len(model.clip.blocks()) == 12
    assert len(model.places.blocks()) == 16  # ResNet-50: 3 + 4 + 6 + 3 bottlenecks
    # ViT-B/16 image tower (~86M) + ResNet-50 trunk (~23.5M) + heads.
    assert 105e6 < model.num_parameters() < 125e6
    with torch.inference_mode():
        out = model(
            torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224), cell_ids=torch.tensor([2])
        )
    assert out["fused"].shape == (1, 512) and out["province_logits"].shape == (1, 7)
    assert out["cell_logits"].shape == (1, 3) and out["offset"].shape == (1, 2)
    assert all(torch.isfinite(v).all() for v in out.values())

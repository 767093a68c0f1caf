"""GEOPAK network (tiny preset): config, cell table, shapes, gradients, gate, freezing, weights."""

from __future__ import annotations

import warnings

import numpy as np
import open_clip
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torchvision
from PIL import Image

from geopak_core.errors import ConfigError, GeopakError
from geopak_core.regions import PAKISTAN
from geopak_model.cells import CellTable
from geopak_model.config import ModelConfig, load_model_config
from geopak_model.model import GeopakModel, build_model, conditional_cell_log_probs

torch.set_num_threads(1)  # 2 shared cores: more threads only spin


def make_cells() -> CellTable:
    """Six cells: Sindh 2 (ids 0, 4), Punjab 3, Balochistan 1; other provinces have none.
    Sindh's cells are deliberately not contiguous, to test the column layout."""
    return CellTable(
        cell_id=np.arange(6),
        province_id=[0, 1, 1, 1, 0, 5],
        center_lat=[24.86, 31.52, 30.20, 31.42, 25.40, 30.18],
        center_lon=[67.00, 74.36, 71.47, 73.08, 68.37, 66.99],
        radius_km=[5.0, 10.0, 30.0, 0.0, 20.0, 50.0],
        n_samples=[100, 20, 10, 5, 40, 3],
    )


def tiny_model(seed: int = 0, **overrides) -> GeopakModel:
    torch.manual_seed(seed)
    return GeopakModel(load_model_config("tiny", **overrides), make_cells())


def pixels(b: int = 3, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g), torch.randn(b, 3, size, size, generator=g)


# ----------------------------------------------------------------------------- config


def test_presets_load_and_validate():
    tiny, base = load_model_config("tiny"), load_model_config("base")
    assert tiny.preset == "tiny" and base.preset == "base"
    assert (
        base.clip_model == "ViT-B-16"
        and base.places_arch == "resnet50"
        and base.clip_image_size == 224
    )
    assert tiny.places_arch == "resnet18" and tiny.clip_image_size == tiny.places_image_size == 64
    for cfg in (tiny, base):  # the seed's head dimensions in both presets
        assert (cfg.fusion_dim, cfg.province_emb_dim, cfg.cell_emb_dim) == (512, 32, 96)
        assert (cfg.top_provinces, cfg.top_cells) == (2, 5)
    assert ModelConfig.from_dict(tiny.to_dict()) == tiny
    assert load_model_config("tiny", tau_km=7.5).tau_km == 7.5


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"fusion_dim": 0}, "fusion_dim"),
        ({"tau_km": -1.0}, "tau_km"),
        ({"places_arch": "vgg16"}, "places_arch"),
        ({"bogus": 1}, "bogus"),
        ({"top_cells": "5"}, "top_cells"),
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as exc:
        load_model_config("tiny", **overrides)
    assert exc.value.key == key and key in str(exc.value)


def test_unknown_preset_and_toml_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_model_config("huge")
    (tmp_path / "w").mkdir()
    f = tmp_path / "my.toml"
    f.write_text(
        'clip_model = "geopak-tiny"\nplaces_arch = "resnet18"\nplaces_weights = '
        '"w/places.pth"\nfusion_dim = 64\n[clip_model_cfg]\nembed_dim = 32\nvision_cfg = '
        "{image_size = 32, layers = 1, width = 32, head_width = 32, patch_size = 16}\ntext_cfg = "
        "{context_length = 4, vocab_size = 8, width = 32, heads = 1, layers = 1}\n"
    )
    cfg = load_model_config(str(f), clip_image_size=32)
    assert cfg.preset == "my" and cfg.fusion_dim == 64
    assert cfg.places_weights == str(tmp_path / "w" / "places.pth")  # relative to the file
    f.write_text("fusion_dim = [")
    with pytest.raises(GeopakError, match="invalid TOML"):
        load_model_config(str(f))


# ----------------------------------------------------------------------------- cells


def test_cell_table_parquet_roundtrip_and_validation(tmp_path):
    cells = make_cells()
    order = [3, 0, 5, 1, 4, 2]  # stored shuffled: from_parquet sorts by cell_id
    cols = {k: np.asarray(v)[order] for k, v in cells.to_dict().items() if k != "regions"}
    names = [PAKISTAN.names[int(p)] for p in cols["province_id"]]
    table = pa.table({**cols, "province": names, "urban": [False] * 6})
    pq.write_table(table, tmp_path / "cells.parquet")
    back = CellTable.from_parquet(tmp_path / "cells.parquet")
    assert back.num_cells == 6
    np.testing.assert_array_equal(back.cells_of_province(0), [0, 4])
    np.testing.assert_allclose(back.center_lat, cells.center_lat)
    assert back.province_counts().tolist() == [140, 35, 0, 0, 0, 3, 0]
    assert CellTable.from_dict(back.to_dict()).to_dict() == back.to_dict()

    pq.write_table(table.drop_columns(["radius_km"]), tmp_path / "bad.parquet")
    with pytest.raises(GeopakError, match="radius_km"):
        CellTable.from_parquet(tmp_path / "bad.parquet")
    with pytest.raises(GeopakError, match="contiguous"):
        CellTable(
            cell_id=[0, 2],
            province_id=[0, 0],
            center_lat=[25, 25],
            center_lon=[67, 67],
            radius_km=[1, 1],
        )
    with pytest.raises(GeopakError, match="province_id 9"):
        CellTable(cell_id=[0], province_id=[9], center_lat=[25], center_lon=[67], radius_km=[1])
    with pytest.raises(GeopakError, match="not found"):
        CellTable.from_parquet(tmp_path / "missing.parquet")


# ----------------------------------------------------------------------------- forward


def test_tiny_shapes_gate_and_cell_layout():
    model = tiny_model()
    model.eval()
    clip, places = pixels()
    out = model(clip, places, cell_ids=torch.tensor([0, 1, 5]))
    assert (model.clip_dim, model.places_dim) == (64, 512)
    assert out["fused"].shape == (3, 512) and out["gate"].shape == (3, 512)
    assert out["province_logits"].shape == (3, 7) and out["cell_logits"].shape == (3, 6)
    assert out["aux_latlon"].shape == (3, 2) and out["offset"].shape == (3, 2)
    assert bool(((out["gate"] > 0) & (out["gate"] < 1)).all())
    # Each province's head fills exactly its own columns, in global cell-id order.
    fused = out["fused"]
    np.testing.assert_allclose(
        out["cell_logits"][:, [0, 4]].detach(), model.cell_heads["0"](fused).detach(), rtol=1e-6
    )
    np.testing.assert_allclose(
        out["cell_logits"][:, [1, 2, 3]].detach(), model.cell_heads["1"](fused).detach(), rtol=1e-6
    )
    assert set(model.cell_heads.keys()) == {"0", "1", "5"}
    # P(cell | province) sums to one within each province.
    p = conditional_cell_log_probs(out["cell_logits"], model.cell_province).exp()
    for cols in ([0, 4], [1, 2, 3], [5]):
        np.testing.assert_allclose(p[:, cols].sum(1).detach(), 1.0, rtol=1e-5)
    # Same features through heads() give the same answer as forward().
    again = model.heads(*model.encode(clip, places))
    assert torch.allclose(again["cell_logits"], out["cell_logits"])


def test_offset_is_bounded_by_cell_radius():
    model = tiny_model()
    with torch.no_grad():
        model.offset_head[-1].bias.fill_(50.0)  # saturate tanh: offset = +bound * radius
    fused = torch.randn(2, 512)
    cells = torch.tensor([[1, 2], [3, 5]])  # (B, M) form, as inference uses it
    off = model.offset(fused, cells)
    assert off.shape == (2, 2, 2)
    radius = torch.tensor([[10.0, 30.0], [1.0, 50.0]])  # cell 3 has radius 0 -> 1 km floor
    lat = model.cell_centers[cells][..., 0]
    torch.testing.assert_close(off[..., 0], radius / 111.19508, rtol=1e-4, atol=0)
    torch.testing.assert_close(
        off[..., 1], radius / (111.19508 * torch.cos(torch.deg2rad(lat))), rtol=1e-4, atol=0
    )


def test_gradients_flow_to_trainable_parts():
    model = tiny_model()
    model.set_phase(2, unfreeze_last_n=1)
    model.train()
    out = model(*pixels(), cell_ids=torch.tensor([0, 2, 5]))
    loss = (
        out["province_logits"].logsumexp(1).sum()
        + out["cell_logits"].pow(2).sum()
        + out["offset"].sum()
        + out["aux_latlon"].sum()
    )
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    assert model.fusion.gate.weight.grad.abs().sum() > 0
    assert model.clip.visual.transformer.resblocks[-1].mlp.c_fc.weight.grad.abs().sum() > 0
    assert model.places.net.layer4[-1].conv2.weight.grad.abs().sum() > 0
    assert model.clip.visual.proj.grad.abs().sum() > 0  # the tail after the last block trains too


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("phase", [0, 1, 2])
def test_frozen_parameters_stay_frozen_after_a_step(phase):
    model = tiny_model()
    model.set_phase(phase, unfreeze_last_n=1)
    model.train()
    before = _snapshot(model)
    opt = torch.optim.AdamW(model.param_groups(1e-2, 1e-3, weight_decay=0.01))
    batch = {
        "lat": torch.tensor([24.9, 31.4, 30.1]),
        "lon": torch.tensor([67.1, 74.3, 67.0]),
        "province_id": torch.tensor([0, 1, 5]),
        "cell_id": torch.tensor([0, 1, 5]),
    }
    from geopak_model.losses import total_loss

    for _ in range(2):
        out = model(*pixels(), cell_ids=batch["cell_id"])
        loss, _ = total_loss(out, batch, model.cells, model.config, phase=phase)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _snapshot(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # Nothing frozen moved: neither weights nor a frozen BatchNorm's running statistics.
    frozen_changed = {
        k
        for k in changed
        if k not in trainable
        and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    assert not frozen_changed
    bn_changed = {k for k in changed if k.endswith(("running_mean", "running_var"))}
    assert all(k.startswith("places.net.layer4.1.") for k in bn_changed), (
        bn_changed
    )  # only the unfrozen block's BN
    assert "fusion.gate.weight" in changed and "province_head.3.weight" in changed
    heads_changed = "cell_heads.1.3.weight" in changed
    assert heads_changed == (phase >= 1)
    enc_changed = any(k.startswith(("clip.", "places.")) for k in changed)
    assert enc_changed == (phase == 2)
    if phase == 2:
        assert (
            "places.net.layer4.0.conv1.weight" not in changed
            and "clip.visual.transformer.resblocks.0.attn.in_proj_weight" not in changed
        )
        assert (
            "clip.visual.transformer.resblocks.1.attn.in_proj_weight" in changed
            and "clip.visual.ln_post.weight" in changed
        )


def test_param_groups_and_unfrozen_encoder_config():
    model = tiny_model(freeze_places=False)
    model.set_phase(0)
    groups = {g["name"]: g for g in model.param_groups(1e-3, 1e-5)}
    assert set(groups) == {"heads", "places"}  # CLIP frozen, Places configured to train
    assert groups["places"]["lr"] == 1e-5 and groups["heads"]["lr"] == 1e-3
    n_heads = sum(p.numel() for p in groups["heads"]["params"])
    assert n_heads == sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith(("fusion.", "province_head."))
    )
    model.train()
    assert model.places.training and not model.clip.training
    with pytest.raises(ValueError):
        model.set_phase(3)


def test_transforms_use_each_encoders_recipe():
    model = tiny_model()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    for train in (False, True):
        clip, places = model.transforms(train=train)(img)
        assert clip.shape == (3, 64, 64) and places.shape == (3, 64, 64)
    pp = model.preprocess
    assert pp["clip"]["interpolation"] == "bicubic" and pp["places"]["interpolation"] == "bilinear"
    assert pp["clip"]["mean"][0] == pytest.approx(0.48145466) and pp["places"]["mean"][
        0
    ] == pytest.approx(0.485)
    # A flat grey image normalises differently under the two statistics.
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    c, s = model.transforms()(grey)
    assert c[0, 0, 0].item() == pytest.approx((128 / 255 - 0.48145466) / 0.26862954, abs=1e-4)
    assert s[0, 0, 0].item() == pytest.approx((128 / 255 - 0.485) / 0.229, abs=1e-4)


# ----------------------------------------------------------------------------- weights


def test_build_model_without_weights_warns_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(load_model_config("tiny"), make_cells())
    msgs = [str(w.message) for w in caught if "no pretrained weights" in str(w.message)]
    assert len(msgs) == 1 and "CLIP" in msgs[0] and "Places365" in msgs[0]


def test_places365_official_checkpoint_layout(tmp_path):
    torch.manual_seed(5)
    ref = torchvision.models.resnet18(num_classes=365)
    official = {
        "epoch": 90,
        "arch": "resnet18",
        "best_prec1": 54.7,
        "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
    }
    torch.save(official, tmp_path / "resnet18_places365.pth.tar")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(
            load_model_config("tiny", places_weights=str(tmp_path / "resnet18_places365.pth.tar")),
            make_cells(),
        )
    assert [str(w.message) for w in caught if "no pretrained" in str(w.message)] == [
        str(caught[0].message)
    ]
    assert "Places365" not in str(caught[0].message)  # only CLIP is random now
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(model.places.net.state_dict()[k], v), k
    # The pooled feature is the network's own penultimate activation.
    ref.eval()
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    ref.fc = torch.nn.Identity()
    torch.testing.assert_close(model.places(x), ref(x))


def test_places_plain_and_safetensors_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(6)
    ref = torchvision.models.resnet18(num_classes=365)
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "r18.safetensors")
    )
    torch.save(ref.state_dict(), tmp_path / "r18.pt")
    for name in ("r18.safetensors", "r18.pt"):
        model = tiny_model()
        model.places.load_weights(tmp_path / name)
        assert torch.equal(model.places.net.conv1.weight, ref.conv1.weight)
    torch.save(torchvision.models.resnet34(num_classes=365).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(GeopakError, match="does not match"):
        tiny_model().places.load_weights(tmp_path / "r34.pt")
    with pytest.raises(GeopakError, match="not found"):
        tiny_model().places.load_weights(tmp_path / "nope.pt")


def test_open_clip_checkpoint_loading(tmp_path):
    cfg = load_model_config("tiny")
    torch.manual_seed(7)
    full = open_clip.CLIP(**cfg.clip_model_cfg)  # a whole CLIP (text tower too), open_clip format
    torch.save(full.state_dict(), tmp_path / "clip.bin")
    model = tiny_model(clip_weights=str(tmp_path / "clip.bin"))
    model.clip.load_weights(tmp_path / "clip.bin")
    x = torch.randn(2, 3, 64, 64)
    full.eval()
    model.eval()
    torch.testing.assert_close(model.clip(x), full.encode_image(x))
    # A checkpoint trained at 32 px: open_clip's position-embedding interpolation applies.
    small_cfg = {
        **cfg.clip_model_cfg,
        "vision_cfg": {**cfg.clip_model_cfg["vision_cfg"], "image_size": 32},
    }
    torch.save(open_clip.CLIP(**small_cfg).state_dict(), tmp_path / "clip32.bin")
    model.clip.load_weights(tmp_path / "clip32.bin")
    assert model.clip(x).shape == (2, 64)


def test_toml_naming_a_preset_inherits_it_and_overrides_keys(tmp_path):
    """``preset = "tiny"`` in a model TOML is a base: its values, with the file's keys (and
    nested table keys) over them; an unknown preset there is the one-line preset error."""
    f = tmp_path / "mine.toml"
    f.write_text('preset = "tiny"\nfusion_dim = 128\n[clip_model_cfg.vision_cfg]\nlayers = 3\n')
    cfg, tiny = load_model_config(str(f)), load_model_config("tiny")
    assert cfg.preset == "tiny" and cfg.fusion_dim == 128
    assert cfg.clip_model == tiny.clip_model and cfg.clip_image_size == tiny.clip_image_size
    assert cfg.random_init and cfg.offset_hidden == tiny.offset_hidden
    vision = cfg.clip_model_cfg["vision_cfg"]
    assert vision["layers"] == 3 and vision["width"] == tiny.clip_model_cfg["vision_cfg"]["width"]
    same = tmp_path / "same.toml"
    same.write_text('preset = "tiny"\n')
    assert load_model_config(str(same)).to_dict() == tiny.to_dict()
    f.write_text('preset = "huge"\n')
    with pytest.raises(ConfigError, match="unknown preset"):
        load_model_config(str(f))


def test_config_that_is_no_file_says_what_it_is(tmp_path):
    with pytest.raises(GeopakError, match="is a folder"):
        load_model_config(str(tmp_path))
    with pytest.raises(GeopakError, match="not found"):
        load_model_config(str(tmp_path / "none.toml"))
    empty = load_model_config("/dev/null")  # an empty file: the defaults (base sizes)
    assert empty.fusion_dim == load_model_config("base").fusion_dim

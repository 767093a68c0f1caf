"""Model configuration: one flat dataclass, loaded from TOML presets and validated.

Architecture sizes, weight files, preprocessing, phase/freeze policy, loss weights and
inference defaults all live here so that a checkpoint can carry the whole recipe as a plain
dict (``to_dict``) and rebuild the identical network from it (``from_dict``). Configs are
data files (``geopak_model/presets/*.toml``), not code edits; a bad key or value raises
``ConfigError`` naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geopak_core.errors import ConfigError, GeopakError, not_a_file
from geopak_core.typedconfig import check_limits
from geopak_core.typedconfig import from_dict as _typed_from_dict

PRESETS_DIR = Path(__file__).resolve().parent / "presets"

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

PLACES_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


# Sizes no GEOPAK model needs; beyond them a value is a typo or a hostile checkpoint.
MODEL_LIMITS: dict[str, tuple[float, float]] = {
    "clip_image_size": (16, 1024),
    "places_image_size": (16, 1024),
    "places_num_classes": (1, 100_000),
    "fusion_dim": (1, 16384),
    "head_hidden": (0, 16384),
    "province_emb_dim": (1, 4096),
    "cell_emb_dim": (1, 4096),
    "offset_hidden": (1, 16384),
    "aux_hidden": (1, 16384),
    "unfreeze_last_n": (0, 1000),
    "top_cells": (1, 1000),
    "tau_km": (0, 20_000),
    "offset_min_radius_km": (0, 20_000),
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a GEOPAK network. Defaults are the ``base`` preset's sizes;
    which pretrained weights to use is named by the presets (``base`` names real ones)."""

    preset: str = "base"

    # --- semantic encoder: an open_clip image tower ---------------------------------------
    clip_model: str = "ViT-B-16"  # open_clip architecture name (see open_clip.list_models())
    # A custom open_clip model config (embed_dim, vision_cfg, text_cfg). When non-empty it
    # replaces the named architecture: how the ``tiny`` preset gets a small ViT of the same
    # open_clip family without touching open_clip's global registry.
    clip_model_cfg: dict[str, Any] = field(default_factory=dict)
    clip_weights: str = ""  # local open_clip checkpoint (.pt/.bin/.safetensors); wins when set
    # open_clip pretrained tag for clip_model (e.g. "laion2b_s34b_b88k", "openai") or
    # "hf-hub:ORG/REPO"; fetched through open_clip's registry and huggingface_hub (weights.py)
    clip_pretrained: str = ""
    clip_image_size: int = 224
    clip_mean: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_MEAN))
    clip_std: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_STD))
    clip_interpolation: str = "bicubic"
    clip_crop_pct: float = 1.0  # open_clip resizes the shortest side to the crop size

    # --- scene encoder: torchvision ResNet with a 365-way Places head ------------------------
    places_arch: str = "resnet50"
    places_weights: str = (
        ""  # local Places365 checkpoint (official .pth.tar, state dict, .safetensors)
    )
    places_weights_url: str = ""  # downloaded once into GEOPAK_CACHE when places_weights is empty
    places_weights_sha256: str = ""  # pinned digest of that download ("" = record the first one)
    places_image_size: int = 224
    places_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    places_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    places_interpolation: str = "bilinear"
    places_crop_pct: float = 0.875  # resize to 256, center-crop 224 (the Places365 recipe)
    places_num_classes: int = 365

    # Encoders with no weights named start random without complaint (the ``tiny`` preset's
    # design); otherwise missing weights are an error unless ``--random-init`` is passed.
    random_init: bool = False

    # --- fusion and heads ---------------------------------------------------------------------
    fusion_dim: int = 512
    fusion_dropout: float = 0.1
    head_hidden: int = 512  # hidden width of the province and per-province cell heads; 0 = linear
    province_emb_dim: int = 32
    cell_emb_dim: int = 96
    offset_hidden: list[int] = field(default_factory=lambda: [256, 128])
    aux_hidden: list[int] = field(default_factory=lambda: [256])
    # The offset is tanh-bounded to +/- offset_bound * radius (km) around the cell center;
    # a floor keeps single-photo cells (radius 0) able to move a little.
    offset_bound: float = 1.0
    offset_min_radius_km: float = 1.0

    # --- training policy ----------------------------------------------------------------------
    freeze_clip: bool = True  # False: the whole CLIP tower trains in every phase
    freeze_places: bool = True
    unfreeze_last_n: int = 2  # phase 2: blocks unfrozen at the end of each encoder

    # --- losses -------------------------------------------------------------------------------
    lambda_prov: float = 1.0
    lambda_cell: float = 1.0
    lambda_off: float = 0.02  # offset loss is in km: 0.02 makes a 50 km error weigh 1.0
    lambda_aux: float = 0.002  # aux errors are hundreds of km early on
    tau_km: float = 25.0  # distance-aware label smoothing temperature for the cell target
    province_smoothing: float = 0.05
    province_weight_power: float = 1.0  # class weight = (1/frequency)**power; 0 = unweighted

    # --- inference ----------------------------------------------------------------------------
    top_provinces: int = 2
    top_cells: int = 5
    # how hypotheses become one answer during training's validation (the predictor and
    # geopak-eval take --aggregate, default "mode"): "mode" (heaviest geographic mode),
    # "best" (single best hypothesis) or "mean" (the seed's weighted mixture)
    inference_mode: str = "mode"

    def validate(self, key: str = "") -> None:
        """Reject values that would build a broken network, naming the key."""

        def check(ok: bool, name: str, reason: str) -> None:
            if not ok:
                raise ConfigError(f"{key}.{name}" if key else name, getattr(self, name), reason)

        check(bool(self.clip_model), "clip_model", "must name an open_clip architecture")
        if self.clip_model_cfg:
            missing = [
                k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in self.clip_model_cfg
            ]
            check(
                not missing,
                "clip_model_cfg",
                f"missing {', '.join(missing)} (open_clip model config)",
            )
        for enc in ("clip", "places"):
            check(getattr(self, f"{enc}_image_size") >= 16, f"{enc}_image_size", "must be >= 16")
            check(len(getattr(self, f"{enc}_mean")) == 3, f"{enc}_mean", "must have 3 values (RGB)")
            std = getattr(self, f"{enc}_std")
            check(
                len(std) == 3 and all(s > 0 for s in std),
                f"{enc}_std",
                "must have 3 positive values",
            )
            check(
                getattr(self, f"{enc}_interpolation") in INTERPOLATIONS,
                f"{enc}_interpolation",
                f"must be one of {INTERPOLATIONS}",
            )
            check(
                0.1 <= getattr(self, f"{enc}_crop_pct") <= 1.0,
                f"{enc}_crop_pct",
                "must be in [0.1, 1]",
            )
        check(self.places_arch in PLACES_ARCHS, "places_arch", f"must be one of {PLACES_ARCHS}")
        sha = self.places_weights_sha256
        check(
            not sha or (len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha)),
            "places_weights_sha256",
            "must be 64 hex digits (sha256) or empty",
        )
        check(self.places_num_classes >= 1, "places_num_classes", "must be >= 1")
        for name in ("fusion_dim", "province_emb_dim", "cell_emb_dim"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.head_hidden >= 0, "head_hidden", "must be >= 0 (0 = linear heads)")
        for name in ("offset_hidden", "aux_hidden"):
            check(all(h >= 1 for h in getattr(self, name)), name, "hidden sizes must be >= 1")
        check(0.0 <= self.fusion_dropout < 1.0, "fusion_dropout", "must be in [0, 1)")
        check(self.offset_bound > 0, "offset_bound", "must be > 0")
        check(self.offset_min_radius_km >= 0, "offset_min_radius_km", "must be >= 0")
        check(self.unfreeze_last_n >= 0, "unfreeze_last_n", "must be >= 0")
        for name in ("lambda_prov", "lambda_cell", "lambda_off", "lambda_aux"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        check(self.tau_km > 0, "tau_km", "must be > 0 (km)")
        check(0.0 <= self.province_smoothing < 1.0, "province_smoothing", "must be in [0, 1)")
        check(self.province_weight_power >= 0, "province_weight_power", "must be >= 0")
        check(1 <= self.top_provinces <= 7, "top_provinces", "must be 1..7")
        check(self.top_cells >= 1, "top_cells", "must be >= 1")
        check(
            self.inference_mode in ("mean", "best", "mode"),
            "inference_mode",
            "must be 'mean', 'best' or 'mode'",
        )
        # upper bounds: a config (or a checkpoint's) asking for absurd sizes is refused before
        # anything is allocated
        check_limits(self, key, MODEL_LIMITS)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str/int/float/bool/list/dict only): safe inside a weights_only checkpoint."""
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Typed, validated construction; unknown keys and wrong types raise ConfigError."""
        return _typed_from_dict(cls, dict(data))


RANDOM_INIT_OVERRIDES: dict[str, Any] = {
    "random_init": True,
    "clip_weights": "",
    "clip_pretrained": "",
    "places_weights": "",
    "places_weights_url": "",
    "places_weights_sha256": "",
}  # what ``--random-init`` means: no weights named, random encoders on purpose


def list_presets() -> list[str]:
    """Names of the bundled presets, for --help texts and the unknown-preset error."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_model_config(preset_or_path: str, **overrides: Any) -> ModelConfig:
    """Load a preset by name (``tiny``, ``base``) or a TOML file path, then apply overrides.

    A TOML file that names ``preset = "tiny"`` starts from that preset's values and its other
    keys override them (tables merged key by key), so a file states only what it changes;
    without ``preset`` the dataclass defaults (the ``base`` sizes) are the start. Relative
    weight paths are resolved against the folder of the file that names them, so a config next
    to its weights works from any working directory.
    """
    path, bundled = _config_path(preset_or_path)
    data = _read_toml(path)
    if not bundled and "preset" in data:
        data = _merged(_preset_data(data["preset"]), data)
    data.setdefault("preset", path.stem)
    data.update(overrides)
    return ModelConfig.from_dict(data)


def _config_path(preset_or_path: str) -> tuple[Path, bool]:
    """(the TOML file, whether it is a bundled preset) of a preset name or a file path."""
    text_path = Path(preset_or_path)
    bundled = PRESETS_DIR / f"{preset_or_path}.toml"
    is_path = text_path.suffix == ".toml" or (text_path.exists() and not text_path.is_dir())
    if not is_path and bundled.is_file():
        return bundled, True
    if is_path or text_path.is_dir():
        if text_path.is_dir() or not text_path.exists():
            raise GeopakError(not_a_file(text_path, "model config file"))
        return text_path, False
    raise ConfigError(
        "preset", preset_or_path, f"unknown preset (known: {', '.join(list_presets())})"
    )


def _preset_data(name: Any) -> dict[str, Any]:
    """The values of the bundled preset a TOML file names as its base."""
    if not isinstance(name, str) or not (PRESETS_DIR / f"{name}.toml").is_file():
        raise ConfigError("preset", name, f"unknown preset (known: {', '.join(list_presets())})")
    return _read_toml(PRESETS_DIR / f"{name}.toml")


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the keys of ``over`` put over it; a table over a table merges key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    """A model TOML file's values, weight paths made absolute against its folder."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise GeopakError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise GeopakError(
            f"{path}: not UTF-8 text (byte {exc.start}); TOML files must be UTF-8"
        ) from None
    for name in ("clip_weights", "places_weights"):
        value = data.get(name)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[name] = str((path.resolve().parent / value).resolve())
    return data


# ----------------------------------------------------------------------------- training

# Rare provinces: class weights, province-balanced resampling, both, or neither.
BALANCE_MODES = ("none", "weights", "sample", "both")

# Per-phase defaults of the settings that differ by phase (the one place they live).
PHASE_DEFAULTS = {
    0: {"epochs": 8, "lr": 1e-3},
    1: {"epochs": 30, "lr": 1e-3},
    2: {"epochs": 5, "lr": 1e-4},
}


# Upper bounds: beyond them a value is a typo (10**6 workers, a 10**9 batch).
TRAIN_LIMITS: dict[str, tuple[float, float]] = {
    "epochs": (1, 100_000),
    "batch_size": (1, 65_536),
    "lr": (0, 10),
    "encoder_lr_scale": (0, 10),
    "weight_decay": (0, 10),
    "grad_clip": (0, 1e6),
    "grad_accum": (1, 4096),
    "balance_power": (0, 10),
    "shuffle_buffer": (0, 10**7),
    "num_workers": (0, 256),
    "seed": (0, 2**63 - 1),
}


@dataclass
class TrainConfig:
    """Optimisation and data settings of one run (the model's own settings are ModelConfig)."""

    phase: int = 1
    epochs: int | None = None  # default per phase: 8 / 30 / 5
    batch_size: int = 64
    lr: float | None = None  # heads' peak LR; default per phase: 1e-3 / 1e-3 / 1e-4
    encoder_lr_scale: float = 0.05  # phase 2: encoder LR = lr * this
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # default: 5% of all optimiser steps
    min_lr_ratio: float = 0.01  # the cosine ends at lr * this
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    grad_accum: int = 1  # micro-batches per optimiser step
    balance: str = "weights"  # rare provinces: class weights, resampling, both, or none
    balance_power: float = 0.5  # resampling strength (1 = equal provinces)
    shuffle_buffer: int = 2000
    num_workers: int = 4
    seed: int = 0
    checkpoint_every: int = 500  # optimiser steps between last.pt writes (plus every epoch end)
    eval_every: int = 1  # epochs between validations (the last epoch is always validated)
    log_every: int = 20  # optimiser steps between train_log.jsonl lines
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs, benchmarks)
    amp: bool = True  # bf16 autocast on CUDA
    plots: bool = True
    device: str = "auto"
    skip_bad_shards: bool = False  # leave out shards failing verification (else stop)

    def __post_init__(self) -> None:
        defaults = PHASE_DEFAULTS.get(self.phase, {})
        if self.epochs is None:
            self.epochs = defaults.get("epochs", 1)
        if self.lr is None:
            self.lr = defaults.get("lr", 1e-3)

    def validate(self) -> None:
        def check(ok: bool, name: str, reason: str) -> None:
            if not ok:
                raise ConfigError(name, getattr(self, name), reason)

        check(self.phase in (0, 1, 2), "phase", "must be 0, 1 or 2")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.encoder_lr_scale > 0, "encoder_lr_scale", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        check(self.grad_accum >= 1, "grad_accum", "must be >= 1")
        check(self.balance in BALANCE_MODES, "balance", f"must be one of {BALANCE_MODES}")
        check(self.balance_power >= 0, "balance_power", "must be >= 0")
        check(self.num_workers >= 0, "num_workers", "must be >= 0")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(self.eval_every >= 1, "eval_every", "must be >= 1")
        check(self.log_every >= 1, "log_every", "must be >= 1")
        check(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        check_limits(self, "", TRAIN_LIMITS)

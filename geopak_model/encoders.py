"""The two image encoders and their preprocessing.

* ``ClipEncoder``: an open_clip image tower (ViT-B/16 for ``base``); its output is the
  projected CLIP image embedding, the space in which CLIP's "semantic" concepts live.
* ``PlacesEncoder``: a torchvision ResNet trained as a 365-way Places classifier; its output
  is the pooled feature before the classifier (the scene descriptor), so the 365-way ``fc``
  is only needed to load the official weights and is dropped afterwards.

Both are built from the config alone (random init, no file access) so a checkpoint can
rebuild them and overwrite the weights; ``load_weights`` reads the pretrained files. Nothing
here downloads: fetching named weights is :mod:`weights`' job.
Each encoder carries its own preprocessing (size, mean, std, interpolation, crop) because a
ViT trained on CLIP statistics and a ResNet trained on ImageNet statistics disagree on all
four, and feeding either the other's inputs silently costs accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import open_clip
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from geopak_core.errors import GeopakError

from .config import ModelConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- weight files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a weight file, safely: safetensors, or torch.load(weights_only=True).

    Accepts a plain state dict or a training checkpoint holding one under ``state_dict`` /
    ``model`` / ``state_dict_ema``, and strips DataParallel's ``module.`` prefix (the official
    Places365 files are ``{'epoch', 'arch', 'state_dict': {'module.conv1.weight': ...}}``).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise GeopakError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p), device="cpu")
        except Exception as exc:
            raise GeopakError(f"{p}: not a readable safetensors file ({exc})") from None
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise GeopakError(
                f"{p}: cannot be loaded as plain tensors (weights_only=True): {str(exc).splitlines()[0]}"
            ) from None
    if isinstance(sd, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if (
        not isinstance(sd, dict)
        or not sd
        or not all(isinstance(v, torch.Tensor) for v in sd.values())
    ):
        raise GeopakError(f"{p}: no state dict of tensors found")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _load_strict(
    module: nn.Module, sd: dict[str, torch.Tensor], path: str | Path, what: str
) -> None:
    """load_state_dict with a one-line error naming the first mismatched keys and the file."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if shape:
            k = shape[0]
            parts.append(f"shape of {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}")
        raise GeopakError(f"{path}: does not match the {what} architecture ({'; '.join(parts)})")
    module.load_state_dict(sd, strict=True)


# ----------------------------------------------------------------------------- preprocessing


def preprocess_info(config: ModelConfig, encoder: str) -> dict[str, Any]:
    """The encoder's input recipe as plain data (travels in checkpoints)."""
    return {
        "size": int(getattr(config, f"{encoder}_image_size")),
        "mean": [float(x) for x in getattr(config, f"{encoder}_mean")],
        "std": [float(x) for x in getattr(config, f"{encoder}_std")],
        "interpolation": str(getattr(config, f"{encoder}_interpolation")),
        "crop_pct": float(getattr(config, f"{encoder}_crop_pct")),
    }


def _interp(name: str) -> T.InterpolationMode:
    return {
        "bicubic": T.InterpolationMode.BICUBIC,
        "bilinear": T.InterpolationMode.BILINEAR,
        "nearest": T.InterpolationMode.NEAREST,
    }[name]


def eval_transform(pp: dict[str, Any]) -> T.Compose:
    """Resize the short side to size/crop_pct, center-crop to size, normalise."""
    size = int(pp["size"])
    return T.Compose(
        [
            T.Resize(
                int(round(size / float(pp["crop_pct"]))), interpolation=_interp(pp["interpolation"])
            ),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(pp["mean"], pp["std"]),
        ]
    )


class PairTransform:
    """PIL image -> (clip tensor, places tensor).

    Training augmentation is applied once, to a shared view, before each encoder's own
    resize/normalise: both encoders must see the same crop, or the gate would learn to weigh
    two different pictures. Geometric augmentation stays mild (scale >= 0.5) because the
    location cue may sit anywhere in the frame. A class, not a lambda, so DataLoader workers
    can pickle it.
    """

    def __init__(self, clip_pp: dict[str, Any], places_pp: dict[str, Any], train: bool = False):
        self.clip_pp, self.places_pp, self.train = dict(clip_pp), dict(places_pp), bool(train)
        if self.train:
            side = max(int(clip_pp["size"]), int(places_pp["size"]))
            self.shared = T.Compose(
                [
                    T.RandomResizedCrop(
                        side, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC
                    ),
                    T.RandomHorizontalFlip(),
                    T.ColorJitter(0.2, 0.2, 0.1, 0.02),
                ]
            )
            self.clip = self._after_shared(clip_pp)
            self.places = self._after_shared(places_pp)
        else:
            self.clip = eval_transform(clip_pp)
            self.places = eval_transform(places_pp)

    @staticmethod
    def _after_shared(pp: dict[str, Any]) -> T.Compose:
        return T.Compose(
            [
                T.Resize(
                    (int(pp["size"]), int(pp["size"])), interpolation=_interp(pp["interpolation"])
                ),
                T.ToTensor(),
                T.Normalize(pp["mean"], pp["std"]),
            ]
        )

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.train:
            image = self.shared(image)
        return self.clip(image), self.places(image)

    def __repr__(self) -> str:
        return f"PairTransform(train={self.train}, clip={self.clip_pp}, places={self.places_pp})"


# ----------------------------------------------------------------------------- encoders


class ClipEncoder(nn.Module):
    """open_clip image tower -> projected CLIP embedding (B, out_dim)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.clip_model_cfg:
            cfg: dict[str, Any] | None = dict(config.clip_model_cfg)
        else:
            cfg = open_clip.get_model_config(config.clip_model)
            if cfg is None:
                raise GeopakError(
                    f"unknown open_clip architecture {config.clip_model!r} (see open_clip.list_models())"
                )
        vision_cfg = dict(cfg["vision_cfg"])
        vision_cfg["image_size"] = int(config.clip_image_size)
        # Only the image tower is built: the text tower would be discarded anyway, and for
        # HF-text architectures building it could reach the network. _build_vision_tower is
        # the function open_clip's own CLIP class uses to build its image tower.
        from open_clip.model import _build_vision_tower

        from .weights import clip_needs_quickgelu

        quick_gelu = bool(cfg.get("quick_gelu", False)) or clip_needs_quickgelu(config)
        self.visual = _build_vision_tower(int(cfg["embed_dim"]), vision_cfg, quick_gelu=quick_gelu)
        self.out_dim = int(cfg["embed_dim"])
        self.name = config.clip_model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def load_weights(self, path: str | Path) -> None:
        """Load a full open_clip checkpoint (``visual.*`` keys kept) or an image-tower-only one."""
        sd = read_state_dict(path)
        if any(k.startswith("visual.") for k in sd):
            sd = {k: v for k, v in sd.items() if k.startswith("visual.")}
        else:
            sd = {f"visual.{k}": v for k, v in sd.items()}
        # Checkpoints trained at another resolution get their position embedding interpolated,
        # exactly as open_clip does when it loads them itself.
        open_clip.model.resize_pos_embed(sd, self)
        _load_strict(self, sd, path, f"open_clip {self.name} image tower")

    def blocks(self) -> list[nn.Module]:
        """Residual blocks in input-to-output order (what phase 2 unfreezes from the end)."""
        v = self.visual
        if hasattr(v, "transformer") and hasattr(v.transformer, "resblocks"):
            return list(v.transformer.resblocks)
        if all(hasattr(v, f"layer{i}") for i in range(1, 5)):  # open_clip ModifiedResNet
            return [b for i in range(1, 5) for b in getattr(v, f"layer{i}")]
        if hasattr(v, "trunk") and hasattr(v.trunk, "blocks"):  # timm-backed towers
            return list(v.trunk.blocks)
        raise GeopakError(
            f"cannot find the blocks of the {self.name} image tower for partial fine-tuning"
        )

    def stem_prefixes(self) -> tuple[str, ...]:
        """Parameters before the first block; everything else outside blocks is the tail."""
        vit = (
            "visual.conv1",
            "visual.class_embedding",
            "visual.positional_embedding",
            "visual.ln_pre",
        )
        resnet = ("visual.bn1", "visual.conv2", "visual.bn2", "visual.conv3", "visual.bn3")
        timm = (
            "visual.trunk.patch_embed",
            "visual.trunk.cls_token",
            "visual.trunk.reg_token",
            "visual.trunk.pos_embed",
            "visual.trunk.norm_pre",
        )
        return vit + resnet + timm


class PlacesEncoder(nn.Module):
    """torchvision ResNet (365-way Places head at load time) -> pooled scene feature."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.net = torchvision.models.get_model(
            config.places_arch, weights=None, num_classes=config.places_num_classes
        )
        self.out_dim = int(self.net.fc.in_features)
        self.num_classes = int(config.places_num_classes)
        # The classifier is not part of the feature path; removing it keeps unused
        # parameters out of DDP and out of our checkpoints.
        self.net.fc = nn.Identity()
        self.name = f"{config.places_arch}-places{config.places_num_classes}"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)

    def load_weights(self, path: str | Path) -> None:
        """Official Places365 ``.pth.tar`` (``module.``-prefixed), plain state dict or safetensors."""
        sd = read_state_dict(path)
        fc = sd.get("fc.weight")
        if fc is not None and fc.shape[0] != self.num_classes:
            log.warning(
                "%s: classifier has %d classes, expected %d (it is dropped anyway)",
                path,
                fc.shape[0],
                self.num_classes,
            )
        sd = {f"net.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
        _load_strict(self, sd, path, f"torchvision {self.name}")

    def blocks(self) -> list[nn.Module]:
        return [b for i in range(1, 5) for b in getattr(self.net, f"layer{i}")]

    def stem_prefixes(self) -> tuple[str, ...]:
        return ("net.conv1", "net.bn1")

"""Indoor/outdoor scoring for the filter stage: open_clip zero-shot or Places365 labels.

Indoor photos (restaurants, bedrooms, offices) carry almost no signal about *where in
Pakistan* they were taken, so the filter can drop them. Two scorers, both local only (the
filter never downloads weights behind the user's back):

* **CLIP** (``filter.clip_weights``): an open_clip checkpoint file for the architecture in
  ``filter.clip_model`` (e.g. ``ViT-B-32``), or an open_clip ``local-dir`` folder holding
  ``open_clip_config.json`` and the weights. P(indoor) is the softmax over two class
  embeddings, each the mean of several prompt embeddings (``INDOOR_PROMPTS`` /
  ``OUTDOOR_PROMPTS``), as in CLIP's zero-shot recipe.
* **Places365** (``filter.places365_weights``): a torchvision ResNet state dict trained on
  Places365 (e.g. CSAIL's ``resnet18_places365.pth.tar``) plus the ``IO_places365.txt`` list
  (1 = indoor, 2 = outdoor per category) in the same folder as the weights. P(indoor) is the
  total probability of the indoor categories.

When neither is configured the check is **not applied**: ``indoor_status`` says so, and the
filter stage writes that into its summary, report and counts; it never passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from geopak_core.errors import GeopakError

if TYPE_CHECKING:
    from PIL import Image

    from .config import FilterConfig

INDOOR_PROMPTS = (
    "a photo taken indoors.",
    "a photo of the inside of a room.",
    "a photo of a building interior.",
    "a photo of people inside a restaurant, shop or office.",
    "a close-up photo of an object indoors.",
)
OUTDOOR_PROMPTS = (
    "a photo taken outdoors.",
    "a photo of a street.",
    "a photo of a landscape.",
    "a photo of the outside of a building.",
    "a photo of mountains, fields or a river.",
)
PLACES365_LABELS = "IO_places365.txt"  # CSAIL's indoor(1)/outdoor(2) list, beside the weights


@dataclass
class IndoorStatus:
    """Whether the indoor check runs, with which method, and why not when it does not."""

    enabled: bool
    applied: bool
    method: str  # "clip", "places365" or ""
    weights: str
    reason: str  # for humans: why it is not applied / what is used

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "applied": self.applied,
            "method": self.method,
            "weights": self.weights,
            "reason": self.reason,
        }


class IndoorScorer(Protocol):
    method: str

    def score(self, images: list[Image.Image]) -> np.ndarray:
        """P(indoor) per image, float64 in [0, 1]."""
        ...


def indoor_status(cfg: FilterConfig) -> IndoorStatus:
    """Decide (without loading anything heavy) whether and how the indoor check runs."""
    if not cfg.check_indoor:
        return IndoorStatus(False, False, "", "", "disabled by filter.check_indoor = false")
    if cfg.clip_weights:
        p = Path(cfg.clip_weights)
        if not p.exists():
            raise GeopakError(f"filter.clip_weights: {p} not found")
        return IndoorStatus(
            True,
            True,
            "clip",
            str(p),
            f"open_clip zero-shot ({cfg.clip_model if p.is_file() else 'local-dir'}) from {p}",
        )
    if cfg.places365_weights:
        p = Path(cfg.places365_weights)
        if not p.is_file():
            raise GeopakError(f"filter.places365_weights: {p} not found")
        labels = _places_labels_path(cfg)
        if not labels.is_file():
            raise GeopakError(
                f"filter.places365_weights: {labels} not found (the IO_places365.txt "
                "indoor/outdoor list must sit next to the weights)"
            )
        return IndoorStatus(
            True, True, "places365", str(p), f"Places365 indoor/outdoor labels from {p}"
        )
    return IndoorStatus(
        True,
        False,
        "",
        "",
        "NOT APPLIED: no local weights configured (set filter.clip_weights or filter.places365_weights)",
    )


def _places_labels_path(cfg: FilterConfig) -> Path:
    return Path(cfg.places365_weights).parent / PLACES365_LABELS


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ClipIndoorScorer:
    """open_clip zero-shot indoor vs outdoor."""

    method = "clip"

    def __init__(self, weights: str | Path, model_name: str = "ViT-B-32", batch_size: int = 64):
        import open_clip
        import torch

        p = Path(weights)
        self.device = _device()
        self.batch_size = batch_size
        try:
            if p.is_dir():
                name = f"local-dir:{p}"
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, device=self.device, weights_only=True
                )
                tokenizer = open_clip.get_tokenizer(name)
            else:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=str(p), device=self.device, weights_only=True
                )
                tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, ValueError, FileNotFoundError, KeyError) as exc:
            raise GeopakError(
                f"filter.clip_weights {p}: cannot load as open_clip {model_name!r} ({str(exc).splitlines()[0][:200]})"
            ) from None
        model.eval()
        self.model = model
        self.preprocess = preprocess
        with torch.inference_mode():
            classes = []
            for prompts in (INDOOR_PROMPTS, OUTDOOR_PROMPTS):
                t = model.encode_text(tokenizer(list(prompts)).to(self.device)).float()
                t = t / t.norm(dim=-1, keepdim=True)
                m = t.mean(dim=0)
                classes.append(m / m.norm())
            self.text = torch.stack(classes)  # (2, D): indoor, outdoor
            self.scale = (
                float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
            )

    def score(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        out: list[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = torch.stack(
                    [self.preprocess(im) for im in images[i : i + self.batch_size]]
                ).to(self.device)
                f = self.model.encode_image(batch).float()
                f = f / f.norm(dim=-1, keepdim=True)
                p = (self.scale * f @ self.text.T).softmax(dim=-1)[:, 0]
                out.append(p.cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.empty(0)


def read_places_io_labels(path: str | Path) -> np.ndarray:
    """``IO_places365.txt`` -> bool array (True = indoor) in category order."""
    flags: list[bool] = []
    for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[-1] not in ("1", "2"):
            raise GeopakError(
                f"{path}:{n}: expected '<category> 1|2' (1 indoor, 2 outdoor), got {line!r}"
            )
        flags.append(parts[-1] == "1")
    if len(flags) != 365:
        raise GeopakError(f"{path}: expected 365 categories, found {len(flags)}")
    return np.asarray(flags)


class Places365IndoorScorer:
    """A torchvision ResNet trained on Places365; P(indoor) = mass on the indoor categories."""

    method = "places365"

    def __init__(self, weights: str | Path, labels: str | Path, batch_size: int = 64):
        import torch
        import torchvision
        from torchvision import transforms

        self.device = _device()
        self.batch_size = batch_size
        self.indoor = torch.as_tensor(read_places_io_labels(labels))
        try:
            ckpt = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for unreadable or unsafe files
            raise GeopakError(
                f"filter.places365_weights {weights}: cannot load ({str(exc).splitlines()[0][:200]})"
            ) from None
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or "fc.weight" not in {
            k.removeprefix("module.") for k in state
        }:
            raise GeopakError(
                f"filter.places365_weights {weights}: not a ResNet state dict (no fc.weight)"
            )
        state = {k.removeprefix("module."): v for k, v in state.items()}
        if state["fc.weight"].shape[0] != 365:
            raise GeopakError(
                f"filter.places365_weights {weights}: {state['fc.weight'].shape[0]} classes, expected 365"
            )
        bottleneck = "layer1.0.conv3.weight" in state
        blocks3 = len({k.split(".")[1] for k in state if k.startswith("layer3.")})
        arch = {
            (False, 2): "resnet18",
            (False, 6): "resnet34",
            (True, 6): "resnet50",
            (True, 23): "resnet101",
            (True, 36): "resnet152",
        }.get((bottleneck, blocks3))
        if arch is None:
            raise GeopakError(f"filter.places365_weights {weights}: unrecognised ResNet layout")
        model = getattr(torchvision.models, arch)(weights=None, num_classes=365)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise GeopakError(
                f"filter.places365_weights {weights}: does not fit {arch} ({str(exc).splitlines()[0][:160]})"
            ) from None
        self.model = model.eval().to(self.device)
        self.arch = arch
        self.preprocess = transforms.Compose(
            [
                transforms.Resize((256, 256)),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )

    def score(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        out: list[np.ndarray] = []
        mask = self.indoor.to(self.device)
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = torch.stack(
                    [self.preprocess(im) for im in images[i : i + self.batch_size]]
                ).to(self.device)
                probs = self.model(batch).float().softmax(dim=-1)
                out.append(probs[:, mask].sum(dim=-1).clamp(0, 1).cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.empty(0)


def load_indoor_scorer(cfg: FilterConfig) -> IndoorScorer | None:
    """The configured scorer, or None when the check is disabled or not applied."""
    st = indoor_status(cfg)
    if not st.applied:
        return None
    if st.method == "clip":
        return ClipIndoorScorer(st.weights, cfg.clip_model, batch_size=min(cfg.batch_size, 128))
    return Places365IndoorScorer(
        st.weights, _places_labels_path(cfg), batch_size=min(cfg.batch_size, 128)
    )


__all__ = [
    "INDOOR_PROMPTS",
    "OUTDOOR_PROMPTS",
    "ClipIndoorScorer",
    "IndoorScorer",
    "IndoorStatus",
    "Places365IndoorScorer",
    "indoor_status",
    "load_indoor_scorer",
    "read_places_io_labels",
]

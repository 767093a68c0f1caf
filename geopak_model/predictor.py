"""``GeopakPredictor``: a checkpoint in, plain-Python answers out.

This is the user-facing API of the contract::

    p = GeopakPredictor(checkpoint_path="runs/x/best.pt")
    r = p.predict("photo.jpg")
    r["province"], r["lat"], r["lon"], r["confidence"], r["hypotheses"]

Results are JSON-ready (str/int/float/list/dict) so the CLI prints them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from geopak_core.errors import GeopakError, not_a_file

from .encoders import PairTransform
from .factory import make_model
from .inference import H_CELL, H_LAT, H_LON, H_PROB, H_PROVINCE, predict_batch
from .runtime import resolve_device

ImageInput = str | Path | Image.Image


def load_image(image: ImageInput) -> Image.Image:
    """An RGB PIL image, upright (phone photos store their rotation in EXIF)."""
    if isinstance(image, Image.Image):
        img = ImageOps.exif_transpose(image)
    else:
        p = Path(image)
        if not p.is_file():
            raise GeopakError(not_a_file(p, "image"))
        try:
            with Image.open(p) as opened:
                img = ImageOps.exif_transpose(opened)  # a loaded copy, independent of the file
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise GeopakError(f"{p}: not a readable image ({exc.__class__.__name__})") from None
        except Image.DecompressionBombError as exc:  # not an OSError: Pillow's pixel-count guard
            raise GeopakError(
                f"{p}: refused, too many pixels ({exc.args[0].split(',')[0]})"
            ) from None
    return img if img.mode == "RGB" else img.convert("RGB")


class GeopakPredictor:
    """Loads a checkpoint once; predicts single images or lists in batches."""

    def __init__(
        self,
        checkpoint_path: str | Path,
        device: str | torch.device | None = None,
        *,
        aggregate: str | None = None,
        mode: str | None = None,
        top_provinces: int | None = None,
        top_cells: int | None = None,
        boundaries: str | Path | bool | None = None,
        refine: bool = False,
        index_path: str | Path | None = None,
    ):
        """``aggregate``: mean | best | mode (default mode; ``mode=`` is its older name).
        ``boundaries``: province polygons that keep each answer inside its province (None:
        ``GEOPAK_BOUNDARIES`` or the verified cache when present; False: never). ``refine``:
        retrieval refinement with the index next to the checkpoint (or ``index_path``)."""
        from .aggregate import ProvinceShapes, check_aggregate

        self.device = resolve_device(device)
        self.model, self.payload = make_model(checkpoint=checkpoint_path, device=self.device)
        pp = self.payload.get("preprocessing") or self.model.preprocess
        self.transform = PairTransform(pp["clip"], pp["places"], train=False)
        cfg = self.model.config
        self.aggregate = check_aggregate(aggregate or mode or "mode")
        self.mode = self.aggregate  # the older attribute name
        self.top_provinces = top_provinces or cfg.top_provinces
        self.top_cells = top_cells or cfg.top_cells
        self.checkpoint_path = Path(checkpoint_path)
        if boundaries is False:
            self.shapes = None
        else:
            self.shapes = ProvinceShapes.load(
                None if boundaries in (None, True) else boundaries,
                self.model.cells.regions.country or "PAK",
            )
        self.index = None
        if refine:
            from .retrieval import RetrievalIndex, index_path_for

            self.index = RetrievalIndex.load(
                index_path or index_path_for(checkpoint_path), model=self.model
            )

    def predict(self, image: ImageInput) -> dict[str, Any]:
        """One image (path or PIL image) -> {province, province_id, lat, lon, confidence,
        cell_id, hypotheses=[{province, province_id, cell, lat, lon, probability}, ...]}.

        ``cell_id`` is the most probable hypothesis' cell; each hypothesis names its cell once
        (``cell``, as the contract's rows do). A list of images is refused with a pointer to
        ``predict_many``, which batches them (a silent per-item loop would hide the cost)."""
        if isinstance(image, list | tuple):
            raise GeopakError(
                f"predict() takes one image; got a {type(image).__name__} of {len(image)}: "
                "use predict_many(images) for several"
            )
        return self.predict_many([image], batch_size=1)[0]

    def predict_many(
        self,
        images: Sequence[ImageInput] | Iterable[ImageInput],
        batch_size: int = 16,
        progress: Any = None,
    ) -> list[dict[str, Any]]:
        """Answers in input order. ``progress`` (optional) is called with the batch size after
        each batch, e.g. a tqdm bar's ``update``."""
        if batch_size < 1:
            raise GeopakError(f"batch_size must be >= 1, got {batch_size}")
        images = list(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pairs = [self.transform(load_image(im)) for im in chunk]
            clip = torch.stack([c for c, _ in pairs])
            places = torch.stack([s for _, s in pairs])
            out = predict_batch(
                self.model,
                clip,
                places,
                self.top_provinces,
                self.top_cells,
                self.aggregate,
                shapes=self.shapes,
                index=self.index,
            )
            results += _to_python(out, self.model.cells.regions.names)
            if progress is not None:
                progress(len(chunk))
        return results


def _deg(x: Any) -> float:
    """Degrees to 6 decimals (~0.1 m): float32 noise like 25.399999618 helps nobody."""
    return round(float(x), 6)


def _prob(x: Any) -> float:
    return float(f"{float(x):.6g}")


def _to_python(out: dict[str, torch.Tensor], names: Sequence[str]) -> list[dict[str, Any]]:
    """Plain answers; ``province`` is the region table's name of ``province_id`` (the
    country's first-level administrative unit)."""
    cpu = {k: v.detach().cpu() for k, v in out.items() if isinstance(v, torch.Tensor)}
    results = []
    for b in range(cpu["lat"].shape[0]):
        hyps = []
        for row in cpu["hypotheses"][b].tolist():
            if row[H_CELL] < 0:  # padding (province with fewer than K cells)
                continue
            pid = int(row[H_PROVINCE])
            hyps.append(
                {
                    "province": names[pid],
                    "province_id": pid,
                    # the contract's row is (province, cell, lat, lon, probability)
                    "cell": int(row[H_CELL]),
                    "lat": _deg(row[H_LAT]),
                    "lon": _deg(row[H_LON]),
                    "probability": _prob(row[H_PROB]),
                }
            )
        pid = int(cpu["province_id"][b])
        results.append(
            {
                "province": names[pid],
                "province_id": pid,
                "lat": _deg(cpu["lat"][b]),
                "lon": _deg(cpu["lon"][b]),
                "confidence": _prob(cpu["confidence"][b]),
                "cell_id": int(cpu["cell_id"][b]),
                "hypotheses": hyps,
                **({"refined": bool(cpu["refined"][b])} if "refined" in cpu else {}),
            }
        )
    return results

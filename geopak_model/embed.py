"""The embedding cache: run the frozen encoders once, train phases 0 and 1 on the features.

With the encoders frozen, every epoch of phases 0/1 would recompute the same CLIP and Places
features; caching them turns an epoch into a few matrix products. Layout of ``FEATS``::

    FEATS/manifest.json              encoder fingerprint, dims, dtype, source shard folder
    FEATS/model.pt                   the model whose encoders made the features (a checkpoint)
    FEATS/{split}/{shard-stem}.npz   one part per input shard: key, clip, places, labels

Each part is written atomically when its shard is done, so a killed ``embed`` resumes at the
next unfinished shard and a finished one does no work. The cache stores the *evaluation*
preprocessing (no augmentation): that is exactly what the encoders see at inference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopak_core.errors import GeopakError
from geopak_core.io import atomic_path, atomic_write_json, clean_stale_temps, read_json
from geopak_core.progress import progress

from .data import SPLITS, FeatureSet, LoaderSpec, image_batches, open_shard_folder

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def encoder_fingerprint(model: Any) -> str:
    """sha256 over both encoders' weights and preprocessing: features are only reusable by a
    model whose encoders are bit-identical to the ones that produced them."""
    h = hashlib.sha256()
    for prefix, module in (("clip", model.clip), ("places", model.places)):
        for name, t in sorted(module.state_dict().items()):
            h.update(f"{prefix}.{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(model.preprocess, sort_keys=True).encode())
    return h.hexdigest()


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (the encoders' matmuls), a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GeopakError(f"--device {device}: CUDA is not available on this machine")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise GeopakError(f"--device {device!r}: expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise GeopakError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def build_or_load_model(
    *,
    folder: Any,
    preset: str = "base",
    model_config: str | None = None,
    checkpoint: str | None = None,
    seed: int = 0,
) -> Any:
    """A model for this shard folder: from a checkpoint, else built from a preset/TOML (seeded)."""
    from .cells import CellTable
    from .checkpoint import load_checkpoint
    from .config import load_model_config
    from .model import build_model

    if checkpoint:
        if not Path(checkpoint).is_file():
            raise GeopakError(f"checkpoint not found: {checkpoint}")
        model, _ = load_checkpoint(checkpoint, map_location="cpu")
        if model.cells.num_cells != folder.num_cells:
            raise GeopakError(
                f"{checkpoint} has {model.cells.num_cells} geocells but {folder.cells_path} has {folder.num_cells}: train on the shard folder it was made for"
            )
        return model
    cfg = load_model_config(model_config or preset)
    cells = CellTable.from_parquet(folder.cells_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg, cells)


def embed(
    *,
    shards: str | os.PathLike,
    out: str | os.PathLike,
    preset: str = "base",
    model_config: str | None = None,
    checkpoint: str | None = None,
    splits: tuple[str, ...] = SPLITS,
    batch_size: int = 64,
    device: str | None = "auto",
    dtype: str = "float32",
    num_workers: int = 0,
    seed: int = 0,
    amp: bool = True,
) -> dict[str, Any]:
    """Encode every image of ``splits`` once; returns counts (and what was already done)."""
    from .checkpoint import save_checkpoint

    if dtype not in ("float32", "float16"):
        raise GeopakError(f"--dtype {dtype}: expected float32 or float16")
    folder = open_shard_folder(shards)
    out = Path(out)
    manifest_path = out / "manifest.json"
    old = read_json(manifest_path)
    if old is not None and (out / "model.pt").is_file() and not checkpoint and not model_config:
        # continuing a cache: reuse its model so the remaining parts match the finished ones
        model = build_or_load_model(folder=folder, checkpoint=str(out / "model.pt"))
    else:
        model = build_or_load_model(
            folder=folder,
            preset=preset,
            model_config=model_config,
            checkpoint=checkpoint,
            seed=seed,
        )
    fp = encoder_fingerprint(model)
    if old is not None and old.get("encoder_fingerprint") != fp:
        raise GeopakError(f"{out} holds features of different encoders; choose another --out")
    if old is not None and old.get("dtype") != dtype:
        raise GeopakError(
            f"{out} holds {old.get('dtype')} features, not {dtype}; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    if not (out / "model.pt").is_file():
        save_checkpoint(out / "model.pt", model, extra={"embed": {"encoder_fingerprint": fp}})
    manifest = {
        "format": CACHE_FORMAT,
        "encoder_fingerprint": fp,
        "clip_dim": int(model.clip_dim),
        "places_dim": int(model.places_dim),
        "dtype": dtype,
        "preprocess": model.preprocess,
        "shards": str(folder.root.resolve()),
        "num_cells": folder.num_cells,
    }
    atomic_write_json(manifest_path, manifest)

    dev = resolve_device(device)
    model.to(dev).eval()
    transform = model.transforms(train=False)
    todo = [
        (split, shard)
        for split in splits
        for shard in folder.shards(split)
        if not (out / split / f"{shard.stem}.npz").exists()
    ]
    done = sum(len(folder.shards(s)) for s in splits) - len(todo)
    if not todo:
        log.info("embedding cache %s is complete (%d parts): nothing to do", out, done)
        return {"out": str(out), "parts_written": 0, "parts_skipped": done, "samples": 0}
    if done:
        log.info("resuming embedding cache: %d of %d parts already done", done, done + len(todo))
    t0 = time.perf_counter()
    n_samples = 0
    todo_splits = {s for s, _ in todo}
    total = sum(folder.size(s) for s in todo_splits) if folder.index else None
    spec = LoaderSpec(
        batch_size=batch_size, shuffle=False, augment_seeded=False, num_workers=num_workers
    )
    np_dtype = np.float16 if dtype == "float16" else np.float32
    with progress(total=total, desc="embed", unit="img") as bar, torch.inference_mode():
        for split, shard in todo:
            cols: dict[str, list[Any]] = {
                k: [] for k in ("key", "clip", "places", "lat", "lon", "province_id", "cell_id")
            }
            for batch in image_batches([shard], transform, spec):
                with autocast(dev, amp):
                    c, p = model.encode(batch["clip"].to(dev), batch["places"].to(dev))
                cols["key"] += batch["key"]
                cols["clip"].append(c.float().cpu().numpy().astype(np_dtype))
                cols["places"].append(p.float().cpu().numpy().astype(np_dtype))
                for k in ("lat", "lon", "province_id", "cell_id"):
                    cols[k].append(batch[k].numpy())
                bar.update(len(batch["key"]))
            n = len(cols["key"])
            n_samples += n
            arrays = {
                "key": np.array(cols["key"], dtype=str),
                "clip": np.concatenate(cols["clip"])
                if n
                else np.zeros((0, model.clip_dim), np_dtype),
                "places": np.concatenate(cols["places"])
                if n
                else np.zeros((0, model.places_dim), np_dtype),
                **{
                    k: np.concatenate(cols[k]) if n else np.zeros(0)
                    for k in ("lat", "lon", "province_id", "cell_id")
                },
            }
            target = out / split / f"{shard.stem}.npz"
            with atomic_path(target, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            bar.set_postfix_str(f"{split}/{shard.name}")
    dt = time.perf_counter() - t0
    log.info(
        "embedded %d images in %.1fs (%.1f img/s) into %s",
        n_samples,
        dt,
        n_samples / max(dt, 1e-9),
        out,
    )
    return {
        "out": str(out),
        "parts_written": len(todo),
        "parts_skipped": done,
        "samples": n_samples,
        "seconds": dt,
    }


def read_manifest(feats: str | os.PathLike) -> dict[str, Any]:
    path = Path(feats) / "manifest.json"
    manifest = read_json(path)
    if manifest is None:
        raise GeopakError(
            f"{feats} is not an embedding cache (no manifest.json); run `geopak-train embed` first"
        )
    return manifest


def load_features(
    feats: str | os.PathLike, split: str, *, folder: Any = None, model: Any = None
) -> FeatureSet:
    """All parts of one split as tensors; checks they belong to ``model`` and cover ``folder``."""
    feats = Path(feats)
    manifest = read_manifest(feats)
    if model is not None and manifest["encoder_fingerprint"] != encoder_fingerprint(model):
        raise GeopakError(
            f"{feats} was made by different encoder weights than this model's; re-run `geopak-train embed` or --load-from its model.pt"
        )
    expected = [s.stem for s in folder.shards(split)] if folder is not None else None
    parts = sorted((feats / split).glob("*.npz"))
    if expected is not None:
        missing = sorted(set(expected) - {p.stem for p in parts})
        if missing:
            raise GeopakError(
                f"embedding cache {feats} lacks {split}/{missing[0]}.npz ({len(missing)} missing); run `geopak-train embed` again to finish it"
            )
        parts = [feats / split / f"{stem}.npz" for stem in expected]
    if not parts:
        raise GeopakError(f"embedding cache {feats} has no {split} features")
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("key", "clip", "places", "lat", "lon", "province_id", "cell_id")
    }
    for p in parts:
        with np.load(p, allow_pickle=False) as z:
            for k in cols:
                cols[k].append(z[k])
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return FeatureSet(
        key=cat["key"].astype(object),
        clip=torch.from_numpy(cat["clip"]),
        places=torch.from_numpy(cat["places"]),
        lat=torch.from_numpy(cat["lat"].astype(np.float32)),
        lon=torch.from_numpy(cat["lon"].astype(np.float32)),
        province_id=torch.from_numpy(cat["province_id"].astype(np.int64)),
        cell_id=torch.from_numpy(cat["cell_id"].astype(np.int64)),
    )

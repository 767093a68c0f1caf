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
from .factory import make_model
from .runtime import autocast, resolve_device

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
    random_init: bool = False,
    skip_bad_shards: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Encode every image of ``splits`` once; returns counts (and what was already done).

    With ``executor="ray"`` each shard is one Ray task: the worker loads the cache's
    ``model.pt``, encodes the shard and writes its ``.npz`` part (the cache folder must be on
    a filesystem the workers share); the parts are the same as a local run's."""
    if dtype not in ("float32", "float16"):
        raise GeopakError(f"--dtype {dtype}: expected float32 or float16")
    folder = open_shard_folder(shards, skip_bad_shards=skip_bad_shards)
    out = Path(out)
    model = _cache_model(
        folder,
        out,
        dtype,
        preset=preset,
        model_config=model_config,
        checkpoint=checkpoint,
        seed=seed,
        random_init=random_init,
    )
    dev = resolve_device(device)
    model.to(dev).eval()
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
    total = sum(folder.size(s) for s in {s for s, _ in todo}) if folder.index else None
    spec = LoaderSpec(
        batch_size=batch_size, shuffle=False, augment_seeded=False, num_workers=num_workers
    )
    np_dtype = np.float16 if dtype == "float16" else np.float32
    transform = model.transforms(train=False)
    if executor != "local":
        from geopak_core.executor import make_executor

        job = {"out": out, "batch_size": batch_size, "device": device, "amp": amp, "dtype": dtype}
        units = [(f"{split}/{shard.stem}", (job, split, str(shard))) for split, shard in todo]
        with progress(total=total, desc="embed", unit="img") as bar:
            make_executor(executor, ray_address).run_units(
                embed_part, units, lambda _name, n: bar.update(n)
            )
        n_samples = sum(len(np.load(out / f"{u}.npz")["key"]) for u, _ in units)
    written = len(todo)
    todo = todo if executor == "local" else []
    with progress(total=total, desc="embed", unit="img") as bar, torch.inference_mode():
        for split, shard in todo:
            batches = image_batches([shard], transform, spec)
            arrays = _encode_part(model, batches, dev, amp, np_dtype, bar)
            n_samples += len(arrays["key"])
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
        "parts_written": written,
        "parts_skipped": done,
        "samples": n_samples,
        "seconds": dt,
    }


_WORKER_MODELS: dict[str, Any] = {}


def embed_part(job: dict[str, Any], split: str, shard: str) -> int:
    """One shard of the cache on an executor's worker; returns how many samples it held.

    The model comes from the cache's own ``model.pt`` (loaded once per worker process), so
    every part is encoded by exactly the encoders the driver recorded."""
    out = Path(job["out"])
    key = str(out / "model.pt")
    model = _WORKER_MODELS.get(key)
    dev = resolve_device(job["device"])
    if model is None:
        model, _ = make_model(checkpoint=out / "model.pt")
        model = _WORKER_MODELS[key] = model.to(dev).eval()
    spec = LoaderSpec(batch_size=job["batch_size"], shuffle=False, augment_seeded=False)
    np_dtype = np.float16 if job["dtype"] == "float16" else np.float32

    class _Silent:
        def update(self, n: int) -> None:
            return None

    with torch.inference_mode():
        batches = image_batches([Path(shard)], model.transforms(train=False), spec)
        arrays = _encode_part(model, batches, dev, job["amp"], np_dtype, _Silent())
    target = out / split / f"{Path(shard).stem}.npz"
    with atomic_path(target, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return len(arrays["key"])


def _cache_model(folder: Any, out: Path, dtype: str, **source: Any) -> Any:
    """The model whose encoders fill the cache, with the cache's manifest and model.pt in place.

    Continuing a cache reuses its model.pt (so the remaining parts match the finished ones);
    a cache made by other encoders or in another dtype is refused rather than mixed.
    """
    from .checkpoint import save_checkpoint

    old = read_json(out / "manifest.json")
    if (
        old is not None
        and (out / "model.pt").is_file()
        and not source["checkpoint"]
        and not source["model_config"]
    ):
        model, _ = make_model(folder=folder, checkpoint=out / "model.pt")
    else:
        model, _ = make_model(folder=folder, **source)
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
        "encoders": model.encoder_provenance,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return model


def _encode_part(
    model: Any, batches: Any, dev: torch.device, amp: bool, np_dtype: Any, bar: Any
) -> dict[str, np.ndarray]:
    """One shard's features and labels as the arrays of its .npz part."""
    cols: dict[str, list[Any]] = {
        k: [] for k in ("key", "clip", "places", "lat", "lon", "province_id", "cell_id")
    }
    for batch in batches:
        with autocast(dev, amp):
            c, p = model.encode(batch["clip"].to(dev), batch["places"].to(dev))
        cols["key"] += batch["key"]
        cols["clip"].append(c.float().cpu().numpy().astype(np_dtype))
        cols["places"].append(p.float().cpu().numpy().astype(np_dtype))
        for k in ("lat", "lon", "province_id", "cell_id"):
            cols[k].append(batch[k].numpy())
        bar.update(len(batch["key"]))
    n = len(cols["key"])
    dims = {"clip": model.clip_dim, "places": model.places_dim}
    arrays = {"key": np.array(cols["key"], dtype=str)}
    for k in ("clip", "places"):
        arrays[k] = np.concatenate(cols[k]) if n else np.zeros((0, dims[k]), np_dtype)
    for k in ("lat", "lon", "province_id", "cell_id"):
        arrays[k] = np.concatenate(cols[k]) if n else np.zeros(0)
    return arrays


def read_manifest(feats: str | os.PathLike) -> dict[str, Any]:
    """The embedding cache's manifest; a folder that is not a cache is a one-line error telling how
    to build one."""
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
            f"{feats} was made by different encoder weights than this model's; re-run "
            "`geopak-train embed` or --load-from its model.pt"
        )
    expected = [s.stem for s in folder.shards(split)] if folder is not None else None
    parts = sorted((feats / split).glob("*.npz"))
    if expected is not None:
        missing = sorted(set(expected) - {p.stem for p in parts})
        if missing:
            raise GeopakError(
                f"embedding cache {feats} lacks {split}/{missing[0]}.npz ({len(missing)} "
                "missing); run `geopak-train embed` again to finish it"
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

"""WebDataset pipelines over the contract's shard folder.

Training reads the tars as a stream (no unpacking, no random access), so everything that
makes a run reproducible is spelled out here:

* shard order and the sample shuffle buffer are seeded by ``(seed, epoch)``, identically on
  every rank, before the shards are split by node (``RANK``/``WORLD_SIZE``) and by DataLoader
  worker, so torchrun ranks see disjoint data;
* augmentation draws from a generator seeded by ``(seed, epoch, key, repeat)``, so the same
  sample gets the same crop whichever worker decodes it and whether or not the run was
  resumed;
* province-balanced sampling repeats or drops each sample a deterministic number of times
  (also keyed by the sample), so a resumed epoch replays exactly.

A resumed epoch skips the batches already trained on. With ``num_workers <= 1`` that skip
happens before decoding; with more workers the batches are decoded and dropped in the main
process, which keeps the order exact whatever the workers' interleaving.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import webdataset as wds
from PIL import Image

from geopak_core.errors import GeopakError
from geopak_core.hashing import stable_seed
from geopak_core.regions import PAKISTAN, RegionTable, regions_in
from geopak_core.shardfmt import (
    LABEL_FIELDS,
    SPLITS,
    cell_id_order,
    list_shards,
    read_table,
    scan_json,
    shard_name,
    verify_folder,
    verify_shard,
)

from .config import BALANCE_MODES  # noqa: F401  (defined with TrainConfig; re-exported)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The shard folder


@dataclass
class ShardFolder:
    """A validated view of ``DIR/{train,val,test}/*.tar`` + ``cells.parquet`` + ``index.parquet``."""

    root: Path
    cells_path: Path
    num_cells: int
    _shards: dict[str, list[Path]] = field(default_factory=dict)
    skip_bad_shards: bool = False  # else a bad shard stops the reader (one line naming it)
    _bad: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    regions: RegionTable = field(default=PAKISTAN)  # the folder's regions.parquet

    def shards(self, split: str) -> list[Path]:
        """The split's shards, verified against index.parquet (count, keys, sha256) the first
        time they are asked for: a reader never runs silently on part of the data."""
        self._verify(split)
        bad = self._bad.get(split, {})
        return [p for p in self._shards.get(split, []) if self._name(p) not in bad]

    def skipped(self, split: str) -> int:
        """Samples of ``split`` left out because their shard was bad (``skip_bad_shards``)."""
        return sum(n for n, _ in self._bad.get(split, {}).values())

    def _name(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def _verify(self, split: str) -> None:
        if split in self._bad:
            return
        if (self.root / "index.parquet").is_file():
            bad = verify_folder(self.root, [split])
        else:  # no index: the tars can still be checked for completeness
            bad = {
                self._name(p): (0, problem)
                for p in self._shards.get(split, [])
                if (problem := verify_shard(p))
            }
        if bad and not self.skip_bad_shards:
            name, (_, problem) = next(iter(sorted(bad.items())))
            more = f" (and {len(bad) - 1} more bad shard(s))" if len(bad) > 1 else ""
            raise GeopakError(
                f"{self.root / name}: {problem}{more}; rebuild the shards with `geopak-data "
                "shard`, or pass --skip-bad-shards to go on without them"
            )
        self._bad[split] = bad
        if bad:
            log.warning(
                "skipping %d bad %s shard(s) (%d samples of index.parquet), e.g. %s: %s",
                len(bad),
                split,
                self.skipped(split),
                *next(iter(sorted((k, v[1]) for k, v in bad.items()))),
            )

    def require_split(self, split: str) -> list[Path]:
        shards = self.shards(split)
        if not shards:
            raise GeopakError(
                f"no shards for split '{split}' in {self.root} (expected {shard_name(split, 0)}, ...)"
            )
        return shards

    @cached_property
    def index(self) -> dict[str, dict[str, np.ndarray]]:
        """Per split: key, shard, lat, lon, province_id, cell_id as arrays (no image is read).

        From ``index.parquet`` when present, otherwise by reading the json members of the tars.
        """
        path = self.root / "index.parquet"
        out: dict[str, dict[str, np.ndarray]] = {}
        if path.exists():
            try:
                table = pq.read_table(
                    path, columns=["key", "split", "shard", *LABEL_FIELDS]
                ).to_pandas()
            except Exception as exc:  # noqa: BLE001 - not Parquet, or a contract column missing
                raise GeopakError(
                    f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from None
            for split, df in table.groupby("split"):
                out[str(split)] = {c: df[c].to_numpy() for c in ("key", "shard", *LABEL_FIELDS)}
        else:
            for split in SPLITS:
                rows = [(self._name(s), meta) for s in self.shards(split) for meta in scan_json(s)]
                out[split] = {
                    "key": np.array([m["key"] for _, m in rows], dtype=object),
                    "shard": np.array([s for s, _ in rows], dtype=object),
                    **{f: np.array([m[f] for _, m in rows]) for f in LABEL_FIELDS},
                }
        return out

    def labels(self, split: str) -> dict[str, np.ndarray]:
        idx = self.index.get(split)
        if idx is None:
            return {"key": np.array([], dtype=object), **{f: np.array([]) for f in LABEL_FIELDS}}
        self._verify(split)
        bad = self._bad.get(split)
        if bad:
            keep = ~np.isin(idx["shard"].astype(str), list(bad))
            return {c: v[keep] for c, v in idx.items()}
        return idx

    def size(self, split: str) -> int:
        return int(len(self.labels(split)["key"]))

    def province_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(
            self.labels(split)["province_id"].astype(np.int64), minlength=self.regions.n
        )

    def cell_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.labels(split)["cell_id"].astype(np.int64), minlength=self.num_cells)


def open_shard_folder(root: str | os.PathLike, *, skip_bad_shards: bool = False) -> ShardFolder:
    """Check the folder looks like the contract's shard layout; one-line error if not.

    Each split's tars are verified when first read (``ShardFolder.shards``); a bad one stops
    the reader unless ``skip_bad_shards``, which leaves it out and says how many samples."""
    root = Path(root)
    if not root.is_dir():
        raise GeopakError(f"shard folder not found: {root}")
    cells_path = root / "cells.parquet"
    if not cells_path.exists():
        raise GeopakError(f"{cells_path} is missing: not a geopak shard folder")
    ids = read_table(cells_path, ["cell_id", "province_id"]).column("cell_id").to_numpy()
    cell_id_order(ids, where=str(cells_path))
    shards = {split: list_shards(root, split) for split in SPLITS}
    if not any(shards.values()):
        raise GeopakError(f"no geopak-*.tar shards under {root}/{{train,val,test}}")
    return ShardFolder(
        root=root,
        cells_path=cells_path,
        num_cells=len(ids),
        _shards=shards,
        skip_bad_shards=skip_bad_shards,
        regions=regions_in(root, cells=cells_path),
    )


# ---------------------------------------------------------------------------------------------
# Determinism helpers


def balance_factors(province_counts: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-province repeat factor for balanced sampling: (mean share / share) ** power.

    power=1 equalises provinces, 0 leaves the natural distribution; 0.5 (the default) is the
    usual compromise that lifts Balochistan without showing each of its photos twenty times.
    The factors are rescaled so an epoch keeps its natural length.
    """
    counts = np.asarray(province_counts, dtype=np.float64)
    present = counts > 0
    f = np.zeros_like(counts)
    if not present.any():
        return f
    f[present] = (counts[present].mean() / counts[present]) ** power
    f *= counts.sum() / float((f * counts).sum())
    return f


def repeat_count(factor: float, seed: int, epoch: int, key: str) -> int:
    """How often a sample appears this epoch: floor(factor) plus one with prob. frac(factor)."""
    whole = math.floor(factor)
    frac = factor - whole
    if frac > 0 and random.Random(stable_seed("balance", seed, epoch, key)).random() < frac:
        whole += 1
    return int(whole)


# ---------------------------------------------------------------------------------------------
# Pipeline stages (generator functions that webdataset composes)


def _meta_stage(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Parse the json member and keep the undecoded jpg: cheap, so balancing/skipping stay cheap."""
    for sample in src:
        if "json" not in sample or "jpg" not in sample:
            raise GeopakError(
                f"sample {sample.get('__key__')!r} in {sample.get('__url__')} lacks .jpg or .json"
            )
        meta = json.loads(sample["json"])
        yield {
            "key": meta.get("key", sample["__key__"]),
            "meta": meta,
            "jpg": sample["jpg"],
            "url": sample.get("__url__"),
        }


def _balance_stage(src: Iterator[dict[str, Any]], factors: np.ndarray, seed: int, epoch: int):
    for sample in src:
        n = repeat_count(
            float(factors[int(sample["meta"]["province_id"])]), seed, epoch, sample["key"]
        )
        for rep in range(n):
            yield {**sample, "rep": rep}


def _split_by_node(src: Iterator[dict[str, Any]], rank: int, world: int):
    """Every world-th item from position rank (webdataset's split_by_node, with explicit rank)."""
    yield from islice(src, rank, None, world)


def _skip_stage(src: Iterator[dict[str, Any]], n: int):
    yield from islice(src, n, None)


def _decode_stage(src: Iterator[dict[str, Any]], transform: Callable, seed: int | None, epoch: int):
    """Decode the JPEG, apply the encoders' transform and attach the label tensors.

    With a seed (training), the transform runs under a private torch RNG state seeded by the
    sample, so augmentation neither depends on nor disturbs the global RNG (dropout, resume).
    """
    for s in src:
        try:
            img = Image.open(io.BytesIO(s["jpg"])).convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise GeopakError(
                f"sample {s['key']!r} in {s.get('url')}: not a readable image ({exc.__class__.__name__})"
            ) from None
        if seed is None:
            clip_px, places_px = transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stable_seed("aug", seed, epoch, s["key"], s.get("rep", 0)))
                clip_px, places_px = transform(img)
        m = s["meta"]
        yield {
            "key": s["key"],
            "clip": clip_px,
            "places": places_px,
            "lat": float(m["lat"]),
            "lon": float(m["lon"]),
            "province_id": int(m["province_id"]),
            "cell_id": int(m["cell_id"]),
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of decoded samples into the batch dict the losses and metrics expect."""
    batch: dict[str, Any] = {"key": [s["key"] for s in samples]}
    for name in ("clip", "places"):
        if name in samples[0]:
            batch[name] = torch.stack([s[name] for s in samples])
    batch["lat"] = torch.tensor([s["lat"] for s in samples], dtype=torch.float32)
    batch["lon"] = torch.tensor([s["lon"] for s in samples], dtype=torch.float32)
    batch["province_id"] = torch.tensor([s["province_id"] for s in samples], dtype=torch.long)
    batch["cell_id"] = torch.tensor([s["cell_id"] for s in samples], dtype=torch.long)
    return batch


@dataclass
class LoaderSpec:
    """Everything that decides which batches an epoch yields (kept together for resume)."""

    batch_size: int
    shuffle: bool = True
    shuffle_buffer: int = 1000
    seed: int = 0
    augment_seeded: bool = True
    balance_factors: np.ndarray | None = None
    num_workers: int = 0
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1


def image_pipeline(
    shards: list[Path],
    transform: Callable,
    spec: LoaderSpec,
    *,
    epoch: int = 0,
    skip_samples: int = 0,
) -> wds.DataPipeline:
    """The per-epoch stream: shards -> (shuffle) -> node/worker split -> samples -> batches."""
    urls = [str(s) for s in shards]
    split_shards = len(urls) >= spec.world_size
    stages: list[Any] = [wds.SimpleShardList(urls)]
    if spec.shuffle:
        # same permutation on every rank (seed, epoch), so split_by_node hands out disjoint shards
        stages.append(
            wds.detshuffle(
                bufsize=len(urls),
                initial=len(urls),
                seed=stable_seed("shards", spec.seed) % 2**31,
                epoch=epoch - 1,
            )
        )
    if spec.world_size > 1 and split_shards:
        stages.append(wds.pipelinefilter(_split_by_node)(spec.rank, spec.world_size))
    stages += [wds.split_by_worker, wds.tarfile_to_samples(), wds.pipelinefilter(_meta_stage)()]
    if spec.world_size > 1 and not split_shards:
        # fewer shards than ranks: every rank reads everything and keeps every world_size-th sample
        stages.append(wds.pipelinefilter(_split_by_node)(spec.rank, spec.world_size))
    if spec.balance_factors is not None:
        stages.append(wds.pipelinefilter(_balance_stage)(spec.balance_factors, spec.seed, epoch))
    if spec.shuffle and spec.shuffle_buffer > 1:
        stages.append(
            wds.detshuffle(
                bufsize=spec.shuffle_buffer,
                initial=spec.shuffle_buffer,
                seed=stable_seed("samples", spec.seed) % 2**31,
                epoch=epoch - 1,
            )
        )
    if skip_samples:
        stages.append(wds.pipelinefilter(_skip_stage)(skip_samples))
    aug_seed = spec.seed if spec.augment_seeded else None
    stages.append(wds.pipelinefilter(_decode_stage)(transform, aug_seed, epoch))
    stages.append(wds.batched(spec.batch_size, collation_fn=collate, partial=not spec.drop_last))
    return wds.DataPipeline(*stages)


def image_batches(
    shards: list[Path],
    transform: Callable,
    spec: LoaderSpec,
    *,
    epoch: int = 0,
    skip_batches: int = 0,
) -> Iterator[dict[str, Any]]:
    """Batches of one epoch of ``shards``, ``skip_batches`` already-trained batches left out."""
    workers = min(spec.num_workers, max(1, len(shards) // max(1, spec.world_size)))
    if workers != spec.num_workers and spec.num_workers > 1:
        log.debug(
            "using %d loader workers (only %d shards per rank)",
            workers,
            len(shards) // max(1, spec.world_size),
        )
    if workers <= 1:
        yield from image_pipeline(
            shards, transform, spec, epoch=epoch, skip_samples=skip_batches * spec.batch_size
        )
        return
    pipe = image_pipeline(shards, transform, replace(spec, drop_last=False), epoch=epoch)
    # A private generator: otherwise the DataLoader draws its workers' seed from the global
    # torch RNG (dropout's), so a resumed run, which builds one loader more, would diverge.
    gen = torch.Generator().manual_seed(stable_seed("loader", spec.seed, epoch) % 2**63)
    loader = torch.utils.data.DataLoader(
        pipe, batch_size=None, num_workers=workers, persistent_workers=False, generator=gen
    )
    # Each worker ends its own stream with a partial batch; re-batching here gives the epoch
    # exactly epoch_batches() full batches, as with one worker (the step count and LR
    # schedule are computed from that number).
    try:
        yield from islice(_rebatch(loader, spec.batch_size, spec.drop_last), skip_batches, None)
    except GeopakError as exc:  # re-raised by the DataLoader with the worker's traceback text
        raise GeopakError(str(exc).strip().splitlines()[-1].split("GeopakError: ", 1)[-1]) from None


def _rebatch(
    batches: Iterator[dict[str, Any]], size: int, drop_last: bool
) -> Iterator[dict[str, Any]]:
    """Batches of any sizes -> batches of exactly ``size`` (the last one partial unless dropped)."""
    pending: list[dict[str, Any]] = []
    for b in batches:
        for i, key in enumerate(b["key"]):
            pending.append(
                {
                    "key": key,
                    "clip": b["clip"][i],
                    "places": b["places"][i],
                    **{f: b[f][i].item() for f in LABEL_FIELDS},
                }
            )
        while len(pending) >= size:
            yield collate(pending[:size])
            pending = pending[size:]
    if pending and not drop_last:
        yield collate(pending)


# ---------------------------------------------------------------------------------------------
# Cached features


@dataclass
class FeatureSet:
    """Encoder features of one split, row-aligned with their labels (see embed.py)."""

    key: np.ndarray
    clip: torch.Tensor
    places: torch.Tensor
    lat: torch.Tensor
    lon: torch.Tensor
    province_id: torch.Tensor
    cell_id: torch.Tensor

    def __len__(self) -> int:
        return int(self.clip.shape[0])

    def batch(self, idx: torch.Tensor) -> dict[str, Any]:
        i = idx.numpy()
        return {
            "key": [str(k) for k in self.key[i]],
            "clip_feat": self.clip[idx].float(),
            "places_feat": self.places[idx].float(),
            "lat": self.lat[idx],
            "lon": self.lon[idx],
            "province_id": self.province_id[idx],
            "cell_id": self.cell_id[idx],
        }


def feature_batches(
    feats: FeatureSet, spec: LoaderSpec, *, epoch: int = 0, skip_batches: int = 0
) -> Iterator[dict[str, Any]]:
    """One epoch over cached features: seeded permutation, balance repeats, rank slice, batches."""
    n = len(feats)
    if spec.balance_factors is not None:
        reps = np.array(
            [
                repeat_count(float(spec.balance_factors[int(p)]), spec.seed, epoch, str(k))
                for p, k in zip(feats.province_id.tolist(), feats.key, strict=True)
            ],
            dtype=np.int64,
        )
        order = torch.from_numpy(np.repeat(np.arange(n), reps))
    else:
        order = torch.arange(n)
    if spec.shuffle:
        g = torch.Generator().manual_seed(stable_seed("features", spec.seed, epoch) % 2**63)
        order = order[torch.randperm(order.numel(), generator=g)]
    order = order[spec.rank :: spec.world_size]
    bs = spec.batch_size
    n_batches = order.numel() // bs if spec.drop_last else math.ceil(order.numel() / bs)
    for b in range(skip_batches, n_batches):
        yield feats.batch(order[b * bs : (b + 1) * bs])


def epoch_batches(num_samples: int, spec: LoaderSpec) -> int:
    """Batches one rank sees in one epoch of ``num_samples`` (balancing keeps the length)."""
    per_rank = math.ceil(num_samples / spec.world_size)
    return per_rank // spec.batch_size if spec.drop_last else math.ceil(per_rank / spec.batch_size)

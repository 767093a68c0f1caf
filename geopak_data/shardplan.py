"""The shard plan: which photo goes to which split, which shard and in what order.

A pure function of the clustered records, the cells, the shard settings and the removal
list (no file is read or written), so it can be tested on its own and the stage only
carries it out. The plan is made from every eligible record *including* those on the removal
list: removing a photo later therefore changes only the shard that held it, and every other
shard keeps the same content and the same bytes.

Steps, in order:

1. eligible records (restricted sources out unless ``shard.include_restricted``), key order;
2. labels checked against the cells (cell ids in range, the cell's province = the photo's);
3. leakage-free grouped, stratified splits (``splits.assign_splits``);
4. each sample's json (``shardfmt.JSON_FIELDS`` order) and its exact size in a tar;
5. per split a seeded per-key shuffle, cut into shards of at most ``max_shard_samples`` and
   ``max_shard_bytes`` (whichever first), and into at least ``min_shards_per_split`` shards
   when the split has that many samples (so loaders with several workers get a shard each);
6. per shard the members that are not removed, and a fingerprint of their content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from geopak_core.errors import GeopakError
from geopak_core.regions import PAKISTAN, RegionTable
from geopak_core.shardfmt import (
    FORMAT_VERSION,
    JSON_FIELDS,
    SPLITS,
    SYNTHETIC_FIELD,
    json_bytes,
    sample_tar_sizes,
    shard_name,
    tar_size,
)

from .config import ShardConfig
from .records import without_credentials
from .removal import RemovalList
from .source_registry import restricted_sources
from .splits import SplitResult, assign_splits, shuffle_order

RESTRICTED_SOURCES = frozenset(restricted_sources())  # from the source registry


@dataclass
class ShardPlan:
    """What the shard stage writes; row ``i`` everywhere is ``records.iloc[i]``."""

    records: pd.DataFrame  # eligible records in key order, removed ones included
    splits: SplitResult
    removed: np.ndarray  # bool per row: on the removal list (planned, not written)
    metas: list[dict[str, Any]]  # each row's sample json
    blobs: list[bytes]  # ... as the bytes stored in the tar
    shards: dict[str, np.ndarray]  # shard name -> rows written to it, in tar order
    fingerprints: dict[str, str]  # shard name -> hash of its content (the resume key)
    n_input: int  # records read, before the restricted ones were left out
    excluded_restricted: int

    @property
    def order(self) -> list[int]:
        """Every written row, shard by shard (the index table's row order)."""
        return [i for rows in self.shards.values() for i in rows.tolist()]

    def groups_summary(self) -> dict[str, int]:
        counts = np.bincount(self.splits.group) if len(self.records) else np.zeros(0, np.int64)
        return {
            "count": self.splits.n_groups,
            "multi_photo": int((counts > 1).sum()),
            "largest": int(counts.max()) if counts.size else 0,
            "burst_links": self.splits.burst_links,
            "duplicate_links": self.splits.duplicate_links,
        }


def split_rule_text(
    *, fractions: dict[str, float], burst_radius_km: float, near_duplicate_distance: int, seed: int
) -> str:
    """The split rule in words, for stats.json and the dataset card."""
    return (
        f"Splits are {', '.join(f'{s} {100 * f:g}%' for s, f in fractions.items())} of the photos, dealt as whole "
        "*groups* so that nothing leaks between them: photos by the same owner on the same day "
        f"within {burst_radius_km:g} km of each other (bursts; photos without a date count as one day per owner), "
        f"exact duplicates (same sha256) and near-duplicates (perceptual hash within {near_duplicate_distance} bits) "
        "are joined (transitively) into one group, and a group never straddles two splits. Groups are dealt "
        "largest first to the split furthest below its target share of the group's geocell and province "
        "(stratified), after every province with enough groups has given one group to each split, so rare "
        f"provinces appear in val and test too. Deterministic for seed {seed}."
    )


def fractions_of(cfg: ShardConfig) -> dict[str, float]:
    """The train/val/test fractions of the config, keyed by split name."""
    return {"train": cfg.train_fraction, "val": cfg.val_fraction, "test": cfg.test_fraction}


# ----------------------------------------------------------------------------- values


def text(v: Any) -> str:
    """A record value as json text: missing (None, NaN) is ``""``."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v)


def integer(v: Any) -> int:
    """A record value as a json integer: missing or unparsable is 0."""
    try:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return 0
        return int(v)
    except (TypeError, ValueError):
        return 0


def attribution(rec: dict[str, Any]) -> str:
    """The record's own attribution, else one built from title, owner, source, licence, URL."""
    a = text(rec.get("attribution")).strip()
    if a:
        return a
    title = text(rec.get("title")).strip() or "Photo"
    owner = text(rec.get("owner")).strip() or "unknown owner"
    lic = text(rec.get("license")).strip() or "licence unknown"
    return f'"{title}" by {owner} ({rec.get("source")}), {lic}, {text(rec.get("url"))}'


# ----------------------------------------------------------------------------- steps


def restricted_mask(records: pd.DataFrame) -> np.ndarray:
    """Rows whose source's terms forbid redistribution (the record's flag or its source)."""
    flag = records["restricted"].fillna(False).astype(bool).to_numpy()
    return flag | records["source"].isin(RESTRICTED_SOURCES).to_numpy()


def eligible_mask(records: pd.DataFrame, cfg: ShardConfig) -> np.ndarray:
    """Rows the shard folder may hold."""
    if cfg.include_restricted:
        return np.ones(len(records), dtype=bool)
    return ~restricted_mask(records)


def _eligible(records: pd.DataFrame, cfg: ShardConfig, where: str) -> pd.DataFrame:
    df = records[eligible_mask(records, cfg)]
    if len(df) == 0:
        what = (
            f"all {len(records)} are restricted (set shard.include_restricted only if you may redistribute them)"
            if len(records)
            else "it is empty"
        )
        raise GeopakError(f"shard: no records to shard in {where}: {what}")
    df = df.sort_values("key", kind="stable").reset_index(drop=True)
    df["restricted"] = restricted_mask(df)
    return df


def check_labels(df: pd.DataFrame, cells: pd.DataFrame, regions: RegionTable = PAKISTAN) -> None:
    """Every record's cell exists and lies in the record's province, a region of the table."""
    cell_ids = df["cell_id"].astype(np.int64).to_numpy()
    prov_ids = df["province_id"].astype(np.int64).to_numpy()
    if cell_ids.min() < 0 or cell_ids.max() >= len(cells):
        bad = df["key"][(cell_ids < 0) | (cell_ids >= len(cells))].iloc[0]
        raise GeopakError(f"record {bad!r} has a cell_id not in cells.parquet; re-run cluster")
    cell_prov = cells["province_id"].astype(np.int64).to_numpy()[cell_ids]
    if np.any(cell_prov != prov_ids):
        bad = int(np.flatnonzero(cell_prov != prov_ids)[0])
        raise GeopakError(
            f"record {df['key'][bad]!r} is tagged province {prov_ids[bad]} but its cell "
            f"{cell_ids[bad]} lies in province {cell_prov[bad]}; re-run cluster"
        )
    if prov_ids.min() < 0 or prov_ids.max() >= regions.n:
        raise GeopakError(
            f"records hold a province_id outside 0..{regions.n - 1} (the region table); re-run tag"
        )


def _splits(df: pd.DataFrame, cfg: ShardConfig) -> SplitResult:
    return assign_splits(
        keys=df["key"].tolist(),
        province_id=df["province_id"].astype(np.int64).to_numpy(),
        cell_id=df["cell_id"].astype(np.int64).to_numpy(),
        owner=df["owner"].tolist(),
        date_taken=df["date_taken"].tolist(),
        lat=df["lat"].to_numpy(np.float64),
        lon=df["lon"].to_numpy(np.float64),
        sha256=df["sha256"].tolist(),
        phash=df["phash"].tolist(),
        fractions=list(fractions_of(cfg).values()),
        seed=cfg.seed,
        burst_radius_km=cfg.burst_radius_km,
        phash_distance=cfg.near_duplicate_distance,
        group_id=df["group_id"].fillna("").tolist() if "group_id" in df.columns else None,
        date_granularity=df["date_granularity"].tolist() if "date_granularity" in df else None,
    )


# The record columns a sample's json is made from: every json field but those made here (the
# region's name from its id, the cell's centre from the cells table, the split).
_JSON_MADE_HERE = ("province", "cell_center_lat", "cell_center_lon", "split")
_JSON_INPUTS = tuple(f for f in JSON_FIELDS if f not in _JSON_MADE_HERE)


def sample_jsons(
    df: pd.DataFrame,
    cells: pd.DataFrame,
    split_names: np.ndarray,
    *,
    synthetic: bool = False,
    regions: RegionTable = PAKISTAN,
) -> list[dict[str, Any]]:
    """Each row's sample json, fields in ``shardfmt.JSON_FIELDS`` order (``province``: the
    region table's name of ``province_id``). URLs lose any credentials (``user:pass@``,
    ``api_key=``...) that records from before geopak stripped them at discovery still hold;
    a URL without credentials is kept byte for byte, so clean data keeps its tars."""
    centers = cells[["center_lat", "center_lon"]].to_numpy(np.float64)
    out = []
    columns = {c: df[c].tolist() for c in _JSON_INPUTS}  # column lists: much faster than rows
    rows = (dict(zip(columns, vals, strict=True)) for vals in zip(*columns.values(), strict=True))
    for i, rec in enumerate(rows):
        c = int(rec["cell_id"])
        pid = int(rec["province_id"])
        meta = {
            "key": text(rec["key"]),
            "lat": float(rec["lat"]),
            "lon": float(rec["lon"]),
            "province": regions.names[pid],
            "province_id": pid,
            "cell_id": c,
            "cell_center_lat": float(centers[c, 0]),
            "cell_center_lon": float(centers[c, 1]),
            "source": text(rec["source"]),
            "source_id": text(rec["source_id"]),
            "url": text(rec["url"]),
            "license": text(rec["license"]),
            "license_url": text(rec["license_url"]),
            "owner": text(rec["owner"]),
            "title": text(rec["title"]),
            "date_taken": text(rec["date_taken"]),
            "attribution": attribution(rec),
            "width": integer(rec["width"]),
            "height": integer(rec["height"]),
            "split": str(split_names[i]),
        }
        if synthetic:
            meta[SYNTHETIC_FIELD] = True
        out.append(without_credentials(meta)[0])
    return out


def pack(sizes: np.ndarray, max_bytes: int, max_samples: int) -> list[np.ndarray]:
    """Cut a sequence of samples (in order) into shards under both limits, whichever first.

    A single sample larger than ``max_bytes`` gets a shard of its own.
    """
    out: list[np.ndarray] = []
    start, cur = 0, 0
    for i, s in enumerate(sizes.tolist()):
        n = i - start
        if n and (n >= max_samples or tar_size(cur + s) > max_bytes):
            out.append(np.arange(start, i))
            start, cur = i, 0
        cur += s
    if start < len(sizes):
        out.append(np.arange(start, len(sizes)))
    return out


def cut_split(
    sizes: np.ndarray, *, max_bytes: int, max_samples: int, min_shards: int = 1
) -> list[np.ndarray]:
    """``pack`` under the limits, and at least ``min(min_shards, len(sizes))`` shards.

    A split that fits in fewer shards is first cut into that many near-equal runs, each then
    packed under the limits: a small val split still gives every loader worker a shard. A
    split that already needs that many shards is cut exactly as ``pack`` cuts it.
    """
    chunks = pack(sizes, max_bytes, max_samples)
    want = min(min_shards, len(sizes))
    if len(chunks) >= want:
        return chunks
    out: list[np.ndarray] = []
    for part in np.array_split(np.arange(len(sizes)), want):
        out += [part[c] for c in pack(sizes[part], max_bytes, max_samples)]
    return out


def _layout(
    keys: np.ndarray, split: np.ndarray, tar_bytes: np.ndarray, cfg: ShardConfig
) -> list[tuple[str, np.ndarray]]:
    """(shard name, rows) for every planned shard, removed rows included."""
    plan: list[tuple[str, np.ndarray]] = []
    for si, name in enumerate(SPLITS):
        members = np.flatnonzero(split == si)
        if members.size == 0:
            continue
        members = members[shuffle_order(keys[members].tolist(), cfg.seed)]
        chunks = cut_split(
            tar_bytes[members],
            max_bytes=cfg.max_shard_bytes,
            max_samples=cfg.max_shard_samples,
            min_shards=cfg.min_shards_per_split,
        )
        plan += [(shard_name(name, n), members[c]) for n, c in enumerate(chunks)]
    return plan


def fingerprint(name: str, keys: list[str], blobs: list[bytes], shas: list[str]) -> str:
    """A hash of everything that decides a tar's bytes (its name, members, json, image hash)."""
    h = hashlib.sha256(f"geopak-shard-v{FORMAT_VERSION}\x1f{name}".encode())
    for key, blob, sha in zip(keys, blobs, shas, strict=True):
        h.update(b"\x1e" + key.encode() + b"\x1f" + blob + b"\x1f" + sha.encode())
    return h.hexdigest()


def plan_shards(
    records: pd.DataFrame,
    cells: pd.DataFrame,
    config: ShardConfig,
    removal: RemovalList,
    *,
    where: str = "the records",
    regions: RegionTable = PAKISTAN,
) -> ShardPlan:
    """The whole plan from the clustered records (``bytes`` = each image file's size).

    ``cells`` is in cell_id order (row i is cell i). ``where`` names the records in errors.
    """
    df = _eligible(records, config, where)
    check_labels(df, cells, regions)
    res = _splits(df, config)
    removed = removal.mask(
        key=df["key"].tolist(),
        source=df["source"].tolist(),
        source_id=df["source_id"].tolist(),
        url=df["url"].tolist(),
    )
    metas = sample_jsons(df, cells, res.names(), synthetic=config.synthetic, regions=regions)
    blobs = [json_bytes(m) for m in metas]
    sizes = df["bytes"].fillna(0).astype(np.int64).to_numpy()
    tar_bytes = sample_tar_sizes([m["key"] for m in metas], sizes, [len(b) for b in blobs])
    keys = df["key"].to_numpy()
    shas = [text(v) for v in df["sha256"].tolist()]
    shards: dict[str, np.ndarray] = {}
    fps: dict[str, str] = {}
    for name, members in _layout(keys, res.split, tar_bytes, config):
        kept = members[~removed[members]]
        if kept.size:
            shards[name] = kept
            rows = kept.tolist()
            fps[name] = fingerprint(
                name,
                [metas[i]["key"] for i in rows],
                [blobs[i] for i in rows],
                [shas[i] for i in rows],
            )
    return ShardPlan(
        records=df,
        splits=res,
        removed=removed,
        metas=metas,
        blobs=blobs,
        shards=shards,
        fingerprints=fps,
        n_input=len(records),
        excluded_restricted=int(len(records) - len(df)),
    )

"""``geopak-data shard``: leakage-free splits, WebDataset tars, tables and the dataset card.

Reads ``W/cluster/records.parquet`` and ``W/cluster/cells.parquet`` and writes the contract's
shard folder (``DIR/{train,val,test}/geopak-{split}-NNNNNN.tar``, ``index.parquet``,
``cells.parquet``, ``stats.json``, ``README.md``, ``map.png``).

How the tars stay trustworthy and cheap to rebuild:

* **A plan first.** Splits (see ``splits.py``), the seeded shuffle and the cut into shards
  (at most ``max_shard_samples`` samples and ``max_shard_bytes`` bytes, whichever comes
  first, computed from the exact tar member sizes) are decided before a byte is written,
  from every eligible record *including* those on the removal list. Removing a photo later
  therefore changes only the shard that held it; every other shard keeps the same content.
* **Deterministic bytes.** Members are written with ``webdataset.TarWriter`` with a fixed
  mtime, owner and mode, and the json with a fixed field order, so the same plan gives the
  same tar, byte for byte.
* **Shard-level resume.** Each tar is written to a temporary name, fsynced, recorded in
  ``W/shard/state.json`` (content fingerprint, size, mtime, inode) and renamed into place. A
  re-run (after kill -9, or after the removal list grew) rewrites only the tars whose content
  fingerprint changed or whose file is not the one it recorded, and deletes tars the plan no
  longer has.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geopak_core.errors import GeopakError
from geopak_core.io import (
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    folder_arg,
    read_json,
)
from geopak_core.progress import log, progress
from geopak_core.regions import NUM_PROVINCES, PROVINCES
from geopak_core.shardfmt import (
    FORMAT_VERSION,
    INDEX_SCHEMA,
    JSON_FIELDS,
    SPLITS,
    cell_id_order,
    cells_with_counts,
    file_identity,
    json_bytes,
    sample_tar_bytes,
    shard_glob,
    shard_name,
    stats_document,
    tar_size,
    write_tar,
)

from . import __version__
from .card import render_card, write_map
from .config import PipelineConfig, config_hash
from .removal import load_removal_list
from .runner import Manifest, StageContext, StageOutcome, StageResult, run_stage
from .splits import assign_splits, shuffle_order
from .stats import collect_rejects, filter_notes

STAGE = "shard"
# What the cluster stage's records must hold (records.DOWNLOADED_SCHEMA + filter/tag/cluster columns).
REQUIRED_COLUMNS = (
    "key",
    "source",
    "source_id",
    "url",
    "lat",
    "lon",
    "license",
    "owner",
    "date_taken",
    "image_path",
    "width",
    "height",
    "province_id",
    "cell_id",
)
RESTRICTED_SOURCES = frozenset({"places"})


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


# ----------------------------------------------------------------------------- helpers


def _s(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and np.isnan(v):
        return ""
    return str(v)


def _i(v: Any) -> int:
    try:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return 0
        return int(v)
    except (TypeError, ValueError):
        return 0


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


def _attribution(rec: dict[str, Any]) -> str:
    a = _s(rec.get("attribution")).strip()
    if a:
        return a
    title = _s(rec.get("title")).strip() or "Photo"
    owner = _s(rec.get("owner")).strip() or "unknown owner"
    lic = _s(rec.get("license")).strip() or "licence unknown"
    return f'"{title}" by {owner} ({rec.get("source")}), {lic}, {_s(rec.get("url"))}'


# ----------------------------------------------------------------------------- state


@dataclass
class ShardState:
    """``W/shard/state.json``: which tar in DIR holds which content (kill-safe bookkeeping)."""

    path: Path
    out: str
    shards: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path, out: Path) -> ShardState:
        data = read_json(path, default=None) or {}
        if data.get("out") != str(out) or data.get("format") != FORMAT_VERSION:
            return cls(path, str(out), {})
        return cls(path, str(out), dict(data.get("shards", {})))

    def save(self) -> None:
        atomic_write_json(
            self.path, {"format": FORMAT_VERSION, "out": self.out, "shards": self.shards}
        )

    def intact(self, out: Path, name: str, fp: str | None = None) -> bool:
        entry = self.shards.get(name)
        if not entry or (fp is not None and entry.get("fp") != fp):
            return False
        fid = file_identity(out / name)
        return fid is not None and all(fid[k] == entry.get(k) for k in ("size", "mtime_ns", "ino"))


def out_intact(work: Path, out: Path) -> bool:
    """Whether DIR still holds exactly what the last finished run recorded."""
    state = ShardState.load(stage_path(work) / "state.json", Path(out).resolve())
    if not state.shards:
        return False
    if not all(state.intact(out, name) for name in state.shards):
        return False
    return all(
        (out / f).is_file() for f in ("index.parquet", "cells.parquet", "stats.json", "README.md")
    )


def stage_path(work: Path) -> Path:
    return Path(work) / STAGE


# ----------------------------------------------------------------------------- writing


def _clean_temps(out: Path) -> None:
    for folder in [out, *(out / s for s in SPLITS)]:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the stage


def _load_inputs(work: Path) -> tuple[Any, Any]:
    import pandas as pd

    rec_path = work / "cluster" / "records.parquet"
    cells_path = work / "cluster" / "cells.parquet"
    try:
        records = pq.read_table(rec_path).to_pandas()
        cells = pq.read_table(cells_path).to_pandas()
    except (OSError, pa.ArrowInvalid) as exc:
        raise GeopakError(
            f"cannot read the cluster stage's output in {work / 'cluster'}: {str(exc).splitlines()[0]}"
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise GeopakError(
            f"{rec_path}: missing columns {', '.join(missing)}; re-run the earlier stages"
        )
    missing = [
        c
        for c in ("cell_id", "province_id", "center_lat", "center_lon", "radius_km")
        if c not in cells.columns
    ]
    if missing:
        raise GeopakError(f"{cells_path}: missing columns {', '.join(missing)}; re-run cluster")
    for col in ("license_url", "attribution", "title", "phash", "sha256"):
        if col not in records.columns:
            records[col] = ""
    if "restricted" not in records.columns:
        records["restricted"] = records["source"].isin(RESTRICTED_SOURCES)
    records["restricted"] = records["restricted"].fillna(False).astype(bool) | records[
        "source"
    ].isin(RESTRICTED_SOURCES)
    dup = records["key"][records["key"].duplicated()]
    if len(dup):
        raise GeopakError(
            f"{rec_path}: key {dup.iloc[0]!r} appears more than once ({len(dup)} duplicates); re-run cluster"
        )
    order = cell_id_order(cells["cell_id"].to_numpy(), where=str(cells_path), hint="re-run cluster")
    cells = cells.iloc[order].reset_index(drop=True)
    if "province" not in cells.columns:
        cells["province"] = [PROVINCES[int(p)] for p in cells["province_id"]]
    if "n_samples" not in cells.columns:
        cells["n_samples"] = 0
    if "urban" not in cells.columns:
        cells["urban"] = False
    return pd.DataFrame(records), cells


def _do_shard(ctx: StageContext, out: Path) -> StageResult:
    work = ctx.work
    cfg = ctx.config.shard
    records, cells = _load_inputs(work)
    n_input = len(records)
    restricted = records["restricted"].to_numpy(bool)
    excluded_restricted = 0 if cfg.include_restricted else int(restricted.sum())
    df = records if cfg.include_restricted else records[~restricted]
    df = df.sort_values("key", kind="stable").reset_index(drop=True)
    n = len(df)
    if n == 0:
        what = (
            f"all {n_input} are restricted (set shard.include_restricted only if you may redistribute them)"
            if n_input
            else "it is empty"
        )
        raise GeopakError(
            f"shard: no records to shard in {work / 'cluster' / 'records.parquet'}: {what}"
        )

    cell_ids = df["cell_id"].astype(np.int64).to_numpy()
    prov_ids = df["province_id"].astype(np.int64).to_numpy()
    if n and (cell_ids.min() < 0 or cell_ids.max() >= len(cells)):
        bad = df["key"][(cell_ids < 0) | (cell_ids >= len(cells))].iloc[0]
        raise GeopakError(f"record {bad!r} has a cell_id not in cells.parquet; re-run cluster")
    cell_prov = cells["province_id"].astype(np.int64).to_numpy()
    if n and np.any(cell_prov[cell_ids] != prov_ids):
        bad = int(np.flatnonzero(cell_prov[cell_ids] != prov_ids)[0])
        raise GeopakError(
            f"record {df['key'][bad]!r} is tagged province {prov_ids[bad]} but its cell {cell_ids[bad]} lies in province {cell_prov[cell_ids[bad]]}; re-run cluster"
        )
    if n and (prov_ids.min() < 0 or prov_ids.max() >= NUM_PROVINCES):
        raise GeopakError("records hold a province_id outside 0..6; re-run tag")

    fractions = {"train": cfg.train_fraction, "val": cfg.val_fraction, "test": cfg.test_fraction}
    res = assign_splits(
        keys=df["key"].tolist(),
        province_id=prov_ids,
        cell_id=cell_ids,
        owner=df["owner"].tolist(),
        date_taken=df["date_taken"].tolist(),
        lat=df["lat"].to_numpy(np.float64),
        lon=df["lon"].to_numpy(np.float64),
        sha256=df["sha256"].tolist(),
        phash=df["phash"].tolist(),
        fractions=list(fractions.values()),
        seed=cfg.seed,
        burst_radius_km=cfg.burst_radius_km,
        phash_distance=cfg.near_duplicate_distance,
        group_id=df["group_id"].fillna("").tolist() if "group_id" in df.columns else None,
        date_granularity=df["date_granularity"].tolist() if "date_granularity" in df else None,
    )
    split_names = res.names()

    removal = load_removal_list(cfg.removal_list)
    removed = removal.mask(
        key=df["key"].tolist(),
        source=df["source"].tolist(),
        source_id=df["source_id"].tolist(),
        url=df["url"].tolist(),
    )

    # Exact member sizes. Every image that will be written must be there (a gap means a broken
    # work folder); a removed photo's file may already be deleted: its recorded size stands in,
    # so the plan (and so every other shard) stays the same.
    image_paths = [_s(p) for p in df["image_path"].tolist()]
    shas = [_s(v) for v in df["sha256"].tolist()]
    restricted_rows = [bool(v) for v in df["restricted"].tolist()]
    recorded = [_i(v) for v in df["bytes"].tolist()] if "bytes" in df.columns else [0] * n
    paths = [work / p for p in image_paths]
    img_sizes = np.zeros(n, dtype=np.int64)
    missing = []
    for i, p in enumerate(paths):
        try:
            img_sizes[i] = p.stat().st_size if image_paths[i] else -1
        except FileNotFoundError:
            img_sizes[i] = -1
        if img_sizes[i] < 0:
            if removed[i]:
                img_sizes[i] = recorded[i]
            else:
                missing.append(i)
    if missing:
        raise GeopakError(
            f"{len(missing)} image file(s) missing, e.g. {paths[missing[0]]} (key {df['key'].iat[missing[0]]}); run `geopak-data crawl {df['source'].iat[missing[0]]} --work {work}` to fetch them again"
        )

    centers = cells[["center_lat", "center_lon"]].to_numpy(np.float64)
    rows = df.to_dict("records")
    metas: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for i, rec in enumerate(rows):
        c = int(cell_ids[i])
        meta = {
            "key": _s(rec["key"]),
            "lat": float(rec["lat"]),
            "lon": float(rec["lon"]),
            "province": PROVINCES[int(prov_ids[i])],
            "province_id": int(prov_ids[i]),
            "cell_id": c,
            "cell_center_lat": float(centers[c, 0]),
            "cell_center_lon": float(centers[c, 1]),
            "source": _s(rec["source"]),
            "source_id": _s(rec["source_id"]),
            "url": _s(rec["url"]),
            "license": _s(rec["license"]),
            "license_url": _s(rec.get("license_url")),
            "owner": _s(rec["owner"]),
            "title": _s(rec.get("title")),
            "date_taken": _s(rec["date_taken"]),
            "attribution": _attribution(rec),
            "width": _i(rec["width"]),
            "height": _i(rec["height"]),
            "split": str(split_names[i]),
        }
        metas.append(meta)
        blobs.append(json_bytes(meta))
    tar_sizes = np.array(
        [sample_tar_bytes(m["key"], int(img_sizes[i]), len(blobs[i])) for i, m in enumerate(metas)],
        dtype=np.int64,
    )

    # The plan: per split, a seeded shuffle, then the cut into shards (removed rows included).
    plan: list[tuple[str, np.ndarray]] = []
    for si, split in enumerate(SPLITS):
        members = np.flatnonzero(res.split == si)
        if members.size == 0:
            continue
        members = members[shuffle_order(df["key"].to_numpy()[members].tolist(), cfg.seed)]
        for number, chunk in enumerate(
            pack(tar_sizes[members], cfg.max_shard_bytes, cfg.max_shard_samples)
        ):
            plan.append((shard_name(split, number), members[chunk]))

    out.mkdir(parents=True, exist_ok=True)
    _clean_temps(out)
    state = ShardState.load(ctx.stage_dir / "state.json", out.resolve())
    planned: dict[str, np.ndarray] = {}
    fps: dict[str, str] = {}
    for name, members in plan:
        kept = members[~removed[members]]
        if kept.size == 0:
            continue
        h = hashlib.sha256(f"geopak-shard-v{FORMAT_VERSION}\x1f{name}".encode())
        for i in kept.tolist():
            h.update(
                b"\x1e" + metas[i]["key"].encode() + b"\x1f" + blobs[i] + b"\x1f" + shas[i].encode()
            )
        planned[name] = kept
        fps[name] = h.hexdigest()

    # Tars the plan no longer has (an older plan, or every sample removed) go first.
    for split in SPLITS:
        for old in sorted((out / split).glob(shard_glob(split))) if (out / split).is_dir() else []:
            rel = f"{split}/{old.name}"
            if rel not in planned:
                old.unlink()
                log.info("shard: removed %s (no longer in the plan)", rel)
    for rel in list(state.shards):
        if rel not in planned:
            del state.shards[rel]
    state.save()

    todo = [name for name in planned if not state.intact(out, name, fps[name])]
    kept_count = len(planned) - len(todo)
    if kept_count and todo:
        log.info(
            "shard: %d of %d shards already complete; writing %d",
            kept_count,
            len(planned),
            len(todo),
        )
    bar = progress(total=int(sum(planned[t].size for t in todo)), desc="shard", unit="img")
    for name in todo:
        samples = []
        for i in planned[name].tolist():
            jpg = paths[i].read_bytes()
            want = shas[i]
            if want and hashlib.sha256(jpg).hexdigest() != want:
                raise GeopakError(
                    f"{paths[i]} changed since it was downloaded (sha256 mismatch for {metas[i]['key']}); re-run crawl for it or restore the file"
                )
            samples.append((metas[i]["key"], jpg, blobs[i]))

        def record(ident: dict[str, int], name: str = name, count: int = len(samples)) -> None:
            state.shards[name] = {"fp": fps[name], "n": count, **ident}
            state.save()

        write_tar(out / name, samples, on_ready=record)
        bar.update(len(samples))
    bar.close()

    # Tables (deterministic; cheap enough to rewrite every run).
    shard_of = np.full(n, "", dtype=object)
    order: list[int] = []
    for name, kept in planned.items():
        shard_of[kept] = name
        order.extend(kept.tolist())
    keep_mask = np.zeros(n, dtype=bool)
    keep_mask[order] = True
    cols: dict[str, list[Any]] = {f.name: [] for f in INDEX_SCHEMA}
    for i in order:
        m = metas[i]
        for f in JSON_FIELDS:
            cols[f].append(m[f])
        cols["shard"].append(shard_of[i])
        cols["sha256"].append(shas[i])
        cols["bytes"].append(int(img_sizes[i]))
        cols["restricted"].append(restricted_rows[i])
        cols["group"].append(int(res.group[i]))
    index = pa.table(cols, schema=INDEX_SCHEMA)
    atomic_write_parquet(out / "index.parquet", index)

    cells_out = cells_with_counts(cells, cell_ids[keep_mask], res.split[keep_mask])
    atomic_write_parquet(
        out / "cells.parquet", pa.Table.from_pandas(cells_out, preserve_index=False)
    )

    rejects = collect_rejects(work)
    notes = filter_notes(work)
    stats = build_stats(
        index=index.to_pandas(),
        cells=cells_out,
        config=ctx.config,
        shard_config_hash=ctx.config.section_hash("shard"),
        planned={k: v.size for k, v in planned.items()},
        sizes={k: (out / k).stat().st_size for k in planned},
        rejects=rejects,
        filter_notes=notes,
        excluded={"restricted": excluded_restricted, "removal_list": int(removed.sum())},
        groups={
            "count": res.n_groups,
            "multi_photo": int((np.bincount(res.group) > 1).sum()) if n else 0,
            "largest": int(np.bincount(res.group).max()) if n else 0,
            "burst_links": res.burst_links,
            "duplicate_links": res.duplicate_links,
        },
    )
    atomic_write_json(out / "stats.json", stats)

    map_file = write_map(
        out / "map.png",
        index.select(["lat", "lon", "province_id"]).to_pandas(),
        cells_out,
        title=f"{cfg.dataset_name}: {len(order):,} photos, {len(cells_out):,} geocells",
    )
    atomic_write_text(
        out / "README.md",
        render_card(
            stats=stats, cells=cells_out.to_dict("records"), config=ctx.config, map_file=map_file
        ),
    )

    counts = {
        "input": n_input,
        "samples": len(order),
        **{s: int(stats["splits"][s]["samples"]) for s in SPLITS},
        "shards": len(planned),
        "written": len(todo),
        "removed": int(removed.sum()),
        "restricted_excluded": excluded_restricted,
    }
    split_txt = ", ".join(f"{s} {counts[s]}" for s in SPLITS)
    extra = []
    if counts["removed"]:
        extra.append(f"{counts['removed']} removed by the removal list")
    if excluded_restricted:
        extra.append(f"{excluded_restricted} restricted excluded")
    summary = (
        f"shard: {len(order)} samples ({split_txt}) in {len(planned)} shards, {len(todo)} written, {kept_count} already complete"
        + (f"; {', '.join(extra)}" if extra else "")
        + f" -> {out}"
    )
    return StageResult(
        counts=counts,
        outputs=[ctx.stage_dir / "state.json"],
        summary=summary,
        notes={"out": str(out)},
    )


def build_stats(
    *,
    index: Any,
    cells: Any,
    config: PipelineConfig,
    shard_config_hash: str,
    planned: dict[str, int],
    sizes: dict[str, int],
    rejects: dict[str, dict[str, int]],
    filter_notes: list[str],
    excluded: dict[str, int],
    groups: dict[str, int],
) -> dict[str, Any]:
    """``stats.json`` for this build: the format module's document with the config's settings."""
    cfg = config.shard
    fractions = {"train": cfg.train_fraction, "val": cfg.val_fraction, "test": cfg.test_fraction}
    return stats_document(
        index=index,
        cells=cells,
        shard_sizes={k: sizes[k] for k in planned},
        dataset=cfg.dataset_name,
        geopak_version=__version__,
        config_hash=config_hash(dataclasses.asdict(config)),
        shard_config_hash=shard_config_hash,
        seed=cfg.seed,
        fractions=fractions,
        split_rule=split_rule_text(
            fractions=fractions,
            burst_radius_km=cfg.burst_radius_km,
            near_duplicate_distance=cfg.near_duplicate_distance,
            seed=cfg.seed,
        ),
        rejects=rejects,
        filter_notes=filter_notes,
        excluded=excluded,
        groups=groups,
    )


def run_shard(
    *, work: Path, config: PipelineConfig, out: Path | None = None, force: bool = False
) -> StageOutcome:
    """Run the shard stage: W's clustered records -> the shard folder ``out`` (default W/shards)."""
    work = Path(work)
    out = Path(out) if out else (Path(config.shard.out) if config.shard.out else work / "shards")
    for name in ("records.parquet", "cells.parquet"):
        if not (work / "cluster" / name).is_file():
            raise GeopakError(
                f"shard: {work / 'cluster' / name} not found; run cluster first (geopak-data cluster --work {work})"
            )
    inputs: dict[str, Path] = {
        "records": work / "cluster" / "records.parquet",
        "cells": work / "cluster" / "cells.parquet",
    }
    if config.shard.removal_list:
        load_removal_list(
            config.shard.removal_list
        )  # a configured list must exist: clear error now
        inputs["removal_list"] = Path(config.shard.removal_list)
    for p in (
        sorted(work.glob("crawl/*/rejects.parquet"))
        + [work / s / "rejects.parquet" for s in ("filter", "tag", "cluster")]
        + [work / "filter" / "report.json"]
    ):
        if p.is_file():
            inputs[str(p.relative_to(work))] = p
    prev = Manifest(work).entry(STAGE)
    if not force and prev and prev.get("status") == "done" and not out_intact(work, out):
        log.info(
            "shard: the shard folder %s no longer matches the last run; rebuilding what is missing or changed",
            out,
        )
        force = True
    return run_stage(
        work=work,
        name=STAGE,
        config=config,
        sections=["shard"],
        inputs=inputs,
        fn=lambda ctx: _do_shard(ctx, out),
        extra={"out": str(out.resolve()), "format": FORMAT_VERSION},
        force=force,
    )


def _cmd(args: argparse.Namespace) -> int:
    from .cliutil import config_for

    cfg = config_for(args)
    outcome = run_shard(work=args.work, config=cfg, out=args.out, force=args.force)
    print(outcome.summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .cliutil import add_common

    p = sub.add_parser(
        "shard",
        help="write WebDataset shards, index/cells/stats tables and the dataset card",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument(
        "--out",
        "-o",
        type=folder_arg,
        default=None,
        metavar="DIR",
        help="shard folder (default: config shard.out, else W/shards)",
    )
    p.set_defaults(func=_cmd)

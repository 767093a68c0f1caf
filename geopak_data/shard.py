"""``geopak-data shard``: leakage-free splits, WebDataset tars, tables and the dataset card.

Reads ``W/cluster/records.parquet`` and ``W/cluster/cells.parquet`` and writes the contract's
shard folder (``DIR/{train,val,test}/geopak-{split}-NNNNNN.tar``, ``index.parquet``,
``cells.parquet``, ``stats.json``, ``README.md``, ``map.png``).

How the tars stay trustworthy and cheap to rebuild:

* **A plan first** (``shardplan.plan_shards``). Splits (see ``splits.py``), the seeded shuffle and the cut into shards
  (at most ``max_shard_samples`` samples and ``max_shard_bytes`` bytes, whichever comes
  first, computed from the exact tar member sizes) are decided before a byte is written,
  from every eligible record *including* those on the removal list. Removing a photo later
  therefore changes only the shard that held it; every other shard keeps the same content.
* **Deterministic bytes.** Members are written by ``geopak_core.shardfmt.write_tar`` (the
  standard library's tar headers, fixed mtime, owner and mode) and the json with a fixed field
  order, so the same plan gives the same tar, byte for byte.
* **Shard-level resume.** Each tar is written to a temporary name, fsynced, recorded in
  ``W/shard/state.json`` (content fingerprint, size, mtime, inode) and renamed into place. A
  re-run (after kill -9, or after the removal list grew) rewrites only the tars whose content
  fingerprint changed or whose file is not the one it recorded, and deletes tars the plan no
  longer has.

What runs beside the tars (the fixed costs that dominate small folders): the index, cells and
stats are computed from the plan in this thread while two threads write tars, the map is drawn
by a forked child process (``sidejob``) on the other core, and the small outputs are written
without fsync and made durable together at the end (before the stage is recorded as done).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from geopak_core.errors import GeopakError
from geopak_core.io import (
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    folder_arg,
    fsync_dir,
    make_durable,
    read_json,
)
from geopak_core.progress import log, progress
from geopak_core.regions import REGIONS_FILE, RegionTable, regions_in
from geopak_core.shardfmt import (
    CELL_COLUMNS,
    FORMAT_VERSION,
    INDEX_SCHEMA,
    JSON_FIELDS,
    REQUIRED_FILES,
    SPLITS,
    SYNTHETIC_FIELD,
    cell_id_order,
    cells_with_counts,
    file_identity,
    read_table,
    require_columns,
    shard_glob,
    stats_document,
    with_region_ids,
    write_regions,
    write_tar,
)

from . import __version__
from .card import render_card, write_map
from .config import PipelineConfig, config_hash
from .country import boundaries_source
from .mapcache import fetch as fetch_map
from .mapcache import map_digest
from .mapcache import store as store_map
from .removal import load_removal_list
from .runner import Manifest, StageContext, StageOutcome, StageResult, run_stage
from .shardplan import (
    ShardPlan,
    eligible_mask,
    fractions_of,
    integer,
    plan_shards,
    split_rule_text,
    text,
)
from .sidejob import SideJob
from .stats import collect_rejects, filter_notes

STAGE = "shard"
TAR_WRITERS = 2  # tars written at once (see write_shards)
MAP_FILE = "map.png"
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
    "license_url",
    "title",
    "attribution",
    "restricted",
    "sha256",
    "bytes",
    "phash",
)


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

    def save(self, *, durable: bool = False) -> None:
        """Atomic always; durable (fsynced) only when asked: after a power cut a lost state
        means tars rewritten, never a tar trusted that is not complete."""
        data = {"format": FORMAT_VERSION, "out": self.out, "shards": self.shards}
        atomic_write_json(self.path, data, durable=durable)

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
    return all((out / f).is_file() for f in (*REQUIRED_FILES, REGIONS_FILE))


def stage_path(work: Path) -> Path:
    """The shard stage's state folder under the work folder."""
    return Path(work) / STAGE


# ----------------------------------------------------------------------------- inputs


def _load_inputs(work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cluster stage's records and cells (cells in cell_id order), checked, not patched."""
    rec_path = work / "cluster" / "records.parquet"
    cells_path = work / "cluster" / "cells.parquet"
    records = read_table(rec_path).to_pandas()
    cells = read_table(cells_path).to_pandas()
    require_columns(
        records.columns, REQUIRED_COLUMNS, where=str(rec_path), hint="re-run the earlier stages"
    )
    require_columns(cells.columns, CELL_COLUMNS, where=str(cells_path), hint="re-run cluster")
    dup = records["key"][records["key"].duplicated()]
    if len(dup):
        raise GeopakError(
            f"{rec_path}: key {dup.iloc[0]!r} appears more than once ({len(dup)} duplicates); re-run cluster"
        )
    order = cell_id_order(cells["cell_id"].to_numpy(), where=str(cells_path), hint="re-run cluster")
    return records, cells.iloc[order].reset_index(drop=True)


def _measure_images(work: Path, records: pd.DataFrame, cfg: Any, removal: Any) -> pd.DataFrame:
    """``records`` with ``bytes`` = the size of each image file the folder will hold.

    Every image that will be written must be there (a gap means a broken work folder); a
    removed photo's file may already be deleted: its recorded size stands in, so the plan
    (and so every other shard) stays the same.
    """
    out = records.copy()
    sizes = out["bytes"].fillna(0).astype(np.int64).to_numpy().copy()
    removed = removal.mask(
        key=out["key"].tolist(),
        source=out["source"].tolist(),
        source_id=out["source_id"].tolist(),
        url=out["url"].tolist(),
    )
    paths = out["image_path"].tolist()
    root = str(work)
    missing = []
    for i in np.flatnonzero(eligible_mask(out, cfg)).tolist():
        rel = text(paths[i])
        try:  # os.path on strings: pathlib's joins cost more than the stat itself
            sizes[i] = os.stat(os.path.join(root, rel)).st_size if rel else -1
        except FileNotFoundError:
            sizes[i] = -1
        if sizes[i] < 0 and not removed[i]:
            missing.append(i)
        elif sizes[i] < 0:
            sizes[i] = integer(records["bytes"].iat[i])
    if missing:
        m = missing[0]
        raise GeopakError(
            f"{len(missing)} image file(s) missing, e.g. {work / text(paths[m])} (key "
            f"{out['key'].iat[m]}); run `geopak-data crawl {out['source'].iat[m]} --work {work}` "
            "to fetch them again"
        )
    out["bytes"] = sizes
    return out


# ----------------------------------------------------------------------------- tars


def _clean_temps(out: Path) -> None:
    for folder in [out, *(out / s for s in SPLITS)]:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _drop_unplanned(out: Path, plan: ShardPlan, state: ShardState) -> None:
    """Tars the plan no longer has (an older plan, or every sample removed) go first."""
    for split in SPLITS:
        for old in sorted((out / split).glob(shard_glob(split))) if (out / split).is_dir() else []:
            rel = f"{split}/{old.name}"
            if rel not in plan.shards:
                old.unlink()
                log.info("shard: removed %s (no longer in the plan)", rel)
    for rel in list(state.shards):
        if rel not in plan.shards:
            del state.shards[rel]
    state.save()


def _samples(
    paths: list[str], shas: list[str], plan: ShardPlan, rows: np.ndarray
) -> Iterator[tuple[str, bytes, bytes]]:
    """(key, jpg, json) of each row, the image checked against the sha256 the crawl recorded."""
    for i in rows.tolist():
        path = paths[i]
        with open(path, "rb") as fh:
            jpg = fh.read()
        want = shas[i]
        key = plan.metas[i]["key"]
        if want and hashlib.sha256(jpg).hexdigest() != want:
            raise GeopakError(
                f"{path} changed since it was downloaded (sha256 mismatch for {key}); re-run "
                "crawl for it or restore the file"
            )
        yield key, jpg, plan.blobs[i]


def write_shards(work: Path, out: Path, plan: ShardPlan, state: ShardState) -> list[str]:
    """Write every planned tar that is not already intact; returns the names written."""
    out.mkdir(parents=True, exist_ok=True)
    _clean_temps(out)
    _drop_unplanned(out, plan, state)
    todo = [n for n in plan.shards if not state.intact(out, n, plan.fingerprints[n])]
    if todo and len(todo) < len(plan.shards):
        log.info(
            "shard: %d of %d shards already complete; writing %d",
            len(plan.shards) - len(todo),
            len(plan.shards),
            len(todo),
        )
    root = str(work)
    paths = [os.path.join(root, p) for p in plan.records["image_path"].tolist()]
    shas = [text(v) for v in plan.records["sha256"].tolist()]
    bar = progress(total=int(sum(plan.shards[t].size for t in todo)), desc="shard", unit="img")
    lock = threading.Lock()

    def one(name: str) -> None:
        rows = plan.shards[name]

        def record(ident: dict[str, int]) -> None:
            with lock:  # the state names a tar only once it is complete and fsynced
                state.shards[name] = {"fp": plan.fingerprints[name], "n": rows.size, **ident}
                state.save()

        write_tar(out / name, _samples(paths, shas, plan, rows), on_ready=record)
        with lock:
            bar.update(rows.size)

    # Two tars at a time: reading, hashing and fsync release the GIL, so one tar's fsync
    # overlaps the next one's reads. Each tar's bytes do not depend on which thread wrote it.
    with ThreadPoolExecutor(max_workers=TAR_WRITERS, thread_name_prefix="geopak-tar") as pool:
        jobs = [pool.submit(one, name) for name in todo]
        try:
            for job in jobs:
                job.result()
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
    bar.close()
    for folder in {(out / n).parent for n in todo}:
        fsync_dir(folder)  # the renames, once per folder
    state.save(durable=True)
    return todo


# ----------------------------------------------------------------------------- tables


def index_table(plan: ShardPlan, regions: RegionTable) -> pa.Table:
    """index.parquet: one row per written sample, shard by shard, in tar order."""
    order = plan.order
    df = plan.records
    shard_of = {i: name for name, rows in plan.shards.items() for i in rows.tolist()}
    metas = [plan.metas[i] for i in order]
    cols: dict[str, Any] = {f: [m[f] for m in metas] for f in JSON_FIELDS}
    cols["shard"] = [shard_of[i] for i in order]
    sha = df["sha256"].tolist()
    cols["sha256"] = [text(sha[i]) for i in order]
    cols["bytes"] = df["bytes"].to_numpy(np.int64)[order]
    cols["restricted"] = df["restricted"].to_numpy(bool)[order]
    cols["group"] = plan.splits.group[order].astype(np.int64)
    schema = with_region_ids(INDEX_SCHEMA, regions)  # int8 unless the country needs int16
    table = pa.table({f.name: cols[f.name] for f in schema}, schema=schema)
    if plan.metas and SYNTHETIC_FIELD in plan.metas[0]:
        table = table.append_column(SYNTHETIC_FIELD, pa.array([True] * len(order), pa.bool_()))
    return table


def cells_table(plan: ShardPlan, cells: pd.DataFrame, regions: RegionTable) -> pd.DataFrame:
    """cells.parquet: the cluster's cells with n_samples and n_{split} of the written samples."""
    order = np.asarray(plan.order, dtype=np.int64)
    cell_ids = plan.records["cell_id"].astype(np.int64).to_numpy()[order]
    return cells_with_counts(cells, cell_ids, plan.splits.split[order], regions)


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
    regions: RegionTable | None = None,
) -> dict[str, Any]:
    """``stats.json`` for this build: the format module's document with the config's settings."""
    cfg = config.shard
    fractions = fractions_of(cfg)
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
        synthetic=cfg.synthetic,
        **({"regions": regions} if regions is not None else {}),
    )


def table_contents(plan: ShardPlan, cells: pd.DataFrame, regions: RegionTable) -> dict[str, Any]:
    """index.parquet's and cells.parquet's contents: a function of the plan alone, so they
    are computed while the tars are written."""
    index = index_table(plan, regions)
    return {
        "index": index,
        "index_frame": index.to_pandas(),
        "cells": cells_table(plan, cells, regions),
    }


def write_tables(
    ctx: StageContext,
    out: Path,
    plan: ShardPlan,
    contents: dict[str, Any],
    regions: RegionTable,
) -> dict[str, Any]:
    """index.parquet, cells.parquet, regions.parquet and stats.json (deterministic; cheap to
    rewrite every run). Not fsynced here: the stage makes them durable together at its end."""
    index, cells_out = contents["index"], contents["cells"]
    write_regions(out, regions, durable=False)
    atomic_write_parquet(out / "index.parquet", index, durable=False)
    atomic_write_parquet(
        out / "cells.parquet", pa.Table.from_pandas(cells_out, preserve_index=False), durable=False
    )
    stats = build_stats(
        index=contents["index_frame"],
        cells=cells_out,
        config=ctx.config,
        shard_config_hash=ctx.config.section_hash("shard"),
        planned={k: v.size for k, v in plan.shards.items()},
        sizes={k: (out / k).stat().st_size for k in plan.shards},
        rejects=collect_rejects(ctx.work),
        filter_notes=filter_notes(ctx.work),
        excluded={
            "restricted": plan.excluded_restricted,
            "removal_list": int(plan.removed.sum()),
        },
        groups=plan.groups_summary(),
        regions=regions,
    )
    from .coverage import coverage_summary

    coverage = coverage_summary(ctx.work)
    if coverage:  # the card shows where photos are still missing
        stats["coverage"] = coverage
    atomic_write_json(out / "stats.json", stats, durable=False)
    return {"index": index, "cells": cells_out, "stats": stats, "regions": regions}


def map_inputs(
    plan: ShardPlan, cells: pd.DataFrame, config: PipelineConfig, regions: RegionTable
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(points, cells, title) of map.png: the written samples and the cells, from the plan."""
    order = np.asarray(plan.order, dtype=np.int64)
    points = plan.records[["lat", "lon", "province_id"]].iloc[order].reset_index(drop=True)
    cells_out = cells_table(plan, cells, regions)
    title = f"{config.shard.dataset_name}: {len(order):,} photos, {len(cells_out):,} geocells"
    return points, cells_out, title


def draw_map(
    out: Path,
    plan: ShardPlan,
    cells: pd.DataFrame,
    config: PipelineConfig,
    regions: RegionTable,
) -> str | None:
    """map.png: the written samples and the cells (known from the plan, before any tar)."""
    points, cells_out, title = map_inputs(plan, cells, config, regions)
    return write_map(
        out / MAP_FILE,
        points,
        cells_out,
        title=title,
        regions=regions,
        boundaries=boundaries_source(config),  # another country's polygons, not $GEOPAK_BOUNDARIES
    )


class _Ready:
    """A map job that is already done (the map came from the cache)."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def result(self) -> str | None:
        return self.value

    def __enter__(self) -> _Ready:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def start_map(
    ctx: StageContext, out: Path, plan: ShardPlan, cells: pd.DataFrame, regions: RegionTable
) -> tuple[Any, str | None]:
    """(the map job, its cache digest): the map copied from the cache when its inputs were
    drawn before (``mapcache``), else drawn by a forked child process (``sidejob``) while
    the tars are written, on the other core."""
    points, cells_out, title = map_inputs(plan, cells, ctx.config, regions)
    digest = map_digest(
        points,
        cells_out,
        title=title,
        regions=regions,
        boundaries=boundaries_source(ctx.config),
    )
    if fetch_map(digest, out / MAP_FILE):
        log.info("shard: map.png as drawn before for the same points and cells")
        return _Ready(MAP_FILE), None
    job = SideJob(
        draw_map,
        out,
        plan,
        cells,
        ctx.config,
        regions,
        values=(MAP_FILE, None),
        name="geopak-map",
        warm=lambda: _preload_map(ctx.config, regions),
    )
    return job, digest


def _preload_map(config: PipelineConfig, regions: RegionTable) -> None:
    try:
        from .maps import preload
    except ImportError:  # no maps module: the child says so, nothing to warm
        return
    preload(regions, boundaries_source(config))


def card_text(config: PipelineConfig, tables: dict[str, Any], map_file: str | None) -> str:
    """README.md's text, the dataset card (showing ``map_file`` when there is one)."""
    return render_card(
        stats=tables["stats"],
        cells=tables["cells"].to_dict("records"),
        config=config,
        map_file=map_file,
        regions=tables["regions"],
    )


# ----------------------------------------------------------------------------- the stage


def _summary(plan: ShardPlan, written: list[str], out: Path) -> tuple[dict[str, Any], str]:
    split = plan.splits.split[np.asarray(plan.order, dtype=np.int64)]
    counts = {
        "input": plan.n_input,
        "samples": len(plan.order),
        **{s: int((split == si).sum()) for si, s in enumerate(SPLITS)},
        "shards": len(plan.shards),
        "written": len(written),
        "removed": int(plan.removed.sum()),
        "restricted_excluded": plan.excluded_restricted,
    }
    split_txt = ", ".join(f"{s} {counts[s]}" for s in SPLITS)
    extra = []
    if counts["removed"]:
        extra.append(f"{counts['removed']} removed by the removal list")
    if plan.excluded_restricted:
        extra.append(f"{plan.excluded_restricted} restricted excluded")
    summary = (
        f"shard: {counts['samples']} samples ({split_txt}) in {counts['shards']} shards, {len(written)} written, "
        f"{counts['shards'] - len(written)} already complete"
        + (f"; {', '.join(extra)}" if extra else "")
        + f" -> {out}"
    )
    return counts, summary


def _do_shard(ctx: StageContext, out: Path) -> StageResult:
    """Inputs -> plan -> tars -> tables -> card: each step one function."""
    cfg = ctx.config.shard
    regions = regions_in(ctx.work / "cluster")  # the region table beside cells.parquet
    records, cells = _load_inputs(ctx.work)
    removal = load_removal_list(cfg.removal_list)
    records = _measure_images(ctx.work, records, cfg, removal)
    plan = plan_shards(
        records,
        cells,
        cfg,
        removal,
        where=str(ctx.work / "cluster" / "records.parquet"),
        regions=regions,
    )
    state = ShardState.load(ctx.stage_dir / "state.json", out.resolve())
    out.mkdir(parents=True, exist_ok=True)
    # The map needs only the plan: drawn by a forked child (in a thread its GIL-bound drawing
    # slowed the writers), or copied from the cache when the same map was drawn before.
    map_job, digest = start_map(ctx, out, plan, cells, regions)
    with map_job:
        # The tars in their threads; meanwhile this thread computes the tables from the plan.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geopak-shards") as pool:
            tars = pool.submit(write_shards, ctx.work, out, plan, state)
            contents = table_contents(plan, cells, regions)
            written = tars.result()
        tables = write_tables(ctx, out, plan, contents, regions)
        card = card_text(ctx.config, tables, MAP_FILE)  # while the map may still be drawn
        map_file = map_job.result()
    if map_file != MAP_FILE:  # no map after all: the card says nothing of one
        card = card_text(ctx.config, tables, map_file)
    else:
        store_map(digest, out / MAP_FILE)
    atomic_write_text(out / "README.md", card, durable=False)
    make_durable([out / f for f in (*REQUIRED_FILES, REGIONS_FILE, MAP_FILE)])
    counts, summary = _summary(plan, written, out)
    return StageResult(
        counts=counts,
        outputs=[ctx.stage_dir / "state.json"],
        summary=summary,
        notes={"out": str(out)},
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
    if (work / "cluster" / REGIONS_FILE).is_file():
        inputs["regions"] = work / "cluster" / REGIONS_FILE
    if config.shard.removal_list:
        load_removal_list(
            config.shard.removal_list
        )  # a configured list must exist: clear error now
        inputs["removal_list"] = Path(config.shard.removal_list)
    for p in (
        sorted(work.glob("crawl/*/rejects.parquet"))
        + [work / s / "rejects.parquet" for s in ("filter", "tag", "cluster")]
        + [work / "filter" / "report.json", work / "coverage" / "coverage.json"]
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
    """Add ``geopak-data shard`` to the CLI."""
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

"""``geopak-data cluster --work W``: tagged photos -> geocells that keep their radius promises.

Reads ``W/tag/records.parquet`` (needs ``lat``, ``lon``, ``province_id``) and writes, atomically:

* ``W/cluster/records.parquet``: every kept record with all its columns plus ``cell_id`` (int32);
* ``W/cluster/cells.parquet``: one row per cell: ``cell_id`` (contiguous from 0), ``province_id``,
  ``province``, ``center_lat``, ``center_lon``, ``radius_km``, ``n_samples``, ``urban``, plus
  ``limit_km``, ``isolated``, ``center_key`` (the photo at the centre), ``neighbours`` (the k
  nearest cells, list<int32>) and ``crs`` (the projection the province was clustered in; also in
  the Parquet schema metadata under ``geopak``);
* ``W/cluster/rejects.parquet``: photos no cell can take (reason ``geocell_isolated``);
* ``W/cluster/report.json``: cells per province, distributions, violations, isolated counts;
* ``W/cluster/cells.png``: the cells over the province polygons.

The clustering itself is ``geocells.build_geocells`` (see there for the rules). The stage is
single-shot: nothing is written until the cells exist, every file is replaced atomically, and
the runner skips a finished stage whose config section and input did not change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geopak_core.errors import GeopakError
from geopak_core.io import atomic_write_json, atomic_write_parquet
from geopak_core.progress import log
from geopak_core.regions import PAKISTAN, REGIONS_FILE, RegionTable, regions_in
from geopak_core.shardfmt import CELLS_SCHEMA, with_region_ids

from .config import PipelineConfig
from .records import REJECT_SCHEMA, reject_rows
from .runner import StageContext, StageOutcome, StageResult, run_stage

STAGE = "cluster"
REASON = "geocell_isolated"


def input_path(work: Path) -> Path:
    """Where the cluster stage reads its input: the tag stage's records."""
    return Path(work) / "tag" / "records.parquet"


def _read_input(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise GeopakError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in ("key", "lat", "lon", "province_id") if c not in table.column_names]
    if missing:
        raise GeopakError(
            f"{path}: missing column(s) {', '.join(missing)}; run `geopak-data tag` first"
        )
    for c in ("lat", "lon", "province_id"):
        nulls = table.column(c).null_count
        if nulls:
            raise GeopakError(
                f"{path}: {nulls} row(s) with an empty {c}; run `geopak-data tag` again"
            )
    return table


def cells_table(
    cells: Any, keys: np.ndarray, meta: dict[str, Any], regions: RegionTable = PAKISTAN
) -> pa.Table:
    """The cells DataFrame from ``build_geocells`` as the contract's Parquet table."""
    n = len(cells)
    center_key = [str(keys[i]) for i in cells["center_index"]] if n else []
    cols = {
        "cell_id": pa.array(cells["cell_id"].to_numpy(), pa.int32()),
        "province_id": pa.array(cells["province_id"].to_numpy(), regions.id_arrow_type),
        "province": pa.array(list(cells["province"]), pa.string()),
        "center_lat": pa.array(cells["center_lat"].to_numpy(), pa.float64()),
        "center_lon": pa.array(cells["center_lon"].to_numpy(), pa.float64()),
        "radius_km": pa.array(cells["radius_km"].to_numpy(), pa.float64()),
        "n_samples": pa.array(cells["n_samples"].to_numpy(), pa.int32()),
        "urban": pa.array(cells["urban"].to_numpy(), pa.bool_()),
        "limit_km": pa.array(cells["limit_km"].to_numpy(), pa.float64()),
        "isolated": pa.array(cells["isolated"].to_numpy(), pa.bool_()),
        "center_key": pa.array(center_key, pa.string()),
        "neighbours": pa.array(
            [np.asarray(v, dtype=np.int32).tolist() for v in cells["neighbours"]],
            pa.list_(pa.int32()),
        ),
        "crs": pa.array(list(cells["crs"]), pa.string()),
    }
    schema = with_region_ids(CELLS_SCHEMA, regions).with_metadata(
        {b"geopak": json.dumps(meta, sort_keys=True).encode("utf-8")}
    )
    return pa.table(cols, schema=schema)


def _do(ctx: StageContext) -> StageResult:
    from .geocells import build_geocells

    cfg = ctx.config.cluster
    src = input_path(ctx.work)
    table = _read_input(src)
    lat = table.column("lat").to_numpy().astype(np.float64)
    lon = table.column("lon").to_numpy().astype(np.float64)
    pid = table.column("province_id").to_numpy().astype(np.int64)
    keys = np.asarray(table.column("key").to_pylist(), dtype=object)
    log.info("cluster: %d tagged photos from %s", table.num_rows, src)

    regions = regions_in(ctx.work / "tag")  # written by the tag stage (older folders: Pakistan)
    unknown = [n for n in cfg.target_cells if n not in regions.names]
    if unknown:
        raise GeopakError(
            f"cluster.target_cells: {unknown[0]!r} is not a region of "
            f"{regions.country or 'the country'} (one of {', '.join(regions.names)})"
        )
    res = build_geocells(lat, lon, pid, cfg, regions=regions)
    cells = res.cells
    kept = ~res.rejected
    out_dir = ctx.stage_dir

    crs_by_province = {name: v["crs"] for name, v in res.report["provinces"].items()}
    meta = {
        "crs": crs_by_province,
        "radius": "max haversine km from a member photo to the centre (the cell's medoid photo)",
        "limits_km": {"urban": cfg.urban_radius_km, "rural": cfg.rural_radius_km},
        "config": dataclasses.asdict(cfg),
        "config_hash": ctx.config_hash,
    }
    cells_pa = cells_table(cells, keys, meta, regions)

    records = table.filter(pa.array(kept))
    cell_ids = pa.array(res.cell_of_point[kept], pa.int32())
    if "cell_id" in records.column_names:
        records = records.set_column(records.column_names.index("cell_id"), "cell_id", cell_ids)
    else:
        records = records.append_column("cell_id", cell_ids)

    rej_idx = np.flatnonzero(res.rejected)
    if len(rej_idx):
        detail = [
            f"no geocell within its limit and fewer than {cfg.min_isolated} photos to form one "
            f"({lat[i]:.5f}, {lon[i]:.5f})"
            for i in rej_idx
        ]
        rejects = reject_rows(
            table.take(pa.array(rej_idx)), stage=STAGE, reason=REASON, detail=detail
        )
    else:
        rejects = REJECT_SCHEMA.empty_table()

    report = dict(res.report)
    report["input"] = str(src.relative_to(ctx.work)) if src.is_relative_to(ctx.work) else str(src)
    paths = {
        "records": out_dir / "records.parquet",
        "cells": out_dir / "cells.parquet",
        "rejects": out_dir / "rejects.parquet",
        "report": out_dir / "report.json",
        "map": out_dir / "cells.png",
        "regions": out_dir / REGIONS_FILE,
    }
    regions.write(paths["regions"])  # the region table beside cells.parquet
    atomic_write_parquet(paths["cells"], cells_pa)
    atomic_write_parquet(paths["rejects"], rejects)
    atomic_write_parquet(paths["records"], records)
    atomic_write_json(paths["report"], report)

    from .maps import plot_map

    boundaries = ctx.config.region.boundaries or ctx.config.tag.boundaries or None
    viol = report["violations"]["total"]
    plot_map(
        paths["map"],
        boundaries=boundaries,
        regions=regions,
        points=(lat[kept], lon[kept], pid[kept]),
        cells=cells,
        title=(
            f"{len(cells)} geocells, {int(kept.sum()):,} photos ({report['urban_cells']} urban, "
            f"{report['rural_cells']} rural; {viol} violations)"
        ),
    )

    counts = {
        "records_in": int(table.num_rows),
        "cells": int(len(cells)),
        "kept": int(kept.sum()),
        "rejected": int(res.rejected.sum()),
        "isolated_cells": int(report["isolated"]["cells"]),
        "violations": int(viol),
    }
    per_prov = ", ".join(f"{name} {n}" for name, n in report["cells_per_province"].items())
    spc = report["samples_per_cell"]
    rad = report["radius_km"]
    summary = (
        f"cluster: {counts['records_in']} in -> {counts['cells']} cells ({per_prov}); {counts['kept']} kept, "
        f"{counts['rejected']} rejected ({REASON}); {counts['isolated_cells']} isolated cells; "
        f"photos/cell median {spc.get('p50', 0):g}; radius median {rad.get('p50', 0):g} km, max "
        f"{rad.get('max', 0):g} km; "
        f"violations {viol}{_sampling_note(report)}"
    )
    if viol:  # never expected: build_geocells enforces every limit; say so loudly if it happens
        log.error("cluster: %d constraint violation(s): %s", viol, report["violations"])
    return StageResult(
        counts=counts,
        outputs=list(paths.values()),
        summary=summary,
        notes={"cells_per_province": report["cells_per_province"]},
    )


def _sampling_note(report: dict[str, Any]) -> str:
    """The summary's word on HDBSCAN sampling (empty when no province was sampled): users of
    big runs must see that the initial clusters came from a sample, and how many photos took a
    neighbour's label instead (every radius limit still holds for every photo)."""
    sampled = report.get("sampling", {}).get("provinces", {})
    if not sampled:
        return ""
    parts = ", ".join(
        f"{name} {v['clustered']:,} of {v['photos']:,}" for name, v in sampled.items()
    )
    moved = report["sampling"]["labelled_by_nearest"]
    return (
        f"; HDBSCAN on a seeded sample above {report['sampling']['max_points']:,} photos per province "
        f"({parts}; {moved:,} photos took their nearest sampled photo's label, limits checked on all)"
    )


def _regions_input(work: Path) -> dict[str, Path]:
    """The tag stage's region table is an input when present (older work folders lack it)."""
    path = Path(work) / "tag" / REGIONS_FILE
    return {"regions": path} if path.is_file() else {}


def run_cluster(*, work: Path, config: PipelineConfig, force: bool = False) -> StageOutcome:
    """Build the geocells of ``work`` (see the module docstring); skipped when already done."""
    work = Path(work)
    return run_stage(
        work=work,
        name=STAGE,
        config=config,
        sections=["cluster"],
        inputs={"tag": input_path(work), **_regions_input(work)},
        fn=_do,
        force=force,
    )


def _cmd(args: argparse.Namespace) -> int:
    from . import cliutil

    cfg = cliutil.config_for(args)
    outcome = run_cluster(work=args.work, config=cfg, force=args.force)
    print(outcome.summary)
    return 0


def register(sub: Any) -> None:
    """Add ``geopak-data cluster`` to the CLI."""
    from . import cliutil

    p = sub.add_parser(
        "cluster",
        help="HDBSCAN geocells per province under radius constraints",
        description=(
            "Cluster the tagged photos (W/tag/records.parquet) into geocells: HDBSCAN per province in a local "
            "equal-area projection, then every cell is held to its radius limit (urban 5 km / rural 50 km by "
            "default, [cluster] in the pipeline config), balanced towards a per-province target, and centred "
            "on a real photo (its medoid). Writes W/cluster/{records,cells,rejects}.parquet, report.json and cells.png."
        ),
    )
    cliutil.add_common(p)
    p.set_defaults(func=_cmd)

"""``geopak-data stats (--work W | DIR)``: what the pipeline did, as tables and a map.

For a work folder: one row per stage from the manifest (status, time, counts), photos per
province and per source at each stage, every reject reason with its count (and checks the
filter could not apply, e.g. the indoor check without CLIP/Places365 weights), geocell sizes
and radii, and a map PNG of samples and cells over the province polygons.

For a shard folder: the same from ``index.parquet``, ``cells.parquet`` and ``stats.json``.

The map's polygons: ``--boundaries FILE``, else the ones the folder remembers (a work
folder's ``region.boundaries``; a shard folder inside a work folder, like ``run``'s
``W/shards``, that work folder's), else the default ones (``$GEOPAK_BOUNDARIES``, the cache).
``stats DIR`` shows the shard stage's own ``DIR/map.png`` unless ``--map PNG`` asks for a new one.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from geopak_core.clihelp import add_verbose, text_table
from geopak_core.errors import GeopakError
from geopak_core.io import read_json
from geopak_core.progress import log
from geopak_core.regions import RegionTable, regions_in
from geopak_core.shardfmt import SPLITS, list_shards, require_sound

from .card import write_map
from .cliutil import add_boundaries
from .country import work_boundaries

STAGE_DIRS = ("filter", "tag", "cluster")


# ----------------------------------------------------------------------------- shared helpers


def collect_rejects(work: str | Path) -> dict[str, dict[str, int]]:
    """Reject counts ``{stage: {reason: n}}`` from every rejects table in the work folder."""
    work = Path(work)
    files = sorted(work.glob("crawl/*/rejects.parquet")) + [
        work / s / "rejects.parquet" for s in STAGE_DIRS
    ]
    out: dict[str, dict[str, int]] = {}
    for f in files:
        if not f.is_file():
            continue
        try:
            t = pq.read_table(f, columns=["stage", "reason"]).to_pydict()
        except Exception as exc:  # noqa: BLE001 - a broken table is reported, not fatal to stats
            raise GeopakError(f"cannot read {f}: {str(exc).splitlines()[0]}") from None
        default_stage = str(f.parent.relative_to(work)).replace("/", ":")
        for stage, reason in zip(t["stage"], t["reason"], strict=True):
            bucket = out.setdefault(str(stage or default_stage), {})
            bucket[str(reason)] = bucket.get(str(reason), 0) + 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def filter_notes(work: str | Path) -> list[str]:
    """Lines for every filter check that did not run (from ``W/filter/report.json``).

    A check that was switched on but could not run (the indoor check without CLIP/Places365
    weights) must be visible wherever the data is described, never silently passed. The
    report's shape is the filter stage's: ``not_applied`` ({check: why}, enabled but could not
    run), ``disabled`` ([check]) and ``checks`` ({check: {"reason": ...}}).
    """
    report = read_json(Path(work) / "filter" / "report.json", default=None)
    if report is None:
        return []
    checks = report.get("checks") or {}
    why = dict(report.get("not_applied") or {})
    for name in report.get("disabled") or []:
        why.setdefault(name, (checks.get(name) or {}).get("reason", ""))
    return [
        f"{name}: not applied ({w})" if w else f"{name}: not applied" for name, w in why.items()
    ]


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A headed table that fits 100 columns (the last column wraps)."""
    return text_table(rows, columns, width=100, indent="  ")


def stage_order(name: str) -> tuple[int, int, str]:
    """Pipeline order: crawl:<source> (registry order), filter, tag, cluster, shard, then the
    rest (e.g. the demo's report stage) by name."""
    from .sources import source_names

    base, _, sub = name.partition(":")
    order = ("crawl", "filter", "tag", "cluster", "shard")
    if base not in order:
        return (len(order), 0, name)
    names = source_names()
    return (order.index(base), names.index(sub) if sub in names else len(names), name)


def _headline(counts: dict[str, Any]) -> str:
    """The stage's own counts; ``reason:x`` / ``province:x`` breakdowns have their own tables."""
    return ", ".join(f"{k}={v}" for k, v in counts.items() if ":" not in k)


def _cells_summary(cells: Any, regions: RegionTable) -> list[dict[str, Any]]:
    rows = []
    for pid, g in cells.groupby("province_id"):
        n = g["n_samples"].astype(int)
        r = g["radius_km"].astype(float)
        rows.append(
            {
                "province": regions.names[int(pid)],
                "cells": len(g),
                "urban": int(g["urban"].astype(bool).sum()) if "urban" in g else 0,
                "min n": int(n.min()),
                "median n": float(n.median()),
                "max n": int(n.max()),
                "median radius km": round(float(r.median()), 2),
                "max radius km": round(float(r.max()), 2),
            }
        )
    return rows


def _coverage(work: Path) -> dict[str, Any] | None:
    from .coverage import coverage_summary

    return coverage_summary(work)


def coverage_lines(cov: dict[str, Any] | None) -> list[str]:
    """The coverage section (``geopak-data coverage``): photos per region against targets."""
    if not cov:
        return []
    out = [
        f"\ncoverage (targets: {cov['target_total']:,} photos by area x{cov['weights']['area']:g} "
        f"and population x{cov['weights']['population']:g}; {cov['tiles_at_target']}/{cov['tiles']} "
        f"tiles of {cov['tile_deg']:g} deg at target, deficit {cov['deficit_total']:,})"
    ]
    cols = ["region", "have", "target", "deficit", "share", "target_share"]
    out.append(_table([{k: r[k] for k in cols} for r in cov["regions"]], cols))
    return out


def _map(path: Path, points: Any, cells: Any, title: str, report: dict[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if cells is not None and not len(cells):
        cells = None  # no geocells yet (before `cluster`)
    name = write_map(
        path,
        points,
        cells,
        title=title,
        regions=report.get("_regions"),
        boundaries=report.get("_boundaries"),
    )
    return str(path) if name else "(no map: geopak_data.maps is not available)"


# ----------------------------------------------------------------------------- work folder


def _stage_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage from the manifest, in pipeline order."""
    return [
        {
            "stage": name,
            "status": e.get("status", ""),
            "seconds": round(float(e.get("seconds") or 0.0), 1),
            "counts": _headline(e.get("counts") or {}),
        }
        for name, e in sorted(manifest.get("stages", {}).items(), key=lambda kv: stage_order(kv[0]))
    ]


def _count_by(path: Path, col: str) -> dict[str, int]:
    if not path.is_file():
        return {}
    try:
        t = pq.read_table(path, columns=[col]).to_pandas()
    except Exception:  # noqa: BLE001 - an older table without the column
        return {}
    return {str(k): int(v) for k, v in t[col].value_counts().items()}


def _stage_records(work: Path) -> dict[str, Path]:
    return {s: work / s / "records.parquet" for s in ("filter", "tag", "cluster")}


def _source_rows(work: Path) -> list[dict[str, Any]]:
    """Photos per source: discovered, downloaded, and kept after each later stage."""
    sources: dict[str, dict[str, int]] = {}
    crawl = work / "crawl"
    for src_dir in sorted(p for p in crawl.glob("*") if p.is_dir()) if crawl.is_dir() else []:
        row = sources.setdefault(src_dir.name, {})
        for label, fname in (
            ("candidates", "candidates.parquet"),
            ("downloaded", "records.parquet"),
        ):
            f = src_dir / fname
            if f.is_file():
                row[label] = pq.ParquetFile(f).metadata.num_rows
    for stage, f in _stage_records(work).items():
        for src, n in _count_by(f, "source").items():
            sources.setdefault(src, {})[f"after {stage}"] = n
    return [{"source": s, **v} for s, v in sorted(sources.items())]


def _province_rows(points: Any, regions: RegionTable) -> list[dict[str, Any]]:
    total = len(points)
    vc = points["province_id"].value_counts()
    return [
        {
            "id": pid,
            "province": name,
            "photos": int(vc.get(pid, 0)),
            "share %": round(100.0 * int(vc.get(pid, 0)) / total, 1) if total else 0.0,
        }
        for pid, name in enumerate(regions.names)
    ]


def _reject_rows(rejects: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [
        {"stage": st, "reason": r, "photos": n}
        for st, rs in sorted(rejects.items(), key=lambda kv: stage_order(kv[0]))
        for r, n in sorted(rs.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def work_stats(work: str | Path) -> dict[str, Any]:
    """Every table ``stats --work`` prints, as plain data."""
    import pandas as pd

    work = Path(work)
    manifest = read_json(work / "manifest.json", default=None)
    if manifest is None:
        raise GeopakError(
            f"{work / 'manifest.json'} not found: not a geopak work folder (run a stage first)"
        )
    files = _stage_records(work)
    latest = next((f for f in (files["cluster"], files["tag"]) if f.is_file()), None)
    points = (
        pq.read_table(latest, columns=["lat", "lon", "province_id"]).to_pandas()
        if latest is not None
        else None
    )
    regions = regions_in(latest.parent if latest is not None else work / "tag")
    cells_path = work / "cluster" / "cells.parquet"
    cells = pq.read_table(cells_path).to_pandas() if cells_path.is_file() else None
    return {
        "kind": "work",
        "path": str(work),
        "stages": _stage_rows(manifest),
        "sources": _source_rows(work),
        "provinces": _province_rows(points, regions) if points is not None else [],
        "provinces_from": str(latest.relative_to(work)) if latest else "",
        "rejects": _reject_rows(collect_rejects(work)),
        "filter_notes": filter_notes(work),
        "cells": _cells_summary(cells, regions) if cells is not None and len(cells) else [],
        "n_cells": 0 if cells is None else len(cells),
        "coverage": _coverage(work),
        "_points": points,
        "_cells": cells if cells is not None else pd.DataFrame(),
        "_regions": regions,
        "_boundaries": work_boundaries(work),
    }


# ----------------------------------------------------------------------------- shard folder


def dir_stats(folder: str | Path) -> dict[str, Any]:
    """Every table ``stats DIR`` prints, from the shard folder's tables."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GeopakError(f"shard folder not found: {folder}")
    index_path = folder / "index.parquet"
    if not index_path.is_file():
        raise GeopakError(
            f"{index_path} not found: not a geopak shard folder (run `geopak-data shard` first)"
        )
    require_sound(folder, what="stats")  # the counts below are only true if the tars are
    index = pq.read_table(
        index_path, columns=["key", "split", "source", "province_id", "lat", "lon", "cell_id"]
    ).to_pandas()
    cells = (
        pq.read_table(folder / "cells.parquet").to_pandas()
        if (folder / "cells.parquet").is_file()
        else None
    )
    stats = read_json(folder / "stats.json", default={}) or {}
    splits = []
    for s in SPLITS:
        info = stats.get("splits", {}).get(s, {})
        splits.append(
            {
                "split": s,
                "samples": int((index["split"] == s).sum()),
                "shards": len(list_shards(folder, s)),
                "MB": round(info.get("bytes", 0) / 1e6, 1),
            }
        )
    provinces = []
    total = len(index)
    regions = regions_in(folder)
    for pid, name in enumerate(regions.names):
        sub = index[index["province_id"] == pid]
        row = {
            "id": pid,
            "province": name,
            "photos": len(sub),
            "share %": round(100.0 * len(sub) / total, 1) if total else 0.0,
        }
        row.update({s: int((sub["split"] == s).sum()) for s in SPLITS})
        provinces.append(row)
    sources = [
        {"source": s, "photos": int(n)} for s, n in sorted(index["source"].value_counts().items())
    ]
    rejects = stats.get("rejects", {})
    return {
        "kind": "dir",
        "path": str(folder),
        "splits": splits,
        "provinces": provinces,
        "sources": sources,
        "rejects": _reject_rows(rejects),
        "filter_notes": stats.get("filter_notes", []),
        "excluded": stats.get("excluded", {}),
        "groups": stats.get("groups", {}),
        "cells": _cells_summary(cells, regions) if cells is not None and len(cells) else [],
        "n_cells": 0 if cells is None else len(cells),
        "_points": index[["lat", "lon", "province_id"]],
        "_cells": cells,
        "_regions": regions,
        "_boundaries": _folder_boundaries(folder),
    }


def _folder_boundaries(folder: Path) -> str | None:
    """The polygon file a shard folder's run used, when it remembers one: a folder inside a
    work folder (``run``'s default ``W/shards``) has that work folder's remembered
    ``region.boundaries``; any other shard folder holds only region names (``regions.parquet``)."""
    return work_boundaries(folder.resolve().parent)


def render(report: dict[str, Any]) -> str:
    """The text ``stats`` prints."""
    out: list[str] = []
    add = out.append
    if report["kind"] == "work":
        add(f"work folder {report['path']}")
        add("\nstages")
        add(_table(report["stages"], ["stage", "status", "seconds", "counts"]))
        add("\nphotos per source and stage")
        add(_table(report["sources"]))
        add(f"\nphotos per province ({report['provinces_from'] or 'no tag stage yet'})")
        add(_table(report["provinces"]))
    else:
        add(f"shard folder {report['path']}")
        add("\nsplits")
        add(_table(report["splits"]))
        add("\nphotos per province and split")
        add(_table(report["provinces"]))
        add("\nphotos per source")
        add(_table(report["sources"]))
        excl = report.get("excluded") or {}
        if excl:
            add(
                f"\nexcluded at shard time: {excl.get('restricted', 0)} restricted, "
                f"{excl.get('removal_list', 0)} on the removal list"
            )
        g = report.get("groups") or {}
        if g:
            add(
                f"leakage groups: {g.get('count', 0)} ({g.get('multi_photo', 0)} with more than "
                f"one photo, largest {g.get('largest', 0)})"
            )
    for line in coverage_lines(report.get("coverage")):
        add(line)
    add("\nreject reasons")
    add(_table(report["rejects"], ["stage", "reason", "photos"]))
    for note in report.get("filter_notes", []):
        add(
            textwrap.fill(
                f"note: filter check {note}", 100, initial_indent="  ", subsequent_indent="    "
            )
        )
    add(f"\ngeocells: {report['n_cells']} (sizes n = photos per cell, radii in km)")
    add(_table(report["cells"]))
    return "\n".join(out)


def run_stats(
    *,
    work: Path | None = None,
    folder: Path | None = None,
    map_path: Path | None = None,
    boundaries: Path | None = None,
) -> tuple[dict[str, Any], str, str]:
    """Gather, render and draw: returns (report, text, where the map went). ``boundaries``
    (``--boundaries``) draws the map on those polygons instead of the ones the folder
    remembers (or, when it remembers none, the default ones)."""
    if (work is None) == (folder is None):
        raise GeopakError("give either --work W or a shard folder DIR")
    report, default_map, title = _gather(work, folder)
    if boundaries is not None:
        report["_boundaries"] = str(Path(boundaries).resolve())
    text = render(report)
    if folder is not None and map_path is None and default_map.is_file():
        # The shard stage drew DIR/map.png from these same tables: redrawing it would change a
        # shard output (the next `shard`/`run` would redo the stage) and fails on read-only copies.
        return report, text, str(default_map)
    where = _map(
        Path(map_path) if map_path else default_map,
        report["_points"],
        report["_cells"],
        title,
        report,
    )
    return report, text, where


def _gather(work: Path | None, folder: Path | None) -> tuple[dict[str, Any], Path, str]:
    """(report, default map path, map title) of a work folder or a shard folder."""
    if work is not None:
        report = work_stats(work)
        default_map = Path(work) / "stats" / "map.png"
        title = (
            f"{Path(work).name}: {0 if report['_points'] is None else len(report['_points']):,} "
            f"photos, {report['n_cells']:,} cells"
        )
    else:
        report = dir_stats(folder)  # type: ignore[arg-type]
        default_map = Path(folder) / "map.png"  # type: ignore[arg-type]
        title = (
            f"{Path(folder).name}: {len(report['_points']):,} photos, {report['n_cells']:,} cells"  # type: ignore[arg-type]
        )
    return report, default_map, title


def _cmd(args: argparse.Namespace) -> int:
    report, text, where = run_stats(
        work=args.work, folder=args.dir, map_path=args.map, boundaries=args.boundaries
    )
    if args.json:
        print(
            json.dumps(
                {k: v for k, v in report.items() if not k.startswith("_")} | {"map": where},
                indent=2,
                default=str,
            )
        )
    else:
        print(text)
        print(f"\nmap: {where}")
    log.debug("stats done")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``geopak-data stats`` to the CLI."""
    p = sub.add_parser(
        "stats",
        help="counts per stage/province/source/cell, reject reasons and a map PNG",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=None,
        metavar="DIR",
        help="a shard folder (output of `shard`)",
    )
    p.add_argument(
        "--work",
        "-w",
        type=Path,
        default=None,
        metavar="W",
        help="a work folder instead of a shard folder (default: none; give DIR or --work)",
    )
    p.add_argument(
        "--map",
        type=Path,
        default=None,
        metavar="PNG",
        help="where to write the map (default: W/stats/map.png or DIR/map.png)",
    )
    add_boundaries(
        p,
        default="the ones the folder remembers (W, or the work folder DIR is in), else "
        "$GEOPAK_BOUNDARIES or the cached release; a new map only (see --map)",
    )
    p.add_argument("--json", action="store_true", help="print the tables as one JSON object")
    add_verbose(p)
    p.set_defaults(func=_cmd)

"""``geopak-data tag --work W [--country ISO3] [--boundaries FILE]``: the region of every photo.

The region is the country's first-level administrative unit (a province of Pakistan by
default; the columns keep the names ``province`` / ``province_id``). Reads
``W/filter/records.parquet`` and writes

* ``W/tag/records.parquet`` — the records inside the country, every input column plus
  ``province`` (region name), ``province_id`` (region id: int8, int16 past 127 regions) and
  ``border_km``
  (0 inside a region; for a point up to ``tag.border_tolerance_km`` outside the national
  border across a border kind named in ``tag.snap_borders`` — by default only the sea coast,
  the outline inside ``tag.coast_bboxes`` — the great-circle km to that border: it got the
  nearest region);
* ``W/tag/rejects.parquet`` — ``outside_pakistan`` (``outside_country`` for other countries:
  farther than the tolerance, or outside the polygons beyond a land border) and
  ``invalid_coordinates`` rows, stage ``tag``;
* ``W/tag/regions.parquet`` — the region table (id, name, ISO 3166-2 code, area) every later
  stage and the model read.

The polygons come from ``--boundaries FILE``, else ``region.boundaries`` (or the older
``tag.boundaries``) in the config, else ``GEOPAK_BOUNDARIES``, else the country's cached or
downloaded geoBoundaries ADM1 release (see ``geopak_core/boundaries.py``). Their content is an
input of the stage: swap the file and the stage (and everything after it) runs again. Tagging
is vectorised (``tagging.py``), so this stage is one atomic write, not units.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geopak_core.errors import GeopakError
from geopak_core.io import atomic_write_parquet
from geopak_core.regions import REGIONS_FILE, id_arrow_type

from .config import COAST_BBOXES, PipelineConfig
from .records import REJECT_SCHEMA, reject_rows
from .runner import StageContext, StageOutcome, StageResult, run_stage

STAGE = "tag"
ADDED_COLUMNS = ("province", "province_id", "border_km")


def run_tag(
    *, work: Path, config: PipelineConfig, force: bool = False, boundaries: str | Path | None = None
) -> StageOutcome:
    """Tag every filtered record with its region or reject it as outside the country."""
    from geopak_core.boundaries import read_boundaries, region_table

    from .country import resolve_polygon_path

    work = Path(work)
    src = Path(work) / "filter" / "records.parquet"
    if not src.is_file():
        raise GeopakError(
            f"no filter output at {src}; run `geopak-data filter --work {work}` first"
        )
    try:
        names = pq.read_schema(src).names
    except (OSError, pa.ArrowInvalid) as exc:
        raise GeopakError(f"cannot read {src} ({exc})") from None
    for col in ("key", "lat", "lon"):
        if col not in names:
            raise GeopakError(f"{src}: lacks column {col!r}")
    bpath = resolve_polygon_path(config, boundaries)
    r = config.region
    # a bad polygon file fails here, before the stage starts
    polys = read_boundaries(
        bpath, country=r.country, name_column=r.name_column, code_column=r.code_column
    )
    regions = region_table(polys)
    names = regions.names
    outside = "outside_pakistan" if r.country == "PAK" else "outside_country"
    where = "Pakistan" if r.country == "PAK" else r.country
    tol = config.tag.border_tolerance_km
    snap = list(config.tag.snap_borders)
    coast = coast_bboxes_for(config)

    def _do(ctx: StageContext) -> StageResult:
        from .tagging import KIND_LAND, ProvinceTagger, TagResult, border_rule

        table = pq.read_table(src)
        lat = table.column("lat").to_numpy(zero_copy_only=False).astype(np.float64)
        lon = table.column("lon").to_numpy(zero_copy_only=False).astype(np.float64)
        res = ProvinceTagger(polys, tol, snap_borders=snap, coast_bboxes=coast).tag(lat, lon)
        kinds = res.kind if res.kind is not None else np.zeros(len(lat), np.int8)

        ok = np.flatnonzero(res.tagged)
        bad = np.flatnonzero(~res.tagged)
        base = table.drop_columns([c for c in ADDED_COLUMNS if c in table.column_names])
        take = pa.array(ok, type=pa.int64())
        out = base.take(take)
        out = out.append_column(
            "province", pa.array(res.province_names()[ok].tolist(), type=pa.string())
        )
        out = out.append_column(
            "province_id", pa.array(res.province_id[ok], type=id_arrow_type(len(res.names)))
        )
        out = out.append_column("border_km", pa.array(res.border_km[ok], type=pa.float64()))

        reasons: list[str] = []
        details: list[str] = []
        for st, d, k in zip(res.status[bad], res.border_km[bad], kinds[bad], strict=True):
            if st == TagResult.INVALID:
                reasons.append("invalid_coordinates")
                details.append("latitude/longitude missing, NaN, out of range or (0, 0)")
            elif np.isfinite(d) and d <= tol and k == KIND_LAND:
                reasons.append(outside)
                details.append(
                    f"{d:.2f} km outside a land border (not snapped: tag.snap_borders = {snap})"
                )
            else:
                reasons.append(outside)
                details.append(
                    f"{d:.2f} km outside the border (tolerance {tol:g} km)"
                    if np.isfinite(d)
                    else f"more than {tol:g} km outside {where}'s border"
                )
        rejects = (
            reject_rows(
                table.take(pa.array(bad, type=pa.int64())),
                stage=STAGE,
                reason=reasons,
                detail=details,
            )
            if bad.size
            else REJECT_SCHEMA.empty_table()
        )

        out_path = ctx.stage_dir / "records.parquet"
        rej_path = ctx.stage_dir / "rejects.parquet"
        reg_path = regions.write(ctx.stage_dir / REGIONS_FILE)
        atomic_write_parquet(out_path, out)
        atomic_write_parquet(rej_path, rejects)

        per = np.bincount(res.province_id[ok], minlength=len(names))
        n_snapped = int((res.status == TagResult.SNAPPED).sum())
        n_out = reasons.count(outside)
        n_inv = reasons.count("invalid_coordinates")
        counts = {
            "input": table.num_rows,
            "tagged": int(ok.size),
            "rejected": int(bad.size),
            "snapped": n_snapped,
            f"rejected:{outside}": n_out,
        }
        if n_inv:
            counts["rejected:invalid_coordinates"] = n_inv
        counts.update({f"province:{names[i]}": int(c) for i, c in enumerate(per)})
        by_prov = ", ".join(f"{names[i]} {int(c)}" for i, c in enumerate(per) if c)
        summary = (
            f"tag: {table.num_rows} in -> {ok.size} tagged"
            + (f" ({by_prov})" if by_prov else "")
            + f", {n_out} outside {where}"
        )
        if n_inv:
            summary += f", {n_inv} invalid coordinates"
        n_land = int(
            (
                (res.status == TagResult.OUTSIDE) & (kinds == KIND_LAND) & (res.border_km <= tol)
            ).sum()
        )
        counts["rejected:across_land_border"] = n_land
        summary += f"; {n_snapped} within {tol:g} km outside the border got the nearest region"
        if n_land:
            summary += f", {n_land} within {tol:g} km across a land border were rejected"
        notes = {
            "country": regions.country,
            "regions": regions.n,
            "boundaries": str(bpath),
            "boundaries_sha256": polys.attrs.get("sha256", ""),
            "border_tolerance_km": tol,
            "snap_borders": snap,
            "coast_bboxes": coast,
            "border_rule": border_rule(tol, snap, coast),
        }
        return StageResult(
            counts=counts, outputs=[out_path, rej_path, reg_path], summary=summary, notes=notes
        )

    return run_stage(
        work=work,
        name=STAGE,
        config=config,
        sections=["tag", "region"],
        inputs={"filter": src, "boundaries": bpath},
        fn=_do,
        force=force,
    )


def coast_bboxes_for(config: PipelineConfig) -> list[list[float]]:
    """The coast boxes of the configured country: ``tag.coast_bboxes`` when set to anything but
    Pakistan's defaults; for another country left at those defaults, its entry in
    ``COAST_BBOXES`` (none known: no border counts as coast, so nothing is snapped)."""
    boxes = [list(b) for b in config.tag.coast_bboxes]
    country = config.region.country
    if country != "PAK" and boxes == [list(b) for b in COAST_BBOXES["PAK"]]:
        return [list(b) for b in COAST_BBOXES.get(country, [])]
    return boxes


def _cmd(args: argparse.Namespace) -> int:
    from .cliutil import config_for

    cfg = config_for(args)
    outcome = run_tag(work=args.work, config=cfg, force=args.force, boundaries=args.boundaries)
    print(outcome.summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .cliutil import add_common, add_country

    p = sub.add_parser(
        "tag",
        help=(
            "region (first-level unit) of every photo by polygon (points within the border "
            "tolerance across the sea coast get the nearest region)"
        ),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    add_country(p)
    p.set_defaults(func=_cmd)


__all__ = ["ADDED_COLUMNS", "run_tag"]

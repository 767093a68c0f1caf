"""``geopak-data filter --work W``: quality filters where every dropped photo says why.

Reads every ``W/crawl/*/records.parquet`` (images at ``W/<image_path>``) and writes

* ``W/filter/records.parquet`` — the kept records, every input column plus ``phash``,
  ``laplacian_var``, ``entropy`` and ``indoor_prob`` (null when the indoor check did not run);
* ``W/filter/rejects.parquet`` — one row per dropped record (REJECT_SCHEMA, stage ``filter``);
* ``W/filter/report.json`` — which checks ran with which thresholds, which were disabled and
  which could **not be applied** (the indoor check without local weights), counts by reason.

Two phases, so the expensive one is done once and survives a kill -9:

1. **measure** — decode every image fully and measure it (``quality.py``; indoor scores from
   ``indoor.py`` when weights are configured). Records are sorted by key and cut into units
   of ``filter.batch_size``; each finished unit is committed as one atomic Parquet part, so a
   killed run resumes at the first unfinished unit. Measurements do not depend on thresholds:
   changing a threshold re-runs only phase 2.
2. **decide** — vectorised rules, first failing rule wins, in this order (``REASON_ORDER``):
   duplicate key; coordinates (missing, out of range, (0, 0), coarse accuracy); file
   (decode failure — always enforced, later stages need the pixels — then too small, bad
   aspect); information (low entropy, blurry); indoor; exact then near duplicates among the
   records still kept, under ``dedup.KEEP_RULE``.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geopak_core.errors import GeopakError
from geopak_core.executor import make_executor
from geopak_core.io import atomic_write_json, atomic_write_parquet
from geopak_core.progress import log, progress

from .config import PipelineConfig, config_hash
from .records import REJECT_SCHEMA, reject_rows
from .runner import StageContext, StageOutcome, StageResult, fingerprint, run_stage

STAGE = "filter"
REASON_ORDER = (
    "duplicate_key",
    "missing_coordinates",
    "coordinates_out_of_range",
    "null_island",
    "coarse_accuracy",
    "decode_failed",
    "too_small",
    "bad_aspect",
    "low_entropy",
    "blurry",
    "indoor",
    "exact_duplicate",
    "near_duplicate",
)
ADDED_COLUMNS = ("phash", "laplacian_var", "entropy", "indoor_prob")
_REQUIRED = ("key", "source", "source_id", "url", "lat", "lon", "image_path")
_CHUNK = 32  # images decoded and held in memory at once inside a unit

MEASURE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("decode_error", pa.string()),
        ("m_width", pa.int32()),
        ("m_height", pa.int32()),
        ("file_sha256", pa.string()),
        ("laplacian_var", pa.float64()),
        ("entropy", pa.float64()),
        ("phash", pa.string()),
        ("indoor_prob", pa.float64()),
    ]
)


def crawl_inputs(work: Path) -> dict[str, Path]:
    """``crawl:<source>`` -> ``W/crawl/<source>/records.parquet`` for every source crawled."""
    return {
        f"crawl:{p.parent.name}": p
        for p in sorted((Path(work) / "crawl").glob("*/records.parquet"))
    }


def read_crawl_records(inputs: dict[str, Path]) -> pa.Table:
    """All sources' downloaded records in one table, sorted by key (the unit order)."""
    tables = []
    for label, path in inputs.items():
        try:
            t = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise GeopakError(f"{label}: cannot read {path} ({exc})") from None
        missing = [c for c in _REQUIRED if c not in t.column_names]
        if missing:
            raise GeopakError(
                f"{label}: {path} lacks column(s) {', '.join(missing)}; not a crawl records table"
            )
        tables.append(t)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise GeopakError(
            f"crawl records of different sources do not fit together: {exc}"
        ) from None
    if table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[("key", "ascending")]))


def _require_images(work: Path, keys: list[str], paths: list[str], sources: list[Any]) -> None:
    """Stop when a crawled image file is gone: cached measurements must never keep a photo
    whose bytes no longer exist. The crawl fetches lost files again (sha256 checked)."""
    lost = [i for i, p in enumerate(paths) if p and not (work / p).is_file()]
    if not lost:
        return
    i = lost[0]
    names = sorted({str(sources[j]) for j in lost})
    crawl = " and ".join(f"`geopak-data crawl {s} --work {work}`" for s in names)
    raise GeopakError(
        f"filter: {len(lost)} crawled image file(s) missing, e.g. {work / paths[i]} (key "
        f"{keys[i]}); run {crawl} to fetch them again"
    )


def _measure_one(work: Path, image_path: str, want_rgb: bool) -> tuple[dict[str, Any], Any]:
    from .quality import measure_image

    if not image_path:
        return {"decode_error": "no image_path"}, None
    try:
        m, im = measure_image(work / image_path, want_rgb=want_rgb)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EIO):
            raise  # the machine's trouble, not this photo's: one line from the CLI
        return {"decode_error": f"{type(exc).__name__}: {exc}"[:300]}, None
    except Exception as exc:  # noqa: BLE001 - one photo's surprise must not stop the filter
        return {"decode_error": f"internal error: {type(exc).__name__}: {exc}"[:300]}, None
    row = {
        "decode_error": "" if m.ok else m.error,
        "m_width": m.width if m.ok else None,
        "m_height": m.height if m.ok else None,
        "file_sha256": m.file_sha256,
        "laplacian_var": m.laplacian_var if m.ok else None,
        "entropy": m.entropy if m.ok else None,
        "phash": m.phash,
    }
    return row, im


def measure_unit(
    work: Path,
    keys: list[str],
    paths: list[str],
    scorer: Any,
    pool: ThreadPoolExecutor,
    bar: Any = None,
) -> pa.Table:
    """Measure one unit of images (in chunks, so only ``_CHUNK`` decoded images are held)."""
    rows: list[dict[str, Any]] = []
    want_rgb = scorer is not None

    def one(p: str) -> tuple[dict[str, Any], Any]:
        return _measure_one(work, p, want_rgb)

    for start in range(0, len(keys), _CHUNK):
        chunk = list(pool.map(one, paths[start : start + _CHUNK]))
        probs: dict[int, float] = {}
        if scorer is not None:
            ok = [i for i, (_, im) in enumerate(chunk) if im is not None]
            if ok:
                scores = scorer.score([chunk[i][1] for i in ok])
                probs = dict(zip(ok, (float(s) for s in scores), strict=True))
        for i, (row, _) in enumerate(chunk):
            row["key"] = keys[start + i]
            row["indoor_prob"] = probs.get(i)
            rows.append(row)
        if bar is not None:
            bar.update(len(chunk))
    return pa.table(
        {f.name: [r.get(f.name) for r in rows] for f in MEASURE_SCHEMA}, schema=MEASURE_SCHEMA
    )


_WORKER_SCORERS: dict[str, Any] = {}


def measure_task(job: dict[str, Any], keys: list[str], paths: list[str]) -> pa.Table:
    """One filter unit wherever the executor runs it (the indoor scorer loaded once per
    process); the same table ``measure_unit`` gives in the driver."""
    scorer = None
    if job["config"] is not None:
        ident = repr(job["config"])
        scorer = _WORKER_SCORERS.get(ident)
        if scorer is None:
            from .indoor import load_indoor_scorer

            scorer = _WORKER_SCORERS[ident] = load_indoor_scorer(job["config"])
    with ThreadPoolExecutor(job.get("threads", 1)) as pool:
        return measure_unit(job["work"], keys, paths, scorer, pool)


def _measure_key(records: pa.Table, indoor_identity: str, batch_size: int, clip_model: str) -> str:
    """What the stored measurements depend on: the images, the scorer, the unit size."""
    from .quality import MEASURE_VERSION

    h = hashlib.sha256()
    for col in ("key", "image_path", "sha256"):
        if col in records.column_names:
            for v in records.column(col).to_pylist():
                h.update(str(v).encode("utf-8") + b"\0")
    return config_hash(
        {
            "v": MEASURE_VERSION,
            "images": h.hexdigest(),
            "indoor": indoor_identity,
            "clip_model": clip_model,
            "batch": batch_size,
        }
    )


def decide(df: Any, cfg: Any, indoor_applied: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reject reason ('' = kept) and detail per record; vectorised, first failing rule wins."""
    import pandas as pd

    from .dedup import find_duplicates

    n = len(df)
    reason = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)

    def flag(mask: Any, code: str, text: Any) -> None:
        """Set ``code`` where ``mask`` holds and no earlier rule fired; ``text`` is a detail
        string or a function of the flagged indices (so details are formatted only for them)."""
        m = np.asarray(mask, dtype=bool) & (reason == "")
        reason[m] = code
        detail[m] = text(np.flatnonzero(m)) if callable(text) else text

    flag(
        df["key"].duplicated(keep="first").to_numpy(),
        "duplicate_key",
        "key seen earlier in the crawl records",
    )
    lat = pd.to_numeric(df["lat"], errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(df["lon"], errors="coerce").to_numpy(dtype=np.float64)
    if cfg.check_coordinates:
        flag(
            ~(np.isfinite(lat) & np.isfinite(lon)),
            "missing_coordinates",
            "latitude or longitude missing/NaN",
        )
        with np.errstate(invalid="ignore"):
            flag(
                (np.abs(lat) > 90) | (np.abs(lon) > 180),
                "coordinates_out_of_range",
                lambda i: [
                    f"({a}, {b}) outside +-90/+-180" for a, b in zip(lat[i], lon[i], strict=True)
                ],
            )
            flag((lat == 0) & (lon == 0), "null_island", "(0, 0) placeholder coordinates")
        if "accuracy" in df:
            acc = pd.to_numeric(df["accuracy"], errors="coerce").to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore"):
                coarse = (acc > 0) & (acc < cfg.min_accuracy)
            flag(
                coarse,
                "coarse_accuracy",
                lambda i: [f"accuracy {a:g} < {cfg.min_accuracy}" for a in acc[i]],
            )
    err = df["decode_error"].fillna("").astype(str).to_numpy()
    flag(err != "", "decode_failed", lambda i: list(err[i]))
    w = pd.to_numeric(df["m_width"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    h = pd.to_numeric(df["m_height"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    if cfg.check_file:
        short, long = np.minimum(w, h), np.maximum(w, h)
        flag(
            short < cfg.min_side,
            "too_small",
            lambda i: [
                f"{a}x{b}: short side < {cfg.min_side} px" for a, b in zip(w[i], h[i], strict=True)
            ],
        )
        aspect = long / np.maximum(short, 1)
        flag(
            aspect > cfg.max_aspect,
            "bad_aspect",
            lambda i: [
                f"{a}x{b}: aspect {r:.2f} > {cfg.max_aspect:g}"
                for a, b, r in zip(w[i], h[i], aspect[i], strict=True)
            ],
        )
    if cfg.check_information:
        ent = df["entropy"].to_numpy(dtype=np.float64)
        lap = df["laplacian_var"].to_numpy(dtype=np.float64)
        flag(
            ent < cfg.min_entropy,
            "low_entropy",
            lambda i: [f"entropy {e:.2f} bits < {cfg.min_entropy:g}" for e in ent[i]],
        )
        flag(
            lap < cfg.min_laplacian_var,
            "blurry",
            lambda i: [f"Laplacian variance {v:.1f} < {cfg.min_laplacian_var:g}" for v in lap[i]],
        )
    if indoor_applied:
        prob = df["indoor_prob"].to_numpy(dtype=np.float64)
        flag(
            prob >= cfg.indoor_threshold,
            "indoor",
            lambda i: [f"P(indoor) {p:.2f} >= {cfg.indoor_threshold:g}" for p in prob[i]],
        )
    alive = reason == ""
    if alive.any() and (cfg.check_exact_duplicates or cfg.check_near_duplicates):
        sub = df.loc[alive].copy()
        sub["width"], sub["height"] = w[alive], h[alive]
        res = find_duplicates(
            sub,
            exact=cfg.check_exact_duplicates,
            near=cfg.check_near_duplicates,
            max_distance=cfg.phash_max_distance,
        )
        idx = np.flatnonzero(alive)
        reason[idx] = res.reason
        detail[idx] = res.detail
    return reason, detail


def _checks_report(cfg: Any, indoor: Any) -> dict[str, Any]:
    from .dedup import KEEP_RULE

    def chk(enabled: bool, switch: str = "", **kw: Any) -> dict[str, Any]:
        off = {} if enabled else {"reason": f"disabled by filter.{switch} = false"}
        return {"enabled": enabled, "applied": enabled, **off, **kw}

    return {
        "coordinates": chk(
            cfg.check_coordinates,
            "check_coordinates",
            min_accuracy=cfg.min_accuracy,
            reasons=[
                "missing_coordinates",
                "coordinates_out_of_range",
                "null_island",
                "coarse_accuracy",
            ],
        ),
        "decode": chk(
            True, reasons=["decode_failed"], note="always enforced: later stages need the pixels"
        ),
        "file": chk(
            cfg.check_file,
            "check_file",
            min_side=cfg.min_side,
            max_aspect=cfg.max_aspect,
            reasons=["too_small", "bad_aspect"],
        ),
        "information": chk(
            cfg.check_information,
            "check_information",
            min_entropy=cfg.min_entropy,
            min_laplacian_var=cfg.min_laplacian_var,
            reasons=["low_entropy", "blurry"],
        ),
        "indoor": {**indoor.as_dict(), "threshold": cfg.indoor_threshold, "reasons": ["indoor"]},
        "exact_duplicates": chk(
            cfg.check_exact_duplicates,
            "check_exact_duplicates",
            keep_rule=KEEP_RULE,
            reasons=["exact_duplicate"],
        ),
        "near_duplicates": chk(
            cfg.check_near_duplicates,
            "check_near_duplicates",
            phash_max_distance=cfg.phash_max_distance,
            keep_rule=KEEP_RULE,
            reasons=["near_duplicate"],
        ),
    }


def run_filter(
    *,
    work: Path,
    config: PipelineConfig,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
) -> StageOutcome:
    """Measure, judge and split the crawled records into kept records and rejects."""
    from .indoor import PLACES365_LABELS, indoor_status

    work = Path(work)
    cfg = config.filter
    inputs = crawl_inputs(work)
    if not inputs:
        raise GeopakError(
            f"no crawl output in {work / 'crawl'}/*/records.parquet; run `geopak-data crawl SOURCE --work {work}` first"
        )
    indoor = indoor_status(cfg)
    indoor_id = "none"
    if indoor.applied:  # the weights' content (size+mtime for very big files), not just their path
        indoor_id = f"{indoor.method}:{fingerprint(Path(indoor.weights))}"
        if indoor.method == "places365":
            indoor_id += f":{fingerprint(Path(indoor.weights).parent / PLACES365_LABELS)}"

    def _do(ctx: StageContext) -> StageResult:
        records = read_crawl_records(inputs)
        n = records.num_rows
        keys = records.column("key").to_pylist()
        paths = [p or "" for p in records.column("image_path").to_pylist()]
        _require_images(work, keys, paths, records.column("source").to_pylist())
        store = ctx.part_store(
            "measure", _measure_key(records, indoor_id, cfg.batch_size, cfg.clip_model)
        )
        units = [f"{i:06d}" for i in range(math.ceil(n / cfg.batch_size))]
        todo = [u for u in units if not store.has(u)]
        if todo:
            done = (len(units) - len(todo)) * cfg.batch_size
            if done:
                log.info(
                    "filter: resuming, %d of %d units already measured",
                    len(units) - len(todo),
                    len(units),
                )
            # Without the indoor scorer every unit is pure CPU work on file paths: locally it
            # runs in one process per core (threads would share one GIL-bound core).
            cores = max(1, os.cpu_count() or 1)
            runner = make_executor(
                executor or config.run.executor,
                ray_address or config.run.ray_address or None,
                processes=0 if indoor.applied else cores,
            )
            with progress(
                total=n, desc="filter: measuring", unit="img", initial=min(done, n)
            ) as bar:

                def on_done(u: str, table: pa.Table) -> None:
                    store.write(u, table)
                    bar.update(table.num_rows)

                job = {
                    "work": work,
                    "config": cfg if indoor.applied else None,
                    "threads": min(4, cores) if indoor.applied else 1,
                }
                unit_args = []
                for u in todo:
                    a = int(u) * cfg.batch_size
                    b = min(n, a + cfg.batch_size)
                    unit_args.append((u, (job, keys[a:b], paths[a:b])))
                runner.run_units(measure_task, unit_args, on_done)
        meas = store.read_all(units, schema=MEASURE_SCHEMA)
        if meas.column("key").to_pylist() != keys:
            raise GeopakError(
                f"filter: stored measurements in {store.folder} do not match the records; run again with --force"
            )

        df = records.select(
            [c for c in records.column_names if c not in MEASURE_SCHEMA.names or c == "key"]
        ).to_pandas()
        mdf = meas.drop_columns(["key"]).to_pandas()
        for c in mdf.columns:
            df[c] = mdf[c].to_numpy()
        reason, detail = decide(df, cfg, indoor.applied)

        kept = np.flatnonzero(reason == "")
        rej = np.flatnonzero(reason != "")
        base = records.drop_columns([c for c in ADDED_COLUMNS if c in records.column_names])
        out = base.take(pa.array(kept, type=pa.int64()))
        for col in ADDED_COLUMNS:
            out = out.append_column(col, meas.column(col).take(pa.array(kept, type=pa.int64())))
        rejects = (
            reject_rows(
                records.take(pa.array(rej, type=pa.int64())),
                stage=STAGE,
                reason=[str(r) for r in reason[rej]],
                detail=[str(d) for d in detail[rej]],
            )
            if rej.size
            else REJECT_SCHEMA.empty_table()
        )

        by_reason = Counter(str(r) for r in reason[rej])
        by_reason_sorted = {r: by_reason[r] for r in REASON_ORDER if by_reason.get(r)}
        checks = _checks_report(cfg, indoor)
        not_applied = {
            name: c.get("reason", "")
            for name, c in checks.items()
            if c["enabled"] and not c["applied"]
        }
        disabled = [name for name, c in checks.items() if not c["enabled"]]
        report = {
            "stage": STAGE,
            "inputs": {k: str(v.relative_to(work)) for k, v in inputs.items()},
            "input": n,
            "kept": int(kept.size),
            "rejected": int(rej.size),
            "rejects_by_reason": by_reason_sorted,
            "reason_order": list(REASON_ORDER),
            "checks": checks,
            "not_applied": not_applied,
            "disabled": disabled,
        }
        out_path = ctx.stage_dir / "records.parquet"
        rej_path = ctx.stage_dir / "rejects.parquet"
        rep_path = ctx.stage_dir / "report.json"
        atomic_write_parquet(out_path, out)
        atomic_write_parquet(rej_path, rejects)
        atomic_write_json(rep_path, report)

        counts = {"input": n, "kept": int(kept.size), "rejected": int(rej.size)}
        counts.update({f"rejected:{r}": c for r, c in by_reason_sorted.items()})
        counts["indoor_applied"] = int(indoor.applied)
        counts["checks_not_applied"] = len(not_applied)
        text = ", ".join(f"{r} {c}" for r, c in by_reason_sorted.items())
        summary = f"filter: {n} in -> {kept.size} kept, {rej.size} rejected" + (
            f" ({text})" if text else ""
        )
        if "indoor" in not_applied:
            summary += "; indoor check NOT APPLIED (no local CLIP or Places365 weights configured)"
        elif not indoor.enabled:
            summary += "; indoor check disabled"
        return StageResult(
            counts=counts,
            outputs=[out_path, rej_path, rep_path],
            summary=summary,
            notes={
                "not_applied": sorted(not_applied),
                "disabled": disabled,
                "rejects_by_reason": by_reason_sorted,
                "indoor": indoor.reason,
            },
        )

    return run_stage(
        work=work,
        name=STAGE,
        config=config,
        sections=["filter"],
        inputs=inputs,
        fn=_do,
        extra={"indoor": indoor_id},
        force=force,
    )


def _cmd(args: argparse.Namespace) -> int:
    from .cliutil import config_for

    cfg = config_for(args)
    outcome = run_filter(
        work=args.work,
        config=cfg,
        force=args.force,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    print(outcome.summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .cliutil import add_common, add_executor

    p = sub.add_parser(
        "filter",
        help="quality filters (file, blur, duplicates, coordinates, indoor); every reject keeps its reason",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    add_executor(p)
    p.set_defaults(func=_cmd)


__all__ = [
    "ADDED_COLUMNS",
    "MEASURE_SCHEMA",
    "REASON_ORDER",
    "crawl_inputs",
    "decide",
    "read_crawl_records",
    "run_filter",
]

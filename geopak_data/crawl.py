"""``geopak-data crawl SOURCE``: discover candidate photos, then download them. Resumable.

One runner stage ``crawl:<source>`` in three steps, each crash-safe:

1. **Discover**: the source writes discovery parts (one per unit: an API page, a block of a
   metadata file). They are merged in unit order, de-duplicated by key (first wins) and
   written atomically to ``W/crawl/<source>/candidates.parquet``.
2. **Download**: candidates are cut into deterministic batches of ``download.batch_size``;
   each finished batch is committed as one part holding every row of the batch with its
   outcome (stored image or reject reason). Images are written atomically to
   ``W/images/<source>/<key[-2:]>/<key>.jpg`` before their batch commits.
3. **Merge**: parts in batch order -> ``records.parquet`` (stored images) and
   ``rejects.parquet`` (every failure with its reason). Nothing is dropped silently.

Killed at any instant and run again, it skips finished units and batches and ends with
exactly the files of an uninterrupted run. ``--retry-failed`` re-attempts every failed
download of a finished crawl (e.g. after an outage or a 429 storm).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geopak_core.errors import GeopakError
from geopak_core.executor import Executor, make_executor
from geopak_core.io import (
    PartStore,
    atomic_write_json,
    atomic_write_parquet,
    clean_stale_temps,
    read_json,
)
from geopak_core.progress import log, progress

from . import cliutil
from .config import PipelineConfig, config_hash
from .records import DOWNLOAD_FIELDS, DOWNLOADED_SCHEMA, REJECT_SCHEMA, SOURCE_SCHEMA, reject_rows
from .runner import StageContext, StageOutcome, StageResult, fingerprint, run_stage, stage_dir
from .sources.base import discovery_rejects

if TYPE_CHECKING:
    from .download import DownloadItem

# refreshed_url: set when the stored URL had expired and the source gave a fresh one (that
# URL, without credentials, replaces the candidate's in records.parquet); null otherwise.
OUTCOME_FIELDS: list[tuple[str, pa.DataType]] = [
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("refreshed_url", pa.string()),
]
# A download part: one row per candidate of the batch, in candidate order. Only the outcome is
# stored; the merge joins it with the current candidates, so metadata edits never re-download.
BATCH_SCHEMA = pa.schema(
    [pa.field("key", pa.string())] + [pa.field(n, t) for n, t in DOWNLOAD_FIELDS + OUTCOME_FIELDS]
)
# Download settings that change what is stored (the others only change speed).
_OUTPUT_KEYS = (
    "max_bytes",
    "max_pixels",
    "max_side",
    "jpeg_quality",
    "respect_noai",
    "batch_size",
    "max_redirects",
    "user_agent",
)
_DISCOVERED = "DISCOVERY_COMPLETE"
_MALFORMED = "malformed.json"  # how many metadata lines the source could not read
_DISCOVERY_REJECTS = "discovery_rejects.parquet"  # what the source itself turned down
_RETRY = "retry_pending.json"


def image_relpath(source: str, key: str) -> str:
    """Where a record's image lives, relative to the work folder."""
    return f"images/{source}/{key[-2:]}/{key}.jpg"


def _dedup_first(table: pa.Table) -> pa.Table:
    """Rows with the first occurrence of each key, in their original order."""
    if table.num_rows == 0:
        return table
    idx = pa.array(range(table.num_rows), pa.int64())
    firsts = (
        pa.table({"key": table.column("key"), "i": idx})
        .group_by("key", use_threads=False)
        .aggregate([("i", "min")])
        .column("i_min")
    )
    return table.take(pc.take(firsts, pc.sort_indices(firsts)))


# ----------------------------------------------------------------------------- discovery


def _discover(ctx: StageContext, src: Any, limit: int) -> tuple[Path, dict[str, int]]:
    cfg = ctx.config
    section = (
        dataclasses.asdict(getattr(cfg.crawl, src.name)) if hasattr(cfg.crawl, src.name) else {}
    )
    key = config_hash(
        {
            "source": src.name,
            "section": section,
            "bbox": list(cfg.crawl.bbox),
            "extra": src.extra(),
            "inputs": {k: fingerprint(v) for k, v in src.inputs().items()},
        }
    )
    parts = ctx.part_store("discover", key)
    # A new plan (round_inputs) re-opens discovery: finished units stay, other units are visited.
    round_key = config_hash({k: fingerprint(v) for k, v in src.round_inputs().items()})
    marker = parts.folder / _DISCOVERED
    if not marker.exists() or marker.read_text().split()[-1:] != [round_key]:
        log.info(
            "crawl:%s: discovering (%s)%s",
            src.name,
            src.describe(),
            f"; resuming after {len(parts.done_units())} finished units"
            if parts.done_units()
            else "",
        )
        with progress(desc=f"discover {src.name}", unit="photo") as bar:
            src.discover(parts, progress=bar)
        marker.write_text(f"ok {round_key}\n")
        malformed = int(getattr(src, "malformed", 0) or 0)  # metadata lines a source skipped
        if malformed:
            atomic_write_json(ctx.stage_dir / _MALFORMED, {"malformed_lines": malformed})
        else:
            (ctx.stage_dir / _MALFORMED).unlink(missing_ok=True)
    merged = parts.read_all(sorted(parts.done_units()), schema=SOURCE_SCHEMA)
    discovered = merged.num_rows
    cands = _dedup_first(merged)
    duplicates = discovered - cands.num_rows
    if limit and cands.num_rows > limit:
        cands = cands.slice(0, limit)
    n = cands.num_rows
    cands = cands.set_column(
        cands.schema.get_field_index("source"), "source", pa.array([src.name] * n, pa.string())
    )
    if src.restricted:
        cands = cands.set_column(
            cands.schema.get_field_index("restricted"),
            "restricted",
            pa.array([True] * n, pa.bool_()),
        )
    path = ctx.stage_dir / "candidates.parquet"
    atomic_write_parquet(path, cands)
    rej_store = discovery_rejects(parts)
    turned_down = rej_store.read_all(sorted(rej_store.done_units()), schema=REJECT_SCHEMA)
    turned_down = turned_down.set_column(
        turned_down.schema.get_field_index("stage"),
        "stage",
        pa.array([ctx.name] * turned_down.num_rows, pa.string()),
    )
    atomic_write_parquet(ctx.stage_dir / _DISCOVERY_REJECTS, turned_down)
    return path, {
        "discovered": discovered,
        "duplicates": duplicates,
        "candidates": n,
        "discovery_rejected": turned_down.num_rows,
        **(read_json(ctx.stage_dir / _MALFORMED, default=None) or {}),
    }


# ----------------------------------------------------------------------------- download


def _fetch_list_hash(cands: pa.Table) -> str:
    """A hash of what is fetched, in order (key and URL of every candidate): batches made for
    another list are never reused, edits to other metadata columns never force a re-download."""
    import hashlib

    h = hashlib.sha256()
    keys, urls = cands.column("key").to_pylist(), cands.column("url").to_pylist()
    for i in range(0, len(keys), 65536):
        h.update(
            "".join(
                f"{k}\t{u}\n" for k, u in zip(keys[i : i + 65536], urls[i : i + 65536], strict=True)
            ).encode()
        )
    return h.hexdigest()


def _batch_table(rows: list[dict[str, Any]]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in BATCH_SCHEMA}
    return pa.table(cols, schema=BATCH_SCHEMA)


@dataclasses.dataclass
class _DownloadPlan:
    """Which candidate rows each unit fetches, and what a partly redone unit already holds."""

    units: list[str]  # every unit of the candidate list, in order
    plan: list[tuple[str, list[int]]]  # units with rows to fetch
    previous: dict[str, list[dict[str, Any]]]  # stored rows of units fetched again in part
    refetch: set[int]  # stored images whose file is gone: fetched again, sha256 checked
    retry_units: set[str]


def _retry_state(
    ctx: StageContext, parts: PartStore, units: list[str], key: str, retry_failed: bool
) -> tuple[Path, dict[str, Any] | None]:
    """With --retry-failed (or a retry that was interrupted): the finished units that hold
    failed rows, remembered in the stage folder until the retry completes."""
    retry_path = ctx.stage_dir / _RETRY
    pending = read_json(retry_path, default=None)
    if pending and pending.get("key") != key:
        pending = None
    if retry_failed and not pending:
        done = parts.done_units()
        failed = [
            u
            for u in units
            if u in done and pc.any(pc.not_equal(parts.read(u).column("reason"), "")).as_py()
        ]
        pending = {"key": key, "units": failed}
        atomic_write_json(retry_path, pending)
    return retry_path, pending


def _plan_downloads(
    parts: PartStore,
    units: list[str],
    cand_rows: list[dict[str, Any]],
    work: Path,
    source: str,
    bs: int,
    retry_units: set[str],
) -> _DownloadPlan:
    """Unfinished units in full; finished ones only for their failed rows (when retried)
    and for stored images whose file has gone."""
    n = len(cand_rows)
    done = parts.done_units()
    out = _DownloadPlan(units, [], {}, set(), set(retry_units))
    for b, u in enumerate(units):
        lo, hi = b * bs, min(n, (b + 1) * bs)
        if u not in done:
            out.plan.append((u, list(range(lo, hi))))
            continue
        gone = [
            i
            for i in range(lo, hi)
            if not (work / image_relpath(source, cand_rows[i]["key"])).is_file()
        ]
        if u not in out.retry_units and not gone:
            continue
        rows = parts.read(u).to_pylist()
        lost = [i for i in gone if not rows[i - lo]["reason"]]
        failed = [lo + j for j, r in enumerate(rows) if r["reason"]] if u in out.retry_units else []
        if failed or lost:
            out.previous[u] = rows
            out.refetch.update(lost)
            out.plan.append((u, sorted(failed + lost)))
        else:
            out.retry_units.discard(u)
    return out


class _Booking:
    """Turns download outcomes into unit tables: a unit's table is ready once all its rows
    are in (rows not fetched again keep their stored values)."""

    def __init__(
        self,
        dp: _DownloadPlan,
        cand_rows: list[dict[str, Any]],
        source: str,
        work: Path,
        bs: int,
        bar: Any,
    ):
        self.dp, self.cand_rows, self.source, self.work, self.bs, self.bar = (
            dp,
            cand_rows,
            source,
            work,
            bs,
            bar,
        )
        self.counts: Counter[str] = Counter()
        self.rows: dict[str, dict[int, dict[str, Any]]] = {u: {} for u, _ in dp.plan}
        self.waiting = {u: len(ix) for u, ix in dp.plan}
        self.unit_of = {i: u for u, ix in dp.plan for i in ix}

    def _row(self, o: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"key": self.cand_rows[o.index]["key"]}
        if o.ok:
            row.update(
                image_path=image_relpath(self.source, row["key"]),
                sha256=o.sha256,
                width=o.width,
                height=o.height,
                bytes=o.bytes,
                original_width=o.original_width,
                original_height=o.original_height,
                reason="",
                detail="",
                refreshed_url=o.url or None,
            )
        else:
            row.update({name: None for name, _ in DOWNLOAD_FIELDS})
            row.update(image_path="", sha256="", reason=o.reason, detail=o.detail)
        return row

    def accept(self, o: Any) -> tuple[str, pa.Table] | None:
        """Book one outcome; the unit's table once all its rows are in."""
        u = self.unit_of[o.index]
        row = self._row(o)
        if o.index in self.dp.refetch:
            before = self.dp.previous[u][o.index - int(u[1:]) * self.bs]
            row = _check_refetched(row, before, self.work)
            self.counts["refetched"] += 1
        self.rows[u][o.index] = row
        self.counts["ok" if not row["reason"] else "failed"] += 1
        if u in self.dp.retry_units and o.ok:
            self.counts["recovered"] += 1
        self.bar.update(1)
        self.waiting[u] -= 1
        if self.waiting[u]:
            return None
        lo = int(u[1:]) * self.bs
        hi = min(len(self.cand_rows), lo + self.bs)
        got = self.rows.pop(u)
        if u in self.dp.previous:
            rows = [got.get(lo + j, r) for j, r in enumerate(self.dp.previous[u])]
        else:
            rows = [got[i] for i in range(lo, hi)]
        return u, _batch_table(rows)


def _download(
    ctx: StageContext,
    src: Any,
    cands_path: Path,
    *,
    allow_private_hosts: bool,
    retry_failed: bool,
    executor: Executor | None = None,
) -> tuple[PartStore, list[str], dict[str, int]]:
    """Fetch every candidate not yet fetched, one committed part per unit of
    ``download.batch_size`` candidates; the executor decides where the units run."""
    dcfg = ctx.config.download
    cands = pq.read_table(cands_path)
    n, bs = cands.num_rows, dcfg.batch_size
    key = config_hash(
        {
            "candidates": _fetch_list_hash(cands),
            "download": {k: getattr(dcfg, k) for k in _OUTPUT_KEYS},
            "allow_private_hosts": allow_private_hosts,
        }
    )
    parts = ctx.part_store("download", key)
    units = [f"b{i:07d}" for i in range((n + bs - 1) // bs)]
    retry_path, pending = _retry_state(ctx, parts, units, key, retry_failed)
    work = ctx.work
    images_root = work / "images" / src.name
    clean_stale_temps(images_root)
    cand_rows = cands.to_pylist()
    retry_units = set(pending["units"]) if pending else set()
    dp = _plan_downloads(parts, units, cand_rows, work, src.name, bs, retry_units)
    if dp.refetch:
        log.info(
            "crawl:%s: %d stored image(s) are missing from %s; fetching them again",
            src.name,
            len(dp.refetch),
            images_root,
        )
    if not dp.plan:
        if pending:
            retry_path.unlink(missing_ok=True)
        return parts, units, {}
    total = sum(len(ix) for _, ix in dp.plan)
    log.info(
        "crawl:%s: downloading %d images in %d batches%s",
        src.name,
        total,
        len(dp.plan),
        f" ({len(dp.retry_units)} batches retried)" if dp.retry_units else "",
    )
    bar = progress(total=total, desc=f"download {src.name}", unit="img")
    book = _Booking(dp, cand_rows, src.name, work, bs, bar)
    try:
        _run_downloads(ctx, src, dp, cand_rows, book, parts, allow_private_hosts, executor)
    finally:
        bar.close()
    retry_path.unlink(missing_ok=True)
    return parts, units, dict(book.counts)


def _run_downloads(
    ctx: StageContext,
    src: Any,
    dp: _DownloadPlan,
    cand_rows: list[dict[str, Any]],
    book: _Booking,
    parts: PartStore,
    allow_private_hosts: bool,
    executor: Executor | None,
) -> None:
    """Locally one asyncio pipeline over every planned row; on an executor one task per unit."""
    from .download import download_items

    dcfg, work = ctx.config.download, ctx.work
    if executor is None or executor.name == "local":

        async def on_outcome(o: Any) -> None:
            finished = book.accept(o)
            if finished is not None:
                await asyncio.to_thread(parts.write, *finished)

        items = (unit_item(src, work, i, cand_rows[i]) for _u, ix in dp.plan for i in ix)
        asyncio.run(
            download_items(
                items,
                config=dcfg,
                on_outcome=on_outcome,
                allow_private_hosts=allow_private_hosts,
                retry=ctx.config.retry,
            )
        )
        return

    def on_unit(_name: str, outcomes: list[Any]) -> None:
        for o in outcomes:
            finished = book.accept(o)
            if finished is not None:
                parts.write(*finished)

    job = {
        "source": src.name,
        "config": ctx.config,
        "endpoint": src.endpoint,
        "opts": src.opts,
        "work": work,
        "allow_private_hosts": allow_private_hosts,
        "limiter": executor.host_limiter(dcfg.per_host),
    }
    unit_args = [(u, (job, [(i, cand_rows[i]) for i in ix])) for u, ix in dp.plan]
    executor.run_units(download_unit, unit_args, on_unit)


def unit_item(src: Any, work: Path, index: int, rec: dict[str, Any]) -> DownloadItem:
    """What the downloader fetches for one candidate; credentials are added here only."""
    from .download import DownloadItem

    dest = work / image_relpath(src.name, rec["key"])
    try:
        url, headers = src.request_for(rec)
    except GeopakError:
        raise  # a missing API key: every record would fail alike
    except Exception as exc:  # noqa: BLE001 - one odd record rejects that record
        fail = ("internal_error", f"{type(exc).__name__} building the request")
        return DownloadItem(index=index, url="", dest=dest, failure=fail)
    refreshes = getattr(src, "refreshes_urls", False)
    refresh = (lambda: refreshed_request(src, rec)) if refreshes else None
    return DownloadItem(index=index, url=url or "", headers=headers, dest=dest, refresh=refresh)


def refreshed_request(src: Any, rec: dict[str, Any]) -> tuple[str, dict[str, str], str] | None:
    """(request URL, headers, URL to record) from the source's fresh URL for ``rec``, or None.

    The recorded URL goes through ``records.without_credentials`` like every stored URL."""
    from .records import without_credentials

    url = src.refresh_url(rec)
    if not url:
        return None
    stored, request_url = without_credentials({**rec, "url": str(url)})
    _, headers = src.request_for(stored)  # the source's headers; the URL as the API gave it
    return request_url, headers, str(stored["url"])


_WORKER_SOURCES: dict[str, Any] = {}


def download_unit(job: dict[str, Any], batch: list[tuple[int, dict[str, Any]]]) -> list[Any]:
    """One download unit on an executor's worker: the outcomes, in candidate order.

    The source is rebuilt here from the config, so credentials come from the worker's own
    environment and never travel through the cluster's object store."""
    from .download import download_items
    from .sources import get_source

    ident = repr((job["source"], job["endpoint"], sorted(job["opts"].items())))
    src = _WORKER_SOURCES.get(ident)
    if src is None:
        src = _WORKER_SOURCES[ident] = get_source(
            job["source"], config=job["config"], endpoint=job["endpoint"], **job["opts"]
        )
    items = [unit_item(src, job["work"], i, rec) for i, rec in batch]
    outcomes: list[Any] = []
    asyncio.run(
        download_items(
            items,
            config=job["config"].download,
            retry=job["config"].retry,
            on_outcome=outcomes.append,
            allow_private_hosts=job["allow_private_hosts"],
            host_limiter=job["limiter"],
        )
    )
    return sorted(outcomes, key=lambda o: o.index)


def _check_refetched(row: dict[str, Any], before: dict[str, Any], work: Path) -> dict[str, Any]:
    """A lost image fetched again must be the image the records describe (same sha256 of the
    stored bytes), else the photo changed at the source: it is rejected, not silently swapped."""
    if row["reason"] or row["sha256"] == before["sha256"]:
        return row
    (work / row["image_path"]).unlink(missing_ok=True)
    row = dict(row)
    row.update({name: None for name, _ in DOWNLOAD_FIELDS})
    row.update(
        image_path="",
        sha256="",
        reason="sha256_mismatch",
        detail=f"re-fetched image differs from the recorded one (sha256 {before['sha256'][:12]}...)",
    )
    return row


def missing_images(work: Path, records_path: Path) -> list[str]:
    """Image files a finished crawl recorded that are not in the work folder any more."""
    if not records_path.is_file():
        return []
    try:
        paths = pq.read_table(records_path, columns=["image_path"]).column(0).to_pylist()
    except (OSError, pa.ArrowException, KeyError):
        return []
    return [p for p in paths if p and not (work / p).is_file()]


# ----------------------------------------------------------------------------- merge


def _merge(
    ctx: StageContext, src: Any, cands_path: Path, parts: PartStore, units: list[str]
) -> tuple[list[Path], dict[str, int], tuple[Counter[str], Counter[str]]]:
    """The stage's outputs from the download batches: (files, counts, (reasons of the failed
    downloads, reasons of discovery's rejects))."""
    missing = [u for u in units if not parts.has(u)]
    if missing:  # cannot happen unless parts were deleted while running; never merge a partial set
        raise GeopakError(
            f"crawl:{src.name}: download batches {', '.join(missing[:3])} are missing; run the crawl again"
        )
    outcomes = (  # no candidates (nothing inside the bbox): no batches, an empty table
        pa.concat_tables([_batch_part(parts, u) for u in units])
        if units
        else BATCH_SCHEMA.empty_table()
    )
    cands = pq.read_table(cands_path)
    if outcomes.num_rows != cands.num_rows or not outcomes.column("key").equals(
        cands.column("key")
    ):
        raise GeopakError(
            f"crawl:{src.name}: download batches do not match the candidates; run again with --force"
        )
    table = cands
    for name, _typ in DOWNLOAD_FIELDS + OUTCOME_FIELDS:
        table = table.append_column(name, outcomes.column(name))
    fresh = table.column("refreshed_url")
    if fresh.null_count < table.num_rows:  # expired URLs re-resolved: record the new ones
        url = pc.coalesce(fresh, table.column("url"))
        table = table.set_column(table.schema.get_field_index("url"), "url", url)
    ok_mask = pc.equal(table.column("reason"), "")
    ok = table.filter(ok_mask).select(DOWNLOADED_SCHEMA.names).cast(DOWNLOADED_SCHEMA)
    bad = table.filter(pc.invert(ok_mask))
    rejects = reject_rows(
        bad,
        stage=ctx.name,
        reason=bad.column("reason").to_pylist(),
        detail=bad.column("detail").to_pylist(),
    )
    failed = Counter(rejects.column("reason").to_pylist())
    disc_path = ctx.stage_dir / _DISCOVERY_REJECTS
    if disc_path.exists():  # rejected at discovery (licence, panorama, ...) come first
        rejects = pa.concat_tables([pq.read_table(disc_path).cast(REJECT_SCHEMA), rejects])
    rec_path = ctx.stage_dir / "records.parquet"
    rej_path = ctx.stage_dir / "rejects.parquet"
    atomic_write_parquet(rec_path, ok)
    atomic_write_parquet(rej_path, rejects.cast(REJECT_SCHEMA))
    _prune_images(ctx.work, src.name, set(ok.column("image_path").to_pylist()))
    found = Counter(rejects.column("reason").to_pylist())
    found.subtract(failed)
    return (
        [cands_path, rec_path, rej_path],
        {"downloaded": ok.num_rows, "failed": bad.num_rows, "rejected": rejects.num_rows},
        (failed, +found),
    )


def _summary(name: str, disc: dict, counts: dict, failed: Counter, found: Counter) -> str:
    """The crawl's line: failed downloads with their reasons, then apart (so that they do not
    read as failures) what discovery itself turned down, with its reasons."""
    line = (
        f"{name}: {disc['candidates']} candidates ({disc['duplicates']} duplicates), "
        f"{counts['downloaded']} downloaded, {counts['failed']} failed" + _reasons(failed)
    )
    if found:
        line += f"; {sum(found.values())} rejected at discovery" + _reasons(found)
    return line


def _reasons(counter: Counter) -> str:
    return f" ({', '.join(f'{r} {c}' for r, c in counter.most_common(6))})" if counter else ""


def _batch_part(parts: PartStore, unit: str) -> pa.Table:
    """One download part as BATCH_SCHEMA (parts written before ``refreshed_url`` lack it)."""
    t = parts.read(unit)
    if "refreshed_url" not in t.column_names:
        t = t.append_column("refreshed_url", pa.nulls(t.num_rows, pa.string()))
    return t.select(BATCH_SCHEMA.names).cast(BATCH_SCHEMA)


def _prune_images(work: Path, source: str, keep: set[str]) -> None:
    """Remove images no record refers to (left by an older run with other candidates), so the
    work folder holds exactly the final set."""
    root = work / "images" / source
    if not root.is_dir():
        return
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(work).as_posix()
            if rel not in keep:
                p.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("crawl:%s: removed %d images no longer referenced", source, removed)


# ----------------------------------------------------------------------------- stage


def run_crawl(
    *,
    source: str,
    work: Path,
    config: PipelineConfig,
    endpoint: str | None = None,
    retry_failed: bool = False,
    allow_private_hosts: bool = False,
    force: bool = False,
    limit: int = 0,
    executor: str | None = None,
    ray_address: str | None = None,
    **source_opts: Any,
) -> StageOutcome:
    """Discover and download ``source`` into ``work`` (stage ``crawl:<source>``).

    ``source_opts`` go to the source (``metadata=`` for yfcc; ``train_csv=``, ``landmarks=``,
    ``attribution_csv=`` for gldv2; ``plan=`` a coverage plan for the tiled sources).
    ``allow_private_hosts`` (or ``download.allow_private_hosts``) lets downloads reach
    loopback/private addresses. ``limit`` keeps the first N candidates.
    ``executor`` (``local``/``ray``, default ``run.executor``) decides where the download
    units run; the output is the same either way.
    """
    from .country import resolve_crawl_config
    from .sources import get_source

    if limit < 0:
        raise GeopakError(f"--limit must be >= 0 (got {limit})")
    # bbox, Flickr tiles and Places anchors follow the country when the pipeline lists none
    config = resolve_crawl_config(config, source)
    opts = {k: v for k, v in source_opts.items() if v is not None}
    src = get_source(source, config=config, endpoint=endpoint, **opts)
    allow = bool(allow_private_hosts or config.download.allow_private_hosts)
    name = f"crawl:{source}"
    extra = {
        **src.extra(),
        "bbox": list(config.crawl.bbox),
        "limit": limit,
        "allow_private_hosts": allow,
    }
    if config.region.country != "PAK":  # Pakistan's stage hashes stay what they were
        extra["country"] = config.region.country

    lost = missing_images(Path(work), stage_dir(Path(work), name) / "records.parquet")
    if lost:
        log.info(
            "%s: %d recorded image(s) are missing (e.g. %s); fetching them again",
            name,
            len(lost),
            lost[0],
        )

    def _do(ctx: StageContext) -> StageResult:
        cands_path, disc = _discover(ctx, src, limit)
        runner = make_executor(
            executor or config.run.executor, ray_address or config.run.ray_address or None
        )
        parts, units, dl = _download(
            ctx,
            src,
            cands_path,
            allow_private_hosts=allow,
            retry_failed=retry_failed,
            executor=runner,
        )
        outputs, counts, reasons = _merge(ctx, src, cands_path, parts, units)
        all_counts = {**disc, **counts}
        for k in ("recovered", "refetched"):
            if dl.get(k):
                all_counts[k] = dl[k]
        summary = _summary(name, disc, counts, *reasons)
        return StageResult(
            counts=all_counts,
            outputs=outputs,
            summary=summary,
            notes={"reject_reasons": dict(reasons[1] + reasons[0]), "source": src.describe()},
        )

    return run_stage(
        work=Path(work),
        name=name,
        config=config,
        sections=[f"crawl.{source}", "download"],
        inputs={**src.inputs(), **src.round_inputs()},
        fn=_do,
        extra=extra,
        force=force or retry_failed or bool(lost),
    )


def _cmd(args: argparse.Namespace) -> int:
    from .sources import SOURCES, missing_inputs

    spec = SOURCES[args.source]
    opts = {f.opt: getattr(args, f.opt, None) for f in spec.files}

    def preflight(cfg: PipelineConfig) -> None:
        # Before anything is written to the work folder (not even the remembered config).
        missing = missing_inputs(args.source, cfg, opts)
        if missing:
            raise GeopakError(f"crawl {args.source}: " + "; ".join(missing))

    cfg = cliutil.config_for(args, check=preflight)
    outcome = run_crawl(
        source=args.source,
        work=args.work,
        config=cfg,
        endpoint=getattr(args, "endpoint", None),
        retry_failed=args.retry_failed,
        allow_private_hosts=args.allow_private_hosts,
        force=args.force,
        limit=args.limit,
        plan=getattr(args, "plan", None),
        executor=args.executor,
        ray_address=args.ray_address,
        **{k: v for k, v in opts.items() if v is not None},
    )
    print(outcome.summary)
    return 0


CRAWL_DESCRIPTION = """\
Discover candidate photos from one source, then download them into the work folder.

Discovery is checkpointed per unit (an API page, a block of a metadata file) and downloads
per batch, so a crawl killed at any point continues where it stopped when run again.
Every failed download is kept with its reason in W/crawl/SOURCE/rejects.parquet;
--retry-failed tries them again. Run `geopak-data crawl SOURCE --help` for a source's
options, the environment variables it needs and an example.
"""


def _source_description(spec: Any) -> str:
    lines = [f"Crawl {spec.summary}.", ""]
    if spec.notes:
        lines += [spec.notes, ""]
    if spec.env:
        lines += ["environment variables (required, never stored or logged):"]
        lines += [f"  {v}" for v in spec.env]
    else:
        lines += ["environment variables: none needed"]
    lines += ["", "example:", f"  {spec.example}"]
    return "\n".join(lines) + "\n"


def _add_source_parser(crawl_sub: argparse._SubParsersAction, spec: Any) -> None:
    p = crawl_sub.add_parser(
        spec.name,
        help=spec.summary,
        description=_source_description(spec),
    )
    p.set_defaults(source=spec.name, func=_cmd)
    cliutil.add_common(p)
    cliutil.add_country(p)
    if spec.remote:
        p.add_argument(
            "--endpoint",
            default=None,
            type=cliutil.http_url,
            metavar="URL",
            help=(
                "API base URL, e.g. a loopback test server or a mirror (default: "
                f"crawl.{spec.name}.endpoint, else the real service)"
            ),
        )
    for f in spec.files:
        p.add_argument(
            f.flag,
            dest=f.opt,
            type=cliutil.existing_file,
            default=None,
            metavar="FILE",
            help=f"{f.what} (default: {spec.config_key(f)} in the config"
            + ("" if f.required else "; optional")
            + ")",
        )
    if spec.plan:
        p.add_argument(
            "--plan",
            type=cliutil.existing_file,
            default=None,
            metavar="PLAN.parquet",
            help="a coverage plan (W/coverage/plan.parquet from `geopak-data coverage`): "
            "visit the most under-covered tiles first, skip tiles already at target (default: every tile in order)",
        )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="download again every record that failed in an earlier run",
    )
    p.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="let downloads reach private/loopback/link-local addresses (tests, local mirrors)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        metavar="N",
        help="keep only the first N candidates (default: 0 = all)",
    )
    cliutil.add_executor(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``geopak-data crawl SOURCE`` to the CLI, one sub-subcommand per registered source."""
    from .sources import SOURCES

    p = sub.add_parser(
        "crawl",
        help="discover and download photos from one source (resumable)",
        description=CRAWL_DESCRIPTION,
    )
    crawl_sub = p.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(p))
    crawl_sub.required = True
    for spec in SOURCES.values():
        _add_source_parser(crawl_sub, spec)

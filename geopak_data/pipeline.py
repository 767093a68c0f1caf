"""``geopak-data run FILE``: every stage of a pipeline config in order, each resumed.

The stages are the same functions the individual commands call; this module only orders
them, so ``run`` after a crash continues exactly where the crashed stage stopped and skips
stages that are already done.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from geopak_core.clihelp import add_verbose
from geopak_core.errors import GeopakError
from geopak_core.io import folder_arg
from geopak_core.progress import log

from .config import PipelineConfig, parse_assignment
from .runner import StageOutcome, work_config
from .source_registry import SOURCES

STAGES = ("crawl", "filter", "tag", "cluster", "shard")
PLANNED_SOURCES = tuple(n for n, spec in SOURCES.items() if spec.tiled)  # take a coverage plan
ROUND = "coverage:round1"


def default_work(cfg: PipelineConfig, config_path: Path | None) -> Path:
    if cfg.work:
        return Path(cfg.work)
    return Path("work") / cfg.name


def shard_out(cfg: PipelineConfig, work: Path) -> Path:
    return Path(cfg.shard.out) if cfg.shard.out else Path(work) / "shards"


class ReportedOutcomes(list[StageOutcome]):
    """Stage outcomes of a multi-stage command, each summary logged once as it arrives (the
    runner itself does not log it: a single-stage command prints it instead)."""

    def append(self, outcome: StageOutcome) -> None:
        log.info(outcome.summary)
        super().append(outcome)


def run_overrides(
    *,
    sets: list[str] | None = None,
    sources: str | list[str] | None = None,
    boundaries: str | Path | None = None,
    country: str | None = None,
) -> dict[str, Any]:
    """The config overrides of ``run``'s options: ``--set KEY=VALUE`` (any key),
    ``--sources a,b`` (crawl.sources), ``--boundaries FILE`` (region.boundaries) and
    ``--country ISO3`` (region.country)."""
    overrides: dict[str, Any] = dict(parse_assignment(s) for s in sets or [])
    if sources:
        names = sources.split(",") if isinstance(sources, str) else list(sources)
        overrides["crawl.sources"] = [n.strip() for n in names if n.strip()]
    if boundaries:
        overrides["region.boundaries"] = str(Path(boundaries).resolve())
    if country:
        from geopak_core.boundaries import check_country

        overrides["region.country"] = check_country(country)
    return overrides


def check_sources(cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """(sources that can run, one line per source that cannot and why). Runs before any work:
    a missing key or metadata file must not surface hours into a crawl."""
    from .sources import missing_inputs

    ready, problems = [], []
    for name in cfg.crawl.sources:
        missing = missing_inputs(name, cfg, command="run")
        if missing:
            problems.append(f"{name}: {'; '.join(missing)}")
        else:
            ready.append(name)
    return ready, problems


def run_pipeline(
    *,
    config_path: Path,
    work: Path | None = None,
    force: bool = False,
    allow_private_hosts: bool = False,
    until: str = "shard",
    executor: str | None = None,
    ray_address: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[StageOutcome]:
    """Run crawl (every configured source) -> filter -> tag -> cluster -> shard.

    ``executor``/``ray_address`` (default ``[run]`` of the config) go to crawl and filter.
    ``overrides`` are dotted config keys (see ``run_overrides``). Every source's inputs are
    checked first; with ``crawl.skip_unavailable`` the unusable ones are skipped (one line
    each), otherwise the run stops before anything is written.

    With commons or mapillary among the sources, a coverage round runs between the other
    sources and them (their crawl follows its plan), and ``coverage`` runs again after
    ``cluster`` so the card shows where photos are still missing.
    """
    from .cluster import run_cluster
    from .config import load_config
    from .coverage import run_coverage
    from .crawl import run_crawl
    from .filter import run_filter
    from .shard import run_shard
    from .tag import run_tag

    overrides = dict(overrides or {})
    cfg0 = load_config(config_path, overrides)
    ready, problems = check_sources(cfg0)
    if problems and not cfg0.crawl.skip_unavailable:
        others = f"run only the ready ones with --sources {','.join(ready)}, " if ready else ""
        raise GeopakError(
            f"{len(problems)} of {len(cfg0.crawl.sources)} sources cannot run; give what is "
            f"missing, {others}or skip them with --set crawl.skip_unavailable=true:\n  "
            + "\n  ".join(problems)
        )
    for line in problems:
        log.warning("skipping source %s", line)
    if not ready:
        raise GeopakError("no source can run: " + "; ".join(problems))
    if ready != list(cfg0.crawl.sources):
        overrides["crawl.sources"] = ready
    work = Path(work) if work else default_work(cfg0, config_path)
    cfg = work_config(work, config_path, overrides)
    outcomes = ReportedOutcomes()
    # Sources that take a coverage plan crawl last, steered by a planning round over the
    # photos the other sources found (W/coverage/round1/plan.parquet).
    planned = [s for s in cfg.crawl.sources if s in PLANNED_SOURCES]
    first = [s for s in cfg.crawl.sources if s not in PLANNED_SOURCES]
    plan: Path | None = None
    for source in first + planned:
        if source in planned and plan is None:
            outcomes.append(
                run_coverage(work=work, config=cfg, force=force, name=ROUND, sources=first)
            )
            plan = work / "coverage" / "round1" / "plan.parquet"
        outcomes.append(
            run_crawl(
                source=source,
                work=work,
                config=cfg,
                force=force,
                allow_private_hosts=allow_private_hosts,
                executor=executor,
                ray_address=ray_address,
                plan=plan if source in planned else None,
            )
        )
    if until == "crawl":
        return list(outcomes)
    outcomes.append(
        run_filter(work=work, config=cfg, force=force, executor=executor, ray_address=ray_address)
    )
    if until == "filter":
        return list(outcomes)
    outcomes.append(run_tag(work=work, config=cfg, force=force))
    if until == "tag":
        return list(outcomes)
    outcomes.append(run_cluster(work=work, config=cfg, force=force))
    if planned:  # where photos are still missing: stats, the card and the next round's plan
        outcomes.append(run_coverage(work=work, config=cfg, force=force))
    if until == "cluster":
        return list(outcomes)
    outcomes.append(run_shard(work=work, config=cfg, out=shard_out(cfg, work), force=force))
    return list(outcomes)


def summary_table(outcomes: list[StageOutcome]) -> str:
    """One row per stage (ran or skipped, seconds, its headline counts), within 100 columns."""
    from geopak_core.clihelp import text_table

    rows = [
        {
            "stage": o.name,
            "status": "skipped (done)" if o.skipped else "ran",
            "seconds": round(o.seconds, 1),
            "counts": ", ".join(f"{k}={v}" for k, v in o.counts.items() if ":" not in k),
        }
        for o in outcomes
    ]
    return text_table(rows, ["stage", "status", "seconds", "counts"], width=100)


def _cmd_run(args: argparse.Namespace) -> int:
    outcomes = run_pipeline(
        config_path=args.file,
        work=args.work,
        force=args.force,
        allow_private_hosts=args.allow_private_hosts,
        until=args.until,
        executor=args.executor,
        ray_address=args.ray_address,
        overrides=run_overrides(
            sets=args.set,
            sources=args.sources,
            boundaries=args.boundaries,
            country=args.country,
        ),
    )
    print(summary_table(outcomes))
    log.info(
        "pipeline finished: %d stages (%d already done)",
        len(outcomes),
        sum(o.skipped for o in outcomes),
    )
    return 0


RUN_DESCRIPTION = """\
Run every stage of a pipeline config in order: crawl (each source) -> filter -> tag ->
cluster -> shard. Each stage resumes where it stopped and a finished stage is skipped, so
the same command continues a run after a crash or a kill.

Before any work starts, every source is checked for what it needs (API keys in the
environment, local metadata files); each one that cannot run is listed with how to give it.
Run only some sources with --sources, or let the run skip the unusable ones with
--set crawl.skip_unavailable=true.

examples:
  geopak-data run pipelines/pakistan.toml --work work/pakistan --sources flickr,places
  geopak-data run pipelines/pakistan.toml --set crawl.yfcc.metadata=yfcc100m_dataset.bz2
"""


def register(sub: argparse._SubParsersAction) -> None:
    from .cliutil import add_boundaries, add_country, add_executor, existing_file

    p = sub.add_parser(
        "run",
        help="run every stage of a pipeline config in order, resuming each",
        description=RUN_DESCRIPTION,
    )
    p.add_argument(
        "file",
        type=existing_file,
        metavar="FILE",
        help="pipeline config, e.g. pipelines/pakistan.toml",
    )
    p.add_argument(
        "--work",
        "-w",
        type=folder_arg,
        default=None,
        metavar="W",
        help="work folder (default: the config's `work`, else work/<name>)",
    )
    p.add_argument(
        "--sources",
        default=None,
        metavar="A,B",
        help="crawl only these sources, comma-separated, e.g. flickr,places (default: crawl.sources of the config)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "override any config key, repeatable; VALUE is read as TOML, e.g. --set "
            "crawl.yfcc.metadata=yfcc100m_dataset.bz2 "
            "--set download.concurrency=32 (default: none)"
        ),
    )
    add_boundaries(p)
    p.add_argument("--until", choices=STAGES, default="shard", help="stop after this stage")
    p.add_argument("--force", action="store_true", help="re-run every stage even if done")
    p.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="let downloads reach private/loopback addresses (tests, local mirrors)",
    )
    add_executor(p)
    add_country(p, boundaries=False)
    add_verbose(p)
    p.set_defaults(func=_cmd_run)


__all__ = [
    "ReportedOutcomes",
    "check_sources",
    "run_overrides",
    "run_pipeline",
    "summary_table",
    "work_config",
]

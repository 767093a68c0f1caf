"""``geopak-data run FILE``: every stage of a pipeline config in order, each resumed.

The stages are the same functions the individual commands call; this module only orders
them, so ``run`` after a crash continues exactly where the crashed stage stopped and skips
stages that are already done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geopak_core.io import folder_arg
from geopak_core.progress import log

from .config import PipelineConfig
from .runner import StageOutcome, work_config

STAGES = ("crawl", "filter", "tag", "cluster", "shard")


def default_work(cfg: PipelineConfig, config_path: Path | None) -> Path:
    if cfg.work:
        return Path(cfg.work)
    return Path("work") / cfg.name


def shard_out(cfg: PipelineConfig, work: Path) -> Path:
    return Path(cfg.shard.out) if cfg.shard.out else Path(work) / "shards"


def run_pipeline(
    *,
    config_path: Path,
    work: Path | None = None,
    force: bool = False,
    allow_private_hosts: bool = False,
    until: str = "shard",
    executor: str | None = None,
    ray_address: str | None = None,
) -> list[StageOutcome]:
    """Run crawl (every configured source) -> filter -> tag -> cluster -> shard.

    ``executor``/``ray_address`` (default ``[run]`` of the config) go to crawl and filter."""
    from .cluster import run_cluster
    from .config import load_config
    from .crawl import run_crawl
    from .filter import run_filter
    from .shard import run_shard
    from .tag import run_tag

    cfg0 = load_config(config_path)
    work = Path(work) if work else default_work(cfg0, config_path)
    cfg = work_config(work, config_path)
    outcomes: list[StageOutcome] = []
    for source in cfg.crawl.sources:
        outcomes.append(
            run_crawl(
                source=source,
                work=work,
                config=cfg,
                force=force,
                allow_private_hosts=allow_private_hosts,
                executor=executor,
                ray_address=ray_address,
            )
        )
    if until == "crawl":
        return outcomes
    outcomes.append(
        run_filter(work=work, config=cfg, force=force, executor=executor, ray_address=ray_address)
    )
    if until == "filter":
        return outcomes
    outcomes.append(run_tag(work=work, config=cfg, force=force))
    if until == "tag":
        return outcomes
    outcomes.append(run_cluster(work=work, config=cfg, force=force))
    if until == "cluster":
        return outcomes
    outcomes.append(run_shard(work=work, config=cfg, out=shard_out(cfg, work), force=force))
    return outcomes


def summary_table(outcomes: list[StageOutcome]) -> str:
    rows = [("stage", "status", "seconds", "counts")]
    for o in outcomes:
        headline = [(k, v) for k, v in o.counts.items() if ":" not in k][:6]
        counts = ", ".join(f"{k}={v}" for k, v in headline)
        rows.append((o.name, "skipped (done)" if o.skipped else "ran", f"{o.seconds:.1f}", counts))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    outcomes = run_pipeline(
        config_path=args.file,
        work=args.work,
        force=args.force,
        allow_private_hosts=args.allow_private_hosts,
        until=args.until,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    print(summary_table(outcomes))
    log.info(
        "pipeline finished: %d stages (%d already done)",
        len(outcomes),
        sum(o.skipped for o in outcomes),
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .cliutil import add_executor, existing_file

    p = sub.add_parser(
        "run",
        help="run every stage of a pipeline config in order, resuming each",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument("--until", choices=STAGES, default="shard", help="stop after this stage")
    p.add_argument("--force", action="store_true", help="re-run every stage even if done")
    p.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="let downloads reach private/loopback addresses (tests, local mirrors)",
    )
    add_executor(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.set_defaults(func=_cmd_run)


__all__ = ["run_pipeline", "summary_table", "work_config"]

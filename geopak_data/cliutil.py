"""Argument helpers shared by the stage commands (kept apart from cli.py to avoid cycles)."""

from __future__ import annotations

import argparse
from pathlib import Path

from geopak_core.errors import GeopakError

from .config import PipelineConfig
from .runner import work_config


def add_common(parser: argparse.ArgumentParser, *, work_required: bool = True) -> None:
    """--work, --config, --force and -v, the options every stage command takes."""
    parser.add_argument(
        "--work",
        "-w",
        type=Path,
        required=work_required,
        metavar="W",
        help="work folder (created if missing); stages read and write only here",
    )
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        metavar="FILE",
        help="pipeline TOML; remembered in the work folder for later stages (default: the remembered one, else built-in defaults)",
    )
    parser.add_argument(
        "--force", action="store_true", help="run again even if the stage is already done"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="debug logging (-vv: also third-party libraries)",
    )


def config_for(args: argparse.Namespace) -> PipelineConfig:
    return work_config(args.work, args.config)


def existing_file(value: str) -> Path:
    """argparse type: a path that must exist (clear one-line error otherwise)."""
    p = Path(value)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return p


def require_dir(path: Path, what: str) -> Path:
    if not Path(path).is_dir():
        raise GeopakError(f"{what} not found: {path}")
    return Path(path)

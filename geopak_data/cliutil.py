"""Argument helpers shared by the stage commands (kept apart from cli.py to avoid cycles)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from geopak_core.clihelp import add_verbose
from geopak_core.errors import not_a_file
from geopak_core.io import folder_arg

from .config import PipelineConfig
from .runner import work_config


def add_common(parser: argparse.ArgumentParser, *, work_required: bool = True) -> None:
    """--work, --config, --force and -v, the options every stage command takes."""
    parser.add_argument(
        "--work",
        "-w",
        type=folder_arg,
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
        help=(
            "pipeline TOML; remembered in the work folder for later stages (default: the "
            "remembered one, else built-in defaults)"
        ),
    )
    parser.add_argument(
        "--force", action="store_true", help="run again even if the stage is already done"
    )
    add_verbose(parser)


def add_country(parser: argparse.ArgumentParser, *, boundaries: bool = True) -> None:
    """--country ISO3 (and --boundaries FILE): the country whose regions label the data."""
    parser.add_argument(
        "--country",
        default=None,
        metavar="ISO3",
        help="ISO 3166-1 alpha-3 code of the country (region.country; default PAK); remembered in the work folder",
    )
    if boundaries:
        add_boundaries(parser)


def add_boundaries(
    parser: argparse.ArgumentParser,
    *,
    kind: Callable[[str], Path] | None = None,
    default: str = "$GEOPAK_BOUNDARIES, else the cached or downloaded geoBoundaries ADM1 release",
) -> None:
    """--boundaries FILE (region.boundaries); ``kind`` is the argparse type (default
    ``existing_file``: a missing file is a usage error); ``default`` says where the polygons
    come from without it."""
    parser.add_argument(
        "--boundaries",
        type=kind or existing_file,
        default=None,
        metavar="FILE",
        help=(
            "the country's first-level unit polygons (GeoJSON/GeoPackage/Shapefile; "
            f"region.boundaries); default: {default}"
        ),
    )


def country_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Config overrides from --country / --boundaries (empty when neither was given)."""
    from geopak_core.boundaries import check_country

    out: dict[str, str] = {}
    if getattr(args, "country", None):
        out["region.country"] = check_country(args.country)
    if getattr(args, "boundaries", None):
        out["region.boundaries"] = str(Path(args.boundaries).resolve())
    return out


def config_for(
    args: argparse.Namespace, *, check: Callable[[PipelineConfig], None] | None = None
) -> PipelineConfig:
    """The work folder's config with --config, --country and --boundaries applied; given
    options are remembered for the later stages. ``check`` runs on the config before
    anything is written to the work folder (see ``runner.work_config``)."""
    from geopak_core.io import atomic_write_text

    from .config import dump_toml
    from .runner import WORK_CONFIG

    overrides = country_overrides(args)

    def checked(c: PipelineConfig) -> None:
        if "region.boundaries" in overrides:
            from .country import load_polygons

            load_polygons(c)  # a wrong file or country is refused before it is remembered
        if check is not None:
            check(c)

    cfg = work_config(args.work, args.config, overrides or None, check=checked)
    if overrides and args.config is None:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.work) / WORK_CONFIG, dump_toml(cfg))
    return cfg


def http_url(value: str) -> str:
    """argparse type of --endpoint: an http(s) URL (one-line error otherwise)."""
    from .config import endpoint_problem

    why = endpoint_problem(value)
    if why is not None:
        raise argparse.ArgumentTypeError(f"{value!r}: {why}")
    return value


def existing_file(value: str) -> Path:
    """argparse type: a path that must exist and be no folder (clear one-line error
    otherwise). ``/dev/null`` or a pipe passes: ``--config /dev/null`` is an empty config."""
    p = Path(value)
    if not p.exists() or p.is_dir():
        raise argparse.ArgumentTypeError(not_a_file(value, "file"))
    return p


def add_executor(parser: argparse.ArgumentParser) -> None:
    """--executor and --ray-address: where the stage's units run (same output either way)."""
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default=None,
        help="run the work units here (local) or on a Ray cluster (ray); the output is "
        "byte-identical (default: run.executor of the config, else local)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join, e.g. auto or HOST:6379 (default: run.ray_address, else a "
        "local Ray instance on this machine)",
    )

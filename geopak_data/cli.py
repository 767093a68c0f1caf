"""``geopak-data``: a thin argparse layer over the stage functions.

Each stage module registers its own sub-command (``register(subparsers)``) and keeps heavy
imports (geopandas, hdbscan, torch) inside functions, so ``--help`` stays instant.
User mistakes raise ``GeopakError`` and print one line; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from geopak_core.boundaries import set_cli_advice
from geopak_core.clihelp import Parser
from geopak_core.errors import GeopakError, os_error_line
from geopak_core.progress import setup_logging

from . import __version__

COMMAND_MODULES = (
    "geopak_data.crawl",
    "geopak_data.filter",
    "geopak_data.tag",
    "geopak_data.cluster",
    "geopak_data.shard",
    "geopak_data.publish",
    "geopak_data.pipeline",
    "geopak_data.stats",
    "geopak_data.coverage",
    "geopak_data.demo",
    "geopak_data.view",
)


_Parser = Parser  # help with defaults and examples kept as written; one-line usage errors


def build_parser() -> argparse.ArgumentParser:
    """The ``geopak-data`` parser: each stage module registers its own subcommand, so a stage's
    flags live next to its code."""
    parser = _Parser(
        prog="geopak-data",
        description=(
            "Build the GEOPAK geolocation dataset of Pakistan: crawl -> filter -> tag -> cluster "
            "-> shard -> publish."
        ),
        epilog="Every stage is resumable: run it again after a crash or kill and it continues where it stopped.",
    )
    parser.add_argument("--version", action="version", version=f"geopak {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors are one line and exit 2; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", 0))
    set_cli_advice(boundaries_flag=hasattr(args, "boundaries"))
    try:
        rc = args.func(args)
    except GeopakError as exc:
        print(f"geopak-data: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, read-only folder...: the machine's, not a bug
        if isinstance(exc, BrokenPipeError):
            return 0
        print(f"geopak-data: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geopak-data: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        logging.shutdown()
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

"""Every option of every command explains itself and says its default (issue: help for users)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from geopak_core.clihelp import help_of, walk_parsers
from geopak_data.cli import build_parser as data_parser
from geopak_model.eval_cli import build_parser as eval_parser
from geopak_model.predict_cli import build_parser as predict_parser
from geopak_model.train_cli import build_embed_parser, build_train_parser

PARSERS = {
    "geopak-data": data_parser,
    "geopak-train": build_train_parser,
    "geopak-train embed": build_embed_parser,
    "geopak-predict": predict_parser,
    "geopak-eval": eval_parser,
}


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if not action.option_strings:
            continue
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        yield action


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_a_description_and_its_default(name):
    problems = []
    n = 0
    for parser in walk_parsers(PARSERS[name]()):
        for action in _options(parser):
            n += 1
            flag = f"{parser.prog} {action.option_strings[-1]}"
            text = help_of(parser, action)
            if len(text.strip()) < 8:
                problems.append(f"{flag}: no description")
            elif not action.required and "default" not in text.lower():
                problems.append(f"{flag}: help does not say the default ({text!r})")
    assert n > 0
    assert not problems, "\n".join(problems)


def test_every_sub_command_has_a_description():
    for parser in walk_parsers(data_parser()):
        assert parser.description and len(parser.description) > 20, parser.prog


def test_help_strings_do_not_leak_markup_or_internal_names():
    for parser in walk_parsers(data_parser()):
        text = parser.format_help()
        for bad in ("``", ":func:", ":class:", "StageContext", "PartStore"):
            assert bad not in text, f"{parser.prog} --help shows {bad!r}"


def test_help_is_instant_and_exits_zero():
    out = subprocess.run(
        [sys.executable, "-m", "geopak_model.train_cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "(default: 64)" in out.stdout

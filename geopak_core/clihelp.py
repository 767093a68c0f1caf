"""Help output shared by every geopak command (geopak-data, -train, -predict, -eval).

Why: a user reading ``--help`` should see what each option does *and* what happens when it
is not given. ``HelpFormatter`` keeps hand-written line breaks in descriptions and appends
``(default: X)`` to every option whose help does not already say its default, so a default
is written once, in the code that uses it, and the help can never disagree with it.
``walk_parsers`` lists a parser and all its sub-command parsers (used by the help tests).
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Paragraphs wrapped to the terminal, indented lines (examples, lists) kept as written;
    ``(default: X)`` appended to options that do not say it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for block in textwrap.dedent(text).strip("\n").split("\n\n"):
            lines = block.splitlines()
            if any(ln.startswith((" ", "\t")) for ln in lines):
                out.append("\n".join(indent + ln for ln in lines))
            else:
                out.append(
                    textwrap.fill(
                        " ".join(lines), width, initial_indent=indent, subsequent_indent=indent
                    )
                )
        return "\n\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.required
            or action.default is argparse.SUPPRESS
            or "default" in text.lower()
        ):
            return text
        if isinstance(action, argparse._StoreTrueAction | argparse._CountAction):
            return f"{text} (default: off)"
        if action.default is None or action.default == "":
            return text  # the text must say in words what "not given" means (tests check)
        value = action.default
        if isinstance(value, Path):
            value = value.as_posix()
        return f"{text} (default: {str(value).replace('%', '%%')})"


_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj):`~?([^`]+)`")


def plain_text(doc: str) -> str:
    """A module docstring as terminal text: reST/Markdown markup (````x````, ``:func:`x```,
    ``**x**``) removed, so ``--help`` reads like prose rather than source."""
    text = _ROLE.sub(r"\1", doc)
    text = text.replace("``", "`").replace("**", "")
    return text.replace("::\n", ":\n")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with the project's help layout and one-line usage errors (exit 2)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        fmt = kwargs.get("formatter_class")
        if fmt is None or fmt in (argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        for k in ("description", "epilog"):
            if isinstance(kwargs.get(k), str):
                kwargs[k] = plain_text(kwargs[k])  # type: ignore[arg-type]
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_verbose(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``-v``/``--verbose`` (counted) for ``progress.setup_logging``: one flag, worded the same
    on every command of both towers."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="debug logging (-vv: also third-party libraries)",
    )


def help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option's help exactly as ``--help`` prints it (defaults appended, %-expanded)."""
    fmt = parser._get_formatter()
    return fmt._expand_help(action) if action.help else ""


def walk_parsers(
    parser: argparse.ArgumentParser,
) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and, recursively, every sub-command parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for sub in action.choices.values():
                if id(sub) not in seen:  # aliases share a parser
                    seen.add(id(sub))
                    yield from walk_parsers(sub)


def text_table(
    rows: list[dict[str, object]],
    columns: list[str] | None = None,
    *,
    width: int = 100,
    indent: str = "",
) -> str:
    """A plain-text table with a heading row and a rule, text left-aligned and numbers
    right-aligned; the last column wraps so no line is longer than ``width``."""
    if not rows:
        return indent + "(none)"
    cols = columns or list(rows[0])
    places = {c: _decimals([r.get(c) for r in rows]) for c in cols}
    cells = [[_cell(r.get(c, ""), places[c]) for c in cols] for r in rows]
    numeric = [all(isinstance(r.get(c), int | float) for r in rows) for c in cols]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    fixed = sum(widths[:-1]) + 2 * (len(cols) - 1) + len(indent)
    widths[-1] = max(len(cols[-1]), min(widths[-1], width - fixed))

    def line(values: list[str]) -> list[str]:
        head = "  ".join(
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values[:-1], widths[:-1], strict=True))
        )
        last = values[-1]
        if numeric[-1]:
            return [(indent + head + ("  " if head else "") + last.rjust(widths[-1])).rstrip()]
        wrapped = textwrap.wrap(last, widths[-1]) or [""]
        pad = " " * (len(head) + (2 if head else 0))
        out = [indent + head + ("  " if head else "") + wrapped[0]]
        out += [indent + pad + w for w in wrapped[1:]]
        return [o.rstrip() for o in out]

    lines = line(list(cols))
    lines.append(indent + "-" * min(width - len(indent), sum(widths) + 2 * (len(cols) - 1)))
    for row in cells:
        lines += line(row)
    return "\n".join(lines)


def _decimals(values: list[object]) -> int:
    """Decimals a column of numbers needs (at most 2), so its values line up."""
    floats = [v for v in values if isinstance(v, float)]
    need = [len(f"{v:.2f}".rstrip("0").split(".")[1]) for v in floats]
    return max(need, default=0)


def _cell(value: object, decimals: int = 1) -> str:
    if isinstance(value, float):
        return f"{value:,.{decimals}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)

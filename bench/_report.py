"""One machine-readable line per benchmark figure, collected by ``bench/run_all``.

Each benchmark keeps its own human-readable output and also calls ``emit`` once per headline
figure, which prints one line::

    BENCH {"bench": "tag", "figure": "tag points/s", "value": 2.1e6, "unit": "points/s", ...}

Why a printed line and not a file: the benchmarks run as plain scripts (``python bench/x.py``),
often by hand, and ``run_all`` runs each one as a subprocess; a line on stdout needs no shared
path or protocol and reads fine in a terminal.

The comparison is either a named alternative measured in the same run (``vs``/``vs_value``,
e.g. img2dataset, a naive loop, the ``tarfile`` ceiling) or, when there is none, the issue's
goal (``goal``). ``ratio`` is oriented so that **> 1 means geopak is better** (faster, smaller)
than the comparison / meets the goal: ``value / vs`` when higher is better, ``vs / value``
when lower is better (seconds, MiB).

Benchmarks import this module as ``from _report import emit`` after putting ``bench/`` on
``sys.path`` (``python bench/x.py`` already has it first; they insert it anyway so that other
ways of starting them work too). Tests never import ``bench/``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

PREFIX = "BENCH "


def _num(x: Any) -> float | None:
    """A finite float or None (JSON has no NaN/inf, and a ratio against 0 means nothing)."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def ratio_of(value: float | None, ref: float | None, higher_is_better: bool = True) -> float | None:
    """How many times better ``value`` is than ``ref`` (> 1 = better), or None if undefined."""
    v, r = _num(value), _num(ref)
    if v is None or r is None or v <= 0 or r <= 0:
        return None
    return v / r if higher_is_better else r / v


def emit(
    bench: str,
    figure: str,
    value: float,
    unit: str,
    *,
    vs: str = "",
    vs_value: float | None = None,
    higher_is_better: bool = True,
    goal: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    """Print one ``BENCH {json}`` line for a headline figure and return the row.

    ``vs``/``vs_value``: the named alternative and its figure in the same unit (``vs`` may be
    given without a value, e.g. "img2dataset" when it is not installed; say why in ``note``).
    ``goal``: the issue's target in the same unit (a minimum when ``higher_is_better``,
    otherwise a maximum). ``ratio`` compares with ``vs_value`` when there is one, else with
    ``goal``; ``goal_met`` says whether the goal holds.
    """
    v, vv, g = _num(value), _num(vs_value), _num(goal)
    if vv is not None:
        ratio = ratio_of(v, vv, higher_is_better)
    else:
        ratio = ratio_of(v, g, higher_is_better)
    goal_met = None
    if g is not None and v is not None:
        goal_met = v >= g if higher_is_better else v <= g
    row = {
        "bench": bench,
        "figure": figure,
        "value": v,
        "unit": unit,
        "vs": vs,
        "vs_value": vv,
        "ratio": ratio,
        "goal": g,
        "goal_met": goal_met,
        "higher_is_better": higher_is_better,
        "note": note,
    }
    print(PREFIX + json.dumps(row), flush=True)
    sys.stdout.flush()
    return row


def parse_line(line: str) -> dict[str, Any] | None:
    """The row of a ``BENCH {json}`` line, or None for any other line (or a broken one)."""
    if not line.startswith(PREFIX):
        return None
    try:
        row = json.loads(line[len(PREFIX) :])
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and "figure" in row else None

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


def machine_facts(libraries: tuple[str, ...] = ()) -> str:
    """One line of the facts a reader needs to weigh a figure: CPU model, cores (and how many
    this process may use), RAM, load average, Python and the named libraries' versions, and
    the commit. Printed with every table: on a shared machine absolute figures drift, and only
    ratios from alternated runs on the same line are comparable."""
    import os
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    cpu = platform.processor() or platform.machine()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.lower().startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    mem = ""
    try:
        kb = next(
            int(ln.split()[1])
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal:")
        )
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    libs = []
    for name in libraries:
        try:
            libs.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            libs.append(f"{name} not installed")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return (
        f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable){mem}, load average {load}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}"
        + (", " + ", ".join(libs) if libs else "")
        + (f"; commit {commit}" if commit else "")
    )


def median(values: list[float]) -> float:
    """The median (the middle of the sorted values, the mean of the two middle ones)."""
    import statistics

    return float(statistics.median(values))


def alternated(runs: dict[str, Any], rounds: int) -> dict[str, list[Any]]:
    """Call each of ``runs`` (name -> no-argument callable) once per round, rotating which goes
    first, and return every result per name in round order.

    Why: on a shared machine the load drifts over minutes; alternating the contenders in each
    round (and reporting medians, not the best run) keeps a slow spell from landing on one of
    them only. The callables return their own figure (seconds, a dict, ...)."""
    names = list(runs)
    out: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(max(1, int(rounds))):
        shift = r % len(names) if names else 0
        for n in names[shift:] + names[:shift]:
            out[n].append(runs[n]())
    return out

"""One machine-readable line per benchmark figure, collected by ``bench/run_all``.

Each benchmark keeps its own human-readable output and also calls ``emit`` for every headline
figure: ``BENCH {"bench": ..., "figure": ..., "value": ..., "unit": ..., "vs": ..., ...}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(bench: str, figure: str, value: float, unit: str, *, vs: str = "", vs_value: float | None = None, higher_is_better: bool = True, goal: float | None = None, note: str = "") -> dict[str, Any]:
    ratio = None
    if vs_value:
        ratio = value / vs_value if higher_is_better else vs_value / value
    row = {"bench": bench, "figure": figure, "value": value, "unit": unit, "vs": vs, "vs_value": vs_value, "ratio": ratio, "goal": goal, "higher_is_better": higher_is_better, "note": note}
    print("BENCH " + json.dumps(row), flush=True)
    sys.stdout.flush()
    return row

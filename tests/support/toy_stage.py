"""A small real stage used by the runner tests: run as a subprocess and killed mid-way.

Usage: python tests/support/toy_stage.py WORK N_UNITS [DELAY_S] [MULTIPLIER]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pyarrow as pa

from geopak_core.io import atomic_write_parquet
from geopak_core.progress import setup_logging
from geopak_data.config import load_config
from geopak_data.runner import StageContext, StageResult, run_stage


def main() -> None:
    work = Path(sys.argv[1])
    n_units = int(sys.argv[2])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    mult = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    setup_logging(0)
    cfg = load_config(None, {"shard.seed": mult})

    def do(ctx: StageContext) -> StageResult:
        parts = ctx.part_store("units", ctx.config_hash)
        units = [f"u{i:05d}" for i in range(n_units)]
        for u in units:
            if parts.has(u):
                continue
            i = int(u[1:])
            rows = list(range(i * 10, i * 10 + 10))
            parts.write(u, pa.table({"unit": [u] * 10, "value": [r * mult for r in rows]}))
            time.sleep(delay)
        table = parts.read_all(units)
        out = ctx.stage_dir / "records.parquet"
        atomic_write_parquet(out, table)
        return StageResult(counts={"records": table.num_rows}, outputs=[out])

    outcome = run_stage(work=work, name="toy", config=cfg, sections=["shard"], inputs={}, fn=do)
    print(outcome.summary)


if __name__ == "__main__":
    main()

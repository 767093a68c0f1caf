"""Benchmark the GEOPAK network on CPU: parameters, latency per image, batched throughput.

    .venv/bin/python bench/bench_model.py            # tiny and base, a few repeats each
    .venv/bin/python bench/bench_model.py --quick    # well under a minute
    .venv/bin/python bench/bench_model.py --presets tiny --threads 1 --json

For each preset it prints the parameter count (total, and trainable in phases 0, 1 and 2),
end-to-end latency of one image (both encoders + heads + mixture of hypotheses, what
``GeopakPredictor`` runs), the latency of the heads alone on cached features (what training
from the embedding cache costs), and images/s at a larger batch. Encoders are randomly
initialised: speed does not depend on the weights. A benchmark, not a test: it prints
figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geopak_core.regions import PAKISTAN  # noqa: E402
from geopak_model.cells import CellTable  # noqa: E402
from geopak_model.config import RANDOM_INIT_OVERRIDES, load_model_config  # noqa: E402
from geopak_model.inference import predict_batch, predict_features  # noqa: E402
from geopak_model.model import build_model  # noqa: E402


def synthetic_cells(n: int, seed: int = 0) -> CellTable:
    """n cells spread over the seven provinces (a realistic head size for the real data)."""
    rng = np.random.default_rng(seed)
    prov = np.arange(n) % PAKISTAN.n
    return CellTable(
        cell_id=np.arange(n),
        province_id=prov,
        center_lat=rng.uniform(24.5, 36.5, n),
        center_lon=rng.uniform(61.5, 77.0, n),
        radius_km=rng.uniform(2, 50, n),
    )


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (allocations, oneDNN kernel selection)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_preset(preset: str, n_cells: int, repeats: int, batch: int) -> dict:
    torch.manual_seed(0)
    cfg = load_model_config(preset, **RANDOM_INIT_OVERRIDES)  # speed, not accuracy: no downloads
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random encoders on purpose
        model = build_model(cfg, synthetic_cells(n_cells))
    build_s = time.perf_counter() - t0
    row: dict = {
        "preset": preset,
        "cells": n_cells,
        "build_s": build_s,
        "params_total": model.num_parameters(),
    }
    for phase in (0, 1, 2):
        model.set_phase(phase)
        row[f"trainable_phase{phase}"] = model.num_parameters(trainable_only=True)
    model.set_phase(1)
    model.eval()

    c, s = cfg.clip_image_size, cfg.places_image_size
    one = (torch.randn(1, 3, c, c), torch.randn(1, 3, s, s))
    many = (torch.randn(batch, 3, c, c), torch.randn(batch, 3, s, s))
    lat1 = timed(lambda: predict_batch(model, *one), repeats)
    row["latency_ms"] = 1000 * statistics.median(lat1)
    with torch.inference_mode():
        feats = model.encode(*many)
    heads = timed(lambda: predict_features(model, *feats), repeats)
    row["heads_ms_per_img"] = 1000 * statistics.median(heads) / batch
    tput = timed(lambda: predict_batch(model, *many), max(1, repeats // 2))
    row["batch"] = batch
    row["img_per_s"] = batch / statistics.median(tput)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats and smaller batches (well under a minute)",
    )
    ap.add_argument(
        "--cells", type=int, default=700, help="geocells in the synthetic table (default 700)"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    ap.add_argument(
        "--json", action="store_true", help="print one JSON object per preset instead of a table"
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for preset in args.presets:
        small = preset == "tiny"
        repeats = (5 if small else 1) if args.quick else (20 if small else 5)
        batch = (16 if small else 4) if args.quick else (64 if small else 16)
        rows.append(bench_preset(preset, args.cells, repeats, batch))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        report(rows)
        return 0
    print(
        f"GEOPAK model benchmark - CPU, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {args.cells} cells{' (quick)' if args.quick else ''}"
    )
    head = (
        f"{'preset':<6} {'params':>9} {'train p0':>9} {'train p1':>9} {'train p2':>9} "
        f"{'build s':>8} {'1 img ms':>9} {'heads ms/img':>13} {'batch':>6} {'img/s':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['preset']:<6} {r['params_total'] / 1e6:>8.2f}M "
            f"{r['trainable_phase0'] / 1e6:>8.2f}M {r['trainable_phase1'] / 1e6:>8.2f}M "
            f"{r['trainable_phase2'] / 1e6:>8.2f}M {r['build_s']:>8.2f} {r['latency_ms']:>9.1f} "
            f"{r['heads_ms_per_img']:>13.3f} {r['batch']:>6d} {r['img_per_s']:>8.1f}"
        )
    print("phase 2 unfreezes the last unfreeze_last_n blocks (preset default) of each encoder.")
    report(rows)
    return 0


def report(rows: list[dict]) -> None:
    """The headline figures as BENCH lines for ``bench/run_all``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter
    from _report import emit

    threads = torch.get_num_threads()
    for r in rows:
        p = r["preset"]
        trainable = ", ".join(f"p{i} {r[f'trainable_phase{i}'] / 1e6:.2f}M" for i in (0, 1, 2))
        emit(
            "model",
            f"{p}: parameters",
            r["params_total"],
            "params",
            higher_is_better=False,
            note=f"trainable {trainable}; {r['cells']} cells",
        )
        emit(
            "model",
            f"{p}: CPU latency, 1 image",
            r["latency_ms"],
            "ms",
            higher_is_better=False,
            note=f"encoders + heads + mixture; {threads} threads",
        )
        emit(
            "model",
            f"{p}: CPU throughput, batch {r['batch']}",
            r["img_per_s"],
            "img/s",
            vs="batch of 1",
            vs_value=1000.0 / r["latency_ms"],
            note=f"heads alone {r['heads_ms_per_img']:.3f} ms/img",
        )


if __name__ == "__main__":
    sys.exit(main())

"""``geopak-eval``: end-to-end metrics of a checkpoint on one split, beside both baselines.

    geopak-eval --shards DIR --checkpoint CKPT [--split test] [--json] [--plots DIR]
                [--aggregate mode|best|mean] [--refine] [--build-index] [--calibrate]

Prints a readable table (or, with ``--json``, one JSON object with the contract's keys:
n, median_km, mean_km, p90_km, acc_1km/25km/200km/750km, province_acc,
province_acc_by_province, province_ece, cell_top1, cell_top5, ``baselines`` with the same
keys, and ``by_aggregate``: mean / best / mode (/ refine) on the same images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geopak_core.clihelp import add_verbose
from geopak_core.progress import setup_logging

from .predict_cli import add_aggregate_args, chosen_aggregate
from .train_cli import (
    _guarded,
    _loader_workers,
    _Parser,
    _positive_int,
    _shards_input,
    _skip_bad_shards,
)

PROG = "geopak-eval"


def build_parser() -> argparse.ArgumentParser:
    """The ``geopak-eval`` argument parser (separate from ``main`` so docs and tests can read it)."""
    p = _Parser(
        prog=PROG,
        description=(
            "Evaluate a GEOPAK checkpoint end to end on a split of a shard folder: every image "
            "goes through the predictor "
            "(mixture of hypotheses) and its final (lat, lon) is compared with the true location. The two constant "
            "baselines (the training set's densest cell, its geographic median) are scored on the same images."
        ),
        epilog="Checkpoints are selected on val; report figures on test (the default split).",
    )
    _shards_input(p)
    p.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="CKPT",
        help="a geopak-train checkpoint (best.pt)",
    )
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="test",
        help="split to evaluate",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument(
        "--features",
        type=Path,
        default=None,
        metavar="FEATS",
        help="use an embedding cache made with this checkpoint's encoders (default: encode the images)",
    )
    p.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write error CDF, per-province accuracy and confusion PNGs here (default: no plots)",
    )
    add_aggregate_args(
        p,
        "aggregation behind the headline figures (default mode: the heaviest geographic group "
        "of hypotheses; best: the most probable one; mean: the seed's weighted mean). All three are "
        "reported side by side under by_aggregate either way",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="headline figures with retrieval refinement (mode + nearest training photo in the chosen "
        "cell when closer than the val-fitted threshold); needs the index (--build-index)",
    )
    p.add_argument(
        "--build-index",
        action="store_true",
        help="first build the retrieval index of the train split next to CKPT (CKPT stem + "
        ".retrieval.npz) and fit its threshold on val; an existing index is otherwise reused",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="first fit the province calibration on val and store it in CKPT (training does this "
        "itself; for checkpoints made before it did)",
    )
    p.add_argument(
        "--boundaries",
        metavar="FILE",
        default=None,
        help="province polygons that keep answers inside their province (default: $GEOPAK_BOUNDARIES "
        "or the boundaries cache when present; never downloaded here)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="N", help="images per forward pass"
    )
    _loader_workers(p)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available)")
    add_verbose(p)
    _skip_bad_shards(p)
    return p


def _run(args: argparse.Namespace) -> int:

    from .evaluate import evaluate_checkpoint
    from .metrics import format_aggregate_table, format_table

    result = evaluate_checkpoint(
        aggregate=chosen_aggregate(args),
        refine=args.refine,
        build_index=args.build_index,
        calibrate=args.calibrate,
        boundaries=args.boundaries,
        shards=args.shards,
        checkpoint=args.checkpoint,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        features=args.features,
        plots_dir=args.plots,
        skip_bad_shards=args.skip_bad_shards,
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        skipped = result.get("skipped_samples") or 0
        note = f"; {skipped} samples in bad shards skipped" if skipped else ""
        print(f"{args.checkpoint} on {args.split} of {args.shards} ({result['n']} images{note})")
        print(format_table(result, result.get("baselines")))
        print(f"\naggregations on the same images (headline: {result['inference']['aggregate']}):")
        print(format_aggregate_table(result["by_aggregate"]))
        if args.verbose:
            from .weights import describe

            print(f"encoders: {describe(result.get('encoders') or {})}")
        for p in result.get("plots", []):
            print(f"wrote {p}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point: parse, set up logging, run; returns the exit status (2 on user error)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return _guarded(_run, args, PROG)


if __name__ == "__main__":
    sys.exit(main())

"""``geopak-predict IMAGE... --checkpoint CKPT [--json] [--map out.png] [--aggregate mode|best|mean] [--refine]``.

Prints one answer per image (a readable line, or with ``--json`` one JSON object per line
with the contract's keys) and optionally draws a map: each answer, the hypotheses behind it
(sized by probability) and, when a boundaries file is available, the province polygons. A
missing polygon file never fails a prediction: the map then shows points on lat/lon axes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from geopak_core.clihelp import Parser, add_verbose
from geopak_core.errors import GeopakError, not_a_file, os_error_line

log = logging.getLogger("geopak_model.predict")


def build_parser() -> argparse.ArgumentParser:
    """The ``geopak-predict`` argument parser (separate from ``main`` so docs and tests can read it)."""
    p = Parser(
        prog="geopak-predict",
        description="Estimate where in Pakistan photos were taken, with a GEOPAK checkpoint. "
        "The model proposes top province x top cell hypotheses; the answer lies inside the heaviest "
        "geographic group of them (--aggregate mode, the default), or is the single best one (best) or "
        "their weighted mean (mean, the seed's rule, which can land between two far-apart hypotheses). "
        "confidence is the calibrated probability that the reported province is right.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, ...)")
    p.add_argument(
        "--checkpoint",
        "-c",
        required=True,
        metavar="CKPT",
        help="checkpoint written by geopak-train (best.pt / last.pt)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per image: image, province, province_id, lat, lon, confidence, cell_id, hypotheses",
    )
    p.add_argument(
        "--map",
        metavar="OUT.png",
        type=Path,
        default=None,
        help="also draw the answers and their hypotheses on a map of the provinces (default: no map)",
    )
    p.add_argument(
        "--boundaries",
        metavar="FILE",
        default=None,
        help="province polygons for --map and for keeping answers inside their province (default: "
        "$GEOPAK_BOUNDARIES or the boundaries cache; never downloaded here)",
    )
    add_aggregate_args(
        p,
        "how hypotheses become one answer: mode (default: weighted spherical mean of the heaviest "
        "group of nearby hypotheses, inside its province), best (the most probable hypothesis), mean "
        "(weighted mean of all, kept for comparison)",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="retrieval refinement: inside the chosen cell, answer with the nearest training photo's "
        "location when it is similar enough (needs CKPT's index, see geopak-eval --build-index)",
    )
    p.add_argument(
        "--top-provinces",
        type=int,
        default=None,
        metavar="P",
        help="provinces considered per image (default: the checkpoint's, 2)",
    )
    p.add_argument(
        "--top-cells",
        type=int,
        default=None,
        metavar="K",
        help="cells considered per province (default: the checkpoint's, 5)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        metavar="N",
        help="images per forward pass",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors are one line and exit 2, Ctrl-C exits 130."""
    args = build_parser().parse_args(argv)
    from geopak_core.progress import setup_logging

    setup_logging(args.verbose)
    try:
        return _run(args)
    except GeopakError as exc:
        print(f"geopak-predict: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"geopak-predict: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geopak-predict: interrupted", file=sys.stderr)
        return 130


def add_aggregate_args(p: argparse.ArgumentParser, aggregate_help: str) -> None:
    """``--aggregate`` and its alias ``--best``, shared by geopak-predict and geopak-eval."""
    p.add_argument(
        "--aggregate", choices=("mode", "best", "mean"), default=None, help=aggregate_help
    )
    p.add_argument("--best", action="store_true", help="alias of --aggregate best")


def chosen_aggregate(args: argparse.Namespace) -> str:
    """The aggregation the user asked for (``mode`` unless told otherwise)."""
    if args.best and args.aggregate not in (None, "best"):
        raise GeopakError(f"--best contradicts --aggregate {args.aggregate}")
    return "best" if args.best else (args.aggregate or "mode")


def _run(args: argparse.Namespace) -> int:
    for name, value in (
        ("--top-provinces", args.top_provinces),
        ("--top-cells", args.top_cells),
        ("--batch-size", args.batch_size),
    ):
        if value is not None and value < 1:
            raise GeopakError(f"{name} must be >= 1, got {value}")
    for img in args.images:  # fail before the (slow) model load
        if not Path(img).is_file():
            raise GeopakError(not_a_file(img, "image"))
    if args.map is not None and args.map.suffix.lower() not in (
        ".png",
        ".jpg",
        ".jpeg",
        ".pdf",
        ".svg",
    ):
        raise GeopakError(f"--map {args.map}: use a .png, .jpg, .pdf or .svg file name")

    from geopak_core.progress import progress

    from .predictor import GeopakPredictor  # torch & open_clip: imported after the cheap checks

    predictor = GeopakPredictor(
        args.checkpoint,
        device=args.device,
        aggregate=chosen_aggregate(args),
        boundaries=args.boundaries,
        refine=args.refine,
        top_provinces=args.top_provinces,
        top_cells=args.top_cells,
    )
    log.debug(
        "loaded %s (%s preset, %d cells, mode %s)",
        args.checkpoint,
        predictor.model.config.preset,
        predictor.model.cells.num_cells,
        predictor.aggregate,
    )
    if args.verbose:
        from .weights import describe

        print(f"encoders: {describe(predictor.model.encoder_provenance)}", file=sys.stderr)
    if len(args.images) >= 8:  # a bar for a handful of images is only noise
        with progress(total=len(args.images), desc="predict", unit="img") as bar:
            results = predictor.predict_many(
                args.images, batch_size=args.batch_size, progress=bar.update
            )
    else:
        results = predictor.predict_many(args.images, batch_size=args.batch_size)
    for img, r in zip(args.images, results, strict=True):
        r = {"image": str(img), **r}
        if args.json:
            r["encoders"] = predictor.model.encoder_provenance
            print(json.dumps(r))
        else:
            print(_format(r))
    if args.map is not None:
        draw_map(
            list(zip(args.images, results, strict=True)),
            args.map,
            boundaries=args.boundaries,
            country=predictor.model.cells.regions.country or "PAK",
        )
        if not args.json:
            print(f"map written to {args.map}")
    return 0


def _format(r: dict[str, Any]) -> str:
    lines = [
        f"{r['image']}: {r['province']} ({r['confidence']:.2f})  lat {r['lat']:.5f}, lon {r['lon']:.5f}"
    ]
    for h in r["hypotheses"][:3]:
        lines.append(
            f"    {h['probability']:.3f}  {h['province']}, cell {h['cell']}: {h['lat']:.4f}, {h['lon']:.4f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- map


def _polygons(explicit: str | None, country: str = "PAK") -> Any:
    """Region polygons of the checkpoint's country as a GeoDataFrame, or None. Only local
    files: the env var, an explicit path, or an already verified cache; predicting must never
    wait on a download."""
    try:
        from geopak_core import boundaries as gb
    except ImportError:
        gb = None
    path: str | Path | None = explicit or os.environ.get("GEOPAK_BOUNDARIES", "").strip() or None
    if path is None and gb is not None:
        try:
            cached = gb.cached_path(gb.country_manifest(country))
            path = cached if cached.is_file() else None
        except Exception:  # no manifest in an installed copy, unwritable cache dir, ...
            path = None
    if path is None:
        log.info("no province boundaries file available; drawing points only")
        return None
    try:
        if gb is not None:
            return gb.load_boundaries(path, country=country)
        import geopandas as gpd

        return gpd.read_file(path)
    except Exception as exc:  # the map is a convenience: degrade, never fail the prediction
        log.warning("cannot read province boundaries %s (%s); drawing points only", path, exc)
        return None


def draw_map(
    items: list[tuple[Any, dict[str, Any]]],
    out: Path,
    boundaries: str | None = None,
    country: str = "PAK",
) -> Path:
    """Draw answers (stars) and their hypotheses (circles, area ∝ probability)."""
    from matplotlib.figure import Figure

    from geopak_core.io import atomic_path

    fig = Figure(figsize=(8, 8), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    gdf = _polygons(boundaries, country)
    if gdf is not None:
        gdf.boundary.plot(ax=ax, color="0.45", linewidth=0.7)
        if "province" in gdf.columns:
            for _, row in gdf.iterrows():
                pt = row.geometry.representative_point()
                ax.annotate(
                    str(row["province"]), (pt.x, pt.y), fontsize=7, color="0.4", ha="center"
                )
    colors = [
        "tab:red",
        "tab:blue",
        "tab:green",
        "tab:purple",
        "tab:orange",
        "tab:brown",
        "tab:pink",
        "tab:olive",
        "tab:cyan",
    ]
    for i, (img, r) in enumerate(items):
        color = colors[i % len(colors)]
        hyps = r["hypotheses"]
        if hyps:
            top = max(h["probability"] for h in hyps) or 1.0
            ax.scatter(
                [h["lon"] for h in hyps],
                [h["lat"] for h in hyps],
                s=[20 + 280 * h["probability"] / top for h in hyps],
                facecolors="none",
                edgecolors=color,
                linewidths=1.0,
                alpha=0.8,
            )
        ax.scatter(
            [r["lon"]],
            [r["lat"]],
            marker="*",
            s=260,
            color=color,
            edgecolors="black",
            linewidths=0.6,
            zorder=5,
            label=f"{Path(str(img)).name}: {r['province']} ({r['confidence']:.2f})",
        )
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    mid_lat = sum(r["lat"] for _, r in items) / max(1, len(items)) if items else 30.0
    ax.set_aspect(
        1.0 / math.cos(math.radians(mid_lat)), adjustable="datalim"
    )  # km-true at mid latitude
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("GEOPAK: answers (★) and hypotheses (○, size ∝ probability)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=out.suffix) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".").replace("jpg", "jpeg"), bbox_inches="tight")
    return out


if __name__ == "__main__":
    sys.exit(main())

"""``geopak-data demo``: the whole GEOPAK pipeline offline, on an embedded synthetic source.

What runs is the real thing, end to end:

1. a few hundred deterministic synthetic photos (``synthetic.py``) at locations sampled around
   real Pakistani places, written as a YFCC100M ``yfcc100m_dataset`` metadata file, plus a
   handful of deliberately bad records (HTML served as JPEG, a corrupt file, a 404, a tiny
   image, a flat image, an exact duplicate, coarse accuracy, points in India and the sea);
2. a loopback image server (``imageserver.py``) that serves them;
3. ``crawl yfcc`` -> ``filter`` -> ``tag`` -> ``cluster`` -> ``shard`` (the same stage functions as
   the commands, each resumable);
4. ``geopak-train`` (tiny preset, CPU) on the shards, ``geopak-eval`` on ``test`` next to the
   baselines, ``geopak-predict`` on a few held-out test images;
5. a report: ``W/report/report.md`` with the stage table, the metrics table and a map PNG.

Run it again and finished stages are skipped; kill it and it resumes.

``--country ISO3`` runs the same demo for another country when its first-level boundaries
are on this machine (``--boundaries FILE``, ``GEOPAK_BOUNDARIES`` or the boundaries cache):
the synthetic photos are placed around that country's GeoNames cities (and a point inside
every region without one), and the deliberately bad records are left out (they are
Pakistan's). The default demo is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from geopak_core.clihelp import add_verbose
from geopak_core.errors import GeopakError
from geopak_core.progress import log

REPO_PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
PACKAGED_DEMO_CONFIG = (
    Path(__file__).resolve().parent / "data" / "demo.toml"
)  # for non-editable installs
DEFAULT_WORK = Path("demo-work")

# (kind, photo id, lat, lon, accuracy): the records the filters and tagger must catch.
_BAD_RECORDS = [
    ("html", "9000000001", 24.87, 67.03, 16),
    ("corrupt", "9000000002", 31.55, 74.34, 16),
    ("missing", "9000000003", 33.70, 73.05, 16),
    ("tiny", "9000000004", 25.40, 68.36, 16),
    ("flat", "9000000005", 30.19, 67.00, 16),
    ("duplicate", "9000000006", 24.86, 67.01, 16),
    ("coarse", "9000000007", 32.00, 72.50, 3),
    ("india", "9000000008", 31.634, 74.872, 16),  # Amritsar, India
    ("sea", "9000000009", 23.90, 64.50, 16),  # Arabian Sea
]


def generate_source(
    folder: Path,
    *,
    n_photos: int,
    seed: int,
    base_url: str,
    locations: list[dict[str, Any]] | None = None,
    bad_records: bool = True,
) -> Path:
    """Write the synthetic photos and their YFCC100M-format metadata; returns the metadata path.

    ``locations`` (dicts with ``lat``, ``lon``, ``place`` and optionally ``palette``) replace
    the Pakistani sample; ``bad_records=False`` leaves out the records the filters must catch."""
    import io

    import numpy as np
    from PIL import Image

    from geopak_core.io import atomic_write_bytes

    from .sources.yfcc import write_yfcc_tsv
    from .synthetic import jpeg_bytes, render_photo, sample_locations

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    if locations is None:
        locations = sample_locations(n_photos, seed=seed)
    rng = np.random.default_rng(seed + 1)
    owners = [f"demo_user_{i:02d}" for i in range(40)]
    rows: list[dict[str, Any]] = []
    first_bytes = b""
    for i, loc in enumerate(locations):
        pid = str(8_000_000_000 + i)
        path = images / f"{pid}.jpg"
        data = jpeg_bytes(
            render_photo(
                loc["lat"], loc["lon"], seed=seed * 100_003 + i, palette=loc.get("palette")
            )
        )
        if i == 0:
            first_bytes = data
        if not path.exists():
            atomic_write_bytes(path, data)
        day = int(rng.integers(0, 3000))
        rows.append(
            _row(
                pid,
                loc["lat"],
                loc["lon"],
                16,
                base_url,
                owners[int(rng.integers(0, len(owners)))],
                day,
                f"{loc['place']} view {i}",
            )
        )
    for kind, pid, lat, lon, acc in _BAD_RECORDS if bad_records else []:
        path = images / f"{pid}.jpg"
        if kind == "html":
            data = b"<!DOCTYPE html><html><head><title>Photo not found</title></head><body>Moved</body></html>"
        elif kind == "corrupt":
            data = first_bytes[: len(first_bytes) // 3]
        elif kind == "tiny":
            data = jpeg_bytes(render_photo(lat, lon, seed=7, size=(48, 36)))
        elif kind == "flat":
            buf = io.BytesIO()
            Image.new("RGB", (192, 144), (128, 128, 128)).save(buf, format="JPEG")
            data = buf.getvalue()
        elif kind == "duplicate":
            data = first_bytes
        elif kind == "missing":
            data = b""
        else:
            data = jpeg_bytes(render_photo(lat, lon, seed=int(pid) % 1000))
        if data and not path.exists():
            atomic_write_bytes(path, data)
        rows.append(_row(pid, lat, lon, acc, base_url, "demo_user_bad", 100, f"bad record: {kind}"))
    meta = folder / "yfcc100m_dataset.bz2"
    write_yfcc_tsv(meta, rows)
    return meta


def _row(
    pid: str, lat: float, lon: float, acc: int, base_url: str, owner: str, day: int, title: str
) -> dict[str, Any]:
    import datetime as dt
    import zlib

    taken = dt.datetime(2008, 1, 1) + dt.timedelta(days=day, hours=10)
    return {
        "photoid": pid,
        "uid": f"{zlib.crc32(owner.encode()) % 10**8}@N00",
        "unickname": owner,
        "datetaken": taken.strftime("%Y-%m-%d %H:%M:%S.0"),
        "dateuploaded": str(int(taken.timestamp())),
        "title": title,
        "usertags": "pakistan demo",
        "longitude": round(lon, 6),
        "latitude": round(lat, 6),
        "accuracy": acc,
        "pageurl": f"http://www.flickr.com/photos/{owner}/{pid}/",
        "downloadurl": f"{base_url}/i/{pid}.jpg",
        "licensename": "Attribution-ShareAlike License",
        "licenseurl": "http://creativecommons.org/licenses/by-sa/2.0/",
        "marker": 0,
    }


def _serve(folder: Path) -> tuple[str, Any]:
    """Start the loopback image host, on the same port as last time when possible so the
    metadata (which holds the URLs) stays identical and finished stages stay finished."""
    from .imageserver import start_image_server

    port_file = folder / "port"
    port = int(port_file.read_text()) if port_file.exists() else 0
    try:
        base, stop = start_image_server(folder / "images", port=port, fixtures=False)
    except OSError:
        base, stop = start_image_server(folder / "images", port=0, fixtures=False)
    folder.mkdir(parents=True, exist_ok=True)
    port_file.write_text(base.rsplit(":", 1)[1])
    return base, stop


def _source_stamp(
    n_photos: int, seed: int, base_url: str, locations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    stamp: dict[str, Any] = {
        "n_photos": n_photos,
        "seed": seed,
        "base_url": base_url,
        "bad": _BAD_RECORDS,
    }
    if locations is not None:  # another country: its photo locations decide the source
        from geopak_core.hashing import stable_u64

        stamp["bad"] = []
        stamp["locations"] = stable_u64(json.dumps(locations, sort_keys=True, default=str))
    return stamp


def _ensure_source(
    source: Path,
    *,
    n_photos: int,
    seed: int,
    base_url: str,
    locations: list[dict[str, Any]] | None = None,
) -> Path:
    """The synthetic source, generated once: a rerun with the same photos, seed and server
    URL finds its stamp and renders nothing (the photos are deterministic anyway)."""
    from geopak_core.io import atomic_write_json, read_json

    meta = source / "yfcc100m_dataset.bz2"
    stamp_path = source / "source.json"
    stamp = json.loads(json.dumps(_source_stamp(n_photos, seed, base_url, locations)))
    if meta.is_file() and read_json(stamp_path, default=None) == stamp:
        log.info("demo: synthetic source already generated (%s)", source)
        return meta
    log.info(
        "demo: generating %d synthetic photos + %d bad records at %s",
        n_photos,
        len(_BAD_RECORDS),
        base_url,
    )
    meta = generate_source(
        source,
        n_photos=n_photos,
        seed=seed,
        base_url=base_url,
        locations=locations,
        bad_records=locations is None,
    )
    atomic_write_json(stamp_path, stamp)
    return meta


def run_demo(
    *,
    work: Path = DEFAULT_WORK,
    n_photos: int = 600,
    seed: int = 0,
    epochs: int = 12,
    config_path: Path | None = None,
    train: bool = True,
    country: str | None = None,
    boundaries: str | Path | None = None,
) -> dict[str, Any]:
    """Run the offline demo end to end; returns the paths and figures of the report.

    Every step is resumable and a finished one is skipped: a rerun with the same settings
    renders no photo, trains and evaluates nothing and leaves the report as it is.
    ``country`` (ISO3, default Pakistan) and ``boundaries`` pick another country (see the
    module docstring).
    """
    from .cluster import run_cluster
    from .crawl import run_crawl
    from .filter import run_filter
    from .pipeline import ReportedOutcomes, summary_table
    from .runner import work_config
    from .shard import run_shard
    from .tag import run_tag

    work = Path(work)
    started = time.time()
    if config_path is None:
        repo_config = REPO_PIPELINES / "demo.toml"
        config_path = repo_config if repo_config.exists() else PACKAGED_DEMO_CONFIG
    config_path = Path(config_path)
    if not config_path.is_file():
        raise GeopakError(f"demo config not found: {config_path}")
    if boundaries is not None and not Path(boundaries).is_file():
        raise GeopakError(f"boundaries file not found: {boundaries}")
    extra: dict[str, Any] = {}
    locations = None
    if (country and country.upper() != "PAK") or boundaries:
        extra, locations = _country_setup(country or "PAK", boundaries, n_photos, seed)
    source = work / "source"
    base_url, stop = _serve(source)
    try:
        meta = _ensure_source(
            source, n_photos=n_photos, seed=seed, base_url=base_url, locations=locations
        )
        overrides: dict[str, Any] = {
            "crawl.yfcc.metadata": str(meta.resolve()),
            "crawl.sources": ["yfcc"],
            "shard.synthetic": True,  # whatever the config says: these photos are generated
            **extra,
        }
        if boundaries is not None:
            overrides["region.boundaries"] = str(Path(boundaries).resolve())
        cfg = work_config(work, config_path, overrides=overrides)
        outcomes = ReportedOutcomes()
        outcomes.append(run_crawl(source="yfcc", work=work, config=cfg, allow_private_hosts=True))
    finally:
        stop()
    outcomes.append(run_filter(work=work, config=cfg))
    outcomes.append(run_tag(work=work, config=cfg))
    outcomes.append(run_cluster(work=work, config=cfg))
    shards = work / "shards"
    outcomes.append(run_shard(work=work, config=cfg, out=shards))
    table = summary_table(outcomes)
    print(table)
    report: dict[str, Any] = {"work": str(work), "shards": str(shards), "stages": table}
    if train:
        report = _report_stage(
            work=work,
            shards=shards,
            cfg=cfg,
            report=report,
            epochs=epochs,
            seed=seed,
            started=started,
        )
    report["seconds"] = round(time.time() - started, 1)
    return report


def _report_stage(
    *,
    work: Path,
    shards: Path,
    cfg: Any,
    report: dict[str, Any],
    epochs: int,
    seed: int,
    started: float,
) -> dict[str, Any]:
    """Train, evaluate and write the report as one runner stage (``demo``): done once for
    the same shards and settings, then skipped with nothing rewritten."""
    from geopak_core.io import read_json

    from .runner import StageContext, StageResult, run_stage

    out = work / "report"

    def _do(ctx: StageContext) -> StageResult:
        from .country import boundaries_source

        report.update(
            _train_and_evaluate(
                work=work,
                shards=shards,
                epochs=epochs,
                seed=seed,
                boundaries=boundaries_source(cfg),
            )
        )
        report["seconds"] = round(time.time() - started, 1)
        written = _write_report(work, report)
        m = report["metrics"]
        return StageResult(
            counts={"test_photos": int(m["n"])},
            outputs=[*written, Path(report["checkpoint"])],
            summary=f"demo: test median {m['median_km']:.0f} km, province accuracy "
            f"{100 * m['province_acc']:.0f} %; report {out / 'report.md'}",
        )

    outcome = run_stage(
        work=work,
        name="demo",
        config=cfg,
        sections=[],
        inputs={"index": shards / "index.parquet", "cells": shards / "cells.parquet"},
        fn=_do,
        extra={"epochs": epochs, "seed": seed},
    )
    log.info(outcome.summary)
    if outcome.skipped:
        report = {**(read_json(out / "report.json", default=None) or {}), **report}
    return report


def _country_setup(
    country: str, boundaries: str | Path | None, n_photos: int, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Config overrides and photo locations for a demo of ``country`` (polygons must be local:
    the demo never downloads)."""
    from geopak_core.boundaries import boundaries_available, check_country, load_boundaries

    from .synthetic import country_locations

    iso3 = check_country(country)
    if not boundaries_available(boundaries, country=iso3):
        raise GeopakError(
            f"demo --country {iso3}: no boundaries for {iso3} on this machine; pass --boundaries FILE "
            f"(a GeoJSON/GeoPackage/Shapefile of its ADM1 units) or run `geopak-data tag --country {iso3}` "
            "once online to cache them"
        )
    overrides: dict[str, Any] = {"region.country": iso3}
    if boundaries:
        overrides["region.boundaries"] = str(Path(boundaries).resolve())
    if iso3 == "PAK":
        return overrides, None
    polys = load_boundaries(boundaries, country=iso3)
    locations = country_locations(polys, iso3, n_photos, seed=seed)
    if len(locations) < n_photos // 2:
        raise GeopakError(
            f"demo --country {iso3}: could place only {len(locations)} of {n_photos} photos inside its polygons"
        )
    return overrides, locations


def _train_and_evaluate(
    *, work: Path, shards: Path, epochs: int, seed: int, boundaries: str | None = None
) -> dict[str, Any]:
    """Embed once with the frozen tiny encoders, train phase 0 then phase 1 from the cache,
    evaluate end to end from pixels on ``test`` next to the baselines, predict a few photos.
    ``boundaries``: the run's polygon file (another country's), for the answers' province
    check and the map; None: the default ones."""
    import torch

    from geopak_core.geo import haversine_km
    from geopak_model.embed import embed
    from geopak_model.evaluate import evaluate_checkpoint
    from geopak_model.metrics import format_aggregate_table, format_table
    from geopak_model.predictor import GeopakPredictor
    from geopak_model.train import train

    from .maps import plot_map

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    runs = work / "runs"
    feats = work / "features"
    common = dict(shards=shards, num_workers=0, seed=seed, device="cpu")
    log.info("demo: caching frozen tiny-encoder features")
    embed(out=feats, preset="tiny", **common)
    log.info("demo: phase 0 (province pre-training)")
    train(
        out=runs / "phase0",
        phase=0,
        features=feats,
        epochs=max(2, epochs // 4),
        batch_size=32,
        plots=False,
        **common,
    )
    log.info("demo: phase 1 (geographic training: province, geocells, offsets)")
    train(
        out=runs / "phase1",
        phase=1,
        features=feats,
        load_from=runs / "phase0" / "best.pt",
        epochs=epochs,
        batch_size=32,
        eval_every=max(1, epochs // 4),
        **common,
    )
    best = runs / "phase1" / "best.pt"
    report_dir = work / "report"
    log.info("demo: evaluating %s on test, end to end from pixels", best)
    result = evaluate_checkpoint(
        shards=shards,
        checkpoint=best,
        split="test",
        num_workers=0,
        device="cpu",
        plots_dir=report_dir / "plots",
        build_index=True,  # so by_aggregate also scores retrieval refinement
        boundaries=boundaries,
    )
    table = format_table(result, result.get("baselines"))
    agg_table = format_aggregate_table(result.get("by_aggregate") or {})

    import pyarrow.parquet as pq

    index = pq.read_table(shards / "index.parquet").to_pandas()
    test = (
        index[index["split"] == "test"].sort_values("key").groupby("province_id", sort=True).head(1)
    )
    predictor = GeopakPredictor(checkpoint_path=best, device="cpu", boundaries=boundaries)
    images = [_image_from_shards(shards, row) for row in test.itertuples()]
    answers = predictor.predict_many(images, batch_size=8)
    predictions = []
    for row, ans in zip(test.itertuples(), answers, strict=True):
        err = float(haversine_km(row.lat, row.lon, ans["lat"], ans["lon"]))
        predictions.append(
            {
                "key": row.key,
                "true_lat": float(row.lat),
                "true_lon": float(row.lon),
                "lat": ans["lat"],
                "lon": ans["lon"],
                "province": ans["province"],
                "confidence": float(ans["confidence"]),
                "error_km": err,
            }
        )
    cells = pq.read_table(shards / "cells.parquet").to_pandas()
    from geopak_core.regions import regions_in

    map_path = plot_map(
        report_dir / "map.png",
        boundaries=boundaries,
        regions=regions_in(shards),
        points=index[["lat", "lon", "province_id"]],
        cells=cells,
        predictions=[
            {
                "lat": p["lat"],
                "lon": p["lon"],
                "true_lat": p["true_lat"],
                "true_lon": p["true_lon"],
                "label": f"{p['error_km']:.0f} km",
            }
            for p in predictions
        ],
        title="geopak demo: samples, geocells and test predictions",
    )
    model_metrics = {
        k: v
        for k, v in result.items()
        if k not in ("baselines", "plots", "inference", "checkpoint", "split")
    }
    beats = {
        name: bool(
            model_metrics["median_km"] < b["median_km"]
            and model_metrics["province_acc"] > b["province_acc"]
        )
        for name, b in (result.get("baselines") or {}).items()
    }
    return {
        "checkpoint": str(best),
        "metrics_table": "```\n" + table + "\n```",
        "aggregate_table": "```\n" + agg_table + "\n```",
        "metrics_json": {
            "median_km": model_metrics["median_km"],
            "province_acc": model_metrics["province_acc"],
            "beats_baselines": beats,
        },
        "metrics": result,
        "predictions": predictions,
        "map": str(map_path),
    }


def _image_from_shards(shards: Path, row: Any) -> Any:
    """Read one sample's JPEG straight out of its tar (what a user would do with the shards)."""
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(shards / row.shard) as tar:
        data = tar.extractfile(f"{row.key}.jpg").read()  # type: ignore[union-attr]
    return Image.open(io.BytesIO(data)).convert("RGB")


def _write_report(work: Path, report: dict[str, Any]) -> list[Path]:
    from geopak_core.io import atomic_write_json, atomic_write_text

    out = work / "report"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", {k: v for k, v in report.items() if k != "stages"})
    lines = [
        "# geopak demo report",
        "",
        "## Pipeline stages",
        "",
        "```",
        report["stages"],
        "```",
        "",
    ]
    if "metrics_table" in report:
        lines += [
            "## Test split: GEOPAK tiny vs baselines (end to end)",
            "",
            report["metrics_table"],
            "",
        ]
    if "aggregate_table" in report:
        lines += [
            "## Test split: how hypotheses become one answer (same images)",
            "",
            "mean = the seed's weighted mean of all hypotheses; best = the most probable one; "
            "mode = the heaviest geographic group, answered inside its province (the default); "
            "refine = mode + the nearest training photo in the chosen cell when similar enough "
            "(threshold fitted on val). The last column: how many times lower the median error is than mean's.",
            "",
            report["aggregate_table"],
            "",
        ]
    if "map" in report:
        lines += ["## Cells and predictions", "", f"![map]({Path(report['map']).name})", ""]
    if "predictions" in report:
        lines += [
            "## Held-out predictions",
            "",
            "| image | true | predicted | province | confidence | error km |",
            "|---|---|---|---|---|---|",
        ]
        for p in report["predictions"]:
            lines.append(
                f"| {p['key']} | {p['true_lat']:.3f}, {p['true_lon']:.3f} | {p['lat']:.3f}, "
                f"{p['lon']:.3f} | {p['province']} | {p['confidence']:.2f} | {p['error_km']:.1f} |"
            )
        lines.append("")
    lines.append(f"Total time: {report.get('seconds', 0)} s")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    log.info("demo: report written to %s", out / "report.md")
    return [out / "report.md", out / "report.json"]


def _cmd(args: argparse.Namespace) -> int:
    report = run_demo(
        work=args.work,
        n_photos=args.photos,
        seed=args.seed,
        epochs=args.epochs,
        config_path=args.config,
        train=not args.no_train,
        boundaries=args.boundaries,
        country=args.country,
    )
    if report.get("metrics_table"):
        print(report["metrics_table"].replace("```", "").strip("\n"))
    if report.get("aggregate_table"):
        print(report["aggregate_table"].replace("```", "").strip("\n"))
    where = Path(report["work"]) / "report" / "report.md"
    print(
        f"demo finished in {report['seconds']} s"
        + (f"; report: {where}" if not args.no_train else " (stopped after shard: --no-train)")
    )
    return 0


DEMO_DESCRIPTION = """\
The whole pipeline offline, in a few minutes on a laptop CPU, with no keys and no network.

It renders a few hundred synthetic photos whose look depends on where they were "taken",
at locations around real Pakistani places, plus nine deliberately bad records (HTML served
as JPEG, a corrupt file, a 404, a tiny and a flat image, a duplicate, a coarse location, a
point in India and one at sea). A loopback server hosts them as a YFCC100M-format source,
then the real stages run: crawl yfcc -> filter -> tag -> cluster -> shard. The tiny GEOPAK
model is trained on CPU, evaluated on the held-out test split next to two baselines, and
W/report/report.md gets the stage table, the metrics table and a map.

Run it again and every finished step is skipped; kill it and it resumes.

example:
  geopak-data demo --work demo-work --boundaries geoBoundaries-PAK-ADM1.geojson
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``geopak-data demo`` to the CLI."""
    from .cliutil import add_boundaries, add_country

    p = sub.add_parser(
        "demo",
        help="offline end-to-end run on the embedded synthetic source",
        description=DEMO_DESCRIPTION,
    )
    p.add_argument("--work", "-w", type=Path, default=DEFAULT_WORK, metavar="W", help="work folder")
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        metavar="FILE",
        help="pipeline TOML (default: pipelines/demo.toml)",
    )
    add_boundaries(p, kind=Path)
    p.add_argument(
        "--photos", type=int, default=600, metavar="N", help="synthetic photos to render"
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the photos, splits and training"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=12,
        metavar="N",
        help="phase-1 training epochs of the tiny model",
    )
    p.add_argument("--no-train", action="store_true", help="stop after the shard stage")
    add_country(p, boundaries=False)
    add_verbose(p)
    p.set_defaults(func=_cmd)

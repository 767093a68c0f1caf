"""How hypotheses become one answer, measured: mean vs best vs mode (vs refine) on the demo data.

    .venv/bin/python bench/bench_aggregate.py                 # runs the offline demo first (minutes)
    .venv/bin/python bench/bench_aggregate.py --quick         # a smaller demo
    .venv/bin/python bench/bench_aggregate.py --work demo-work  # reuse a finished demo folder

The demo (``geopak-data demo``: synthetic photos -> crawl ... shard -> tiny model trained on
CPU, calibrated on val) gives a checkpoint and a held-out test split. Every aggregation is
then scored on the same test images in one ``geopak-eval`` pass (``by_aggregate``), with
retrieval refinement from an index of the training split built next to the checkpoint.
Printed: the table (median / mean km, accuracy within 25 / 200 km, province accuracy and the
ECE of ``confidence``), each aggregation's median as a ratio to the seed's ``mean`` (> 1 =
lower error than mean), the index's size, the calibration the training run stored and the
test ECE without it; then the same table on uninformative photos (uniform noise at toy
locations after a short run, ``--no-uninformative`` skips it), where no aggregation can know
the place and the median favours the seed's central mean. A benchmark, not a test: figures
only, nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402


def demo_checkpoint(work: Path, photos: int, epochs: int) -> tuple[Path, Path, float]:
    """(shards, best.pt, seconds spent making them): a finished demo is reused as it is."""
    from geopak_data.demo import run_demo

    shards, best = work / "shards", work / "runs" / "phase1" / "best.pt"
    t0 = time.perf_counter()
    if not best.is_file():
        run_demo(work=work, n_photos=photos, epochs=epochs, seed=0)
    return shards, best, time.perf_counter() - t0


def uninformative(tmp: Path, n: int = 400) -> dict:
    """The same comparison on photos that carry no location signal (uniform noise at toy
    locations, a short phase-1 run): where the seed's mean looked best, the middle of the
    country, and a mode answer is a guess at one real place."""
    import io

    import numpy as np
    from PIL import Image

    from geopak_model.embed import embed
    from geopak_model.evaluate import evaluate_checkpoint
    from geopak_model.testing import TOY_WEIGHTS, sample_meta, toy_cells, write_shard_folder
    from geopak_model.train import train

    rng = np.random.default_rng(0)
    cells = toy_cells()
    pids = sorted(TOY_WEIGHTS)
    share = np.array([TOY_WEIGHTS[p] for p in pids]) / sum(TOY_WEIGHTS.values())
    samples = []
    for i in range(n):
        pid = int(pids[rng.choice(len(pids), p=share)])
        own = [c for c in cells if c["province_id"] == pid]
        c = own[rng.integers(len(own))]
        lat, lon = c["center_lat"] + rng.normal(0, 0.05), c["center_lon"] + rng.normal(0, 0.05)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
        u = rng.random()
        split = "train" if u < 0.7 else ("val" if u < 0.85 else "test")
        meta = sample_meta(f"noise-{i:05d}", lat, lon, c, 64)
        samples.append({"split": split, "jpg": buf.getvalue(), "json": meta})
    shards = write_shard_folder(tmp / "noise" / "shards", samples, cells, per_shard=50)
    feats = tmp / "noise" / "feats"
    embed(shards=shards, out=feats, preset="tiny", seed=0, num_workers=0, device="cpu")
    train(out=tmp / "noise" / "p1", phase=1, shards=shards, features=feats, epochs=3, batch_size=16,
          num_workers=0, seed=0, plots=False, device="cpu")  # fmt: skip
    return evaluate_checkpoint(shards=shards, checkpoint=tmp / "noise" / "p1" / "best.pt",
                               features=feats, num_workers=0, device="cpu")  # fmt: skip


def uncalibrated_eval(best: Path, shards: Path, tmp: Path) -> dict | None:
    """The same evaluation with the checkpoint's calibration removed (plain softmax)."""
    from geopak_model.checkpoint import load_checkpoint, save_checkpoint
    from geopak_model.evaluate import evaluate_checkpoint

    model, payload = load_checkpoint(best)
    if getattr(model, "calibration", None) is None:
        return None
    model.calibration = None
    plain = save_checkpoint(tmp / "uncalibrated.pt", model, extra=payload.get("extra"))
    return evaluate_checkpoint(
        shards=shards, checkpoint=plain, split="test", device="cpu", num_workers=0
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--work", type=Path, default=None, help="demo work folder (default: a temp dir)"
    )
    ap.add_argument("--quick", action="store_true", help="smaller demo: 300 photos, 8 epochs")
    ap.add_argument("--photos", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--no-uninformative", action="store_true",
                    help="skip the second table (noise photos, a short run)")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="also print the eval's by_aggregate JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")
    warnings.filterwarnings("ignore", message="GEOPAK. no pretrained weights")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from geopak_model.evaluate import evaluate_checkpoint
    from geopak_model.metrics import format_aggregate_table

    photos = args.photos or (300 if args.quick else 600)
    epochs = args.epochs or (8 if args.quick else 12)
    with tempfile.TemporaryDirectory(prefix="bench-aggregate-") as tmp:
        work = args.work or Path(tmp) / "demo"
        shards, best, made_s = demo_checkpoint(work, photos, epochs)
        t0 = time.perf_counter()
        res = evaluate_checkpoint(
            shards=shards, checkpoint=best, split="test", device="cpu", num_workers=0,
            build_index=True,
        )  # fmt: skip
        eval_s = time.perf_counter() - t0
        uncal = uncalibrated_eval(best, shards, Path(tmp))
        noise = None if args.no_uninformative else uninformative(Path(tmp))
    by = res["by_aggregate"]
    info = res["inference"]
    print(f"demo data: {res['n']} test images ({photos} photos, {epochs} epochs; demo {made_s:.0f} s, "
          f"eval with index build {eval_s:.1f} s); polygons: {info['province_check']}")  # fmt: skip
    print(format_aggregate_table(by))
    ret = info.get("retrieval") or {}
    if ret:
        print(f"retrieval index: {ret['n']} training photos x {ret['dim']} dims, "
              f"{ret['memory_bytes'] / 1024:.1f} KiB; threshold {ret['threshold']:.4f} "
              f"(val median {ret['fit'].get('val_median_km_before', 0):.1f} -> "
              f"{ret['fit'].get('val_median_km_after', 0):.1f} km, refined share "
              f"{ret['fit'].get('val_refined_share', 0):.2f})")  # fmt: skip
    cal = info.get("calibration") or {}
    fit = cal.get("fit") or {}
    if cal:
        print(f"calibration (fitted on val by training): alpha {cal['alpha']:.3g}, T {cal['temperature']:.3g}, "
              f"val NLL {fit.get('nll_before', 0):.3f} -> {fit.get('nll_after', 0):.3f}, "
              f"val ECE {fit.get('ece_before', 0):.3f} -> {fit.get('ece_after', 0):.3f}")  # fmt: skip
    if uncal is not None:
        print(f"test province ECE of mode's confidence: {uncal['by_aggregate']['mode']['province_ece']:.3f} "
              f"uncalibrated -> {by['mode']['province_ece']:.3f} calibrated; province acc "
              f"{uncal['by_aggregate']['mode']['province_acc']:.3f} -> {by['mode']['province_acc']:.3f}")  # fmt: skip
    if noise is not None:
        base = noise["baselines"]
        print(f"\nuninformative photos (uniform noise at toy locations, {noise['n']} test images, short run); "
              f"baselines: densest cell {base['densest_cell']['median_km']:.1f} km, geographic median "
              f"{base['geographic_median']['median_km']:.1f} km median:")  # fmt: skip
        print(format_aggregate_table(noise["by_aggregate"]))
    if args.json:
        print(json.dumps(by, indent=1, sort_keys=True))

    note = f"demo data, {res['n']} test images, tiny preset on CPU"
    mean = by["mean"]
    for name in [n for n in ("best", "mode", "refine") if n in by]:
        emit("aggregate", f"{name} median km", by[name]["median_km"], "km", vs="mean",
             vs_value=mean["median_km"], higher_is_better=False, note=note)  # fmt: skip
    emit("aggregate", "mode province acc", by["mode"]["province_acc"], "share", vs="mean",
         vs_value=mean["province_acc"], note=note)  # fmt: skip
    emit("aggregate", "mode acc 25 km", by["mode"]["acc_25km"], "share", vs="mean",
         vs_value=mean["acc_25km"], note=note)  # fmt: skip
    if uncal is not None:
        emit("aggregate", "test province ECE (calibrated)", by["mode"]["province_ece"], "ECE",
             vs="uncalibrated", vs_value=uncal["by_aggregate"]["mode"]["province_ece"],
             higher_is_better=False, note=f"{note}; fitted on val")  # fmt: skip
    if noise is not None:
        nb = noise["by_aggregate"]
        emit("aggregate", "mode median km, noise photos", nb["mode"]["median_km"], "km", vs="mean",
             vs_value=nb["mean"]["median_km"], higher_is_better=False,
             note="uninformative photos: the median favours a central answer")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: is the loader or the model the bottleneck, and what the cache buys.

Prints, for the ``tiny`` preset on CPU (or ``--device cuda``):

* loader samples/s from shards (read tar + decode JPEG + augment + both encoders'
  preprocessing), with 0 and N DataLoader workers;
* training-step samples/s on batches already in memory (phase 1 and phase 2);
* one epoch of phase 1 from images vs from the embedding cache (and the cache's build time).

    .venv/bin/python bench/bench_train.py --quick          # well under a minute
    .venv/bin/python bench/bench_train.py --shards DIR     # on a real shard folder
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geopak_model import data as D  # noqa: E402
from geopak_model.embed import embed, load_features  # noqa: E402
from geopak_model.factory import make_model  # noqa: E402
from geopak_model.testing import make_toy_shards  # noqa: E402
from geopak_model.train import TrainStep  # noqa: E402


def loader_rate(
    folder: D.ShardFolder, transform, batch_size: int, workers: int, max_batches: int
) -> float:
    spec = D.LoaderSpec(batch_size=batch_size, shuffle_buffer=200, seed=0, num_workers=workers)
    it = D.image_batches(folder.shards("train"), transform, spec, epoch=0)
    next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for b in islice(it, max_batches):
        n += len(b["key"])
    return n / max(time.perf_counter() - t0, 1e-9)


def step_rate(model, batches: list[dict], phase: int, device: torch.device) -> float:
    model.set_phase(phase)
    model.to(device).train()
    step = TrainStep(model, torch.ones(7), phase).to(device)
    opt = torch.optim.AdamW(model.param_groups(1e-3, 5e-5), lr=1e-3)
    batches = [
        {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        for b in batches
    ]
    loss, _ = step(batches[0])  # warm-up
    loss.backward()
    opt.zero_grad()
    n, t0 = 0, time.perf_counter()
    for b in batches[1:]:
        loss, _ = step(b)
        loss.backward()
        opt.step()
        opt.zero_grad()
        n += len(b["key"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / max(time.perf_counter() - t0, 1e-9)


def epoch_seconds(model, source, phase: int, device: torch.device) -> tuple[float, int]:
    model.set_phase(phase)
    model.to(device).train()
    step = TrainStep(model, torch.ones(7), phase).to(device)
    opt = torch.optim.AdamW(model.param_groups(1e-3, 5e-5), lr=1e-3)
    n, t0 = 0, time.perf_counter()
    for b in source:
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        loss, _ = step(b)
        loss.backward()
        opt.step()
        opt.zero_grad()
        n += len(b["key"])
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--shards", type=Path, default=None, help="shard folder (default: a generated toy one)"
    )
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--quick", action="store_true", help="small sizes, well under a minute")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="GEOPAK: no pretrained weights")
    os.environ.setdefault("GEOPAK_NO_PROGRESS", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n_images, n_steps = (160, 6) if args.quick else (800, 30)
    bs = 16 if args.quick else args.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or make_toy_shards(
            Path(tmp) / "shards", n=n_images, per_shard=32, seed=0
        )
        folder = D.open_shard_folder(shards)
        model, _ = make_model(folder=folder, preset=args.preset, seed=0, random_init=True)
        print(
            f"bench_train: preset={args.preset} device={device} threads={torch.get_num_threads()} "
            f"batch={bs} train images={folder.size('train')}"
        )

        tf_train = model.transforms(train=True)
        rows = [
            (
                "loader, 0 workers (decode+augment)",
                loader_rate(folder, tf_train, bs, 0, n_steps),
                "img/s",
            )
        ]
        if args.workers > 1:
            rows.append(
                (
                    f"loader, {args.workers} workers",
                    loader_rate(folder, tf_train, bs, args.workers, n_steps),
                    "img/s",
                )
            )

        spec = D.LoaderSpec(batch_size=bs, shuffle_buffer=200, seed=0)
        batches = list(islice(D.image_batches(folder.shards("train"), tf_train, spec), n_steps + 1))
        rows.append(
            ("train step phase 1 (frozen encoders)", step_rate(model, batches, 1, device), "img/s")
        )
        rows.append(
            (
                "train step phase 2 (last blocks unfrozen)",
                step_rate(model, batches, 2, device),
                "img/s",
            )
        )

        t0 = time.perf_counter()
        embed(
            shards=shards,
            out=Path(tmp) / "feats",
            checkpoint=None,
            preset=args.preset,
            splits=("train",),
            batch_size=bs,
            device=args.device,
            num_workers=0,
            seed=0,
            random_init=True,
        )
        t_embed = time.perf_counter() - t0
        cached, _ = make_model(folder=folder, checkpoint=Path(tmp) / "feats" / "model.pt")
        feats = load_features(Path(tmp) / "feats", "train", folder=folder)
        t_img, n_img = epoch_seconds(
            cached,
            D.image_batches(folder.shards("train"), cached.transforms(train=True), spec),
            1,
            device,
        )
        t_feat, n_feat = epoch_seconds(cached, D.feature_batches(feats, spec), 1, device)
        rows += [
            ("embedding cache build (train split)", t_embed, "s"),
            (f"phase-1 epoch from images ({n_img} img)", t_img, "s"),
            (f"phase-1 epoch from cache ({n_feat} img)", t_feat, "s"),
            ("cache speed-up per epoch", t_img / max(t_feat, 1e-9), "x"),
        ]

    width = max(len(r[0]) for r in rows)
    for name, value, unit in rows:
        print(f"  {name.ljust(width)}  {value:10.2f} {unit}")

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the BENCH line reporter
    from _report import emit

    fig = {name: value for name, value, _ in rows}
    step1 = fig["train step phase 1 (frozen encoders)"]
    setup = f"{args.preset}, {device}, batch {bs}, {torch.get_num_threads()} threads"
    for name, value, unit in rows:
        if name.startswith("loader"):
            emit(
                "train",
                name,
                value,
                unit,
                vs="train step phase 1",
                vs_value=step1,
                note=f"ratio > 1: the loader keeps up; {setup}",
            )
    emit(
        "train",
        "train step phase 2 (last blocks unfrozen)",
        fig["train step phase 2 (last blocks unfrozen)"],
        "img/s",
        note=f"phase 1: {step1:.1f} img/s; {setup}",
    )
    emit(
        "train",
        f"phase-1 epoch from cache ({n_feat} img)",
        t_feat,
        "s",
        vs="phase-1 epoch from images",
        vs_value=t_img,
        higher_is_better=False,
        note=f"cache build {t_embed:.2f} s; {setup}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``geopak-train``: train one phase from a shard folder, or build the embedding cache.

    geopak-train --shards DIR --phase {0,1,2} --out RUN_DIR [--preset tiny|base] [--resume] ...
    geopak-train embed --shards DIR --out FEATS [--preset ..|--config ..|--checkpoint ..]
    geopak-train weights [--preset P | --config FILE]

A thin argparse layer over :func:`geopak_model.train.train` and
:func:`geopak_model.embed.embed`; heavy imports happen after parsing so ``--help`` is instant.
User mistakes print one line and exit 2; Ctrl-C exits 130 and the run can be resumed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from geopak_core.clihelp import Parser, add_verbose
from geopak_core.errors import GeopakError, os_error_line
from geopak_core.io import folder_arg
from geopak_core.progress import setup_logging

from .config import BALANCE_MODES, PHASE_DEFAULTS, TrainConfig

PROG = "geopak-train"
PRESETS = ("tiny", "base")


_Parser = Parser  # the project's parser: help with defaults, one-line usage errors


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def _model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        default="base",
        metavar="{tiny,base}",
        help="model preset: base = CLIP ViT-B/16 + ResNet-50 Places365, tiny for smoke runs (default: base)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="MODEL.toml",
        help="model config file instead of a preset (encoder weights, sizes, loss weights; default: the preset)",
    )
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)"
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="random encoders instead of the pretrained weights the config names (smoke runs, benchmarks; "
        "the tiny preset is random by design)",
    )
    add_verbose(p)


def _default(name: str) -> Any:
    """A training setting's default, read from TrainConfig (the one place defaults live)."""
    return TrainConfig.__dataclass_fields__[name].default


def _setting(
    group: Any, name: str, type_: Any, metavar: str, help_: str, *, flag: str = ""
) -> None:
    """An option for TrainConfig field ``name``: its default comes from the dataclass, so the
    CLI, the Python API and ``--help`` can never disagree."""
    group.add_argument(
        flag or "--" + name.replace("_", "-"),
        dest=name if not flag else flag.lstrip("-").replace("-", "_"),
        type=type_,
        default=_default(name),
        metavar=metavar,
        help=help_,
    )


def _shards_input(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shards",
        type=Path,
        required=True,
        metavar="DIR",
        help="shard folder written by `geopak-data shard`",
    )


def _skip_bad_shards(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--skip-bad-shards",
        action="store_true",
        help=(
            "leave out shards that fail verification against index.parquet (missing, truncated, "
            "other keys, sha256) and say how many samples that skips; by default a bad shard "
            "stops the command"
        ),
    )


def _loader_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="DataLoader workers decoding JPEGs",
    )


def build_train_parser() -> argparse.ArgumentParser:
    """The parser of ``geopak-train`` itself (training one phase)."""
    p = _Parser(
        prog=PROG,
        description=(
            "Train GEOPAK on a shard folder, one phase at a time: 0 = province pre-training (fusion + province head), "
            "1 = all heads with frozen encoders, 2 = partial fine-tuning of the encoders' last blocks. "
            "Chain phases with --load-from PREVIOUS_RUN/best.pt. "
            f"To cache the frozen encoders' features first, see `{PROG} embed --help`; "
            f"to fetch the pretrained encoder weights beforehand, `{PROG} weights --help`."
        ),
        epilog=(
            "RUN_DIR receives best.pt (best val median km), last.pt (what --resume continues), "
            "metrics.jsonl, train_log.jsonl and plots/."
        ),
    )
    _shards_input(p)
    p.add_argument("--phase", type=int, required=True, choices=(0, 1, 2), help="training phase")
    p.add_argument(
        "--out", type=folder_arg, required=True, metavar="RUN_DIR", help="run folder (created)"
    )
    _model_source(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR from last.pt (exactly where it stopped)",
    )
    p.add_argument(
        "--load-from",
        type=Path,
        default=None,
        metavar="CKPT",
        help="start from this checkpoint's weights, e.g. the previous phase's best.pt (default: fresh weights)",
    )
    p.add_argument(
        "--features",
        type=Path,
        default=None,
        metavar="FEATS",
        help=(
            "train phase 0/1 from an embedding cache instead of images; starts from "
            "FEATS/model.pt unless --load-from (default: train from images)"
        ),
    )
    g = p.add_argument_group("optimisation")
    per_phase = " / ".join
    _setting(
        g,
        "epochs",
        _positive_int,
        "N",
        "epochs (default per phase 0 / 1 / 2: "
        + per_phase(str(PHASE_DEFAULTS[ph]["epochs"]) for ph in (0, 1, 2))
        + ")",
    )
    _setting(g, "batch_size", _positive_int, "N", "images per micro-batch and rank")
    _setting(g, "grad_accum", _positive_int, "N", "micro-batches per optimiser step")
    _setting(
        g,
        "lr",
        _positive_float,
        "F",
        "peak learning rate of the heads (default per phase 0 / 1 / 2: "
        + per_phase(f"{PHASE_DEFAULTS[ph]['lr']:g}" for ph in (0, 1, 2))
        + ")",
    )
    _setting(g, "encoder_lr_scale", _positive_float, "F", "phase 2: encoder LR = lr x F")
    _setting(g, "weight_decay", float, "F", "AdamW weight decay")
    _setting(
        g,
        "warmup_steps",
        int,
        "N",
        "linear warm-up steps before the cosine decay (default: 5%% of the run)",
    )
    _setting(g, "grad_clip", float, "F", "max gradient norm, 0 = off")
    g.add_argument(
        "--balance",
        choices=BALANCE_MODES,
        default=_default("balance"),
        help="protect rare provinces by class weights, province-balanced resampling, both or neither",
    )
    _setting(
        g, "balance_power", float, "F", "resampling strength: 1 = equal provinces, 0 = natural"
    )
    _setting(g, "seed", int, "N", "seed for data order, augmentation and init")
    _setting(g, "max_steps", _positive_int, "N", "stop after N optimiser steps (default: no limit)")
    g.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    d = p.add_argument_group("data and bookkeeping")
    _skip_bad_shards(d)
    _setting(d, "num_workers", int, "N", "DataLoader workers decoding JPEGs", flag="--workers")
    _setting(d, "shuffle_buffer", int, "N", "samples in the shuffle buffer")
    _setting(
        d,
        "checkpoint_every",
        int,
        "N",
        "write last.pt every N optimiser steps, 0 = epoch ends only",
    )
    _setting(d, "eval_every", _positive_int, "N", "validate every N epochs (the last epoch always)")
    _setting(d, "log_every", _positive_int, "N", "log the training loss every N steps")
    d.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    return p


def build_embed_parser() -> argparse.ArgumentParser:
    """The parser of ``geopak-train embed`` (caching the frozen encoders' features)."""
    p = _Parser(
        prog=f"{PROG} embed",
        description=(
            "Run the frozen encoders once over the shards and store their features, so phases 0 and 1 can train "
            f"from them (`{PROG} --features FEATS`) in a fraction of the time. Resumable: finished shards are skipped."
        ),
    )
    _shards_input(p)
    p.add_argument(
        "--out", type=folder_arg, required=True, metavar="FEATS", help="cache folder (created)"
    )
    _model_source(p)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="CKPT",
        help="use this checkpoint's encoders instead of a preset/config (default: the preset)",
    )
    p.add_argument(
        "--splits",
        default="train,val,test",
        help="comma-separated splits to embed",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="N", help="images per encoder batch"
    )
    _skip_bad_shards(p)
    _loader_workers(p)
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="stored feature precision",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for a randomly initialised model")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="encode the shards here (local) or one Ray task per shard (ray); the parts are the "
        "same (default: local)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join, e.g. auto or HOST:6379 (default: a local Ray instance)",
    )
    return p


def build_weights_parser() -> argparse.ArgumentParser:
    """The parser of ``geopak-train weights`` (fetching pretrained encoder weights ahead of time)."""
    p = _Parser(
        prog=f"{PROG} weights",
        description=(
            "Fetch the pretrained encoder weights a model config names (clip_pretrained through open_clip and "
            "the Hugging Face cache; places_weights_url into GEOPAK_CACHE, verified against places_weights_sha256) "
            "and print where each file is, its size and sha256. Run again, it downloads nothing. "
            "Offline (HF_HUB_OFFLINE=1), it only reports what is cached."
        ),
        epilog="Environment: HF_HOME / HF_HUB_CACHE (CLIP cache), HF_ENDPOINT (hub mirror), HF_HUB_OFFLINE, "
        "GEOPAK_CACHE (Places365 cache; default the user cache folder), GEOPAK_OFFLINE.",
    )
    p.add_argument(
        "--preset",
        default="base",
        metavar="{tiny,base}",
        help="model preset whose weights to fetch (default: base)",
    )
    p.add_argument(
        "--config", type=Path, default=None, metavar="MODEL.toml", help="model config file instead"
    )
    add_verbose(p)
    return p


def _run_weights(args: argparse.Namespace) -> int:
    from .factory import model_config_for
    from .weights import fetch_all

    _check_preset(args)
    cfg = model_config_for(
        preset=args.preset, model_config=str(args.config) if args.config else None
    )
    files = fetch_all(cfg)
    if not files:
        print(f"{cfg.preset}: names no pretrained weights (random encoders by design)")
    for wf in files:
        print(
            f"{wf.encoder}: {wf.path}  {wf.size} bytes  sha256 {wf.sha256}  ({wf.source} {wf.origin})"
        )
    return 0


def _check_preset(args: argparse.Namespace) -> None:
    if not args.config and not getattr(args, "checkpoint", None) and args.preset not in PRESETS:
        raise GeopakError(
            f"unknown --preset {args.preset!r} (choose tiny or base, or pass --config FILE)"
        )


def _run_train(args: argparse.Namespace) -> int:
    from .train import train

    model_config = str(args.config) if args.config else None
    _check_preset(args)
    summary = train(
        shards=args.shards,
        out=args.out,
        phase=args.phase,
        preset=args.preset,
        model_config=model_config,
        features=args.features,
        load_from=args.load_from,
        resume=args.resume,
        random_init=args.random_init,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        encoder_lr_scale=args.encoder_lr_scale,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip,
        balance=args.balance,
        balance_power=args.balance_power,
        seed=args.seed,
        max_steps=args.max_steps,
        amp=not args.no_amp,
        num_workers=args.workers,
        shuffle_buffer=args.shuffle_buffer,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        log_every=args.log_every,
        plots=not args.no_plots,
        device=args.device,
        skip_bad_shards=args.skip_bad_shards,
    )
    return 0 if summary.get("finished") else 1


def _run_embed(args: argparse.Namespace) -> int:
    from .embed import embed

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    bad = [s for s in splits if s not in ("train", "val", "test")]
    if bad or not splits:
        raise GeopakError(
            f"--splits {args.splits!r}: expected a comma-separated subset of train,val,test"
        )
    _check_preset(args)
    embed(
        shards=args.shards,
        out=args.out,
        preset=args.preset,
        model_config=str(args.config) if args.config else None,
        checkpoint=str(args.checkpoint) if args.checkpoint else None,
        splits=splits,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        num_workers=args.workers,
        seed=args.seed,
        random_init=args.random_init,
        skip_bad_shards=args.skip_bad_shards,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point: dispatches to the embed/weights subcommands or to training."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "embed":
        args, run = build_embed_parser().parse_args(argv[1:]), _run_embed
    elif argv and argv[0] == "weights":
        args, run = build_weights_parser().parse_args(argv[1:]), _run_weights
    else:
        args, run = build_train_parser().parse_args(argv), _run_train
    setup_logging(args.verbose)
    return _guarded(run, args)


def _guarded(run: Any, args: argparse.Namespace, prog: str = PROG) -> int:
    """Run a command: user errors as one line (exit 2), Ctrl-C as 130, bugs keep their traceback."""
    try:
        return int(run(args) or 0)
    except GeopakError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, read-only folder...: one line naming the file
        print(f"{prog}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; run the same command with --resume to continue", file=sys.stderr
        )
        return 130
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())

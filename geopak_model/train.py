"""The training loop: phases 0/1/2 on streamed shards or cached features, resumable.

One function, :func:`train`, with keyword arguments (the CLI is a thin layer over it)::

    train(shards="shards/", out="runs/p1", phase=1, preset="base", epochs=30)

What a run writes into ``out``:

* ``last.pt``   the latest state (model, optimiser, scheduler, step, position in the epoch,
                RNG states), every ``checkpoint_every`` optimiser steps and at each epoch
                end; what ``resume=True`` continues;
* ``best.pt``   the model with the lowest validation median km so far (the contract's
                selection rule; ``test`` is never looked at here);
* ``metrics.jsonl``  one JSON object per validation (model metrics + both baselines);
* ``train_log.jsonl`` the training loss every ``log_every`` steps (for the loss curves);
* ``plots/*.png``    loss curves, error CDF, per-province accuracy, confusion matrix.

Exactness of resume: the data order and augmentation are functions of (seed, epoch, sample)
(see data.py), the global RNG that dropout uses is checkpointed, and a resumed epoch skips
the batches it had already trained on. So a run killed at any instant and resumed ends with
the same weights as an uninterrupted run (bit-for-bit on CPU with ``num_workers`` 0 or 1).

Under ``torchrun`` every rank streams a disjoint part of the shards; an epoch ends for all
ranks as soon as one of them runs out of batches (an all-reduce each step), so ranks never
wait on each other forever. Only rank 0 evaluates and writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geopak_core.errors import GeopakError
from geopak_core.io import atomic_write_text, clean_stale_temps
from geopak_core.progress import progress

from . import evaluate as E
from .checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from .config import PHASE_DEFAULTS, TrainConfig  # noqa: F401  (TrainConfig lives in config)
from .data import (
    LoaderSpec,
    balance_factors,
    epoch_batches,
    feature_batches,
    image_batches,
    open_shard_folder,
)
from .embed import load_features, read_manifest
from .factory import make_model
from .metrics import format_table
from .runtime import (
    all_have_batch,
    autocast,
    average_grads,
    barrier,
    broadcast_obj,
    setup_distributed,
    wrap_ddp,
)
from .weights import describe as describe_weights

log = logging.getLogger(__name__)


def lr_factor(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine down to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress_))


class TrainStep(nn.Module):
    """model + loss as one module, so DistributedDataParallel sees a single forward."""

    def __init__(self, model: nn.Module, province_weights: torch.Tensor, phase: int):
        super().__init__()
        self.model = model
        self.register_buffer("province_weights", province_weights, persistent=False)
        self.phase = phase

    def forward(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from .losses import total_loss

        m = self.model
        if "clip_feat" in batch:
            clip_feat, places_feat = batch["clip_feat"], batch["places_feat"]
        else:
            clip_feat, places_feat = m.encode(batch["clip"], batch["places"])
        outputs = m.heads(clip_feat, places_feat)
        if self.phase >= 1:
            outputs["offset"] = m.offset(outputs["fused"], batch["cell_id"], batch["province_id"])
        return total_loss(
            outputs,
            batch,
            m.cells,
            m.config,
            province_weights=self.province_weights,
            phase=self.phase,
        )


# ---------------------------------------------------------------------------------------------
# run state


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill: dropped, it is re-made
                break
    return rows


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_jsonl(
    path: Path, max_step: int, max_epoch: int | None = None
) -> list[dict[str, Any]]:
    """Keep only rows the resumed state has already passed: later ones are about to be
    produced again (a validation row belongs to the epoch it closes, hence ``max_epoch``)."""
    rows = [
        r
        for r in _read_jsonl(path)
        if r.get("step", 0) <= max_step and (max_epoch is None or r.get("epoch", 0) <= max_epoch)
    ]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


# ---------------------------------------------------------------------------------------------
# the run: what setup() builds and the epoch / validation functions advance


@dataclass
class Run:
    """Everything one training run holds, built by :func:`setup`. The counters (``step``,
    ``epoch``, ``micro_in_epoch``), ``best`` and the RNG states are exactly what last.pt keeps,
    so a resumed run continues from the same numbers."""

    cfg: TrainConfig
    out: Path
    folder: Any
    features: Any
    rank: int
    world: int
    device: torch.device
    model: Any
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trainable: list[torch.Tensor]
    epoch_source: Any
    val_source: Any
    baselines: dict[str, Any]
    micro_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0
    best: dict[str, Any] | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)
    seen: int = 0
    stopped: bool = False
    t_start: float = 0.0
    window: list[float] = field(default_factory=list)
    window_parts: dict[str, list[float]] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def train(
    *,
    shards: str | os.PathLike,
    out: str | os.PathLike,
    phase: int = 1,
    preset: str = "base",
    model_config: str | None = None,
    features: str | os.PathLike | None = None,
    load_from: str | os.PathLike | None = None,
    resume: bool = False,
    random_init: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Train one phase; returns a summary (steps, best val metrics, paths).

    ``settings`` are :class:`TrainConfig` fields (epochs, batch_size, lr, seed, ...).
    ``load_from`` starts from another run's checkpoint (phase chaining); ``features`` trains
    phases 0/1 from an embedding cache instead of images; ``resume`` continues ``out/last.pt``;
    ``random_init`` builds a new model with random encoders instead of the named weights.
    """
    unknown = sorted(set(settings) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise TypeError(f"train() got unknown settings: {', '.join(unknown)}")
    cfg = TrainConfig(phase=phase, **settings)
    cfg.validate()
    source = {"preset": preset, "model_config": model_config, "random_init": random_init}
    run = setup(cfg, shards, Path(out), features, load_from, resume, source)
    if isinstance(run, dict):  # the run in ``out`` had already finished
        return run
    run.t_start = time.perf_counter()
    run.model.train()
    while run.epoch < cfg.epochs and not run.stopped:
        train_one_epoch(run)
        validate_and_checkpoint(run)
    return finish(run)


def setup(
    cfg: TrainConfig,
    shards: Any,
    out: Path,
    features: Any,
    load_from: Any,
    resume: bool,
    source: dict[str, Any],
) -> Run | dict[str, Any]:
    """Data, model, optimiser and counters of a run (fresh or resumed), or the summary of a
    run that had already finished."""
    folder = _check_inputs(cfg, shards, features)
    rank, world, device = setup_distributed(cfg.device)
    is_main = rank == 0
    model, state = _start_model(cfg, folder, out, resume, load_from, features, source, is_main)
    if state is not None and state.get("finished"):
        return {
            "out": str(out),
            "finished": True,
            "already_done": True,
            "step": int(state["step"]),
            "best": state.get("best"),
        }
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out)
    _place_model(model, cfg, features, device, is_main)

    prov_weights, spec = _loader_spec(cfg, folder, model, rank, world)
    epoch_source, val_source = _sources(model, folder, features, spec, cfg)
    micro_per_epoch = epoch_batches(folder.size("train"), spec)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.05 * total_steps))

    ddp = wrap_ddp(TrainStep(model, prov_weights, cfg.phase).to(device), device, world)
    groups = model.param_groups(cfg.lr, cfg.lr * cfg.encoder_lr_scale, cfg.weight_decay)
    if not groups:
        raise GeopakError(f"phase {cfg.phase} leaves nothing to train in this model")
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, warmup=warmup, total=total_steps, min_ratio=cfg.min_lr_ratio),
    )
    run = Run(
        cfg=cfg,
        out=out,
        folder=folder,
        features=features,
        rank=rank,
        world=world,
        device=device,
        model=model,
        ddp=ddp,
        optimizer=optimizer,
        scheduler=scheduler,
        trainable=[p for g in groups for p in g["params"]],
        epoch_source=epoch_source,
        val_source=val_source,
        baselines=E.baseline_answers_for(folder),
        micro_per_epoch=micro_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
    _restore_or_seed(run, state)
    if is_main:
        run.evals = _truncate_jsonl(out / "metrics.jsonl", run.step, run.epoch)
        _truncate_jsonl(out / "train_log.jsonl", run.step)
        _log_start(run)
    return run


def train_one_epoch(run: Run) -> None:
    """Micro-batches until the epoch's data (or ``max_steps``) runs out; an optimiser step
    every ``grad_accum`` of them; last.pt every ``checkpoint_every`` steps."""
    cfg = run.cfg
    bar = _epoch_bar(run)
    source = run.epoch_source(run.epoch, run.micro_in_epoch)
    pending = 0  # micro-batches accumulated since the last optimiser step
    t_epoch, n_epoch = time.perf_counter(), 0
    while True:
        if run.step >= run.total_steps:  # --max-steps, or a run killed right after its last step
            run.stopped = True
            break
        batch = next(source, None)
        if not all_have_batch(batch is not None, run.device, run.world):
            break
        n_epoch += _forward_backward(run, batch, pending)
        pending += 1
        if pending < cfg.grad_accum:
            if bar is not None:
                bar.update(1)
            continue
        _optimizer_step(run.optimizer, run.scheduler, run.trainable, cfg.grad_clip)
        pending = 0
        run.step += 1
        if run.is_main:
            _after_step(bar, n_epoch, t_epoch, run.window, run.optimizer)
            if run.step % cfg.log_every == 0:
                _flush_train_log(run, run.epoch)
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
            _save_last(run)
    if pending:  # a partial accumulation at the end of the epoch still counts as a step
        if run.world > 1:  # its last micro-batch may have run under no_sync
            average_grads(run.trainable, run.world)
        _optimizer_step(run.optimizer, run.scheduler, run.trainable, cfg.grad_clip)
        run.step += 1
    if bar is not None:
        bar.close()
    run.epoch += 1
    run.micro_in_epoch = 0
    if run.is_main and run.window:
        _flush_train_log(run, run.epoch - 1)


def validate_and_checkpoint(run: Run) -> None:
    """At the epochs due (every ``eval_every``, the last, a stop): validate on val, keep the
    best model by median km in best.pt; then last.pt, marked finished after the last epoch."""
    cfg = run.cfg
    if run.stopped or run.epoch == cfg.epochs or run.epoch % cfg.eval_every == 0:
        if run.is_main:
            row = _validate(
                run.model,
                run.val_source(),
                run.device,
                cfg,
                run.baselines,
                step=run.step,
                epoch=run.epoch,
                out=run.out,
                seconds=time.perf_counter() - run.t_start,
            )
            run.evals.append(row)
            if run.best is None or (
                row["median_km"] is not None and row["median_km"] < run.best["median_km"]
            ):
                _save_best(run, row)
        if run.world > 1:
            run.best = broadcast_obj(run.best)
    finished = run.stopped or run.epoch >= cfg.epochs
    if finished and run.is_main:
        _calibrate_best(run)
    _save_last(run, finished=finished)


def _calibrate_best(run: Run) -> None:
    """Fit best.pt's province calibration on val (calibration.py): logit adjustment for the
    prior that this run's class weights / balanced sampling trained into it, plus a
    temperature. Before last.pt says "finished", so a kill in between redoes it."""
    from .calibration import log_prior_shift

    best_path = run.out / "best.pt"
    if not best_path.is_file():
        return
    prov_weights, spec = _loader_spec(run.cfg, run.folder, run.model, 0, 1)
    shift = log_prior_shift(prov_weights, spec.balance_factors)  # the prior we trained on
    E.calibrate_checkpoint(best_path, run.val_source(), run.device, shift)


def finish(run: Run) -> dict[str, Any]:
    """The run's summary; rank 0 also draws the loss curves and logs the final validation."""
    elapsed = time.perf_counter() - run.t_start
    best = run.best
    summary = {
        "out": str(run.out),
        "phase": run.cfg.phase,
        "step": run.step,
        "epochs": run.epoch,
        "finished": True,
        "best": best,
        "seconds": elapsed,
        "samples_per_s": run.seen / max(elapsed, 1e-9),
    }
    if run.is_main:
        plots = _final_plots(run.out, run.evals) if run.cfg.plots and run.evals else []
        summary["plots"] = [str(p) for p in plots]
        if run.evals:
            log.info(  # the last step's weights as trained: not best.pt's calibration above
                "final validation (step %d, last weights, province confidence uncalibrated):\n%s",
                run.evals[-1]["step"],
                format_table(_strip(run.evals[-1]), run.evals[-1].get("baselines")),
            )
        log.info(
            "done: phase %d, %d steps in %.0fs (%.1f img/s); best val median %s km at step %s; wrote %s, %s, %s",
            run.cfg.phase, run.step, elapsed, summary["samples_per_s"],
            f"{best['median_km']:.1f}" if best else "-", best["step"] if best else "-",
            run.out / "best.pt", run.out / "last.pt", run.out / "metrics.jsonl",
        )  # fmt: skip
    barrier(run.world)
    return summary


# ---------------------------------------------------------------------------------------------
# helpers of setup


def _check_inputs(cfg: TrainConfig, shards: Any, features: Any) -> Any:
    """The shard folder, after the checks that need no model (train and val present, a
    feature cache only for phases 0/1)."""
    folder = open_shard_folder(shards, skip_bad_shards=cfg.skip_bad_shards)
    folder.require_split("train")
    if not folder.shards("val") or folder.size("val") == 0:
        raise GeopakError(f"no val samples in {folder.root}: checkpoints are selected on val")
    if features is not None:
        if cfg.phase == 2:
            raise GeopakError(
                "--features trains phases 0 and 1 only: phase 2 fine-tunes the encoders, so it needs images"
            )
        read_manifest(features)
    return folder


def _place_model(
    model: Any, cfg: TrainConfig, features: Any, device: torch.device, is_main: bool
) -> None:
    """Choose what trains this phase and move the model to its device."""
    model.set_phase(cfg.phase, model.config.unfreeze_last_n)
    if features is not None and any(
        p.requires_grad for p in (*model.clip.parameters(), *model.places.parameters())
    ):
        raise GeopakError(
            "--features needs frozen encoders, but this model config trains them (freeze_clip/freeze_places = false)"
        )
    model.to(device)
    if is_main and device.type == "cpu" and features is None and model.config.preset == "base":
        log.warning(
            "the base preset (ViT-B/16 + ResNet-50) runs at a few images/s on CPU: use a GPU, an "
            "embedding cache (--features), or --preset tiny for a CPU-sized model"
        )


def _loader_spec(
    cfg: TrainConfig, folder: Any, model: Any, rank: int, world: int
) -> tuple[torch.Tensor, LoaderSpec]:
    """(province class weights of the loss, the training loader's spec) for the balance mode."""
    counts = folder.province_counts("train")
    if cfg.balance in ("weights", "both"):
        from .losses import province_class_weights

        prov_weights = province_class_weights(
            counts, model.config.province_weight_power, model.num_provinces
        )
    else:
        prov_weights = torch.ones(len(counts))
    spec = LoaderSpec(
        batch_size=cfg.batch_size,
        shuffle=True,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed,
        balance_factors=balance_factors(counts, cfg.balance_power)
        if cfg.balance in ("sample", "both")
        else None,
        num_workers=cfg.num_workers,
        rank=rank,
        world_size=world,
    )
    return prov_weights, spec


def _restore_or_seed(run: Run, state: dict[str, Any] | None) -> None:
    """A resumed run takes back its optimiser, schedule, counters and RNG states; a new one
    seeds every RNG (per rank, so ranks draw different dropout masks)."""
    if state is None:
        seed = run.cfg.seed + run.rank
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        return
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step, run.epoch = int(state["step"]), int(state["epoch"])
    run.micro_in_epoch = int(state["micro_in_epoch"])
    run.best = state.get("best")
    restore_rng_state(state["rng"])
    if run.is_main:
        log.info(
            "resumed %s at step %d (epoch %d, batch %d)",
            run.out,
            run.step,
            run.epoch + 1,
            run.micro_in_epoch,
        )


def _log_start(run: Run) -> None:
    cfg = run.cfg
    log.info(
        "phase %d: %d train / %d val images%s, %d steps (%d epochs x %d), batch %d x %d accum x "
        "%d ranks, lr %.2g, %d trainable params, device %s",
        cfg.phase, run.folder.size("train"), run.folder.size("val"),
        " (cached features)" if run.features is not None else "",
        run.total_steps, cfg.epochs, run.steps_per_epoch, cfg.batch_size, cfg.grad_accum, run.world, cfg.lr,
        sum(p.numel() for p in run.trainable), run.device,
    )  # fmt: skip
    log.info("encoders: %s", describe_weights(run.model.encoder_provenance))


# ---------------------------------------------------------------------------------------------
# helpers of the epoch and the checkpoints


def _epoch_bar(run: Run) -> Any:
    if not run.is_main:
        return None
    return progress(
        total=run.micro_per_epoch,
        initial=run.micro_in_epoch,
        desc=f"phase {run.cfg.phase} epoch {run.epoch + 1}/{run.cfg.epochs}",
        unit="batch",
    )


def _forward_backward(run: Run, batch: dict[str, Any], pending: int) -> int:
    """One micro-batch: forward under autocast, backward of loss / grad_accum (gradients are
    all-reduced only on the micro-batch that ends an accumulation); returns its size."""
    cfg = run.cfg
    batch = {
        k: (v.to(run.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
        for k, v in batch.items()
    }
    sync = pending + 1 == cfg.grad_accum or run.micro_in_epoch + 1 == run.micro_per_epoch
    ctx = run.ddp.no_sync() if (run.world > 1 and not sync) else contextlib.nullcontext()
    with ctx:
        with autocast(run.device, cfg.amp):
            loss, parts = run.ddp(batch)
        (loss / cfg.grad_accum).backward()
    run.micro_in_epoch += 1
    n = len(batch["key"])
    run.seen += n
    run.window.append(float(loss.detach()))
    for k, v in parts.items():
        run.window_parts.setdefault(k, []).append(float(v))
    return n


def _flush_train_log(run: Run, epoch: int) -> None:
    _log_train(run.out, run.step, epoch, run.window, run.window_parts, run.optimizer)
    run.window, run.window_parts = [], {}


def _save_last(run: Run, finished: bool = False) -> None:
    """last.pt: the model plus everything a resume needs (rank 0 only)."""
    if not run.is_main:
        return
    train_state = {
        "phase": run.cfg.phase,
        "step": run.step,
        "epoch": run.epoch,
        "micro_in_epoch": run.micro_in_epoch,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": capture_rng_state(),
        "best": run.best,
        "finished": finished,
        "config": _plain(asdict(run.cfg)),
    }
    save_checkpoint(run.out / "last.pt", run.model, extra={"train": train_state})


def _save_best(run: Run, row: dict[str, Any]) -> None:
    keys = ("step", "epoch", "median_km", "mean_km", "province_acc", "cell_top1")
    run.best = {k: row[k] for k in keys}
    best_path = run.out / "best.pt"
    val = {"phase": run.cfg.phase, "step": run.step, "epoch": run.epoch, "val": _plain(_strip(row))}
    save_checkpoint(best_path, run.model, extra={"train": val})
    log.info("new best val median %.1f km at step %d -> %s", row["median_km"], run.step, best_path)


def _start_model(
    cfg: TrainConfig,
    folder: Any,
    out: Path,
    resume: bool,
    load_from: Any,
    features: Any,
    source: dict[str, Any],
    is_main: bool,
) -> tuple[Any, dict[str, Any] | None]:
    """(model, training state to resume or None). A finished run comes back with its state
    so the caller can say "nothing to do"; an unfinished one needs ``resume``."""
    last_path = out / "last.pt"
    if last_path.exists():
        # the same cell table as this shard folder, or the run cannot continue on it
        model, payload = make_model(checkpoint=last_path, folder=folder)
        return model, _resumable_state(cfg, out, payload, resume, is_main)
    if resume and is_main:
        log.info("nothing to resume in %s: starting a new run", out)
    if load_from is not None:
        return make_model(folder=folder, checkpoint=load_from)[0], None
    if features is not None and (Path(features) / "model.pt").is_file():
        if source["model_config"]:
            log.warning(
                "--config is ignored with --features: the model comes from %s",
                Path(features) / "model.pt",
            )
        return make_model(folder=folder, checkpoint=Path(features) / "model.pt")[0], None
    return make_model(folder=folder, seed=cfg.seed, **source)[0], None


def _say_finished(cfg: TrainConfig, out: Path, state: dict[str, Any]) -> None:
    """ "Nothing to do", and, when more epochs are asked than the run was planned for, that
    they are not trained. Why not continue: the finished run's learning rate has decayed to
    its floor along a cosine over its own epochs; a longer schedule would jump the rate back
    up mid-way, giving neither the short run nor the long one. A new run from its weights
    (``--load-from``) gets a schedule of its own."""
    log.info("run %s already finished at step %d: nothing to do", out, state["step"])
    config = state.get("config")
    planned = config.get("epochs") if isinstance(config, dict) else None
    done = int(planned if planned is not None else state.get("epoch", 0))
    if cfg.epochs is not None and cfg.epochs > done:
        log.warning(
            "%s finished its %d epoch(s) and its learning-rate schedule: --epochs %d does not "
            "continue it; to train further start a new run from it: --load-from %s --out NEW",
            out, done, cfg.epochs, out / "best.pt",
        )  # fmt: skip


def _resumable_state(
    cfg: TrainConfig, out: Path, payload: dict[str, Any], resume: bool, is_main: bool
) -> dict[str, Any]:
    """last.pt's training state, after checking it belongs to this phase and may be resumed."""
    last_path = out / "last.pt"
    extra = payload.get("extra")
    state = extra.get("train") if isinstance(extra, dict) else None
    if not isinstance(state, dict) or not {"phase", "step"} <= set(state):
        raise GeopakError(
            f"{last_path} has no training state to resume from (a weights-only checkpoint such as "
            "best.pt?); choose another --out"
        )
    if int(state["phase"]) != cfg.phase:
        raise GeopakError(
            f"{out} holds a phase {state['phase']} run, not phase {cfg.phase}; choose another --out"
        )
    if state.get("finished"):
        if is_main:
            _say_finished(cfg, out, state)
        return state
    if not resume:
        raise GeopakError(
            f"{out} holds an unfinished run (step {state['step']}); pass --resume to continue it "
            "or choose another --out"
        )
    saved = state.get("config", {})
    for name in ("batch_size", "grad_accum", "seed", "balance", "epochs"):
        if name in saved and saved[name] != getattr(cfg, name):
            log.warning(
                "resuming with %s=%s (the run started with %s): the result will differ from an uninterrupted run",
                name,
                getattr(cfg, name),
                saved[name],
            )
    return state


def _sources(
    model: Any, folder: Any, features: Any, spec: LoaderSpec, cfg: TrainConfig
) -> tuple[Any, Any]:
    """epoch_source(epoch, skip_batches) and val_source(): batches of pixels or of cached features."""
    eval_spec = LoaderSpec(
        batch_size=cfg.batch_size, shuffle=False, augment_seeded=False, num_workers=cfg.num_workers
    )
    if features is not None:
        train_feats = load_features(features, "train", folder=folder, model=model)
        val_feats = load_features(features, "val", folder=folder)
        return (
            lambda epoch, skip: feature_batches(train_feats, spec, epoch=epoch, skip_batches=skip),
            lambda: feature_batches(val_feats, eval_spec),
        )
    train_tf, eval_tf = model.transforms(train=True), model.transforms(train=False)
    return (
        lambda epoch, skip: image_batches(
            folder.shards("train"), train_tf, spec, epoch=epoch, skip_batches=skip
        ),
        lambda: image_batches(folder.shards("val"), eval_tf, eval_spec),
    )


def _optimizer_step(
    optimizer: torch.optim.Optimizer, scheduler: Any, params: list[torch.Tensor], clip: float
) -> None:
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def _after_step(
    bar: Any, n_epoch: int, t_epoch: float, window: list[float], optimizer: torch.optim.Optimizer
) -> None:
    if bar is None:
        return
    bar.update(1)
    rate = n_epoch / max(time.perf_counter() - t_epoch, 1e-9)
    bar.set_postfix(
        loss=f"{np.mean(window[-20:]):.3f}",
        lr=f"{optimizer.param_groups[0]['lr']:.2e}",
        img_s=f"{rate:.0f}",
        refresh=False,
    )


def _log_train(
    out: Path,
    step: int,
    epoch: int,
    window: list[float],
    parts: dict[str, list[float]],
    optimizer: torch.optim.Optimizer,
) -> None:
    row = {
        "step": step,
        "epoch": epoch,
        "loss": float(np.mean(window)),
        "lr": optimizer.param_groups[0]["lr"],
        **{f"loss_{k}": float(np.mean(v)) for k, v in parts.items() if k != "total"},
    }
    _append_jsonl(out / "train_log.jsonl", row)


def _validate(
    model: nn.Module,
    batches: Any,
    device: torch.device,
    cfg: TrainConfig,
    baselines: dict[str, Any],
    *,
    step: int,
    epoch: int,
    out: Path,
    seconds: float,
) -> dict[str, Any]:
    from .losses import total_loss

    def loss_fn(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> Any:
        return total_loss(outputs, labels, model.cells, model.config, phase=cfg.phase)

    preds = E.predict_batches(model, batches, device, amp=cfg.amp, loss_fn=loss_fn)
    if len(preds) == 0:  # the index promised val samples, the tars hold none
        raise GeopakError("the val shards yielded no samples: checkpoints are selected on val")
    result = E.report(preds, baselines, model.cells.regions.names)
    row = {
        "step": step,
        "epoch": epoch,
        "phase": cfg.phase,
        "split": "val",
        "seconds": round(seconds, 2),
        **result,
    }
    _append_jsonl(out / "metrics.jsonl", row)
    base = result.get("baselines", {})
    log.info(
        "val @ step %d: median %.1f km (baselines %.1f / %.1f), province acc %.1f%% (%.1f%% / "
        "%.1f%%), cell top-1 %.1f%%",
        step, result["median_km"], base["densest_cell"]["median_km"], base["geographic_median"]["median_km"],
        100 * result["province_acc"], 100 * base["densest_cell"]["province_acc"],
        100 * base["geographic_median"]["province_acc"],
        100 * (result["cell_top1"] or 0.0),
    )  # fmt: skip
    if cfg.plots:
        E.write_plots(
            preds,
            result,
            baselines,
            out / "plots",
            prefix="val_",
            province_names=model.cells.regions.names,
        )
    return row


def _final_plots(out: Path, evals: list[dict[str, Any]]) -> list[Path]:
    from . import plots

    return [
        plots.loss_curves(
            _read_jsonl(out / "train_log.jsonl"), evals, out / "plots" / "loss_curves.png"
        )
    ]


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("baselines",)}


def _plain(obj: Any) -> Any:
    """JSON round trip: only plain containers go into a weights_only checkpoint."""
    return json.loads(json.dumps(obj, default=str))

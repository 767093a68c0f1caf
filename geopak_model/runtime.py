"""Where the model runs: device choice, bf16 autocast and the torchrun/DDP plumbing, in one place.

Training, the embedding cache, evaluation and the predictor all pick their device through
:func:`resolve_device` (so ``--device`` means the same everywhere and a bad value is one
line), compute under :func:`autocast`, and training alone uses the distributed helpers.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.distributed as dist

from geopak_core.errors import GeopakError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda if available else cpu; cpu, cuda, cuda:N checked against this machine."""
    if isinstance(device, torch.device):
        device = str(device)
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GeopakError(f"--device {device}: CUDA is not available on this machine")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise GeopakError(f"--device {device!r}: expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise GeopakError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the encoders' matmuls), a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- distributed


def setup_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device). Under torchrun the process group is joined
    (NCCL on GPUs, gloo on CPUs); a plain run is rank 0 of 1 on ``resolve_device``."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return rank, world, torch.device(f"cuda:{local}" if use_cuda else "cpu")
    return 0, 1, resolve_device(device_pref)


def all_have_batch(has: bool, device: torch.device, world: int) -> bool:
    """True while every rank still has a batch: an epoch ends for all when one runs dry."""
    if world == 1:
        return has
    flag = torch.tensor([1 if has else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def average_grads(params: list[torch.Tensor], world: int) -> None:
    """By-hand gradient averaging for a step whose last micro-batch ran under no_sync."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def broadcast_obj(obj: Any) -> Any:
    """Rank 0's value of a picklable object on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: int) -> None:
    """Wait for all torchrun ranks; a no-op in a single process, where no process group exists."""
    if world > 1:
        dist.barrier()


def wrap_ddp(module: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` under torchrun; the module itself otherwise."""
    if world == 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )

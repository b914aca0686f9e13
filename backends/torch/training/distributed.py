"""DDP helpers: process-group set-up, collectives and the model wrapper.

Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised here (``gloo`` on the
CPU, ``nccl`` on CUDA) unless the caller already did; it is kept for later runs in the same
process (a torchrun store does not support a second initialisation) and destroyed at exit.
Outside ``torchrun`` every helper is the identity.

>>> world_from_env({})
(0, 1, 0)
>>> all_reduce_sum([1.0, 2.0], world=1, device=torch.device("cpu"))
[1.0, 2.0]
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "all_reduce_sum",
    "average_grads",
    "broadcast_object",
    "init_process_group",
    "world_from_env",
    "wrap_ddp",
]


def world_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from the ``torchrun`` environment variables."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0")) if world > 1 else 0
    local = int(env.get("LOCAL_RANK", str(rank))) if world > 1 else 0
    return rank, world, local


def init_process_group(device: torch.device) -> None:
    """Initialise the default process group once per process (destroyed at exit)."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy_group)


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")


def all_reduce_sum(values: Sequence[float], *, world: int, device: torch.device) -> list[float]:
    """Sum ``values`` over ranks (identity when ``world == 1``)."""
    if world <= 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_mean(value: torch.Tensor, *, world: int, device: torch.device) -> float:
    """Mean over ranks of a scalar tensor (one sync)."""
    v = value.detach().float()
    if world <= 1:
        return float(v)
    v = v.to(_comm_device(device)).clone()
    dist.all_reduce(v)
    return float(v) / world


def average_grads(params: Sequence[nn.Parameter], *, world: int) -> None:
    """Average the gradients of ``params`` over ranks in one flat all-reduce."""
    if world <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_object(value: Any, *, world: int) -> Any:
    """Rank 0's ``value`` on every rank."""
    if world <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(
    model: nn.Module, device: torch.device, world: int, ignore: Sequence[nn.Parameter] = ()
) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel` (``ignore``: parameters it must not
    synchronise, such as architecture parameters); the model itself when ``world == 1``."""
    if world <= 1:
        return model
    ids = {id(p) for p in ignore}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    if names:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)

"""Where and how a run computes: device, ranks, AMP, memory format, determinism, seeding.

:func:`setup_runtime` reads a config's ``device``, ``amp``, ``channels_last`` and
``deterministic`` fields (and the ``torchrun`` environment) into a :class:`Runtime`, which the
training loops use as a context manager so that global flags are put back afterwards.

>>> resolve_device("cpu")
device(type='cpu')
>>> with Runtime(torch.device("cpu")) as rt:
...     rt.main, rt.distributed, rt.sum([1, 2])
(True, False, [1.0, 2.0])
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from msnas_graph.backends.torch.training import distributed
from msnas_graph.data import SegmentationDataset
from msnas_graph.errors import RunError

__all__ = ["Runtime", "resolve_device", "seed_all", "setup_runtime"]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cuda"`` without CUDA is an error.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device '{name}': CUDA is not available here; use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise RunError(f"device '{name}' is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def seed_all(seed: int) -> None:
    """Seed ``random``, numpy's global generator and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    """The device, rank and numerics of a run (see the module doc)."""

    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    deterministic_before: bool | None = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def fp16(self) -> bool:
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, active under fp16 only."""
        return torch.amp.GradScaler("cuda", enabled=self.fp16)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def loader(
        self,
        dataset: SegmentationDataset,
        indices: Sequence[int],
        size: int,
        config: Any,
        *,
        shuffle: bool,
        augment: bool,
    ) -> tuple[Any, Any]:
        """``(loader, sampler)`` over cases ``indices`` at ``size`` with the config's batch size,
        seed and workers (this rank's share under DDP)."""
        from msnas_graph.backends.torch.data import SegmentationTorchDataset, make_loader

        return make_loader(
            SegmentationTorchDataset(dataset, indices, size, augment=augment, seed=config.seed),
            config.batch_size,
            shuffle=shuffle,
            seed=config.seed,
            num_workers=config.num_workers,
            distributed=(self.rank, self.world) if self.distributed else None,
            pin_memory=self.device.type == "cuda",
        )

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """``model`` on the device, in the channels-last format if asked."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def sum(self, values: Sequence[float]) -> list[float]:
        """Sum ``values`` over ranks (identity when not distributed)."""
        return distributed.all_reduce_sum(values, world=self.world, device=self.device)

    def mean_scalar(self, value: torch.Tensor) -> float:
        """Mean over ranks of a scalar tensor (one sync)."""
        return distributed.all_reduce_mean(value, world=self.world, device=self.device)

    def average_grads(self, params: Sequence[nn.Parameter]) -> None:
        distributed.average_grads(params, world=self.world)

    def wrap(self, model: nn.Module, ignore: Sequence[nn.Parameter] = ()) -> nn.Module:
        """``model`` in DDP when distributed (``ignore``: parameters not to synchronise)."""
        return distributed.wrap_ddp(model, self.device, self.world, ignore)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        return distributed.broadcast_object(value, world=self.world)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def broadcast_error(self, message: str | None) -> None:
        """Rank 0's error (or ``None``) reaches every rank; everyone raises it."""
        message = self.broadcast(message)
        if message is not None:
            raise RunError(message)

    def close(self) -> None:
        if self.deterministic_before is not None:
            torch.use_deterministic_algorithms(self.deterministic_before)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def setup_runtime(cfg: Any) -> Runtime:
    """The :class:`Runtime` of a config (initialises the process group under ``torchrun``)."""
    rank, world, local = distributed.world_from_env()
    device = resolve_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        distributed.init_process_group(device)
    rt = Runtime(device=device, rank=rank, world=world)
    if cfg.amp == "fp16":
        if device.type != "cuda":
            raise RunError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
        rt.amp_dtype = torch.float16
    elif cfg.amp == "bf16":
        rt.amp_dtype = torch.bfloat16
    rt.channels_last = bool(cfg.channels_last)
    if cfg.deterministic:
        rt.deterministic_before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return rt

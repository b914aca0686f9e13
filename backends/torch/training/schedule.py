"""The search schedule: which phase every step is in, and each phase's architecture lr.

A search runs ``warmup`` steps that train the weights only (no architecture forward or
backward), then ``cell`` steps that also train the cell parameters (``alpha``, ``p``), then
``network`` steps that also train the network parameters (``beta``). :class:`PhaseSchedule`
holds that in steps, so a schedule given in epochs and one given in steps
(:class:`~.config.SearchConfig` ``arch_steps``) run through the same code, and the phase may
switch in the middle of an epoch. It is a pure function of the config and the steps per epoch,
so a resumed search follows the same schedule.

**Automatic architecture lr.** With ``arch_lr=None`` each phase gets
``clip(2 / its architecture steps, 3e-4, 3e-2)``: Adam moves a logit by about ``lr`` per step
while the gradient's sign holds, so a phase can move a logit by about 2 in total, whatever its
length. (Measured on HC18, quick space, 64x64, 100 architecture steps per phase after 60
warm-up steps: lr 3e-3 left the median winner/runner-up log-ratio at 0.05 with 2 of 6 cell
decisions decided; 1e-2 gave 0.23 and 5 of 6; 3e-2 gave 0.50 and 5 of 6; all three chose the
same cells.)

>>> s = PhaseSchedule(warmup_steps=3, cell_steps=4, network_steps=2, steps_per_epoch=4)
>>> [s.phase(i) for i in range(s.total_steps)]
['warmup', 'warmup', 'warmup', 'cell', 'cell', 'cell', 'cell', 'network', 'network']
>>> s.epochs, list(s.epoch_steps(2)), s.epoch_phase(0), s.epoch_phase(1)
(3, [8], 'cell', 'network')
>>> s.lr("warmup"), s.lr("cell"), s.lr("network")
(0.0, 0.03, 0.03)
>>> PhaseSchedule(0, 400, 1000, 10).lr("cell"), PhaseSchedule(0, 400, 1000, 10).lr("network")
(0.005, 0.002)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from msnas_graph.errors import RunError

__all__ = ["AUTO_ARCH_LR", "PHASES", "PhaseSchedule", "auto_arch_lr"]

#: The search phases and the :class:`~msnas_graph.backends.torch.nn.supernet.Supernet` method
#: giving each one's architecture parameter group (the warm-up trains none).
PHASES = {"warmup": None, "cell": "cell_parameters", "network": "network_parameters"}

#: The automatic architecture lr: total logit movement allowed per phase, and the lr's range.
AUTO_ARCH_LR = {"movement": 2.0, "min": 3e-4, "max": 3e-2}


def auto_arch_lr(steps: int) -> float:
    """``clip(2 / steps, 3e-4, 3e-2)``: the automatic lr of a phase of ``steps`` steps.

    >>> auto_arch_lr(100), auto_arch_lr(10), auto_arch_lr(100_000)
    (0.02, 0.03, 0.0003)
    """
    lr = AUTO_ARCH_LR["movement"] / max(steps, 1)
    return float(min(max(lr, AUTO_ARCH_LR["min"]), AUTO_ARCH_LR["max"]))


@dataclass(frozen=True)
class PhaseSchedule:
    """A search's schedule in steps (see the module doc); ``arch_lr=None`` is automatic."""

    warmup_steps: int
    cell_steps: int
    network_steps: int
    steps_per_epoch: int
    arch_lr: float | None = None

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise RunError(
                "search: no training batches per epoch (the weight or architecture split is "
                "empty); use more cases or a smaller val_fraction"
            )
        from .config import check_schedule_size  # the steps cut into epochs: bounded too

        what = f"{self.total_steps:,} steps in epochs of {self.steps_per_epoch:,}"
        check_schedule_size("search", what, self.epochs, "epoch")

    @classmethod
    def from_config(cls, config: Any, steps_per_epoch: int) -> PhaseSchedule:
        """The schedule of a :class:`~.config.SearchConfig` at ``steps_per_epoch``."""
        if config.arch_steps is None:
            cell, network = config.epochs
            return cls(
                config.warmup * steps_per_epoch,
                cell * steps_per_epoch,
                network * steps_per_epoch,
                steps_per_epoch,
                config.arch_lr,
            )
        cell, network = config.arch_steps
        return cls(config.warmup_steps, cell, network, steps_per_epoch, config.arch_lr)

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.cell_steps + self.network_steps

    @property
    def epochs(self) -> int:
        """Epochs of ``steps_per_epoch`` steps (the last may be short)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def phase(self, step: int) -> str:
        """The phase of 0-based global ``step``: a key of :data:`PHASES`."""
        if step < self.warmup_steps:
            return "warmup"
        return "cell" if step < self.warmup_steps + self.cell_steps else "network"

    def steps(self, phase: str) -> int:
        """The steps of ``phase``."""
        return {"warmup": self.warmup_steps, "cell": self.cell_steps}.get(phase, self.network_steps)

    def lr(self, phase: str) -> float:
        """The architecture lr of ``phase`` (0 for the warm-up)."""
        if phase == "warmup":
            return 0.0
        return self.arch_lr if self.arch_lr is not None else auto_arch_lr(self.steps(phase))

    def epoch_steps(self, epoch: int) -> range:
        """The global steps of 0-based ``epoch``."""
        start = epoch * self.steps_per_epoch
        return range(start, min(start + self.steps_per_epoch, self.total_steps))

    def epoch_phase(self, epoch: int) -> str:
        """The phase an epoch is recorded under: that of its last step."""
        return self.phase(self.epoch_steps(epoch)[-1])

"""The paper's two-phase architecture search as an :class:`~.loop.EpochStep`.

A :class:`PhaseSchedule` says which architecture parameter group is trained in each epoch: in
``cell`` epochs the cell parameters (``alpha``, ``p``), in ``network`` epochs the network
parameters (``beta``); the weights are trained throughout. The train split is halved by group;
every step of :class:`SearchStep` takes a first-order architecture step (Adam) on a batch of one
half, then a weight step (SGD, cosine learning rate) on a batch of the other (DARTS first order).
Architecture gradients are all-reduced explicitly under DDP (the wrapper ignores them), so every
rank keeps identical architecture parameters.

**Run folder** (rank 0 writes): ``config.json``, ``states/epoch_XXX.json`` (the
:class:`SearchState` after each epoch, ``meta`` holds ``epoch`` and ``phase``), ``state.json``
(final), ``architecture.json`` (decoded with ``config.paths``), ``supernet.pt``
(``state_dict``), ``checkpoint.pt``, ``metrics.csv``, ``plots/loss.png``,
``plots/arch_weights.png``, ``DONE``.

>>> schedule = PhaseSchedule(cell_epochs=2, network_epochs=1)
>>> [schedule.phase(e) for e in range(schedule.total)]
['cell', 'cell', 'network']
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.data import load_cases, split_by_group, split_cases
from msnas_graph.backends.torch.losses import DiceCELoss
from msnas_graph.backends.torch.nn.supernet import Supernet
from msnas_graph.backends.torch.plots import draw_run_plots
from msnas_graph.backends.torch.training.config import SearchConfig
from msnas_graph.backends.torch.training.loop import (
    EpochCallback,
    EpochLoop,
    capped,
    check_finite,
    forward_loss,
    launch,
    optimizer_step,
    progress_bar,
    validate,
)
from msnas_graph.backends.torch.training.run_dir import (
    CHECKPOINT,
    load_checkpoint,
    save_weights,
)
from msnas_graph.backends.torch.training.runtime import Runtime, seed_all
from msnas_graph.data import SegmentationDataset
from msnas_graph.decode import decode
from msnas_graph.errors import MsnasError, RunError
from msnas_graph.paths import count_paths
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

__all__ = ["PHASES", "PhaseSchedule", "SearchResult", "SearchStep", "search"]

logger = logging.getLogger(__name__)

#: The search phases and the :class:`Supernet` method giving each one's parameter group.
PHASES = {"cell": "cell_parameters", "network": "network_parameters"}


@dataclass
class SearchResult:
    """What :func:`search` returns: the final state, its decoded architecture, the history."""

    run_dir: Path
    state: SearchState
    architecture: Architecture | None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PhaseSchedule:
    """Which architecture parameter group each epoch trains: ``cell_epochs`` of ``cell``,
    then ``network_epochs`` of ``network`` (the paper: 20 and 20)."""

    cell_epochs: int
    network_epochs: int

    @property
    def total(self) -> int:
        return self.cell_epochs + self.network_epochs

    def phase(self, epoch: int) -> str:
        """The phase of 0-based ``epoch``: a key of :data:`PHASES`."""
        return "cell" if epoch < self.cell_epochs else "network"

    def parameters(self, model: Supernet, epoch: int) -> list[nn.Parameter]:
        """The architecture parameters trained in ``epoch``."""
        return list(getattr(model, PHASES[self.phase(epoch)])())


def search(
    config: SearchConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> SearchResult:
    """Run (or resume) an MS-NAS search into ``run_dir`` (see the module doc).

    ``config=None`` with ``resume=True`` reads the run's ``config.json``. ``on_epoch_end`` is
    called with each epoch's metrics row after its checkpoint is written (a hook for tests and
    schedulers; raising :class:`KeyboardInterrupt` there interrupts the run cleanly).

    Raises :class:`RunError` for a refused run folder, a non-finite loss, or a resume whose
    configuration or data differ from the checkpoint's.
    """
    run_dir = Path(run_dir)
    config = SearchConfig.for_run(config, run_dir, resume, "search")
    return launch(
        config, run_dir, "search", resume=resume, overwrite=overwrite, progress=progress,
        on_epoch_end=on_epoch_end, build=lambda rt: _build(config, rt), finished=_finished,
        finish=lambda loop: _finish(loop, config),
    )  # fmt: skip


def _adapt_space(space: SearchSpace, ds: SegmentationDataset) -> SearchSpace:
    update: dict[str, Any] = {}
    if space.num_classes != ds.num_classes:
        update["num_classes"] = ds.num_classes
    if space.in_channels != ds.in_channels:
        update["in_channels"] = ds.in_channels
    if not update:
        return space
    logger.info("search space adapted to the data: %s", update)
    return SearchSpace.from_dict({**space.to_dict(), **update}, "space adapted to the data")


def _build(config: SearchConfig, rt: Runtime) -> tuple[SearchStep, dict[str, list[int]], int]:
    """Data, split, supernet and optimisers of a search: its :class:`SearchStep`."""
    assert isinstance(config.space, SearchSpace)  # normalised in __post_init__
    assert config.epochs is not None and config.input_size is not None
    ds = load_cases(config.data, labelled=True, in_channels=config.space.in_channels)
    space = _adapt_space(config.space, ds)
    train_idx, val_idx, test_idx = split_cases(ds, config)
    w_idx, a_idx = split_by_group(train_idx, ds.groups(), seed=config.seed)
    split = {"train": train_idx, "val": val_idx, "test": test_idx, "weights": w_idx, "arch": a_idx}
    seed_all(config.seed)
    model = Supernet(space, checkpoint=config.checkpoint).to(rt.device)
    n_paths = count_paths(model.graph)
    if config.paths > n_paths:
        raise RunError(
            f"search config: paths={config.paths} but the space has only {n_paths} "
            f"input->output paths; use paths <= {n_paths}"
        )
    model = rt.prepare_model(model)
    size = config.input_size or space.input_size
    loaders = {
        "weights": rt.loader(ds, w_idx, size, config, shuffle=True, augment=config.augment),
        "arch": rt.loader(ds, a_idx, size, config, shuffle=True, augment=config.augment),
        "val": rt.loader(ds, val_idx, size, config, shuffle=False, augment=False)
        if val_idx
        else (None, None),
    }
    step = SearchStep(model, config, rt, loaders)
    return step, split, step.schedule.total


class SearchStep:
    """One search epoch over the models and optimisers it holds (an :class:`~.loop.EpochStep`).

    Holds the supernet (and its DDP wrapper), the weight optimiser (SGD, cosine schedule), the
    architecture optimiser (Adam), their AMP scalers, the :class:`PhaseSchedule`, the loss and
    the ``weights`` / ``arch`` / ``val`` loaders.
    """

    kind = "search"
    what = "search"

    def __init__(
        self,
        model: Supernet,
        config: SearchConfig,
        rt: Runtime,
        loaders: Mapping[str, tuple[Any, Any]],
    ) -> None:
        assert config.epochs is not None
        self.model, self.config, self.rt, self.loaders = model, config, rt, loaders
        self.space = model.space
        self.schedule = PhaseSchedule(*config.epochs)
        self.weight_params = model.weight_parameters()
        self.weight_opt = torch.optim.SGD(
            self.weight_params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.weight_opt, T_max=self.schedule.total, eta_min=config.lr_min
        )
        self.arch_opt = torch.optim.Adam(
            model.arch_parameters(),
            lr=config.arch_lr,
            betas=config.arch_betas,
            weight_decay=config.arch_weight_decay,
        )
        self.scaler, self.arch_scaler = rt.scaler(), rt.scaler()
        self.ddp = rt.wrap(model, ignore=model.arch_parameters())
        self.loss_fn = DiceCELoss(self.space.num_classes)
        self.steps = capped(
            min(len(loaders["weights"][0]), len(loaders["arch"][0])), config.max_steps_per_epoch
        )

    # ------------------------------------------------------------ EpochStep protocol

    def stateful(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "weight_opt": self.weight_opt,
            "arch_opt": self.arch_opt,
            "sched": self.sched,
            "scaler": self.scaler,
            "arch_scaler": self.arch_scaler,
        }

    def header_state(self) -> dict[str, Any]:
        return {"space": json.dumps(self.space.to_dict())}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        pass

    def start(self, run_dir: Path, split: Mapping[str, list[int]], device: Any) -> None:
        assert self.config.epochs is not None
        logger.info(
            "search: %d weight / %d architecture / %d validation cases, %d+%d epochs, on %s",
            len(split["weights"]), len(split["arch"]), len(split["val"]), *self.config.epochs,
            device,
        )  # fmt: skip

    def run_epoch(self, epoch: int, progress: bool) -> dict[str, Any]:
        phase = self.schedule.phase(epoch)
        lr = self.weight_opt.param_groups[0]["lr"]
        for name in ("weights", "arch"):
            self.loaders[name][1].set_epoch(epoch)
        bar = progress_bar(
            self.steps, f"search {epoch + 1}/{self.schedule.total} {phase}", progress
        )
        train_loss, arch_loss = self.train_epoch(
            self.schedule.parameters(self.model, epoch), epoch + 1, bar
        )
        self.sched.step()
        val_loss, val_dice = validate(
            self.model, *self.loaders["val"], self.loss_fn, self.space.num_classes, self.rt,
            self.config.max_steps_per_epoch,
        )  # fmt: skip
        return {
            "epoch": epoch + 1,
            "phase": phase,
            "train_loss": train_loss,
            "arch_loss": arch_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": lr,
            "arch_lr": self.arch_opt.param_groups[0]["lr"],
        }

    def save_epoch(self, run_dir: Path, row: Mapping[str, Any]) -> None:
        meta = {"epoch": row["epoch"], "phase": row["phase"], "seed": self.config.seed}
        self.model.state(meta=meta).save(run_dir / "states" / f"epoch_{row['epoch']:03d}.json")

    def log_epoch(self, row: Mapping[str, Any], total: int) -> None:
        val_loss, val_dice = row["val_loss"], row["val_dice"]
        logger.info(
            "search epoch %d/%d (%s): train %.4f arch %.4f val %s dice %s",
            row["epoch"], total, row["phase"], row["train_loss"], row["arch_loss"],
            "-" if val_loss is None else f"{val_loss:.4f}",
            "-" if val_dice is None else f"{val_dice:.4f}",
        )  # fmt: skip

    def plots(self, run_dir: Path, history: list[dict[str, Any]]) -> None:
        draw_run_plots(run_dir, history, states=True)

    # ------------------------------------------------------------------ the steps

    def train_epoch(
        self, active: Sequence[nn.Parameter], epoch: int, bar: Any
    ) -> tuple[float, float]:
        """``steps`` pairs of an architecture step on ``active`` and a weight step; the mean
        losses of both. ``epoch`` is 1-based (for the NaN message)."""
        self.model.train()
        arch_params = self.model.arch_parameters()
        for p in arch_params:
            p.requires_grad_(False)
            p.grad = None
        w_iter: Iterator[Any] = iter(self.loaders["weights"][0])
        a_iter: Iterator[Any] = iter(self.loaders["arch"][0])
        w_total = a_total = 0.0
        try:
            for step in range(1, self.steps + 1):
                xw, yw = next(w_iter)
                xa, ya = next(a_iter)
                value_a = check_finite(self.arch_step(xa, ya, active), epoch, step)
                value_w = check_finite(self.weight_step(xw, yw), epoch, step)
                w_total += value_w
                a_total += value_a
                bar.update(1)
                bar.set_postfix(loss=f"{value_w:.4f}", arch=f"{value_a:.4f}")
        finally:
            bar.close()
            for p in arch_params:
                p.requires_grad_(True)
        return w_total / max(self.steps, 1), a_total / max(self.steps, 1)

    def arch_step(self, x: Any, y: Any, active: Sequence[nn.Parameter]) -> float:
        """A first-order architecture step on ``active`` only; the loss (mean over ranks).
        A non-finite loss is returned before any update."""
        rt = self.rt
        for p in active:
            p.requires_grad_(True)
        try:
            loss, value = forward_loss(self.model, x, y, self.loss_fn, rt)
            if not math.isfinite(value):
                return value
            grads = torch.autograd.grad(self.arch_scaler.scale(loss), list(active))
            for p, g in zip(active, grads, strict=True):
                p.grad = g
            rt.average_grads(active)
            self.arch_scaler.step(self.arch_opt)
            self.arch_scaler.update()
            self.arch_opt.zero_grad(set_to_none=True)
        finally:
            for p in active:
                p.requires_grad_(False)
        return value

    def weight_step(self, x: Any, y: Any) -> float:
        """A weight step (through the DDP wrapper); the loss (mean over ranks). A non-finite
        loss is returned before any update."""
        loss, value = forward_loss(self.ddp, x, y, self.loss_fn, self.rt)
        if not math.isfinite(value):
            return value
        optimizer_step(
            loss, self.weight_opt, self.scaler, self.weight_params, self.config.grad_clip
        )
        return value


def _finished(run_dir: Path) -> SearchResult:
    state = SearchState.load(run_dir / "state.json")
    arch_path = run_dir / "architecture.json"
    arch = Architecture.load(arch_path) if arch_path.is_file() else None
    history: list[dict[str, Any]] = []
    if (run_dir / CHECKPOINT).is_file():
        history = list(load_checkpoint(run_dir / CHECKPOINT).get("history", []))
    return SearchResult(run_dir, state, arch, history)


def _finish(loop: EpochLoop, config: SearchConfig) -> SearchResult:
    """Decode the final state and write the run's result files."""
    assert isinstance(loop.step, SearchStep)
    total, run_dir, model = loop.total, loop.run_dir, loop.step.model
    state = model.state(meta={"epoch": total, "phase": "done", "seed": config.seed})
    arch: Architecture | None = None
    try:
        arch = decode(state, paths=config.paths)
    except MsnasError as exc:  # a search result is still worth keeping
        logger.warning("decoding the final state failed: %s", exc)
    if loop.rt.main:
        state.save(run_dir / "state.json")
        if arch is not None:
            arch.save(run_dir / "architecture.json")
        save_weights(run_dir / "supernet.pt", model)
    loop.finish({"kind": "search", "epochs": total, "state_hash": state.content_hash})
    return SearchResult(run_dir, state, arch, loop.history)

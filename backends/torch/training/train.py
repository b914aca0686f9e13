"""Training from scratch as an :class:`~.loop.EpochStep`: a decoded architecture or the U-Net
baseline through exactly the same code path, keeping the best epoch by validation Dice.

**Run folder** (rank 0 writes): ``config.json``, ``model.json`` (everything needed to rebuild
the model, :func:`~msnas_graph.backends.torch.models.create_model`; at the config's ``channels``
when given), ``best.pt``, ``last.pt``
(``state_dict``\\ s), ``checkpoint.pt``, ``metrics.csv``, ``plots/loss.png``, ``DONE``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msnas_graph._util import atomic_write
from msnas_graph.backends.torch.data import load_cases, split_cases
from msnas_graph.backends.torch.limits import check_model
from msnas_graph.backends.torch.losses import DiceCELoss
from msnas_graph.backends.torch.models import (
    ModelSource,
    create_model,
    init_from_search,
    model_spec,
)
from msnas_graph.backends.torch.plots import draw_run_plots
from msnas_graph.backends.torch.training import loop as driver
from msnas_graph.backends.torch.training.config import TrainConfig
from msnas_graph.backends.torch.training.run_dir import (
    CHECKPOINT,
    load_checkpoint,
    save_weights,
)
from msnas_graph.backends.torch.training.runtime import Runtime, seed_all
from msnas_graph.errors import DataError

__all__ = ["TrainResult", "TrainStep", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: the best validation Dice and its epoch, the history."""

    run_dir: Path
    best_dice: float | None
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    config: TrainConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: driver.EpochCallback | None = None,
) -> TrainResult:
    """Train a model from scratch into ``run_dir`` (see the module doc).

    The same code path serves the U-Net baseline and MS-NAS networks; an architecture may be
    trained wider than it was searched (``config.channels``) and start from its search's
    supernet weights (``config.init_from``). ``config=None`` with
    ``resume=True`` reads the run's ``config.json``; ``on_epoch_end`` as in
    :func:`~msnas_graph.backends.torch.training.search`.
    """
    run_dir = Path(run_dir)
    config = TrainConfig.for_run(config, run_dir, resume, "train")
    return driver.launch(
        config, run_dir, "train", resume=resume, overwrite=overwrite, progress=progress,
        on_epoch_end=on_epoch_end, build=lambda rt: _build(config, rt), finished=_finished,
        finish=_finish,
    )  # fmt: skip


def _build(config: TrainConfig, rt: Runtime) -> tuple[TrainStep, dict[str, list[int]], int]:
    """Data, split, model and optimiser of a training run: its :class:`TrainStep`."""
    ds = load_cases(config.data, labelled=True)
    spec = model_spec(config, ds)
    spec["channels_last"] = rt.channels_last
    train_idx, val_idx, test_idx = split_cases(ds, config)
    if not train_idx:
        raise DataError(f"{config.data}: the training split is empty; use more cases")
    split = {"train": train_idx, "val": val_idx, "test": test_idx}
    size = int(spec["input_size"])
    shape = ModelSource(spec, "training run").input_shape(size, config.batch_size)
    what = f"train: the {spec['kind']} model at input {shape}"
    check_model(spec, shape, what, training=True, device=rt.device)
    seed_all(config.seed)
    net = create_model(spec)
    if config.init_from is not None:  # a resumed run then loads its checkpoint over it
        init_from_search(net, config.init_from)
    model = rt.prepare_model(net)
    loaders = {
        "train": rt.loader(ds, train_idx, size, config, shuffle=True, augment=config.augment),
        "val": rt.loader(ds, val_idx, size, config, shuffle=False, augment=False)
        if val_idx
        else (None, None),
    }
    return TrainStep(model, spec, config, rt, loaders), split, config.epochs


def _optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    assert config.lr is not None
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class TrainStep:
    """One training epoch of a model (an :class:`~.loop.EpochStep`): its optimiser, cosine
    schedule, AMP scaler, loss and loaders, and the best validation Dice so far."""

    kind = "train"
    what = "training"

    def __init__(
        self,
        model: nn.Module,
        spec: dict[str, Any],
        config: TrainConfig,
        rt: Runtime,
        loaders: Mapping[str, tuple[Any, Any]],
    ) -> None:
        self.model, self.spec, self.config, self.rt, self.loaders = model, spec, config, rt, loaders
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = _optimizer(config, self.params)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.opt, T_max=config.epochs, eta_min=config.lr_min
        )
        self.scaler = rt.scaler()
        self.net = rt.wrap(model)
        if config.compile:
            if hasattr(torch, "compile"):
                self.net = torch.compile(self.net)
            else:
                logger.warning("torch.compile is not available in this torch; training uncompiled")
        self.num_classes = int(spec["num_classes"])
        self.loss_fn = DiceCELoss(self.num_classes)
        self.steps = driver.capped(len(loaders["train"][0]), config.max_steps_per_epoch)
        self.best_dice: float | None = None
        self.best_epoch = 0
        self.improved = False

    def stateful(self) -> dict[str, Any]:
        return {"model": self.model, "opt": self.opt, "sched": self.sched, "scaler": self.scaler}

    def header_state(self) -> dict[str, Any]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {"best_dice": self.best_dice, "best_epoch": self.best_epoch}

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        best = ckpt.get("best_dice")
        self.best_dice = None if best is None else float(best)
        self.best_epoch = int(ckpt.get("best_epoch", 0))

    def start(self, run_dir: Path, split: Mapping[str, list[int]], device: Any) -> None:
        atomic_write(run_dir / "model.json", json.dumps(self.spec, indent=1) + "\n")
        logger.info(
            "train %s: %d train / %d validation cases, %d epochs, on %s",
            self.spec["kind"], len(split["train"]), len(split["val"]), self.config.epochs,
            device,
        )  # fmt: skip

    def run_epoch(self, epoch: int, progress: bool) -> dict[str, Any]:
        lr = self.opt.param_groups[0]["lr"]
        self.loaders["train"][1].set_epoch(epoch)
        bar = driver.progress_bar(self.steps, f"train {epoch + 1}/{self.config.epochs}", progress)
        train_loss = self.train_epoch(epoch + 1, bar)
        self.sched.step()
        val_loss, val_dice = driver.validate(
            self.model, *self.loaders["val"], self.loss_fn, self.num_classes, self.rt,
            self.config.max_steps_per_epoch,
        )  # fmt: skip
        best = self.best_dice
        self.improved = best is None or (val_dice is not None and val_dice > best)
        if val_dice is None:  # no validation split: the last epoch is the best
            self.improved = True
        if self.improved:
            self.best_dice, self.best_epoch = val_dice, epoch + 1
        return {
            "epoch": epoch + 1,
            "phase": "train",
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": lr,
        }

    def train_epoch(self, epoch: int, bar: Any) -> float:
        """``steps`` weight steps; the mean loss. ``epoch`` is 1-based (for the NaN message)."""
        rt = self.rt
        self.net.train()
        it = iter(self.loaders["train"][0])
        total = 0.0
        try:
            for step in range(1, self.steps + 1):
                loss, value = driver.forward_loss(self.net, *next(it), self.loss_fn, rt)
                driver.check_finite(value, epoch, step)
                driver.optimizer_step(
                    loss, self.opt, self.scaler, self.params, self.config.grad_clip
                )
                total += value
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
        finally:
            bar.close()
        return total / max(self.steps, 1)

    def save_epoch(self, run_dir: Path, row: Mapping[str, Any]) -> None:
        if self.improved:
            save_weights(run_dir / "best.pt", self.model)
        save_weights(run_dir / "last.pt", self.model)

    def log_epoch(self, row: Mapping[str, Any], total: int) -> None:
        val_loss, val_dice = row["val_loss"], row["val_dice"]
        logger.info(
            "train epoch %d/%d: loss %.4f val %s dice %s%s",
            row["epoch"], total, row["train_loss"],
            "-" if val_loss is None else f"{val_loss:.4f}",
            "-" if val_dice is None else f"{val_dice:.4f}",
            " (best)" if self.improved else "",
        )  # fmt: skip

    def plots(self, run_dir: Path, history: list[dict[str, Any]]) -> None:
        draw_run_plots(run_dir, history, states=False)


def _finish(run: driver.EpochLoop) -> TrainResult:
    step = run.step
    assert isinstance(step, TrainStep)
    run.finish(
        {"kind": "train", "epochs": run.total, "best_epoch": step.best_epoch,
         "best_dice": step.best_dice},
    )  # fmt: skip
    return TrainResult(run.run_dir, step.best_dice, step.best_epoch, run.history)


def _finished(run_dir: Path) -> TrainResult:
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    best = ckpt.get("best_dice")
    return TrainResult(
        run_dir,
        None if best is None else float(best),
        int(ckpt.get("best_epoch", 0)),
        list(ckpt.get("history", [])),
    )

"""The paper's two-phase architecture search after a weight warm-up (an :class:`~.loop.EpochStep`).

A :class:`~.schedule.PhaseSchedule` says which phase every step is in: ``warmup`` steps train the
weights only (no architecture forward or backward), ``cell`` steps also the cell parameters
(``alpha``, ``p``), ``network`` steps also the network parameters (``beta``); the schedule is
given in epochs (:class:`SearchConfig` ``warmup`` and ``epochs``) or in steps (``warmup_steps``
and ``arch_steps``), and each phase has its own architecture lr (automatic by default). The
train split is halved by group; a step takes a first-order architecture step (Adam) on a batch
of one half, then a weight step (SGD, cosine learning rate) on a batch of the other (DARTS first
order). Architecture gradients are all-reduced explicitly under DDP (the wrapper ignores them),
so every rank keeps identical architecture parameters.

After each epoch the state is diagnosed (:func:`msnas_graph.diagnostics.diagnose`: how many cell
and node decisions are decided, entropies, flips) into the epoch's metrics row; the final
:class:`~msnas_graph.diagnostics.Diagnostics` are :attr:`SearchResult.diagnostics`, their summary
is logged and their warning, if any, logged as a warning.

**Run folder** (rank 0 writes): ``config.json``, ``states/epoch_XXX.json`` (the
:class:`SearchState` after each epoch, ``meta`` holds ``epoch`` and ``phase``; the newest
:data:`~.run_dir.KEEP_STATES` are kept), ``state.json``
(final), ``architecture.json`` (decoded with ``config.paths``), ``supernet.pt``
(``state_dict``), ``checkpoint.pt``, ``metrics.csv``, ``plots/loss.png``,
``plots/arch_weights.png``, ``plots/decisions.png``, ``DONE``.
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
from msnas_graph.backends.torch.limits import check_supernet
from msnas_graph.backends.torch.losses import DiceCELoss
from msnas_graph.backends.torch.nn.supernet import Supernet
from msnas_graph.backends.torch.plots import draw_run_plots
from msnas_graph.backends.torch.training.config import GUMBEL_TAU, SearchConfig, samples_paths
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
    prune_epoch_files,
    save_weights,
)
from msnas_graph.backends.torch.training.runtime import Runtime, seed_all
from msnas_graph.backends.torch.training.schedule import PHASES, PhaseSchedule
from msnas_graph.backends.torch.training.search_costs import SearchCost
from msnas_graph.data import SegmentationDataset
from msnas_graph.decode import decode
from msnas_graph.diagnostics import Diagnostics, diagnose
from msnas_graph.errors import MsnasError, RunError
from msnas_graph.paths import count_paths
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

__all__ = ["PHASES", "PhaseSchedule", "SearchResult", "SearchStep", "search"]

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What :func:`search` returns: the final state, its decoded architecture, the history, and
    how decided the final state is (:func:`~msnas_graph.diagnostics.diagnose` with the run's
    ``paths``, flips against the state before the last epoch)."""

    run_dir: Path
    state: SearchState
    architecture: Architecture | None
    history: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: Diagnostics | None = None


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
    check_supernet(space, config.batch_size, config.input_size, device=rt.device)
    seed_all(config.seed)
    model = Supernet(space, memory=config.memory).to(rt.device)
    if config.topology is not None:  # its classes and channels follow the data's too
        net = config.topology
        shape = {"num_classes": space.num_classes, "in_channels": space.in_channels}
        model.fix_topology(Architecture(net.space.replace(**shape), net.edges, net.cells,
                                        net.paths, net.meta))  # fmt: skip
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
    return step, split, step.schedule.epochs


#: devices whose fused SGD kernel the search uses (PyTorch checks only at the first step)
_FUSED_SGD = frozenset({"cpu", "cuda"})


def _weight_sgd(
    params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float
) -> torch.optim.SGD:
    """SGD over the supernet's thousands of small weight tensors as one fused kernel where
    PyTorch has one for their device (the `paper` supernet on the CPU: 0.32x the time of
    ``foreach``, itself 0.64x the default per-tensor loop), else ``foreach``."""
    options: dict[str, Any] = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    fused = all(p.is_floating_point() and p.device.type in _FUSED_SGD for p in params)
    if fused:
        return torch.optim.SGD(params, **options, fused=True)
    return torch.optim.SGD(params, **options, foreach=True)


class _ArchAdam(torch.optim.Adam):
    """Adam over the cell group then the network group (one lr each); loads the single-group
    state of a checkpoint written before the groups were split (same parameter order)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) == 1 and len(self.param_groups) == 2:
            n, ids = len(self.param_groups[0]["params"]), list(groups[0]["params"])
            split = [{**groups[0], "params": ids[:n]}, {**groups[0], "params": ids[n:]}]
            state_dict = {**state_dict, "param_groups": split}
        super().load_state_dict(state_dict)


class SearchStep:
    """One search epoch over the models and optimisers it holds (an :class:`~.loop.EpochStep`).

    Holds the supernet (and its DDP wrapper), the weight optimiser (SGD, cosine schedule), the
    architecture optimiser (Adam, a cell and a network parameter group), their AMP scalers, the
    :class:`~.schedule.PhaseSchedule`, the loss, the ``weights`` / ``arch`` / ``val`` loaders,
    and the state and :class:`~msnas_graph.diagnostics.Diagnostics` of the last epoch.
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
        self.model, self.config, self.rt, self.loaders = model, config, rt, loaders
        self.space = model.space
        self.steps = capped(
            min(len(loaders["weights"][0]), len(loaders["arch"][0])), config.max_steps_per_epoch
        )
        self.schedule = PhaseSchedule.from_config(config, self.steps)
        self.groups = {  # the cells a fixed network runs (every one otherwise), the nodes
            "cell": model.searched_cell_parameters(), "network": model.network_parameters()
        }  # fmt: skip
        self.weight_params = model.weight_parameters()
        self.weight_opt = _weight_sgd(
            self.weight_params, config.lr, config.momentum, config.weight_decay
        )
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.weight_opt, T_max=self.schedule.epochs, eta_min=config.lr_min
        )
        self.arch_opt = _ArchAdam(
            [{"params": self.groups[g], "lr": self.schedule.lr(g)} for g in ("cell", "network")],
            betas=config.arch_betas,
            weight_decay=config.arch_weight_decay,
        )
        self.scaler, self.arch_scaler = rt.scaler(), rt.scaler()
        self.ddp = rt.wrap(model, ignore=[*model.arch_parameters(), *model.idle_parameters()])
        self.loss_fn = DiceCELoss(self.space.num_classes)
        self.state: SearchState | None = None  #: the state after the last epoch run
        self.previous: SearchState | None = None  #: the state before it
        self.diagnostics: Diagnostics | None = None  #: the diagnostics of ``state``
        self.cost = SearchCost(config, self.space, model.graph, rt.device)
        if rt.main:
            s = self.schedule
            logger.info(
                "search schedule: %d warm-up + %d cell + %d network steps = %d epochs of %d "
                "steps; architecture lr cell %.3g, network %.3g (%s)",
                s.warmup_steps, s.cell_steps, s.network_steps, s.epochs, s.steps_per_epoch,
                s.lr("cell"), s.lr("network"), "auto" if config.arch_lr is None else "given",
            )  # fmt: skip

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
        return self.cost.checkpoint()

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        self.cost.restore(ckpt)

    def start(self, run_dir: Path, split: Mapping[str, list[int]], device: Any) -> None:
        logger.info(
            "search: %d weight / %d architecture / %d validation cases, %d epochs, on %s",
            len(split["weights"]), len(split["arch"]), len(split["val"]), self.schedule.epochs,
            device,
        )  # fmt: skip

    def run_epoch(self, epoch: int, progress: bool) -> dict[str, Any]:
        schedule = self.schedule
        steps, phase = schedule.epoch_steps(epoch), schedule.epoch_phase(epoch)
        if self.state is None:  # the first epoch of this process: the initial/restored state
            self.state = self.model.state()
        lr = self.weight_opt.param_groups[0]["lr"]
        for name in ("weights", "arch"):
            self.loaders[name][1].set_epoch(epoch)
        bar = progress_bar(len(steps), f"search {epoch + 1}/{schedule.epochs} {phase}", progress)
        train_loss, arch_loss, arch_steps = self.train_epoch(steps, epoch + 1, bar)
        self.sched.step()
        if samples_paths(self.config.path_sampling, phase):  # the weights know single paths
            self.model.fix_weights(self.model.argmax_weights())
        try:
            val_loss, val_dice = validate(
                self.model, *self.loaders["val"], self.loss_fn, self.space.num_classes, self.rt,
                self.config.max_steps_per_epoch,
            )  # fmt: skip
        finally:
            self.model.fix_weights(None)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "phase": phase,
            "train_loss": train_loss,
            "arch_loss": arch_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": lr,
            "arch_lr": schedule.lr(phase),
            "step": steps.stop,
            "arch_steps": arch_steps,
        }
        self.previous = self.state
        self.state = self.model.state(
            meta={"epoch": epoch + 1, "phase": phase, "seed": self.config.seed}
        )
        self.diagnostics = diagnose(self.state, paths=self.config.paths, previous=self.previous)
        metrics = self.diagnostics.flat_metrics()  # NaN (no decision of a group) -> empty
        row.update({k: None if v != v else v for k, v in metrics.items()})
        row.update(self.cost.metrics(self.model.arch_weights()))
        return row

    def save_epoch(self, run_dir: Path, row: Mapping[str, Any]) -> None:
        assert self.state is not None and self.state.meta.get("epoch") == row["epoch"]
        self.state.save(run_dir / "states" / f"epoch_{row['epoch']:03d}.json")
        prune_epoch_files(run_dir / "states")  # the newest KEEP_STATES

    def log_epoch(self, row: Mapping[str, Any], total: int) -> None:
        val_loss, val_dice, arch = row["val_loss"], row["val_dice"], row["arch_loss"]
        logger.info(
            "search epoch %d/%d (%s): train %.4f arch %s val %s dice %s; decided %d/%d cell "
            "%d/%d node",
            row["epoch"], total, row["phase"], row["train_loss"],
            "-" if arch is None else f"{arch:.4f}",
            "-" if val_loss is None else f"{val_loss:.4f}",
            "-" if val_dice is None else f"{val_dice:.4f}",
            row["cell_decided"], row["cell_total"], row["node_decided"], row["node_total"],
        )  # fmt: skip
        self.cost.log(row)

    def plots(self, run_dir: Path, history: list[dict[str, Any]]) -> None:
        draw_run_plots(run_dir, history, states=True)

    # ------------------------------------------------------------------ the steps

    def train_epoch(self, steps: range, epoch: int, bar: Any) -> tuple[float, float | None, int]:
        """The global ``steps`` of one epoch: each an architecture step on its phase's group
        (none in the warm-up, whose architecture batches are not even loaded) and a weight step.
        Returns the mean weight loss, the mean architecture loss (``None`` without architecture
        steps) and the number of architecture steps. ``epoch`` is 1-based (NaN message)."""
        self.model.train()
        arch_params = self.model.arch_parameters()
        for p in arch_params:
            p.requires_grad_(False)
            p.grad = None
        w_iter: Iterator[Any] = iter(self.loaders["weights"][0])
        a_iter: Iterator[Any] | None = None
        w_total = a_total = 0.0
        n_arch = 0
        try:
            for i, global_step in enumerate(steps, start=1):
                xw, yw = next(w_iter)
                phase = self.schedule.phase(global_step)
                sampled = samples_paths(self.config.path_sampling, phase)
                self.model.sample_beta = GUMBEL_TAU if sampled else None
                if phase != "warmup":
                    if a_iter is None:
                        a_iter = iter(self.loaders["arch"][0])
                    xa, ya = next(a_iter)
                    a_total += check_finite(self.arch_step(xa, ya, self.groups[phase]), epoch, i)
                    n_arch += 1
                value_w = check_finite(self.weight_step(xw, yw), epoch, i)
                w_total += value_w
                bar.update(1)
                bar.set_postfix(loss=f"{value_w:.4f}", phase=phase)
        finally:
            bar.close()
            self.model.sample_beta = None  # validation and decoding weigh every input
            for p in arch_params:
                p.requires_grad_(True)
        return w_total / max(len(steps), 1), (a_total / n_arch if n_arch else None), n_arch

    def arch_step(self, x: Any, y: Any, active: Sequence[nn.Parameter]) -> float:
        """A first-order architecture step on ``active`` only; the loss (mean over ranks).
        A non-finite loss is returned before any update.

        The operation weights are frozen for the step (no gradient of theirs is wanted, and the
        fused candidates then skip computing one: 0.95x the step time of the `paper` supernet
        at width 32, side by side) and trainable again after it."""
        rt = self.rt
        for p in active:
            p.requires_grad_(True)
        frozen = [p for p in self.weight_params if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            loss, value = forward_loss(self.model, x, y, self.loss_fn, rt)
            if not math.isfinite(value):
                return value
            term = self.cost.term()
            if term is not None and term.weight != 0:  # W = 0: the paper's loss, bit for bit
                loss = loss + term(self.model.arch_weights())[0]
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
            for p in frozen:
                p.requires_grad_(True)
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
    config = SearchConfig.load(run_dir / "config.json")
    diagnostics = _diagnose_final(run_dir, state, config.paths, None)
    return SearchResult(run_dir, state, arch, history, diagnostics)


def _diagnose_final(
    run_dir: Path, state: SearchState, paths: int, known: Diagnostics | None
) -> Diagnostics | None:
    """The final diagnostics (``known`` when the loop computed them), logged: the summary at
    INFO, and the warning (the caller shows it: the CLI on stderr)."""
    if known is None:
        epoch = int(state.meta.get("epoch", 0))
        prev = run_dir / "states" / f"epoch_{epoch - 1:03d}.json"
        try:
            previous = SearchState.load(prev) if epoch > 1 and prev.is_file() else None
            known = diagnose(state, paths=paths, previous=previous)
        except MsnasError as exc:
            logger.warning("could not diagnose the final state: %s", exc)
            return None
    logger.info("search decisions: %s", known.summary())
    if (warning := known.warning()) is not None:  # the CLI prints it; API users read
        logger.info("search warning: %s", warning)  # result.diagnostics.warning()
    return known


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
    step = loop.step
    assert isinstance(step, SearchStep)
    same = step.state is not None and step.state.content_hash == state.content_hash
    known = step.diagnostics if same else None
    diagnostics = _diagnose_final(run_dir, state, config.paths, known) if loop.rt.main else known
    return SearchResult(run_dir, state, arch, loop.history, diagnostics)

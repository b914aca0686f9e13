"""One epoch driver for every run, in the spirit of PyTorch Ignite's ``Engine``.

:class:`EpochLoop` owns what a search and a training run share: the run folder rules
(:func:`prepare_run`), resuming from ``checkpoint.pt`` (config, data split, every stateful
object, RNG states, metric history), a checkpoint after each complete epoch, ``metrics.csv``,
stopping on a non-finite loss (:class:`NonFinite`, raised by a step) or ``Ctrl-C``, the plots
and the ``DONE`` marker. What differs plugs in as an :class:`EpochStep`: the objects to
checkpoint, one epoch of work returning its metrics row, and the per-epoch files and log line.

``Ctrl-C`` and ``SIGTERM`` (what schedulers and ``docker stop`` send; handled as ``Ctrl-C``)
land between complete epochs: the checkpoint of the last complete epoch is on disk (work of the
unfinished epoch is lost; the message names the epoch the checkpoint on disk holds), and
:class:`KeyboardInterrupt` is re-raised (the CLI exits 130). A non-finite loss ends the run with
:class:`RunError`; ``checkpoint.pt`` keeps the last good epoch.

A run holds an exclusive :class:`~msnas_graph.backends.torch.training.run_dir.RunLock` on its
folder for its whole life; a start that fails before its first checkpoint removes the folder it
created.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import torch
from torch import nn

from msnas_graph._util import sigterm_as_interrupt
from msnas_graph.backends.torch.losses import DiceCELoss, dice_scores
from msnas_graph.backends.torch.training.config import RunConfig
from msnas_graph.backends.torch.training.run_dir import (
    CHECKPOINT,
    RunLock,
    clear_run_files,
    get_rng_state,
    is_finished,
    load_checkpoint,
    mark_done,
    prepare_run_dir,
    save_checkpoint,
    set_rng_state,
    write_metrics_csv,
)
from msnas_graph.backends.torch.training.runtime import Runtime, setup_runtime
from msnas_graph.errors import RunError
from msnas_graph.spec import SCHEMA_VERSION

__all__ = [
    "EpochCallback",
    "EpochLoop",
    "EpochStep",
    "NonFinite",
    "capped",
    "forward_loss",
    "launch",
    "optimizer_step",
    "prepare_run",
    "progress_bar",
    "validate",
]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


class NonFinite(Exception):
    """A step saw a NaN or infinite loss (``epoch`` and ``step`` 1-based)."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(epoch, step)
        self.epoch, self.step = epoch, step


def check_finite(value: float, epoch: int, step: int) -> float:
    """``value``, or :class:`NonFinite` if it is NaN or infinite."""
    if not math.isfinite(value):
        raise NonFinite(epoch, step)
    return value


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar (a silent one when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def capped(n: int, cap: int | None) -> int:
    return n if cap is None else min(n, cap)


def forward_loss(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, rt: Runtime
) -> tuple[torch.Tensor, float]:
    """The loss of ``module`` on a batch (moved to the device, under autocast) and its value
    averaged over ranks."""
    x, y = rt.to_input(x), y.to(rt.device)
    with rt.autocast():
        logits = module(x)
    loss = loss_fn(logits, y)
    return loss, rt.mean_scalar(loss)


def optimizer_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: Sequence[nn.Parameter],
    grad_clip: float | None,
) -> None:
    """Backward (loss-scaled under fp16), optional gradient-norm clipping, and the step: the
    weight step shared by the search and training steps."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()


def validate(
    model: nn.Module,
    loader: Any,
    sampler: Any,
    loss_fn: DiceCELoss,
    num_classes: int,
    rt: Runtime,
    max_batches: int | None,
) -> tuple[float | None, float | None]:
    """Mean loss and mean per-image foreground Dice over the validation split (all ranks)."""
    if loader is None:
        return None, None
    model.eval()
    sampler.set_epoch(0)
    loss_sum = dice_sum = count = 0.0
    with torch.no_grad():
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = rt.to_input(x), y.to(rt.device)
            with rt.autocast():
                logits = model(x)
            loss = loss_fn(logits, y)
            loss_sum += float(loss) * x.shape[0]
            dice_sum += float(dice_scores(logits.argmax(1), y, num_classes).sum())
            count += x.shape[0]
    loss_sum, dice_sum, count = rt.sum([loss_sum, dice_sum, count])
    if count == 0:
        return None, None
    return loss_sum / count, dice_sum / count


def prepare_run(
    run_dir: Path, kind: str, rt: Runtime, resume: bool, overwrite: bool
) -> tuple[bool, RunLock | None]:
    """Rank 0: lock the run folder (:class:`RunLock`) and apply
    :func:`~msnas_graph.backends.torch.training.run_dir.prepare_run_dir`; its error or answer
    (whether to resume) on every rank, and the lock (``None`` off rank 0)."""
    error: str | None = None
    resuming = False
    lock: RunLock | None = None
    if rt.main:
        try:
            lock = RunLock(run_dir).acquire()
            resuming = prepare_run_dir(run_dir, kind, resume=resume, overwrite=overwrite)
        except RunError as exc:
            error = str(exc)
            if lock is not None:
                lock.release(failed=True)
                lock = None
    rt.broadcast_error(error)
    return bool(rt.broadcast(resuming)), lock


class EpochStep(Protocol):
    """What a run plugs into :class:`EpochLoop`."""

    kind: str  #: the checkpoint's kind (``"search"``, ``"train"``)
    what: str  #: the run in messages (``"search"``, ``"training"``)

    def stateful(self) -> dict[str, Any]:
        """``name -> object`` with ``state_dict``/``load_state_dict``, saved as ``ckpt[name]``."""

    def header_state(self) -> dict[str, Any]:
        """Checkpoint entries (plain values) saved after ``config``, for the record."""

    def extra_state(self) -> dict[str, Any]:
        """Checkpoint entries (plain values) saved last and read back on resume."""

    def load_extra_state(self, ckpt: Mapping[str, Any]) -> None:
        """Read back what :meth:`extra_state` saved."""

    def start(self, run_dir: Path, split: Mapping[str, list[int]], device: Any) -> None:
        """Rank 0, a new run: files written with ``config.json`` (before the checkpoint of
        epoch 0), and the opening log line."""

    def run_epoch(self, epoch: int, progress: bool) -> dict[str, Any]:
        """Train epoch ``epoch`` (0-based) and return its metrics row (``time_s`` is added)."""

    def save_epoch(self, run_dir: Path, row: Mapping[str, Any]) -> None:
        """Rank 0: the files of a finished epoch, written before its checkpoint."""

    def log_epoch(self, row: Mapping[str, Any], total: int) -> None:
        """Rank 0: the log line of a finished epoch."""

    def plots(self, run_dir: Path, history: list[dict[str, Any]]) -> None:
        """Rank 0: draw the run's plots (never raises)."""


@dataclass
class EpochLoop:
    """Drive ``step`` from the last checkpointed epoch to ``total`` (see the module doc)."""

    step: EpochStep
    rt: Runtime
    run_dir: Path
    config: RunConfig
    split: dict[str, list[int]]
    total: int
    on_epoch_end: EpochCallback | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    saved_epoch: int = 0  #: the epoch the checkpoint on disk holds
    stopped: bool = False  #: stopped by a NaN loss or an interrupt (the checkpoint is kept)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of the last complete epoch."""
        payload: dict[str, Any] = {
            "format": "msnas-graph/checkpoint",
            "schema_version": SCHEMA_VERSION,
            "kind": self.step.kind,
            "epoch": self.epoch,
            "config": json.dumps(self.config.to_dict()),
        }
        payload.update(self.step.header_state())
        payload.update({name: obj.state_dict() for name, obj in self.step.stateful().items()})
        payload.update(rng=get_rng_state(), split=self.split, history=self.history)
        payload.update(self.step.extra_state())
        return payload

    def save(self) -> None:
        save_checkpoint(self.checkpoint_path, self.state_dict())
        self.saved_epoch = self.epoch

    def restore(self) -> None:
        """Load ``checkpoint.pt``: refuse another kind, config or data split; restore every
        stateful object, the RNG states, the history and the epoch count."""
        path = self.checkpoint_path
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") != self.step.kind:
            raise RunError(f"{path}: not a {self.step.kind} checkpoint (kind {ckpt.get('kind')!r})")
        try:
            self._restore(path, ckpt)
        except RunError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise RunError(
                f"{path}: damaged checkpoint ({type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0][:120]}); start over with "
                f"--overwrite or restore the file from a backup"
            ) from None

    def _restore(self, path: Path, ckpt: Mapping[str, Any]) -> None:
        epoch = ckpt.get("epoch")
        if type(epoch) is not int or not 0 <= epoch <= self.total:
            raise RunError(
                f"{path}: damaged checkpoint (epoch {epoch!r} is not a whole number in "
                f"0..{self.total}); start over with --overwrite"
            )
        differ = self.config.resume_conflicts(json.loads(ckpt["config"]))
        if differ:
            raise RunError(
                f"{path}: cannot resume with a different configuration (fields differ: "
                f"{', '.join(differ)}); resume with the run's own config.json or start a new run"
            )
        stored = {k: [int(i) for i in v] for k, v in ckpt.get("split", {}).items()}
        if stored != self.split:
            raise RunError(
                f"{path}: the data split differs from the one the run started with (the dataset "
                f"changed?); resume with the same data or start a new run"
            )
        history = [dict(r) for r in ckpt["history"]]
        if len(history) != epoch:
            raise RunError(
                f"{path}: damaged checkpoint ({len(history)} history rows for epoch {epoch}); "
                f"start over with --overwrite"
            )
        for name, obj in self.step.stateful().items():
            obj.load_state_dict(ckpt[name])
        set_rng_state(ckpt["rng"])
        self.step.load_extra_state(ckpt)
        self.history = history
        self.epoch = self.saved_epoch = epoch
        logger.info(
            "resuming %s in %s after epoch %d of %d",
            "the search" if self.step.kind == "search" else self.step.what,
            self.run_dir, self.epoch, self.total,
        )  # fmt: skip

    def begin(self, resuming: bool) -> None:
        """Restore a resumed run; otherwise (rank 0) write ``config.json``, the step's start
        files and the checkpoint of epoch 0."""
        if resuming:
            self.restore()
        elif self.rt.main:
            self.config.save(self.run_dir / "config.json")
            self.step.start(self.run_dir, self.split, self.rt.device)
            self.save()

    def run(self, progress: bool) -> None:
        """The epochs from the current one to ``total``, each checkpointed when complete."""
        try:
            for epoch in range(self.epoch, self.total):
                t0 = time.time()
                row = self.step.run_epoch(epoch, progress and self.rt.main)
                row["time_s"] = round(time.time() - t0, 3)
                self.history.append(row)
                self.epoch = epoch + 1
                if self.rt.main:
                    self.step.save_epoch(self.run_dir, row)
                    self.save()
                    write_metrics_csv(self.run_dir / "metrics.csv", self.history)
                    self.step.log_epoch(row, self.total)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(dict(row))
        except (NonFinite, KeyboardInterrupt) as exc:
            self._stopped(exc)

    def finish(self, done: Mapping[str, Any]) -> None:
        """Rank 0: ``metrics.csv``, the plots and ``DONE`` (with ``done``); then a barrier."""
        if self.rt.main:
            write_metrics_csv(self.run_dir / "metrics.csv", self.history)
            self.step.plots(self.run_dir, self.history)
            mark_done(self.run_dir, done)
        self.rt.barrier()

    def _stopped(self, exc: BaseException) -> NoReturn:
        """Draw the plots of the epochs done and say where the last good checkpoint is
        (rank 0), then raise."""
        self.stopped = True
        if self.rt.main:
            self.step.plots(self.run_dir, self.history)
        if isinstance(exc, NonFinite):
            raise RunError(
                f"loss became NaN at epoch {exc.epoch} step {exc.step}; the last good checkpoint "
                f"is kept at {self.checkpoint_path}; lower the learning rate or check the data"
            ) from None
        if self.rt.main:
            logger.warning(
                "%s interrupted; %s holds epoch %d of %d: continue with --resume",
                self.step.what, self.checkpoint_path, self.saved_epoch, self.total,
            )  # fmt: skip
        raise exc


R = TypeVar("R")


def _failed_before_learning(loop: EpochLoop | None) -> bool:
    """Whether a failed run wrote nothing worth resuming: built, but no epoch checkpointed and
    not stopped by a NaN loss (whose message points at the checkpoint kept)."""
    return loop is not None and loop.saved_epoch == 0 and not loop.stopped


def launch(
    config: RunConfig,
    run_dir: Path,
    kind: str,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    build: Callable[[Runtime], tuple[EpochStep, dict[str, list[int]], int]],
    finished: Callable[[Path], R],
    finish: Callable[[EpochLoop], R],
) -> R:
    """The skeleton of every run: the runtime, the run folder rules, then either the result of
    a finished run (``finished``) or ``build`` (the step, the data split, the epoch count), the
    epochs from the last checkpoint, and ``finish``."""
    with setup_runtime(config) as rt:
        resuming, lock = prepare_run(run_dir, kind, rt, resume, overwrite)
        started = False
        loop: EpochLoop | None = None
        try:
            with sigterm_as_interrupt():
                if resuming and is_finished(run_dir):
                    rt.barrier()
                    return finished(run_dir)
                step, split, total = build(rt)
                loop = EpochLoop(step, rt, run_dir, config, split, total, on_epoch_end)
                loop.begin(resuming)
                started = True
                loop.run(progress)
                return finish(loop)
        except Exception:  # not an interrupt: that keeps its checkpoint for --resume
            if rt.main and not resuming and _failed_before_learning(loop):
                clear_run_files(run_dir, kind)  # a retry must not need --overwrite
                started = False
            raise
        finally:
            if lock is not None:
                lock.release(failed=not started and not resuming)

"""The training engine: architecture search, training from scratch, evaluation and prediction.

Each entry point is one call with a config object, which is what the CLI wraps:

- :func:`search` (:class:`SearchConfig`): the paper's two-phase search. Phase 1 (``cell``)
  epochs update the weights and the cell parameters (``alpha``, ``p``); phase 2 (``network``)
  epochs the weights and the network parameters (``beta``). The train split is halved by group;
  every step takes a first-order architecture step (Adam) on a batch of one half, then a weight
  step (SGD, cosine learning rate) on a batch of the other (DARTS first order).
- :func:`train` (:class:`TrainConfig`): trains a decoded architecture or the U-Net baseline
  from scratch, through exactly the same code path, keeping the best epoch by validation Dice.
- :func:`evaluate`, :func:`predict`, :func:`load_model`: use a training run folder.

**Run folders** (rank 0 writes; files are replaced atomically):

- search: ``config.json``, ``states/epoch_XXX.json`` (the :class:`SearchState` after each
  epoch, ``meta`` holds ``epoch`` and ``phase``), ``state.json`` (final), ``architecture.json``
  (decoded with ``config.paths``), ``supernet.pt`` (``state_dict``), ``checkpoint.pt``,
  ``metrics.csv``, ``plots/loss.png``, ``plots/arch_weights.png``, ``DONE``.
- train: ``config.json``, ``model.json`` (everything needed to rebuild the model),
  ``best.pt``, ``last.pt`` (``state_dict``\\ s), ``checkpoint.pt``, ``metrics.csv``,
  ``plots/loss.png``, ``DONE``.

``checkpoint.pt`` holds the state after the last complete epoch (epoch 0 = before training):
model and architecture parameters, optimizers, scheduler, AMP scalers, the RNG states of
torch/numpy/python, the data split, the metric history and the epoch count. It is read with
``torch.load(weights_only=True)``.

**Resume.** ``resume=True`` continues from ``checkpoint.pt``. Data order and augmentation are
pure functions of ``(seed, epoch, case)`` (:mod:`msnas_graph.backends.torch.data`), so a
resumed run sees the same batches as an uninterrupted one; on the CPU, with the same thread
count, it ends with bit-identical weights and architecture parameters. ``Ctrl-C`` lands
between complete epochs: the checkpoint of the last complete epoch is already on disk (work
of the unfinished epoch is lost), and :class:`KeyboardInterrupt` is re-raised.

**Failures.** A NaN/infinite loss stops the run with :class:`RunError`; ``checkpoint.pt``
keeps the last good epoch. A folder that holds a finished run is refused unless
``overwrite`` (or ``resume``, which then returns the finished result).

**Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised here
(``gloo`` on the CPU, ``nccl`` on CUDA) unless the caller already did. Each rank reads its
:class:`~torch.utils.data.DistributedSampler` share (``batch_size`` is per rank); weight
gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`, architecture
gradients by an explicit all-reduce before the Adam step, so every rank keeps identical
architecture parameters. Only rank 0 writes files; a barrier ends the run. The process group
is kept for later runs in the same process and destroyed at exit. Resuming under DDP needs the
run folder on a filesystem every rank can read.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from msnas_graph._util import atomic_write, unknown_name
from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.data import (
    SegmentationTorchDataset,
    make_loader,
    split_by_group,
)
from msnas_graph.backends.torch.losses import DiceCELoss, dice_scores
from msnas_graph.backends.torch.runs import (
    CHECKPOINT,
    get_rng_state,
    is_finished,
    load_checkpoint,
    mark_done,
    plot_arch_weights,
    plot_losses,
    prepare_run_dir,
    save_checkpoint,
    save_weights,
    set_rng_state,
    write_metrics_csv,
)
from msnas_graph.data import (
    SegmentationDataset,
    load_dataset,
    load_folds,
    preprocess,
    restore_mask,
    train_val_test_split,
    write_mask,
    write_overlay,
)
from msnas_graph.decode import decode
from msnas_graph.errors import ArchitectureError, DataError, MsnasError, RunError
from msnas_graph.paths import count_paths
from msnas_graph.spec import SCHEMA_VERSION, SearchSpace, load_space
from msnas_graph.state import SearchState

__all__ = [
    "AMP_MODES",
    "SearchConfig",
    "SearchResult",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate",
    "load_model",
    "predict",
    "resolve_device",
    "search",
    "train",
]

logger = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adam")
SPLITS = ("train", "val", "test", "all")
MODEL_FORMAT = "msnas-graph/model"

#: Config fields that may change when a run is resumed (they do not change what is computed,
#: or only its numerics).
RESUME_FREE = frozenset({"device", "num_workers", "amp", "channels_last", "compile", "checkpoint"})

EpochCallback = Callable[[dict[str, Any]], None]


# =================================================================================== configs


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, SearchSpace | Architecture):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class _Config:
    """JSON round trip shared by the configs (dataclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the space/architecture as their own JSON documents)."""
        return {
            f.name: _to_jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically."""
        return atomic_write(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> Any:
        """Build from :meth:`to_dict` output; unknown fields are a :class:`RunError`."""
        if not isinstance(data, dict):
            raise RunError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                raise RunError(f"{source}: {unknown_name('config field', key, names)}")
        try:
            return cls(**data)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            if isinstance(exc, MsnasError):
                raise
            raise RunError(f"{source}: malformed config ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a ``config.json``."""
        path = Path(path)
        if not path.is_file():
            raise RunError(f"{path}: no such config file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, str(path))


def _absolute(source: str | None) -> str | None:
    """An existing file or folder as an absolute path, so that a run folder's config still
    finds its data from another working directory; anything else (``phantom``, ``unet``) as is."""
    if source is None or str(source).startswith("phantom") or str(source).lower() == "unet":
        return source
    path = Path(source)
    return str(path.resolve()) if path.exists() else str(source)


def _check_common(cfg: Any, where: str) -> None:
    cfg.data = _absolute(cfg.data)
    cfg.folds = _absolute(cfg.folds)
    if cfg.batch_size < 1:
        raise RunError(f"{where}: batch_size={cfg.batch_size} must be at least 1")
    if cfg.amp not in AMP_MODES:
        raise RunError(f"{where}: {unknown_name('amp mode', cfg.amp, AMP_MODES)}")
    if cfg.num_workers < 0:
        raise RunError(f"{where}: num_workers={cfg.num_workers} must be >= 0")
    if cfg.max_steps_per_epoch is not None and cfg.max_steps_per_epoch < 1:
        raise RunError(f"{where}: max_steps_per_epoch must be at least 1 (or None for all)")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise RunError(f"{where}: val_fraction={cfg.val_fraction} must lie in [0, 1)")
    if cfg.lr <= 0 or not math.isfinite(cfg.lr):
        raise RunError(f"{where}: lr={cfg.lr} must be a positive number")


@dataclass
class SearchConfig(_Config):
    """Everything a search needs (JSON-serialisable, written as the run's ``config.json``).

    Attributes:
        space: the search space (a :class:`SearchSpace`, a preset name or a spec file path).
            Its ``num_classes`` and ``in_channels`` are taken from the data if they differ.
        data: dataset source for :func:`msnas_graph.data.load_dataset` (``"phantom"``,
            ``"phantom:N"`` or a folder).
        input_size: side length the images are resized to (default ``space.input_size``).
        epochs: ``(cell_epochs, network_epochs)``; default ``(20, 20)`` (the paper) for the
            ``paper`` space, else ``(2, 2)``.
        batch_size: per process (per rank under DDP).
        lr, lr_min, momentum, weight_decay, grad_clip: weight optimizer (SGD; cosine from
            ``lr`` to ``lr_min`` over all epochs; gradient-norm clipping, ``None`` for none).
        arch_lr, arch_betas, arch_weight_decay: architecture optimizer (Adam).
        augment: augment the search's training batches (off, as in DARTS).
        seed: seeds model initialisation, splits, data order and augmentation.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: ``"none"``, ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA, with a GradScaler).
        channels_last: use the channels-last memory format.
        num_workers: DataLoader worker processes.
        max_steps_per_epoch: cap on steps (and validation batches) per epoch, for smoke runs.
        folds, test_fold, val_fraction: the split (:func:`~msnas_graph.data.train_val_test_split`;
            ``folds`` is a folds JSON path, ``None`` = seeded 5-fold by group). The test fold
            takes no part in the search.
        paths: ``N_l``, the paths kept when decoding the final state.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during the run.
        checkpoint: recompute each cell in the backward pass instead of keeping its
            activations (gradient checkpointing): several times less memory for about twice
            the step time; BN running statistics are then updated twice per step.
    """

    space: SearchSpace | str = "quick"
    data: str = "phantom"
    input_size: int | None = None
    epochs: tuple[int, int] | None = None
    batch_size: int = 8
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    augment: bool = False
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    folds: str | None = None
    test_fold: int | None = 0
    val_fraction: float = 0.2
    paths: int = 3
    deterministic: bool = False
    checkpoint: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.space, dict):
            self.space = SearchSpace.from_dict(self.space, "config: space")
        elif not isinstance(self.space, SearchSpace):
            self.space = load_space(self.space)
        space = self.space
        if self.input_size is None:
            self.input_size = space.input_size
        if self.epochs is None:
            self.epochs = (20, 20) if space.name == "paper" else (2, 2)
        self.epochs = (int(self.epochs[0]), int(self.epochs[1]))
        self.arch_betas = (float(self.arch_betas[0]), float(self.arch_betas[1]))
        where = "search config"
        _check_common(self, where)
        if min(self.epochs) < 0 or sum(self.epochs) < 1:
            raise RunError(f"{where}: epochs={self.epochs} must be non-negative with a total >= 1")
        factor = 2 ** (space.scales - 1)
        if self.input_size < 1 or self.input_size % factor:
            raise RunError(
                f"{where}: input_size={self.input_size} must be a positive multiple of "
                f"2**(scales-1)={factor}"
            )
        if self.paths < 1:
            raise RunError(f"{where}: paths={self.paths} must be at least 1")


@dataclass
class TrainConfig(_Config):
    """Everything a training run needs (written as the run's ``config.json``).

    Attributes:
        model: ``"unet"``, an :class:`Architecture`, or a path to an architecture JSON or to a
            search run folder (its ``architecture.json``).
        fusion: multi-scale fusion of an architecture's network (default: its space's).
        unet_base_channels, unet_depth: the U-Net baseline's width and levels.
        data, input_size: dataset source and side length (default: the architecture's
            ``space.input_size``, or 256 for the U-Net).
        epochs, batch_size: epochs and per-process batch size.
        optimizer: ``"sgd"`` (default; momentum 0.9, Nesterov) or ``"adam"``.
        lr: initial learning rate; default 0.025 for SGD (the DARTS/MS-NAS weight setting),
            1e-3 for Adam. Cosine decay to ``lr_min`` over the epochs.
        weight_decay, grad_clip: regularisation and gradient-norm clipping (``None``: off).
        augment: flips, small rotations/scaling and intensity jitter (on).
        seed, device, amp, channels_last, num_workers, max_steps_per_epoch, deterministic:
            as in :class:`SearchConfig`.
        compile: wrap the model in ``torch.compile`` (off; the saved weights are the plain
            module's).
        folds, test_fold, val_fraction: the split; the best epoch is chosen on the validation
            split, the test fold is left for :func:`evaluate`.
    """

    model: str | Architecture = "unet"
    fusion: str | None = None
    unet_base_channels: int = 56
    unet_depth: int = 5
    data: str = "phantom"
    input_size: int | None = None
    epochs: int = 50
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float | None = None
    lr_min: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    folds: str | None = None
    test_fold: int | None = 0
    val_fraction: float = 0.2
    deterministic: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = Architecture.from_dict(self.model, "config: model")
        if isinstance(self.model, str | Path):
            self.model = _absolute(str(self.model)) or str(self.model)
        where = "train config"
        if self.optimizer not in OPTIMIZERS:
            raise RunError(f"{where}: {unknown_name('optimizer', self.optimizer, OPTIMIZERS)}")
        if self.lr is None:
            self.lr = 0.025 if self.optimizer == "sgd" else 1e-3
        _check_common(self, where)
        if self.epochs < 1:
            raise RunError(f"{where}: epochs={self.epochs} must be at least 1")
        if self.input_size is not None and self.input_size < 1:
            raise RunError(f"{where}: input_size={self.input_size} must be positive")


@dataclass
class SearchResult:
    """What :func:`search` returns: the final state, its decoded architecture, the history."""

    run_dir: Path
    state: SearchState
    architecture: Architecture | None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    """What :func:`train` returns: the best validation Dice and its epoch, the history."""

    run_dir: Path
    best_dice: float | None
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)


# =================================================================================== runtime


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


@dataclass
class _Runtime:
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
        return self.rank == 0

    @property
    def fp16(self) -> bool:
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def sum(self, values: Sequence[float]) -> list[float]:
        """Sum ``values`` over ranks (identity when not distributed)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def mean_scalar(self, value: torch.Tensor) -> float:
        """Mean over ranks of a scalar tensor (one sync)."""
        v = value.detach().float()
        if not self.distributed:
            return float(v)
        v = v.to(self._comm_device).clone()
        dist.all_reduce(v)
        return float(v) / self.world

    def average_grads(self, params: Sequence[nn.Parameter]) -> None:
        if not self.distributed:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_error(self, message: str | None) -> None:
        """Rank 0's error (or ``None``) reaches every rank; everyone raises it."""
        if self.distributed:
            box = [message]
            dist.broadcast_object_list(box, src=0)
            message = box[0]
        if message is not None:
            raise RunError(message)

    def close(self) -> None:
        if self.deterministic_before is not None:
            torch.use_deterministic_algorithms(self.deterministic_before)


def _setup_runtime(cfg: Any) -> _Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device)
    rt = _Runtime(device=device)
    if world > 1:
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        rt = _Runtime(device=device, rank=rank, world=world)
        if not dist.is_initialized():
            # Initialised once per process and kept for later runs in the same process (a
            # torchrun store does not support a second initialisation); destroyed at exit.
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            atexit.register(_destroy_group)
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


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _scaler(rt: _Runtime) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=rt.fp16)


def _wrap_ddp(model: nn.Module, rt: _Runtime, ignore: Sequence[nn.Parameter] = ()) -> nn.Module:
    if not rt.distributed:
        return model
    ids = {id(p) for p in ignore}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    if names:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


class _NonFinite(Exception):
    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(epoch, step)
        self.epoch, self.step = epoch, step


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


# ======================================================================= data and resuming


def _load_data(source: str, *, labelled: bool = False, **kw: Any) -> SegmentationDataset:
    ds = load_dataset(source, **kw)
    if len(ds) == 0:
        raise DataError(f"{source}: the dataset has no cases")
    if labelled and not ds.labelled:
        raise DataError(
            f"{source}: some cases have no mask; searching and training need a mask for every "
            f"case (put the masks next to the images, or leave unlabelled cases out)"
        )
    return ds


def _split(ds: SegmentationDataset, cfg: Any) -> tuple[list[int], list[int], list[int]]:
    folds = load_folds(cfg.folds) if cfg.folds else None
    return train_val_test_split(
        ds, test_fold=cfg.test_fold, folds=folds, val_fraction=cfg.val_fraction, seed=cfg.seed
    )


def _check_resume_config(stored: Mapping[str, Any], given: Mapping[str, Any], path: Path) -> None:
    differ = [
        k for k in given if k not in RESUME_FREE and _norm(stored.get(k)) != _norm(given.get(k))
    ]
    if differ:
        raise RunError(
            f"{path}: cannot resume with a different configuration (fields differ: "
            f"{', '.join(differ)}); resume with the run's own config.json or start a new run"
        )


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _optimizer_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: Sequence[nn.Parameter],
    grad_clip: float | None,
) -> None:
    """Backward (loss-scaled under fp16), optional gradient-norm clipping, and the step: the
    weight step shared by the search and training loops."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()


def _restore(
    ckpt_path: Path, kind: str, config: Any, split: Mapping[str, list[int]], **stateful: Any
) -> dict[str, Any]:
    """Load a resume checkpoint of ``kind``, check that the config and data split match, load
    every ``name=object`` from ``ckpt[name]`` and restore the RNG states."""
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("kind") != kind:
        raise RunError(f"{ckpt_path}: not a {kind} checkpoint (kind {ckpt.get('kind')!r})")
    _check_resume_config(json.loads(ckpt["config"]), config.to_dict(), ckpt_path)
    _check_split(ckpt, split, ckpt_path)
    for name, obj in stateful.items():
        obj.load_state_dict(ckpt[name])
    set_rng_state(ckpt["rng"])
    return ckpt


def _check_split(ckpt: Mapping[str, Any], split: Mapping[str, list[int]], path: Path) -> None:
    stored = {k: [int(i) for i in v] for k, v in ckpt.get("split", {}).items()}
    if stored != split:
        raise RunError(
            f"{path}: the data split differs from the one the run started with (the dataset "
            f"changed?); resume with the same data or start a new run"
        )


def _capped(n: int, cap: int | None) -> int:
    return n if cap is None else min(n, cap)


def _validate(
    model: nn.Module,
    loader: Any,
    sampler: Any,
    loss_fn: DiceCELoss,
    num_classes: int,
    rt: _Runtime,
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


def _stopped(
    exc: BaseException,
    what: str,
    rt: _Runtime,
    run_dir: Path,
    history: list[dict[str, Any]],
    total: int,
    plots: Callable[[Path, list[dict[str, Any]]], None],
) -> NoReturn:
    """End a search or training loop stopped by a non-finite loss or Ctrl-C: draw the plots
    of the epochs done and say where the last good checkpoint is (rank 0), then raise."""
    if rt.main:
        plots(run_dir, history)
    if isinstance(exc, _NonFinite):
        raise RunError(_nan_message(exc, run_dir)) from None
    if rt.main:
        done = int(history[-1]["epoch"]) if history else 0
        logger.warning(
            "%s interrupted; %s holds epoch %d of %d: continue with --resume",
            what, run_dir / CHECKPOINT, done, total,
        )  # fmt: skip
    raise exc


def _nan_message(exc: _NonFinite, run_dir: Path) -> str:
    return (
        f"loss became NaN at epoch {exc.epoch} step {exc.step}; the last good checkpoint is kept "
        f"at {run_dir / CHECKPOINT}; lower the learning rate or check the data"
    )


# ===================================================================================== search


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
    if config is None:
        if not resume:
            raise RunError("search: give a SearchConfig (only a resumed run reads config.json)")
        config = SearchConfig.load(run_dir / "config.json")
    rt = _setup_runtime(config)
    try:
        return _search(config, run_dir, rt, resume, overwrite, progress, on_epoch_end)
    finally:
        rt.close()


def _prepare(run_dir: Path, kind: str, rt: _Runtime, resume: bool, overwrite: bool) -> bool:
    error: str | None = None
    resuming = False
    if rt.main:
        try:
            resuming = prepare_run_dir(run_dir, kind, resume=resume, overwrite=overwrite)
        except RunError as exc:
            error = str(exc)
    rt.broadcast_error(error)
    if rt.distributed:
        box = [resuming]
        dist.broadcast_object_list(box, src=0)
        resuming = bool(box[0])
    return resuming


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


def _finished_search(run_dir: Path) -> SearchResult:
    state = SearchState.load(run_dir / "state.json")
    arch_path = run_dir / "architecture.json"
    arch = Architecture.load(arch_path) if arch_path.is_file() else None
    history: list[dict[str, Any]] = []
    if (run_dir / CHECKPOINT).is_file():
        history = list(load_checkpoint(run_dir / CHECKPOINT).get("history", []))
    return SearchResult(run_dir, state, arch, history)


def _search(
    config: SearchConfig,
    run_dir: Path,
    rt: _Runtime,
    resume: bool,
    overwrite: bool,
    progress: bool,
    on_epoch_end: EpochCallback | None,
) -> SearchResult:
    resuming = _prepare(run_dir, "search", rt, resume, overwrite)
    if resuming and is_finished(run_dir):
        rt.barrier()
        return _finished_search(run_dir)
    assert isinstance(config.space, SearchSpace)  # normalised in __post_init__
    assert config.epochs is not None and config.input_size is not None

    ds = _load_data(config.data, labelled=True, in_channels=config.space.in_channels)
    space = _adapt_space(config.space, ds)
    train_idx, val_idx, test_idx = _split(ds, config)
    w_idx, a_idx = split_by_group(train_idx, ds.groups(), seed=config.seed)
    split = {"train": train_idx, "val": val_idx, "test": test_idx, "weights": w_idx, "arch": a_idx}
    from msnas_graph.backends.torch.supernet import Supernet

    _seed_all(config.seed)
    model = Supernet(space, checkpoint=config.checkpoint).to(rt.device)
    n_paths = count_paths(model.graph)
    if config.paths > n_paths:
        raise RunError(
            f"search config: paths={config.paths} but the space has only {n_paths} "
            f"input->output paths; use paths <= {n_paths}"
        )
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    cell_params = model.cell_parameters()
    net_params = model.network_parameters()
    weight_params = model.weight_parameters()
    total = sum(config.epochs)
    weight_opt = torch.optim.SGD(
        weight_params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        weight_opt, T_max=total, eta_min=config.lr_min
    )
    arch_opt = torch.optim.Adam(
        model.arch_parameters(),
        lr=config.arch_lr,
        betas=config.arch_betas,
        weight_decay=config.arch_weight_decay,
    )
    scaler, arch_scaler = _scaler(rt), _scaler(rt)
    ddp = _wrap_ddp(model, rt, ignore=model.arch_parameters())
    loss_fn = DiceCELoss(space.num_classes)
    distributed = (rt.rank, rt.world) if rt.distributed else None
    pin = rt.device.type == "cuda"

    def loader(idx: list[int], shuffle: bool, augment: bool) -> tuple[Any, Any]:
        tds = SegmentationTorchDataset(
            ds, idx, config.input_size or space.input_size, augment=augment, seed=config.seed
        )
        return make_loader(
            tds,
            config.batch_size,
            shuffle=shuffle,
            seed=config.seed,
            num_workers=config.num_workers,
            distributed=distributed,
            pin_memory=pin,
        )

    w_loader, w_sampler = loader(w_idx, True, config.augment)
    a_loader, a_sampler = loader(a_idx, True, config.augment)
    v_loader, v_sampler = loader(val_idx, False, False) if val_idx else (None, None)

    history: list[dict[str, Any]] = []
    start = 0
    ckpt_path = run_dir / CHECKPOINT
    if resuming:
        ckpt = _restore(
            ckpt_path,
            "search",
            config,
            split,
            model=model,
            weight_opt=weight_opt,
            arch_opt=arch_opt,
            sched=sched,
            scaler=scaler,
            arch_scaler=arch_scaler,
        )
        history = [dict(r) for r in ckpt["history"]]
        start = int(ckpt["epoch"])
        logger.info("resuming the search in %s after epoch %d of %d", run_dir, start, total)

    def checkpoint(epoch: int) -> None:
        save_checkpoint(
            ckpt_path,
            {
                "format": "msnas-graph/checkpoint",
                "schema_version": SCHEMA_VERSION,
                "kind": "search",
                "epoch": epoch,
                "config": json.dumps(config.to_dict()),
                "space": json.dumps(space.to_dict()),
                "model": model.state_dict(),
                "weight_opt": weight_opt.state_dict(),
                "arch_opt": arch_opt.state_dict(),
                "sched": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "arch_scaler": arch_scaler.state_dict(),
                "rng": get_rng_state(),
                "split": split,
                "history": history,
            },
        )

    if rt.main and not resuming:
        config.save(run_dir / "config.json")
        checkpoint(0)
        logger.info(
            "search: %d weight / %d architecture / %d validation cases, %d+%d epochs, on %s",
            len(w_idx),
            len(a_idx),
            len(val_idx),
            *config.epochs,
            rt.device,
        )

    steps = _capped(min(len(w_loader), len(a_loader)), config.max_steps_per_epoch)
    try:
        for epoch in range(start, total):
            phase = "cell" if epoch < config.epochs[0] else "network"
            active = cell_params if phase == "cell" else net_params
            t0 = time.time()
            lr = weight_opt.param_groups[0]["lr"]
            w_sampler.set_epoch(epoch)
            a_sampler.set_epoch(epoch)
            train_loss, arch_loss = _search_epoch(
                model, ddp, loss_fn, rt, weight_opt, arch_opt, scaler, arch_scaler,
                weight_params, model.arch_parameters(), active, config.grad_clip,
                iter(w_loader), iter(a_loader), steps, epoch + 1,
                _progress(steps, f"search {epoch + 1}/{total} {phase}", progress and rt.main),
            )  # fmt: skip
            sched.step()
            val_loss, val_dice = _validate(
                model, v_loader, v_sampler, loss_fn, space.num_classes, rt,
                config.max_steps_per_epoch,
            )  # fmt: skip
            state = model.state(meta={"epoch": epoch + 1, "phase": phase, "seed": config.seed})
            row = {
                "epoch": epoch + 1,
                "phase": phase,
                "train_loss": train_loss,
                "arch_loss": arch_loss,
                "val_loss": val_loss,
                "val_dice": val_dice,
                "lr": lr,
                "arch_lr": arch_opt.param_groups[0]["lr"],
                "time_s": round(time.time() - t0, 3),
            }
            history.append(row)
            if rt.main:
                state.save(run_dir / "states" / f"epoch_{epoch + 1:03d}.json")
                checkpoint(epoch + 1)
                write_metrics_csv(run_dir / "metrics.csv", history)
                logger.info(
                    "search epoch %d/%d (%s): train %.4f arch %.4f val %s dice %s",
                    epoch + 1, total, phase, train_loss, arch_loss,
                    "-" if val_loss is None else f"{val_loss:.4f}",
                    "-" if val_dice is None else f"{val_dice:.4f}",
                )  # fmt: skip
            if on_epoch_end is not None:
                on_epoch_end(dict(row))
    except (_NonFinite, KeyboardInterrupt) as exc:
        _stopped(exc, "search", rt, run_dir, history, total, _search_plots)

    state = model.state(meta={"epoch": total, "phase": "done", "seed": config.seed})
    arch: Architecture | None = None
    try:
        arch = decode(state, paths=config.paths)
    except MsnasError as exc:  # a search result is still worth keeping
        logger.warning("decoding the final state failed: %s", exc)
    if rt.main:
        state.save(run_dir / "state.json")
        if arch is not None:
            arch.save(run_dir / "architecture.json")
        save_weights(run_dir / "supernet.pt", model)
        write_metrics_csv(run_dir / "metrics.csv", history)
        _search_plots(run_dir, history)
        mark_done(run_dir, {"kind": "search", "epochs": total, "state_hash": state.content_hash})
    rt.barrier()
    return SearchResult(run_dir, state, arch, history)


def _search_epoch(
    model: nn.Module,
    ddp: nn.Module,
    loss_fn: DiceCELoss,
    rt: _Runtime,
    weight_opt: torch.optim.Optimizer,
    arch_opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    arch_scaler: torch.amp.GradScaler,
    weight_params: Sequence[nn.Parameter],
    arch_params: Sequence[nn.Parameter],
    active: Sequence[nn.Parameter],
    grad_clip: float | None,
    w_iter: Iterator[Any],
    a_iter: Iterator[Any],
    steps: int,
    epoch: int,
    bar: Any,
) -> tuple[float, float]:
    model.train()
    for p in arch_params:
        p.requires_grad_(False)
        p.grad = None
    w_total = a_total = 0.0
    try:
        for step in range(1, steps + 1):
            xw, yw = next(w_iter)
            xa, ya = next(a_iter)
            # --- architecture step (first order): gradients of the active group only
            xa, ya = rt.to_input(xa), ya.to(rt.device)
            for p in active:
                p.requires_grad_(True)
            with rt.autocast():
                logits = model(xa)
            loss_a = loss_fn(logits, ya)
            value_a = rt.mean_scalar(loss_a)
            if not math.isfinite(value_a):
                raise _NonFinite(epoch, step)
            grads = torch.autograd.grad(arch_scaler.scale(loss_a), list(active))
            for p, g in zip(active, grads, strict=True):
                p.grad = g
            rt.average_grads(active)
            arch_scaler.step(arch_opt)
            arch_scaler.update()
            arch_opt.zero_grad(set_to_none=True)
            for p in active:
                p.requires_grad_(False)
            # --- weight step
            xw, yw = rt.to_input(xw), yw.to(rt.device)
            with rt.autocast():
                logits = ddp(xw)
            loss_w = loss_fn(logits, yw)
            value_w = rt.mean_scalar(loss_w)
            if not math.isfinite(value_w):
                raise _NonFinite(epoch, step)
            _optimizer_step(loss_w, weight_opt, scaler, weight_params, grad_clip)
            w_total += value_w
            a_total += value_a
            bar.update(1)
            bar.set_postfix(loss=f"{value_w:.4f}", arch=f"{value_a:.4f}")
    finally:
        bar.close()
        for p in arch_params:
            p.requires_grad_(True)
    return w_total / max(steps, 1), a_total / max(steps, 1)


def _search_plots(run_dir: Path, history: list[dict[str, Any]]) -> None:
    try:
        plot_losses(run_dir / "plots" / "loss.png", history)
        states = [SearchState.load(p) for p in sorted((run_dir / "states").glob("epoch_*.json"))]
        plot_arch_weights(run_dir / "plots" / "arch_weights.png", states)
    except Exception as exc:  # plots never end a run
        logger.warning("could not draw the plots: %s", exc)


# ===================================================================================== models


def _resolve_architecture(model: str | Architecture) -> Architecture:
    if isinstance(model, Architecture):
        return model
    path = Path(model)
    if path.is_dir():
        candidate = path / "architecture.json"
        if not candidate.is_file():
            raise RunError(
                f"{path}: no architecture.json in this folder; give an architecture JSON, a "
                f"finished search run folder, or 'unet'"
            )
        path = candidate
    if not path.is_file():
        raise RunError(
            f"model '{model}': no such file or folder; give 'unet', an architecture JSON or a "
            f"search run folder"
        )
    try:
        return Architecture.load(path)
    except ArchitectureError as exc:
        raise RunError(str(exc)) from None


def _model_spec(config: TrainConfig, ds: SegmentationDataset) -> dict[str, Any]:
    spec: dict[str, Any] = {"format": MODEL_FORMAT, "schema_version": SCHEMA_VERSION}
    if isinstance(config.model, str) and config.model.lower() == "unet":
        size = config.input_size or 256
        spec.update(
            kind="unet",
            unet={"base_channels": config.unet_base_channels, "depth": config.unet_depth},
            in_channels=ds.in_channels,
            num_classes=ds.num_classes,
        )
        factor = 2 ** (config.unet_depth - 1)
        if size < factor:
            raise RunError(
                f"train config: input_size={size} is too small for a U-Net of depth "
                f"{config.unet_depth}: use at least {factor} (or a smaller --unet-depth)"
            )
        if size % factor:
            logger.warning(
                "input_size %d is not a multiple of %d: the U-Net will pad/resize internally",
                size, factor,
            )  # fmt: skip
    else:
        arch = _resolve_architecture(config.model)
        space = arch.space
        if space.num_classes != ds.num_classes or space.in_channels != ds.in_channels:
            raise DataError(
                f"the architecture expects {space.in_channels} input channel(s) and "
                f"{space.num_classes} classes, the data '{config.data}' has "
                f"{ds.in_channels} and {ds.num_classes}; search on this data or decode a "
                f"matching architecture"
            )
        size = config.input_size or space.input_size
        factor = 2 ** max(n.scale for n in arch.nodes)
        if size % factor:
            raise RunError(
                f"train config: input_size={size} must be a multiple of {factor} (the "
                f"architecture's deepest scale)"
            )
        spec.update(
            kind="architecture",
            architecture=arch.to_dict(),
            fusion=config.fusion or space.fusion,
            in_channels=space.in_channels,
            num_classes=space.num_classes,
        )
    spec.update(input_size=size, label_names=list(ds.label_names), channels_last=False)
    return spec


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild the model a ``model.json`` describes (weights not loaded)."""
    if not isinstance(spec, Mapping):
        raise RunError(f"not a model description (a {type(spec).__name__}, expected a mapping)")
    if spec.get("format") != MODEL_FORMAT:
        raise RunError(
            f"not a model description (format {spec.get('format')!r}, expected '{MODEL_FORMAT}')"
        )
    if spec["kind"] == "unet":
        from msnas_graph.backends.torch.unet import UNet

        return UNet(
            spec["in_channels"],
            spec["num_classes"],
            base_channels=spec["unet"]["base_channels"],
            depth=spec["unet"]["depth"],
        )
    if spec["kind"] == "architecture":
        from msnas_graph.backends.torch.network import build_network

        arch = Architecture.from_dict(spec["architecture"], "model.json: architecture")
        return build_network(arch, fusion=spec.get("fusion"))
    raise RunError(unknown_name("model kind", str(spec["kind"]), ("architecture", "unet")))


# ====================================================================================== train


def train(
    config: TrainConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train a model from scratch into ``run_dir`` (see the module doc).

    The same code path serves the U-Net baseline and MS-NAS networks. ``config=None`` with
    ``resume=True`` reads the run's ``config.json``; ``on_epoch_end`` as in :func:`search`.
    """
    run_dir = Path(run_dir)
    if config is None:
        if not resume:
            raise RunError("train: give a TrainConfig (only a resumed run reads config.json)")
        config = TrainConfig.load(run_dir / "config.json")
    rt = _setup_runtime(config)
    try:
        return _train(config, run_dir, rt, resume, overwrite, progress, on_epoch_end)
    finally:
        rt.close()


def _finished_train(run_dir: Path) -> TrainResult:
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    best = ckpt.get("best_dice")
    return TrainResult(
        run_dir,
        None if best is None else float(best),
        int(ckpt.get("best_epoch", 0)),
        list(ckpt.get("history", [])),
    )


def _train(
    config: TrainConfig,
    run_dir: Path,
    rt: _Runtime,
    resume: bool,
    overwrite: bool,
    progress: bool,
    on_epoch_end: EpochCallback | None,
) -> TrainResult:
    resuming = _prepare(run_dir, "train", rt, resume, overwrite)
    if resuming and is_finished(run_dir):
        rt.barrier()
        return _finished_train(run_dir)
    ds = _load_data(config.data, labelled=True)
    spec = _model_spec(config, ds)
    spec["channels_last"] = rt.channels_last
    train_idx, val_idx, test_idx = _split(ds, config)
    if not train_idx:
        raise DataError(f"{config.data}: the training split is empty; use more cases")
    split = {"train": train_idx, "val": val_idx, "test": test_idx}

    _seed_all(config.seed)
    model = build_model(spec).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = [p for p in model.parameters() if p.requires_grad]
    assert config.lr is not None
    opt: torch.optim.Optimizer
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    else:
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=config.epochs, eta_min=config.lr_min
    )
    scaler = _scaler(rt)
    net = _wrap_ddp(model, rt)
    if config.compile:
        if hasattr(torch, "compile"):
            net = torch.compile(net)  # type: ignore[assignment]
        else:
            logger.warning("torch.compile is not available in this torch; training uncompiled")
    loss_fn = DiceCELoss(int(spec["num_classes"]))
    size = int(spec["input_size"])
    distributed = (rt.rank, rt.world) if rt.distributed else None
    pin = rt.device.type == "cuda"
    t_loader, t_sampler = make_loader(
        SegmentationTorchDataset(ds, train_idx, size, augment=config.augment, seed=config.seed),
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        num_workers=config.num_workers,
        distributed=distributed,
        pin_memory=pin,
    )
    v_loader: Any = None
    v_sampler: Any = None
    if val_idx:
        v_loader, v_sampler = make_loader(
            SegmentationTorchDataset(ds, val_idx, size, augment=False, seed=config.seed),
            config.batch_size,
            shuffle=False,
            seed=config.seed,
            num_workers=config.num_workers,
            distributed=distributed,
            pin_memory=pin,
        )

    history: list[dict[str, Any]] = []
    best_dice: float | None = None
    best_epoch = 0
    start = 0
    ckpt_path = run_dir / CHECKPOINT
    if resuming:
        ckpt = _restore(
            ckpt_path, "train", config, split, model=model, opt=opt, sched=sched, scaler=scaler
        )
        history = [dict(r) for r in ckpt["history"]]
        best_dice = None if ckpt.get("best_dice") is None else float(ckpt["best_dice"])
        best_epoch = int(ckpt.get("best_epoch", 0))
        start = int(ckpt["epoch"])
        logger.info("resuming training in %s after epoch %d of %d", run_dir, start, config.epochs)

    def checkpoint(epoch: int) -> None:
        save_checkpoint(
            ckpt_path,
            {
                "format": "msnas-graph/checkpoint",
                "schema_version": SCHEMA_VERSION,
                "kind": "train",
                "epoch": epoch,
                "config": json.dumps(config.to_dict()),
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": get_rng_state(),
                "split": split,
                "history": history,
                "best_dice": best_dice,
                "best_epoch": best_epoch,
            },
        )

    if rt.main and not resuming:
        config.save(run_dir / "config.json")
        atomic_write(run_dir / "model.json", json.dumps(spec, indent=1) + "\n")
        checkpoint(0)
        logger.info(
            "train %s: %d train / %d validation cases, %d epochs, on %s",
            spec["kind"], len(train_idx), len(val_idx), config.epochs, rt.device,
        )  # fmt: skip

    steps = _capped(len(t_loader), config.max_steps_per_epoch)
    try:
        for epoch in range(start, config.epochs):
            t0 = time.time()
            lr = opt.param_groups[0]["lr"]
            t_sampler.set_epoch(epoch)
            train_loss = _train_epoch(
                net, params, loss_fn, rt, opt, scaler, config.grad_clip, iter(t_loader), steps,
                epoch + 1, _progress(steps, f"train {epoch + 1}/{config.epochs}",
                                     progress and rt.main),
            )  # fmt: skip
            sched.step()
            val_loss, val_dice = _validate(
                model, v_loader, v_sampler, loss_fn, int(spec["num_classes"]), rt,
                config.max_steps_per_epoch,
            )  # fmt: skip
            improved = best_dice is None or (val_dice is not None and val_dice > best_dice)
            if val_dice is None:  # no validation split: the last epoch is the best
                improved = True
            if improved:
                best_dice, best_epoch = val_dice, epoch + 1
            row = {
                "epoch": epoch + 1,
                "phase": "train",
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_dice": val_dice,
                "lr": lr,
                "time_s": round(time.time() - t0, 3),
            }
            history.append(row)
            if rt.main:
                if improved:
                    save_weights(run_dir / "best.pt", model)
                save_weights(run_dir / "last.pt", model)
                checkpoint(epoch + 1)
                write_metrics_csv(run_dir / "metrics.csv", history)
                logger.info(
                    "train epoch %d/%d: loss %.4f val %s dice %s%s",
                    epoch + 1, config.epochs, train_loss,
                    "-" if val_loss is None else f"{val_loss:.4f}",
                    "-" if val_dice is None else f"{val_dice:.4f}",
                    " (best)" if improved else "",
                )  # fmt: skip
            if on_epoch_end is not None:
                on_epoch_end(dict(row))
    except (_NonFinite, KeyboardInterrupt) as exc:
        _stopped(exc, "training", rt, run_dir, history, config.epochs, _train_plots)
    if rt.main:
        _train_plots(run_dir, history)
        mark_done(
            run_dir,
            {"kind": "train", "epochs": config.epochs, "best_epoch": best_epoch,
             "best_dice": best_dice},
        )  # fmt: skip
    rt.barrier()
    return TrainResult(run_dir, best_dice, best_epoch, history)


def _train_epoch(
    net: nn.Module,
    params: Sequence[nn.Parameter],
    loss_fn: DiceCELoss,
    rt: _Runtime,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float | None,
    it: Iterator[Any],
    steps: int,
    epoch: int,
    bar: Any,
) -> float:
    net.train()
    total = 0.0
    try:
        for step in range(1, steps + 1):
            x, y = next(it)
            x, y = rt.to_input(x), y.to(rt.device)
            with rt.autocast():
                logits = net(x)
            loss = loss_fn(logits, y)
            value = rt.mean_scalar(loss)
            if not math.isfinite(value):
                raise _NonFinite(epoch, step)
            _optimizer_step(loss, opt, scaler, params, grad_clip)
            total += value
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
    finally:
        bar.close()
    return total / max(steps, 1)


def _train_plots(run_dir: Path, history: list[dict[str, Any]]) -> None:
    try:
        plot_losses(run_dir / "plots" / "loss.png", history)
    except Exception as exc:  # plots never end a run
        logger.warning("could not draw the plots: %s", exc)


# ============================================================================ using a model


def _locate(run_or_ckpt: str | Path) -> tuple[Path, Path]:
    """(run folder, weights file) of a training run folder or one of its ``.pt`` files."""
    path = Path(run_or_ckpt)
    if path.is_file():
        run_dir, weights = path.parent, path
    elif path.is_dir():
        run_dir = path
        weights = path / "best.pt"
        if not weights.is_file():
            weights = path / "last.pt"
    else:
        raise RunError(f"{path}: no such run folder or checkpoint")
    if not (run_dir / "model.json").is_file():
        hint = (
            "; this is a search run: train its architecture first (train --model RUN)"
            if (run_dir / "state.json").is_file() or (run_dir / "states").is_dir()
            else ""
        )
        raise RunError(f"{run_dir}: no model.json, so this is not a training run folder{hint}")
    if not weights.is_file():
        raise RunError(f"{run_dir}: no best.pt or last.pt; the training has not finished an epoch")
    return run_dir, weights


def load_model(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run folder (``best.pt``, else ``last.pt``; or a given ``.pt``
    file of that folder) in eval mode on ``device``, and its ``model.json`` description."""
    run, weights = _locate(run_dir)
    try:
        spec = json.loads((run / "model.json").read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{run / 'model.json'}: not valid JSON ({exc.msg})") from None
    try:
        model = build_model(spec)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, MsnasError):
            raise
        raise RunError(f"{run / 'model.json'}: malformed model description ({exc!r})") from None
    except RunError as exc:
        raise RunError(f"{run / 'model.json'}: {exc}") from None
    state = load_checkpoint(weights)
    if "model" in state and isinstance(state["model"], dict):  # a full checkpoint.pt
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(
            f"{weights}: the weights do not fit the model of {run / 'model.json'} "
            f"({str(exc).splitlines()[0]})"
        ) from None
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(dev).eval()
    info = dict(spec)
    info["weights"] = str(weights)
    info["run_dir"] = str(run)
    return model, info


def _predict_cases(
    model: nn.Module,
    ds: SegmentationDataset,
    indices: Sequence[int],
    size: int,
    device: torch.device,
    batch_size: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, mask at the original size) for each case, predicted at ``size``."""
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        cases = [ds[i] for i in chunk]
        images = np.stack([preprocess(c, size)[0] for c in cases])
        with torch.no_grad():
            logits = model(torch.from_numpy(images).to(device))
        preds = logits.argmax(1).cpu().numpy()
        for i, case, pred in zip(chunk, cases, preds, strict=True):
            yield i, restore_mask(pred, case)


def evaluate(
    run_dir_or_checkpoint: str | Path,
    data: str | None = None,
    *,
    split: str = "test",
    folds: str | None = None,
    test_fold: int | None = None,
    device: str = "auto",
    out_dir: str | Path | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Evaluate a trained model on a split of ``data`` at the cases' original resolution.

    ``data``, ``folds`` and ``test_fold`` default to the run's ``config.json``, so
    ``split="test"`` is exactly the fold the run held out (``"val"``, ``"train"`` and ``"all"``
    work too). Predictions made at the training input size are resampled to each case's
    original size (:func:`~msnas_graph.data.restore_mask`); per-case Dice, IoU and HD95 (mm when
    the pixel size is known) go to ``out_dir/per_case.csv``, their summary to
    ``out_dir/summary.json`` (default ``out_dir``: ``<run>/eval_<split>``), which is returned.
    """
    from msnas_graph.metrics import evaluate_case, summarize, write_case_csv

    if split not in SPLITS:
        raise RunError(unknown_name("split", split, SPLITS))
    dev = resolve_device(device)
    model, info = load_model(run_dir_or_checkpoint, dev)
    run = Path(info["run_dir"])
    cfg = TrainConfig.load(run / "config.json") if (run / "config.json").is_file() else None
    data = data if data is not None else (cfg.data if cfg is not None else None)
    if data is None:
        raise RunError(f"{run}: no config.json to take the data from; give the data source")
    ds = _load_data(data, num_classes=info["num_classes"], in_channels=info["in_channels"])
    if split == "all":
        indices = list(range(len(ds)))
    else:
        split_cfg = _NS(
            folds=folds if folds is not None else (cfg.folds if cfg else None),
            test_fold=test_fold if test_fold is not None else (cfg.test_fold if cfg else 0),
            val_fraction=cfg.val_fraction if cfg else 0.2,
            seed=cfg.seed if cfg else 0,
        )
        parts = _split(ds, split_cfg)
        indices = parts[("train", "val", "test").index(split)]
    labelled = [i for i in indices if ds[i].mask is not None]
    if not labelled:
        raise DataError(
            f"{data}: the {split} split has no labelled cases to evaluate; choose another split "
            f"or give labelled data"
        )
    cases = []
    for i, pred in _predict_cases(model, ds, labelled, int(info["input_size"]), dev, batch_size):
        case = ds[i]
        assert case.mask is not None
        cases.append(
            evaluate_case(
                pred, case.mask, int(info["num_classes"]), spacing=case.spacing,
                case_id=case.case_id,
            )
        )  # fmt: skip
    out = Path(out_dir) if out_dir is not None else run / f"eval_{split}"
    names = list(info.get("label_names") or ds.label_names)
    write_case_csv(out / "per_case.csv", cases, names)
    summary = summarize(cases, names)
    summary.update(
        split=split,
        data=str(data),
        run=str(run),
        weights=info["weights"],
        input_size=int(info["input_size"]),
        hd95_unit="mm" if all(ds[i].spacing is not None for i in labelled) else "pixels",
    )
    atomic_write(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


@dataclass
class _NS:
    folds: str | None
    test_fold: int | None
    val_fraction: float
    seed: int


def predict(
    run_dir_or_checkpoint: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    overlay: bool = False,
    device: str = "auto",
    batch_size: int = 8,
) -> list[Path]:
    """Segment ``inputs`` (an image file, a folder, or a dataset source) with a trained model.

    Writes one mask per case into ``out_dir`` in the input's format
    (:func:`~msnas_graph.data.write_mask`: PNG for 2D images, NIfTI for volume slices), at the
    case's original size, and with ``overlay=True`` a PNG of the image with the mask tinted
    into ``out_dir/overlays``. Returns the mask paths.
    """
    dev = resolve_device(device)
    model, info = load_model(run_dir_or_checkpoint, dev)
    ds = _load_data(str(inputs), num_classes=info["num_classes"], in_channels=info["in_channels"])
    out = Path(out_dir)
    written: list[Path] = []
    for i, pred in _predict_cases(
        model, ds, list(range(len(ds))), int(info["input_size"]), dev, batch_size
    ):
        case = ds[i]
        name = _safe_name(case.case_id)
        written.append(write_mask(out / name, pred, like=case))
        if overlay:
            write_overlay(out / "overlays" / f"{name}.png", case.image, pred)
    return written


def _safe_name(case_id: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)
    return keep.strip(".") or "case"

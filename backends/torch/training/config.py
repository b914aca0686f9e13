"""The configs of a search and a training run (JSON-serialisable, written as ``config.json``).

Both are dataclasses with one JSON round trip (:meth:`RunConfig.to_dict`, :meth:`~RunConfig.load`)
that refuses unknown fields, so ``config.json`` files written before this module was split out
still load. Each field says whether it may change when a run is resumed (:func:`resumable`):
the fields that do not change what is computed, or only its numerics (device, workers, AMP,
memory format, compilation, gradient checkpointing).

>>> cfg = SearchConfig(space="tiny", device="cpu")
>>> SearchConfig.from_dict(cfg.to_dict()) == cfg
True
>>> sorted(SearchConfig.resume_free())
['amp', 'channels_last', 'device', 'memory', 'num_workers']
>>> cfg.resume_conflicts({**cfg.to_dict(), "lr": 0.1, "device": "cuda"})
['lr']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from msnas_graph._util import unknown_name
from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.nn.supernet import MEMORY_MODES
from msnas_graph.backends.torch.training.run_config import (
    MAX_EPOCHS,
    MAX_STEPS,
    RunConfig,
    absolute,
    check_schedule_size,
    resumable,
)
from msnas_graph.budget import COST_METRICS
from msnas_graph.errors import MsnasError, RunError
from msnas_graph.spec import CELL_GLUES, SearchSpace, load_space
from msnas_graph.topology import check_topology

__all__ = [
    "AMP_MODES",
    "MAX_EPOCHS",
    "MAX_STEPS",
    "OPTIMIZERS",
    "PATH_SAMPLING",
    "RunConfig",
    "SearchConfig",
    "TrainConfig",
    "check_schedule_size",
    "resumable",
    "samples_paths",
]

AMP_MODES = ("none", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adam")
#: How the search weighs a node's inputs (:attr:`SearchConfig.path_sampling`).
PATH_SAMPLING = ("softmax", "gumbel")
#: The Gumbel-softmax temperature of ``path_sampling="gumbel"`` (the forward pass is one-hot
#: whatever it is; it shapes the straight-through gradient).
GUMBEL_TAU = 1.0


def samples_paths(path_sampling: str, phase: str) -> bool:
    """Whether a training step of ``phase`` runs one sampled input per node.

    >>> samples_paths("gumbel", "network"), samples_paths("gumbel", "cell")
    (True, False)
    """
    return path_sampling == "gumbel" and phase == "network"


def _check_common(cfg: Any, where: str) -> None:
    cfg.data = absolute(cfg.data)
    cfg.folds = absolute(cfg.folds)
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
    for name in ("lr_min", "momentum", "weight_decay"):
        if not (math.isfinite(value := getattr(cfg, name)) and value >= 0):
            raise RunError(f"{where}: {name}={value} must be a number >= 0")
    if cfg.grad_clip is not None and not (math.isfinite(cfg.grad_clip) and cfg.grad_clip > 0):
        raise RunError(f"{where}: grad_clip={cfg.grad_clip} must be a number > 0 (or null: off)")


def _load_topology(source: dict[str, Any] | str | Path) -> Architecture:
    """A search's fixed network from its document or its file (``config.json`` keeps the
    document, so a resumed run does not depend on the file)."""
    if isinstance(source, dict):
        return Architecture.from_dict(source, "config: topology")
    return Architecture.load(source)


@dataclass
class SearchConfig(RunConfig):
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
        warmup: weights-only epochs before the cell phase (no architecture step at all), added
            to ``epochs``; ``None`` = ``cell_epochs // 2`` (PC-DARTS warms up 15 of 50 epochs,
            Auto-DeepLab 20 of 40). Resolved when the config is built.
        arch_lr: architecture learning rate (Adam) of both phases; ``None`` = chosen for the
            budget, per phase ``clip(2 / architecture steps of the phase, 3e-4, 3e-2)`` (Adam
            moves a logit by about ``lr`` per step while the gradient sign holds, so this allows
            ~2 logits in total): see :class:`~.search.PhaseSchedule`.
        warmup_steps, arch_steps: the schedule in steps instead of epochs: ``arch_steps =
            (cell, network)`` architecture steps after ``warmup_steps`` weight-only steps
            (``None`` = ``cell // 2``); the run is cut into epochs of ``max_steps_per_epoch``
            (or the loader length) steps for logging and checkpoints, the phase switches at the
            exact step, and ``epochs`` and ``warmup`` are ignored.
        arch_betas, arch_weight_decay: architecture optimizer (Adam).
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
        memory: the supernet's memory mode (``Supernet(memory=...)``): ``"fast"`` (store the
            activations) or ``"low"`` (recompute every cell in the backward pass: a tenth to
            a fifteenth of the memory for about 1.7x the step time). A ``config.json`` written
            before this field, with ``checkpoint``, loads as ``"low"`` (``checkpoint: true``)
            or ``"fast"``.
        cost: ``"macs"`` or ``"latency"`` to add the network's expected cost to the
            architecture loss (:mod:`~msnas_graph.backends.torch.search_cost`), ``None`` for
            accuracy alone (the paper).
        cost_weight: ``W`` of the cost term (default 1 when ``cost`` is set; 0 only reports
            the expected cost per epoch).
        cost_target: with ``cost``, a penalty ``W * max(0, log(E[cost] / target))`` only above
            this target (MACs, or ms at batch 1 for latency) instead of ``W * E[cost] / ref``.
        cost_target_unet: the target as a multiple of the U-Net's cost instead (``0.8``: 0.8x
            the cost of ``U-Net(cost_channels, 4)`` at ``input_size``, measured with the table;
            ``search --target-macs 0.8x``); give it or ``cost_target``, not both.
        cost_channels: the base width the cost is measured at: the width the network will
            be trained at (search narrow, train wide; default the space's ``channels``). The
            input size is the search's ``input_size``.
        path_sampling: ``"softmax"`` (the paper: each node sums its inputs weighted by
            ``softmax(beta)``) or ``"gumbel"``: in the network phase each training forward pass
            samples one input per node (hard Gumbel-softmax, straight-through; GDAS, FBNet), so
            the supernet runs one path and the loss tells paths apart
            (:meth:`~msnas_graph.backends.torch.nn.supernet.Supernet.sampled_weights`); the
            network phase is then validated on the path of each node's strongest input (what
            its weights are trained to run), not the weighted sum.
        topology: a decoded network (an :class:`Architecture`, or its file) whose edges are
            kept: the supernet runs only them and only their cells are searched
            (:mod:`msnas_graph.topology`); there is no network phase (its epochs or steps
            default to 0 and must be 0), and the run decodes to that network with the cells
            found. Its space must share the search space's trellis; the cells follow the
            search space's cell structure and operations (its own cells are replaced).

    ``device``, ``amp``, ``channels_last``, ``num_workers`` and ``memory`` may change when
    the run is resumed; any other difference is refused.
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
    arch_lr: float | None = None
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    augment: bool = False
    seed: int = 0
    device: str = resumable("auto")
    amp: str = resumable("none")
    channels_last: bool = resumable(False)
    num_workers: int = resumable(0)
    max_steps_per_epoch: int | None = None
    folds: str | None = None
    test_fold: int | None = 0
    val_fraction: float = 0.2
    paths: int = 3
    deterministic: bool = False
    memory: str = resumable("fast")
    warmup: int | None = None
    warmup_steps: int | None = None
    arch_steps: tuple[int, int] | None = None
    cost: str | None = None
    cost_weight: float | None = None
    cost_target: float | None = None
    cost_target_unet: float | None = None
    cost_channels: int | None = None
    path_sampling: str = "softmax"
    topology: Architecture | None = None

    #: What a ``config.json`` written before the schedule fields existed meant: no warm-up.
    LEGACY: ClassVar[dict[str, Any]] = {"warmup": 0}
    #: A target is absolute or relative to the U-Net, not both.
    ONE_OF: ClassVar[tuple[str, ...]] = ("cost_target", "cost_target_unet")

    @classmethod
    def from_dict(cls, data: Any, source: str = "config", *, legacy: bool = True) -> Any:
        """:meth:`RunConfig.from_dict`; a config written before ``memory`` replaced the
        ``checkpoint`` flag (issue 17) loads with the mode that flag meant.

        >>> SearchConfig.from_dict({"space": "tiny", "checkpoint": True}).memory
        'low'
        """
        if isinstance(data, dict) and "checkpoint" in data:
            flag = data["checkpoint"]
            data = {k: v for k, v in data.items() if k != "checkpoint"}
            data.setdefault("memory", "low" if flag else "fast")
        return super().from_dict(data, source, legacy=legacy)

    def __post_init__(self) -> None:
        where = "search config"
        self.check_types(where)
        if isinstance(self.space, dict):
            self.space = SearchSpace.from_dict(self.space, "config: space")
        elif not isinstance(self.space, SearchSpace):
            self.space = load_space(self.space)
        space = self.space
        if self.input_size is None:
            self.input_size = space.input_size
        if isinstance(self.topology, dict | str | Path):
            self.topology = _load_topology(self.topology)
        if self.epochs is None:
            cells = 20 if space.name == "paper" else 2
            self.epochs = (cells, 0 if self.topology is not None else cells)
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
        if self.memory not in MEMORY_MODES:
            raise RunError(f"{where}: {unknown_name('memory mode', self.memory, MEMORY_MODES)}")
        if self.path_sampling not in PATH_SAMPLING:
            kind = "path sampling"
            raise RunError(f"{where}: {unknown_name(kind, self.path_sampling, PATH_SAMPLING)}")
        self._check_schedule(where)
        self._check_cost(where)
        self._check_topology(where)

    def _check_topology(self, where: str) -> None:
        """A fixed network fits the space and leaves no network phase."""
        if self.topology is None:
            return
        assert isinstance(self.space, SearchSpace) and self.epochs is not None
        try:
            check_topology(self.space, self.topology)
        except MsnasError as exc:
            raise RunError(f"{where}: {exc}") from None
        network = self.epochs[1] if self.arch_steps is None else self.arch_steps[1]
        if network:
            what = "arch_steps" if self.arch_steps is not None else "epochs"
            raise RunError(
                f"{where}: a topology fixes the network, so the network phase has nothing to "
                f"decide: give {what} (or --{what.replace('_', '-')}) as CELL,0"
            )

    def _check_cost(self, where: str) -> None:
        """Check the cost term's fields and fill in the default weight."""
        targets = (self.cost_target, self.cost_target_unet)
        if self.cost is None:
            if any(x is not None for x in (self.cost_weight, *targets, self.cost_channels)):
                raise RunError(
                    f"{where}: cost_weight, a cost target or cost_channels given without a "
                    f"cost; say what to weigh ({' or '.join(COST_METRICS)})"
                )
            return
        if self.cost not in COST_METRICS:
            raise RunError(f"{where}: {unknown_name('cost', self.cost, COST_METRICS)}")
        self.cost_weight = 1.0 if self.cost_weight is None else self.cost_weight
        if not (math.isfinite(self.cost_weight) and self.cost_weight >= 0):
            raise RunError(f"{where}: cost_weight={self.cost_weight} must be a number >= 0")
        if self.cost_channels is not None and not 1 <= self.cost_channels <= 4096:
            raise RunError(f"{where}: cost_channels={self.cost_channels} must lie in 1..4096")
        if None not in targets:
            raise RunError(f"{where}: give cost_target or cost_target_unet, not both")
        for name in ("cost_target", "cost_target_unet"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise RunError(f"{where}: {name}={value} must be a number > 0")

    def _check_schedule(self, where: str) -> None:
        """Normalise and check ``warmup``, ``arch_lr``, ``warmup_steps`` and ``arch_steps``;
        resolve the automatic warm-up."""
        if self.arch_lr is not None and (self.arch_lr <= 0 or not math.isfinite(self.arch_lr)):
            raise RunError(f"{where}: arch_lr={self.arch_lr} must be a positive number (or auto)")
        decay = self.arch_weight_decay
        if not (math.isfinite(decay) and decay >= 0):
            raise RunError(f"{where}: arch_weight_decay={decay} must be >= 0")
        for name in ("warmup", "warmup_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise RunError(f"{where}: {name}={value} must be >= 0")
        if self.arch_steps is None:
            if self.warmup_steps is not None:
                raise RunError(
                    f"{where}: warmup_steps is given but the schedule is in epochs; give "
                    f"arch_steps too (the whole schedule in steps) or use warmup (epochs)"
                )
            assert self.epochs is not None
            self.warmup = self.epochs[0] // 2 if self.warmup is None else self.warmup
            what = f"warm-up {self.warmup} + epochs {self.epochs[0]},{self.epochs[1]}"
            check_schedule_size(where, what, self.warmup + sum(self.epochs), "epoch")
            return
        if self.warmup is not None:
            raise RunError(
                f"{where}: warmup={self.warmup} (epochs) with arch_steps (steps); give the "
                f"warm-up in steps (warmup_steps) when the schedule is in steps"
            )
        cell, network = self.arch_steps
        if min(cell, network) < 0 or cell + network < 1:
            raise RunError(
                f"{where}: arch_steps={self.arch_steps} must be non-negative with a total >= 1"
            )
        self.warmup_steps = cell // 2 if self.warmup_steps is None else self.warmup_steps
        what = f"warm-up steps {self.warmup_steps} + arch steps {cell},{network}"
        check_schedule_size(where, what, self.warmup_steps + cell + network, "step")


@dataclass
class TrainConfig(RunConfig):
    """Everything a training run needs (written as the run's ``config.json``).

    Attributes:
        model: ``"unet"``, an :class:`Architecture`, or a model source
            (:func:`~msnas_graph.backends.torch.models.resolve_source`: an architecture JSON, a
            search run folder, or a training run folder of an architecture) whose architecture
            is trained from scratch.
        fusion: multi-scale fusion of an architecture's network (default: its space's).
        cell_glue: ``"darts"`` or ``"lean"``: how the network wraps its cells
            (:attr:`~msnas_graph.spec.SearchSpace.cell_glue`; default: its space's).
        channels: base width to train an architecture at (:meth:`Architecture.widen`; DARTS-style
            searches search narrow and train wide); ``None`` = the architecture's own.
        init_from: a search run folder whose supernet weights (``supernet.pt``) initialise the
            network where shapes allow (the paper's transfer protocol); ``None`` = from scratch.
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
            split, the test fold is left for :func:`~msnas_graph.backends.torch.inference.evaluate`.

    ``device``, ``amp``, ``channels_last``, ``compile`` and ``num_workers`` may change when the
    run is resumed.
    """

    model: str | Architecture = "unet"
    fusion: str | None = None
    cell_glue: str | None = None
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
    device: str = resumable("auto")
    amp: str = resumable("none")
    channels_last: bool = resumable(False)
    compile: bool = resumable(False)
    num_workers: int = resumable(0)
    max_steps_per_epoch: int | None = None
    folds: str | None = None
    test_fold: int | None = 0
    val_fraction: float = 0.2
    deterministic: bool = False
    channels: int | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        self.check_types("train config")
        if isinstance(self.model, dict):
            self.model = Architecture.from_dict(self.model, "config: model")
        if isinstance(self.model, str | Path):
            self.model = absolute(str(self.model)) or str(self.model)
        where = "train config"
        if self.optimizer not in OPTIMIZERS:
            raise RunError(f"{where}: {unknown_name('optimizer', self.optimizer, OPTIMIZERS)}")
        if self.lr is None:
            self.lr = 0.025 if self.optimizer == "sgd" else 1e-3
        _check_common(self, where)
        if self.epochs < 1:
            raise RunError(f"{where}: epochs={self.epochs} must be at least 1")
        check_schedule_size(where, "epochs", self.epochs, "epoch")
        if self.input_size is not None and self.input_size < 1:
            raise RunError(f"{where}: input_size={self.input_size} must be positive")
        self.init_from = absolute(self.init_from)
        is_unet = isinstance(self.model, str) and self.model.lower() == "unet"
        if self.channels is not None:
            if self.channels < 1:
                raise RunError(f"{where}: channels={self.channels} must be at least 1")
            if is_unet:
                raise RunError(
                    f"{where}: channels widens an architecture; the U-Net's width is "
                    f"unet_base_channels (--unet-base)"
                )
        if self.cell_glue is not None and self.cell_glue not in CELL_GLUES:
            raise RunError(
                f"{where}: cell_glue={self.cell_glue!r} is not darts or lean (--cell-glue)"
            )
        if self.cell_glue is not None and is_unet:
            raise RunError(
                f"{where}: cell_glue (--cell-glue) builds a searched architecture's cells; the "
                f"U-Net has none"
            )
        if self.init_from is not None and is_unet:
            raise RunError(
                f"{where}: init_from copies a search's supernet weights into its architecture; "
                f"it does not apply to the U-Net"
            )

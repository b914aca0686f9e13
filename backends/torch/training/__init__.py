"""Searching and training: one call with a config object each, which is what the CLI wraps.

- :func:`search` (:class:`SearchConfig`): the paper's two-phase search
  (:mod:`~msnas_graph.backends.torch.training.search`).
- :func:`train` (:class:`TrainConfig`): trains a decoded architecture or the U-Net baseline
  from scratch (:mod:`~msnas_graph.backends.torch.training.train`).

Both run on one epoch driver (:mod:`~msnas_graph.backends.torch.training.loop`) over a run
folder (:mod:`~msnas_graph.backends.torch.training.run_dir`). ``checkpoint.pt`` holds the state
after the last complete epoch (epoch 0 = before training): model and architecture parameters,
optimizers, scheduler, AMP scalers, the RNG states of torch/numpy/python, the data split, the
metric history and the epoch count; it is read with ``torch.load(weights_only=True)``.

**Resume.** ``resume=True`` continues from ``checkpoint.pt``. Data order and augmentation are
pure functions of ``(seed, epoch, case)`` (:mod:`msnas_graph.backends.torch.data`), so a
resumed run sees the same batches as an uninterrupted one; on the CPU, with the same thread
count, it ends with bit-identical weights and architecture parameters. A folder that holds a
finished run is refused unless ``overwrite`` (or ``resume``, which then returns the finished
result).

**Distributed.** Under ``torchrun`` each rank reads its
:class:`~torch.utils.data.DistributedSampler` share (``batch_size`` is per rank); weight
gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`, architecture
gradients by an explicit all-reduce (:mod:`~msnas_graph.backends.torch.training.distributed`).
Only rank 0 writes files; a barrier ends the run. Resuming under DDP needs the run folder on a
filesystem every rank can read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from msnas_graph.backends.torch.training.config import AMP_MODES, SearchConfig, TrainConfig
from msnas_graph.backends.torch.training.runtime import resolve_device

if TYPE_CHECKING:
    from msnas_graph.backends.torch.training.search import SearchResult, search
    from msnas_graph.backends.torch.training.train import TrainResult, train

#: Imported on first use, so that the modules the search and training build on (models,
#: limits, cost, inference) can use this package's run folders and runtime without a cycle.
_LAZY = {"SearchResult": "search", "search": "search", "TrainResult": "train", "train": "train"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = importlib.import_module(f"{__name__}.{module}")
    # `search` and `train` name a function here, as before, not the module of that name
    globals().update({n: getattr(loaded, n) for n, m in _LAZY.items() if m == module})
    return globals()[name]


__all__ = [
    "AMP_MODES",
    "SearchConfig",
    "SearchResult",
    "TrainConfig",
    "TrainResult",
    "resolve_device",
    "search",
    "train",
]

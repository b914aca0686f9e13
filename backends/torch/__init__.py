"""PyTorch backend (imported as ``msnas_graph.backends.torch``).

Compiles the core's objects into ``nn.Module``\\ s: :func:`build_supernet` (a
:class:`~msnas_graph.spec.SearchSpace` into a :class:`Supernet`), :func:`build_network` (an
:class:`~msnas_graph.architecture.Architecture` into a :class:`FinalNetwork`), and
:func:`transfer_weights` between them. :class:`TorchBackend` is the same through the core's
backend protocol (``msnas_graph.backend.get_backend("torch")``).

>>> from msnas_graph.backend import get_backend
>>> from msnas_graph.spec import SearchSpace
>>> backend = get_backend("torch")
>>> net = backend.build_supernet(SearchSpace.preset("tiny"))
>>> backend.cost(net, 32)["params"] == sum(p.numel() for p in net.parameters())
True
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msnas_graph._util import unknown_name
from msnas_graph.backend import Options, PathLike, ResumeConflictError, RunFlags
from msnas_graph.backends.torch.nn.arch_weights import ArchWeights
from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp, channel_shuffle
from msnas_graph.backends.torch.nn.network import FUSIONS, FinalNetwork, build_network
from msnas_graph.backends.torch.nn.ops import build_op, register_op, registered_ops, unregister_op
from msnas_graph.backends.torch.nn.supernet import Supernet, build_supernet
from msnas_graph.backends.torch.nn.transfer import transfer_weights
from msnas_graph.errors import BackendError, MsnasError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from msnas_graph.architecture import Architecture
    from msnas_graph.backends.torch.inference import (
        evaluate,
        evaluate_folds,
        load_model,
        predict,
    )
    from msnas_graph.backends.torch.models import MODELS, create_model, resolve_source
    from msnas_graph.backends.torch.training import (
        AMP_MODES,
        SearchConfig,
        SearchResult,
        TrainConfig,
        TrainResult,
        resolve_device,
        search,
        train,
    )
    from msnas_graph.budget import Cost, CostModel
    from msnas_graph.compare import Comparison
    from msnas_graph.genotype import CellGenotype
    from msnas_graph.spec import SearchSpace

#: Names imported on first use (so that importing the backend stays light).
_LAZY = {
    **dict.fromkeys(
        ("AMP_MODES", "SearchConfig", "SearchResult", "TrainConfig", "TrainResult",
         "resolve_device", "search", "train"),
        "training",
    ),
    **dict.fromkeys(("evaluate", "evaluate_folds", "load_model", "predict"), "inference"),
    **dict.fromkeys(("MODELS", "create_model", "resolve_source"), "models"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "AMP_MODES",
    "FUSIONS",
    "MODELS",
    "ArchWeights",
    "FinalNetwork",
    "PartialChannelMixedOp",
    "SearchConfig",
    "SearchResult",
    "Supernet",
    "TorchBackend",
    "TrainConfig",
    "TrainResult",
    "build_network",
    "build_op",
    "build_supernet",
    "channel_shuffle",
    "create_model",
    "evaluate",
    "evaluate_folds",
    "load_model",
    "predict",
    "register_op",
    "registered_ops",
    "resolve_device",
    "resolve_source",
    "search",
    "train",
    "transfer_weights",
    "unregister_op",
]


class TorchBackend:
    """The core's :class:`~msnas_graph.backend.Backend` protocol implemented with PyTorch.

    Run options are the fields of :class:`SearchConfig` / :class:`TrainConfig` (search,
    train), the keywords of :func:`evaluate_folds`, :func:`predict`,
    :func:`~msnas_graph.backends.torch.export.export_model`,
    :func:`~msnas_graph.backends.torch.cost.model_cost` and
    :func:`~msnas_graph.backends.torch.pipeline.quickstart`; unknown names are one line.
    """

    name = "torch"

    def build_supernet(self, space: SearchSpace) -> Supernet:
        """:func:`build_supernet`."""
        return build_supernet(space)

    def build_network(self, arch: Architecture) -> FinalNetwork:
        """:func:`build_network` with the architecture's own fusion mode."""
        return build_network(arch)

    def cost(self, model: Any, input_size: int, options: Options | None = None) -> dict[str, Any]:
        """``params``, ``macs`` and ``flops`` of ``model`` on one input of side ``input_size``
        (batch 1, the model's ``in_channels`` and ``spatial_dims``); also ``input_shape``.

        ``model`` is a module with a ``space`` (a :class:`Supernet` or :class:`FinalNetwork`),
        or a model source (``"unet"``, an architecture file, a run folder, a checkpoint) whose
        report :func:`~msnas_graph.backends.torch.cost.model_cost` gives, with ``options``
        (``activation``: also the training step's activation bytes, default off here).
        MACs/FLOPs as in :mod:`msnas_graph.backends.torch.cost`."""
        from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters, model_cost

        if isinstance(model, str | Path):
            kwargs = {"activation": False, **(options or {})}
            return _call(model_cost, "cost", model, input_size=input_size, **kwargs)
        space = getattr(model, "space", None)
        if space is None:
            raise BackendError(
                f"cost: {type(model).__name__} has no 'space' attribute, so the input shape is "
                f"unknown; use msnas_graph.backends.torch.cost.cost_report(model, shape)"
            )
        shape = (1, space.in_channels) + (input_size,) * space.spatial_dims
        macs, flops = count_macs_flops(model, shape)
        return {
            "params": count_parameters(model),
            "macs": macs,
            "flops": flops,
            "input_shape": list(shape),
        }

    def edge_cost_model(
        self,
        cells: Mapping[str, CellGenotype],
        space: SearchSpace,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
    ) -> CostModel:
        """:func:`~msnas_graph.backends.torch.cost_model.edge_cost_model` (measured per edge)."""
        from msnas_graph.backends.torch.cost_model import edge_cost_model

        dev = _timing_device(latency, device)
        return edge_cost_model(cells, space, input_size=input_size, latency=latency, device=dev)

    def unet_cost(
        self,
        space: SearchSpace,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
        runtime: str | None = None,
    ) -> Cost:
        """:func:`~msnas_graph.backends.torch.cost_model.unet_cost`."""
        from msnas_graph.backends.torch.cost_model import unet_cost

        dev = _timing_device(latency, device)
        return unet_cost(space, input_size, latency=latency, device=dev, runtime=runtime)

    def built_cost(
        self,
        arch: Architecture,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
        runtime: str = "auto",
    ) -> Cost:
        """:func:`~msnas_graph.backends.torch.cost_model.built_cost`."""
        from msnas_graph.backends.torch.cost_model import built_cost

        dev = _timing_device(latency, device)
        return built_cost(arch, input_size, latency=latency, device=dev, runtime=runtime)

    def search(
        self, options: Options, run_dir: PathLike, **flags: Unpack[RunFlags]
    ) -> SearchResult:
        """:func:`search` with a :class:`SearchConfig` built from ``options`` (on ``resume``,
        the run's stored config with ``options`` changing only its resume-free fields)."""
        from msnas_graph.backends.torch.training import SearchConfig, search

        config = _config(SearchConfig, options, run_dir, flags.get("resume", False))
        return search(config, run_dir, **flags)

    def train(self, options: Options, run_dir: PathLike, **flags: Unpack[RunFlags]) -> TrainResult:
        """:func:`train` with a :class:`TrainConfig` built from ``options`` (``resume`` as in
        :meth:`search`)."""
        from msnas_graph.backends.torch.training import TrainConfig, train

        config = _config(TrainConfig, options, run_dir, flags.get("resume", False))
        return train(config, run_dir, **flags)

    def evaluate(self, run_dirs: Sequence[PathLike], options: Options) -> dict[str, Any]:
        """:func:`evaluate_folds` (one run: its summary; several: the k-fold combination)."""
        from msnas_graph.backends.torch.inference import evaluate_folds

        return _call(evaluate_folds, "evaluate", list(run_dirs), **options)

    def predict(
        self, run_dir: PathLike, inputs: PathLike, out_dir: PathLike, options: Options
    ) -> list[Path]:
        """:func:`predict`: the masks written."""
        from msnas_graph.backends.torch.inference import predict

        return _call(predict, "predict", run_dir, inputs, out_dir, **options)

    def compare(self, run_dirs: Sequence[PathLike], options: Options) -> Comparison:
        """:func:`~msnas_graph.backends.torch.compare.compare_runs`."""
        from msnas_graph.backends.torch.compare import compare_runs

        return _call(compare_runs, "compare", list(run_dirs), **options)

    def export(self, source: PathLike, path: PathLike, options: Options) -> dict[str, Any]:
        """:func:`~msnas_graph.backends.torch.export.export_model` to ONNX; its report."""
        from msnas_graph.backends.torch.export import export_model

        return _call(export_model, "export", source, path, **options).to_dict()

    def quickstart(self, out_dir: PathLike, options: Options, **flags: Unpack[RunFlags]) -> Any:
        """:func:`~msnas_graph.backends.torch.pipeline.quickstart`."""
        from msnas_graph.backends.torch.pipeline import quickstart

        flags.pop("resume", None)  # each quickstart stage starts afresh
        return _call(quickstart, "quickstart", out_dir, **options, **flags)


def _call(function: Callable[..., Any], what: str, *args: Any, **options: Any) -> Any:
    """``function(*args, **options)``, an unknown option name being one line."""
    params = inspect.signature(function).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in options:
            if key not in params:
                known = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY]
                raise BackendError(f"{what}: {unknown_name('option', key, known)}")
    return function(*args, **options)


def _timing_device(latency: bool, device: str | None) -> Any:
    """Where a cost model times its parts: ``device`` (default the CPU) when ``latency``."""
    from msnas_graph.backends.torch.training.runtime import resolve_device

    return resolve_device(device or "cpu") if latency else "cpu"


def _config(cls: Any, options: Mapping[str, Any], run_dir: str | Path, resume: bool) -> Any:
    """A run config from ``options``; on resume of a run with a ``config.json``, that config
    with ``options`` replacing the fields that may change on resume. Any other option must
    say what the run already holds (the same command again, with ``--resume``), else
    :class:`ResumeConflictError` names the fields that differ."""
    stored = Path(run_dir) / "config.json"
    if not (resume and stored.is_file()):
        return cls.from_dict(dict(options), f"{cls.__name__} options", legacy=False)
    config = cls.load(stored)
    free = cls.resume_free()
    if fixed := sorted(set(options) - free):
        try:
            merged = cls.from_dict(config.with_options(dict(options)), str(stored))
            differ = merged.resume_conflicts(config.to_dict())
        except MsnasError:  # the options do not even make a config with the stored ones
            differ = fixed
        if differ:
            raise ResumeConflictError(run_dir, sorted(differ))
    changed = {k: v for k, v in options.items() if k in free}
    return dataclasses.replace(config, **changed) if changed else config

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

import importlib
from typing import TYPE_CHECKING, Any

from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp, channel_shuffle
from msnas_graph.backends.torch.nn.network import FUSIONS, FinalNetwork, build_network
from msnas_graph.backends.torch.nn.ops import build_op, register_op, registered_ops, unregister_op
from msnas_graph.backends.torch.nn.supernet import ArchWeights, Supernet, build_supernet
from msnas_graph.backends.torch.nn.transfer import transfer_weights
from msnas_graph.errors import BackendError

if TYPE_CHECKING:
    from torch import nn

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
    """The core's :class:`~msnas_graph.backend.Backend` protocol implemented with PyTorch."""

    name = "torch"

    def build_supernet(self, space: SearchSpace) -> Supernet:
        """:func:`build_supernet`."""
        return build_supernet(space)

    def build_network(self, arch: Architecture) -> FinalNetwork:
        """:func:`build_network` with the architecture's own fusion mode."""
        return build_network(arch)

    def cost(self, model: nn.Module, input_size: int) -> dict[str, Any]:
        """``params``, ``macs`` and ``flops`` of ``model`` (a :class:`Supernet` or
        :class:`FinalNetwork`, or any module with a ``space``) on one input of side
        ``input_size`` (batch 1, the space's ``in_channels`` and ``spatial_dims``); also
        ``input_shape``. MACs/FLOPs as in :mod:`msnas_graph.backends.torch.cost`."""
        from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters

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

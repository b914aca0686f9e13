"""Memory estimates of models before they are built, and the check that refuses what won't fit.

Estimates allocate nothing: a model is built on PyTorch's ``meta`` device (shapes, no data),
its parameters counted (4 bytes each), and one forward pass on a ``meta`` input sums the bytes
of every leaf module's output (the activations a training step keeps for backward). A search
supernet can have tens of thousands of cells, so it is estimated cell by cell: one ``meta``
cell per distinct (kind, widths, input side), times the number of edges that share it.

Training counts weights, gradients and two optimiser slots (4 x the parameter bytes) plus the
activations at the run's batch size; inference counts weights plus activations. The figure is
compared with the memory available (:func:`msnas_graph.limits.check_fits`; on a CUDA device
also with the device's free memory); too much ends in one
:class:`~msnas_graph.errors.ResourceError` line naming the override ``--no-memory-check``.

>>> spec = {"format": "msnas-graph/model", "kind": "unet", "in_channels": 1, "num_classes": 2,
...         "unet": {"base_channels": 4, "depth": 3}}
>>> params, act = model_estimate(spec, (2, 1, 32, 32))
>>> params, act > 0
(4198, True)
>>> check_model(spec, (2, 1, 32, 32), "train: the U-Net", training=True) > 0
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from msnas_graph.graph import Supergraph
from msnas_graph.kinds import carries_cell
from msnas_graph.limits import available_memory, check_fits, checks_enabled, format_bytes
from msnas_graph.spec import SearchSpace

from .cost import saved_bytes

__all__ = [
    "check_fits",
    "check_model",
    "check_supernet",
    "format_bytes",
    "meta_estimate",
    "model_estimate",
    "supernet_estimate",
]

logger = logging.getLogger(__name__)

_FLOAT = 4  # bytes per float32 element
_TRAINING_COPIES = 4  # weights, gradients, two optimiser slots (momentum / Adam moments)


def meta_estimate(build: Callable[[], nn.Module], *inputs: Any) -> tuple[int, int]:
    """``(parameters, activation bytes)`` of the module ``build()`` makes, run on ``inputs``
    (shapes given as tuples become ``meta`` tensors), without allocating memory.

    >>> meta_estimate(lambda: nn.Conv2d(1, 4, 3, padding=1), (2, 1, 8, 8))
    (40, 2048)
    """
    with torch.device("meta"):
        module = build()
    params = sum(p.numel() for p in module.parameters())
    total = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, list | tuple) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    args = [torch.empty(a, device="meta") if isinstance(a, tuple) else _to_meta(a) for a in inputs]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in handles:
            h.remove()
    return params, total


def _to_meta(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.empty_like(a, device="meta")
    if isinstance(a, list):
        return [_to_meta(x) for x in a]
    return a


def _bytes(params: int, activations: int, training: bool) -> int:
    return params * _FLOAT * (_TRAINING_COPIES if training else 1) + activations


def _available(device: Any) -> tuple[int | None, str]:
    """Bytes available for work on ``device`` and where they are (``""`` for the host): on a
    CUDA device the smaller of its free memory and the host's (checkpoints and data pass
    through the host)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    host = available_memory()
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        if host is None or int(free) <= host:
            return int(free), f" on {dev}"
        return host, ""
    return host, ""


def model_estimate(spec: Mapping[str, Any], input_shape: Sequence[int] | None) -> tuple[int, int]:
    """``(parameters, activation bytes)`` of the model a description (``model.json``) builds,
    on an input of ``input_shape`` (``None``: parameters only)."""
    from msnas_graph.backends.torch.models import create_model

    if input_shape is None:
        with torch.device("meta"):
            module = create_model(spec)
        return sum(p.numel() for p in module.parameters()), 0
    return meta_estimate(lambda: create_model(spec), tuple(input_shape))


def check_model(
    spec: Mapping[str, Any],
    input_shape: Sequence[int] | None,
    what: str,
    *,
    training: bool = False,
    device: Any = None,
) -> int:
    """The estimated bytes of building (and running, at ``input_shape``) the model ``spec``
    describes; :class:`~msnas_graph.errors.ResourceError` if they do not fit. A description
    that cannot be built on ``meta`` is not checked here (its real build reports it)."""
    if not checks_enabled():
        return 0
    try:
        params, act = model_estimate(spec, input_shape)
    except Exception as exc:  # malformed descriptions fail in the real build, with context
        logger.debug("memory estimate skipped: %r", exc)
        return 0
    free, where = _available(device)
    return check_fits(_bytes(params, act, training), what + where, free)


def supernet_estimate(space: SearchSpace, batch: int, input_size: int) -> tuple[int, int]:
    """``(parameters, activation bytes)`` of a search supernet over ``space`` at ``batch``
    images of side ``input_size``.

    Parameters come from one ``meta`` cell per distinct (kind, widths). Activations are
    linear in batch, width and pixel count, so each (kind, width ratio) is measured once on
    a small real input (width ``4 * partial_k``, side 8, on the CPU) and scaled.

    >>> params, act = supernet_estimate(SearchSpace.preset("tiny"), 2, 32)
    >>> params > 0 and act > 0
    True
    """
    graph = Supergraph(space)
    dims = space.spatial_dims
    n_params: dict[tuple[str, int, int], int] = {}
    per_unit: dict[tuple[str, float], float] = {}
    params = 0
    act = 0.0
    for e in graph.edges:
        if not carries_cell(e.kind):
            continue
        c_in, c_out = graph.channels(e.src), graph.channels(e.dst)
        key = (e.kind, c_in, c_out)
        if key not in n_params:
            with torch.device("meta"):
                cell = _search_cell(space, e.kind, c_in, c_out)
            n_params[key] = sum(p.numel() for p in cell.parameters())
        ratio = (e.kind, c_in / c_out)
        if ratio not in per_unit:
            per_unit[ratio] = _cell_bytes_per_unit(space, e.kind, c_in / c_out)
        params += n_params[key]
        side = max(1, input_size // 2**e.src.scale)
        act += per_unit[ratio] * batch * c_out * side**dims
    full = batch * (space.in_channels + space.num_classes) * input_size**dims
    return params, int(min(act, 2.0**100)) + full * _FLOAT


def _search_cell(space: SearchSpace, kind: str, c_in: int, c_out: int) -> nn.Module:
    from msnas_graph.backends.torch.nn.cells import SearchCell

    return SearchCell(
        kind, c_in, c_out, space.ops, space.blocks, space.partial_k, space.spatial_dims,
        {"affine": False},
    )  # fmt: skip


def _cell_bytes_per_unit(space: SearchSpace, kind: str, ratio: float) -> float:
    """Activation bytes of one search cell per (image x output channel x input pixel): what
    autograd saves in a training forward pass of the cell as the supernet runs it by default
    (candidates computed together, ``memory="fast"``: nothing recomputed), with the
    architecture weights and the operation weights both trainable (more than either step
    saves)."""
    c_out = 4 * space.partial_k
    c_in = max(1, round(c_out * ratio))
    side = 8
    n_ops = len(space.ops)
    alpha = [
        torch.full((b + 1, n_ops), 1.0 / n_ops, requires_grad=True) for b in range(space.blocks)
    ]
    p = [torch.full((b + 1,), 1.0 / (b + 1), requires_grad=True) for b in range(space.blocks)]
    cell = _search_cell(space, kind, c_in, c_out).train()
    x = torch.randn(2, c_in, *(side,) * space.spatial_dims, requires_grad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend
    try:
        saved = saved_bytes(
            lambda: cell(x, alpha, p, None, False), (*cell.parameters(), *cell.buffers())
        )
    finally:
        torch.set_num_threads(threads)
    return saved / (2 * c_out * side**space.spatial_dims)


def check_supernet(space: SearchSpace, batch: int, input_size: int, *, device: Any = None) -> int:
    """The estimated bytes of a search step on ``space``; :class:`ResourceError` if too many."""
    if not checks_enabled():
        return 0
    params, act = supernet_estimate(space, batch, input_size)
    what = (
        f"search: the supernet of {space.layers} layers x {space.scales} scales at "
        f"{space.channels} channels, batch {batch} of {input_size}x{input_size}"
    )
    free, where = _available(device)
    return check_fits(_bytes(params, act, True), what + where, free)

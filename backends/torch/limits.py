"""What PyTorch tells the memory estimator (:mod:`msnas_graph.limits`, which holds the rules):
a model's parameters and activations, counted without allocating on the ``meta`` device (one
forward pass sums the bytes of every leaf module's output, the activations a training step
keeps), a search supernet's cell by cell (one cell per distinct kind and widths, times the
edges that share it), and a CUDA device's free memory.

>>> spec = {"format": "msnas-graph/model", "kind": "unet", "in_channels": 1, "num_classes": 2,
...         "unet": {"base_channels": 4, "depth": 3}}
>>> params, act = model_estimate(spec, (2, 1, 32, 32))
>>> params, act > 0
(4198, True)
>>> check_model(spec, (2, 1, 32, 32), "train: the U-Net", training=True) > 0
True
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from msnas_graph.graph import Supergraph
from msnas_graph.kinds import carries_cell
from msnas_graph.limits import FLOAT32, check_fits, checks_enabled, network_bytes
from msnas_graph.spec import SearchSpace

from .models import create_model
from .nn.cells import SearchCell

__all__ = [
    "check_model",
    "check_supernet",
    "meta_estimate",
    "model_estimate",
    "saved_bytes",
    "supernet_estimate",
]

logger = logging.getLogger(__name__)


def meta_estimate(build: Callable[[], nn.Module], *shapes: Sequence[int]) -> tuple[int, int]:
    """``(parameters, activation bytes)`` of the module ``build()`` makes, run on ``meta``
    inputs of ``shapes`` (none: parameters only), without allocating memory.

    >>> meta_estimate(lambda: nn.Conv2d(1, 4, 3, padding=1), (2, 1, 8, 8))
    (40, 2048)
    """
    with torch.device("meta"):
        module = build()
    params = sum(p.numel() for p in module.parameters())
    total = 0
    if not shapes:
        return params, 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, list | tuple) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    args = [torch.empty(tuple(shape), device="meta") for shape in shapes]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in handles:
            h.remove()
    return params, total


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. subclasses)
        return None


def saved_bytes(run: Callable[[], Any], exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages (deduplicated by data pointer) that autograd saves for
    the backward pass while ``run()`` runs with gradients enabled, those of ``exclude``
    (parameters, buffers) left out.

    >>> x = torch.randn(4, 8, requires_grad=True)
    >>> saved_bytes(lambda: torch.relu(x).sum())  # the ReLU saves its output
    128
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key[0] != 0 and key[0] not in excluded:
            seen[key[0]] = max(seen.get(key[0], 0), key[1])
        return t.detach()

    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t.detach()

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        run()
    return sum(seen.values())


def _device(device: Any) -> tuple[str, int] | None:
    """The name and free bytes of the CUDA device ``device`` names (``None`` for the host)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return str(dev), int(torch.cuda.mem_get_info(dev)[0])
    return None


def model_estimate(spec: Mapping[str, Any], input_shape: Sequence[int] | None) -> tuple[int, int]:
    """``(parameters, activation bytes)`` of the model a description (``model.json``) builds,
    on an input of ``input_shape`` (``None``: parameters only)."""
    return meta_estimate(lambda: create_model(spec), *([input_shape] if input_shape else []))


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
    need = network_bytes(params, act, training=training)
    return check_fits(need, what, device=_device(device))


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
            n_params[key] = meta_estimate(functools.partial(_search_cell, space, *key))[0]
        ratio = (e.kind, c_in / c_out)
        if ratio not in per_unit:
            per_unit[ratio] = _cell_bytes_per_unit(space, e.kind, c_in / c_out)
        params += n_params[key]
        side = max(1, input_size // 2**e.src.scale)
        act += per_unit[ratio] * batch * c_out * side**dims
    full = batch * (space.in_channels + space.num_classes) * input_size**dims
    return params, int(min(act, 2.0**100)) + full * FLOAT32


def _search_cell(space: SearchSpace, kind: str, c_in: int, c_out: int) -> nn.Module:
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
    return check_fits(network_bytes(params, act, training=True), what, device=_device(device))

"""Which candidate operations of mixed ops over one input can be computed together, and where
their weights go: the plan that :func:`~msnas_graph.backends.torch.nn.fused.mix_groups` computes.

:func:`plan_candidates` sorts the operations of mixed ops over one input into separable
convolutions to fuse (``_Separable``: a default ``SepConvResidual`` or ``DilConv``, taken apart),
parameter-free operations computed once and shared (identity, pooling) and operations run one
by one (anything else: a user's operation, a module with hooks, a BatchNorm configured unlike
the others or synchronised across processes). :func:`_signature` says which plans can run as
groups of one computation, :func:`_routing` turns the operations' weights into the fused
terms' coefficients, :func:`_fused_kernels` lays every depth-wise kernel into one. The plan is
rebuilt on every call (1.6 % of a ``paper`` search step at width 32: a cache could pay at most
1.02x, ``benchmarks/results/keep_or_remove.md``), so any change to the modules is seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from msnas_graph.backends.torch.nn.ops import AvgPool3x3, DilConv, SepConvResidual, Zero

__all__ = ["CandidatePlan", "has_own_hooks", "plan_candidates"]

_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def has_own_hooks(module: nn.Module) -> bool:
    """Whether ``module`` itself has a forward, forward-pre, backward or backward-pre hook
    (which only its ``__call__`` runs)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _hooked(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule has a hook of its own (walked through ``_modules``
    directly: ``modules()`` builds every name and cost a tenth of the forward pass here)."""
    if has_own_hooks(module):
        return True
    return any(_hooked(m) for m in module._modules.values() if m is not None)


@dataclass(frozen=True)
class _Separable:
    """A separable convolution ``[+ x] + BN(pw(dw(ReLU(x))))`` taken apart."""

    consumer: int
    op: int
    depthwise: _ConvNd
    pointwise: _ConvNd
    norm: nn.modules.batchnorm._BatchNorm
    residual: bool
    footprint: int  # dilation * (kernel - 1) + 1, the same along every dimension


def _separable(module: nn.Module, consumer: int, op: int) -> _Separable | None:
    """The parts of a default separable-convolution operation, or ``None`` for anything the
    fused path does not compute exactly as the module would."""
    if isinstance(module, SepConvResidual):
        residual = True
    elif isinstance(module, DilConv):
        residual = False
    else:
        return None
    if type(module).forward not in (SepConvResidual.forward, DilConv.forward) or _hooked(module):
        return None
    body = module.body
    if not isinstance(body, nn.Sequential) or len(body) != 4:
        return None
    relu, dw, pw, bn = body
    # exactly these classes: a SyncBatchNorm (a subclass) reduces its statistics across
    # processes, which one local ``native_batch_norm`` would not
    if type(relu) is not nn.ReLU or type(bn) not in _BATCH_NORMS:
        return None
    bn = cast(nn.modules.batchnorm._BatchNorm, bn)
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if type(dw) not in convs or type(pw) not in convs:
        return None
    dw, pw = cast(_ConvNd, dw), cast(_ConvNd, pw)
    c = dw.in_channels
    k = set(dw.kernel_size)
    d = set(dw.dilation)
    if (
        dw.groups != c
        or dw.out_channels != c
        or dw.bias is not None
        or dw.padding_mode != "zeros"
        or set(dw.stride) != {1}
        or len(k) != 1
        or len(d) != 1
        or next(iter(k)) % 2 != 1
        or isinstance(dw.padding, str)
        or set(dw.padding) != {next(iter(d)) * (next(iter(k)) // 2)}
        or pw.in_channels != c
        or pw.out_channels != c
        or pw.groups != 1
        or pw.bias is not None
        or set(pw.kernel_size) != {1}
        or set(pw.stride) != {1}
        or set(pw.padding) != {0}
        or bn.num_features != c
        or bn.momentum is None
    ):
        return None
    kernel, dilation = next(iter(k)), next(iter(d))
    return _Separable(consumer, op, dw, pw, bn, residual, dilation * (kernel - 1) + 1)


def _shared_key(module: nn.Module) -> tuple[Any, ...] | None:
    """A key under which equal parameter-free operations give equal outputs, or ``None``."""
    if _hooked(module):
        return None
    if type(module) is nn.Identity:
        return ("identity",)
    if type(module) is AvgPool3x3:
        return ("avg_pool_3x3", module.spatial_dims, module.training)
    if type(module) in _MAX_POOLS:
        return (type(module).__name__, module.extra_repr())
    return None


_IDENTITY = ("identity",)


@dataclass
class CandidatePlan:
    """How :func:`mix_together` computes a list of mixed ops (see :func:`plan_candidates`)."""

    convs: list[_Separable] = field(default_factory=list)
    #: shared key -> (the module computing it, ((consumer, op), ...) using it)
    shared: dict[tuple[Any, ...], tuple[nn.Module | None, list[tuple[int, int]]]] = field(
        default_factory=dict
    )
    #: (consumer, op) run one by one
    single: list[tuple[int, int]] = field(default_factory=list)
    #: whether every mixed op has at least one term that is not ``none``
    complete: bool = True
    #: the configuration shared by the fused convolutions' BatchNorms
    norm_key: tuple[Any, ...] | None = None


def _ops(mix: nn.Module) -> Sequence[nn.Module]:
    return cast(Sequence[nn.Module], mix.ops)


def plan_candidates(mixed: Sequence[nn.Module]) -> CandidatePlan:
    """Sort the operations of ``mixed`` (mixed ops over one input) into fused separable
    convolutions, shared parameter-free operations and operations run one by one.

    >>> from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp
    >>> ops = ["sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "skip_connect", "none"]
    >>> plan = plan_candidates([PartialChannelMixedOp(8, ops, k=4) for _ in range(3)])
    >>> len(plan.convs), sorted(k[0] for k in plan.shared), plan.single
    (6, ['MaxPool2d', 'identity'], [])
    """
    plan = CandidatePlan()
    norm_key: tuple[Any, ...] | None = None
    for i, mix in enumerate(mixed):
        terms = 0
        for o, module in enumerate(_ops(mix)):
            if isinstance(module, Zero) and type(module).forward is Zero.forward:
                continue
            terms += 1
            part = _separable(module, i, o)
            if part is not None:
                bn = part.norm
                key = (
                    type(bn),
                    bn.eps,
                    bn.momentum,
                    bn.affine,
                    bn.track_running_stats,
                    bn.training,
                    part.depthwise.weight.dtype,
                )
                if norm_key is None:
                    norm_key = key
                if key == norm_key:
                    plan.convs.append(part)
                    if part.residual:
                        plan.shared.setdefault(_IDENTITY, (None, []))[1].append((i, o))
                    continue
            shared = _shared_key(module)
            if shared is None:
                plan.single.append((i, o))
                continue
            owner, users = plan.shared.setdefault(shared, (module, []))
            if owner is None:  # the identity entry first made by a residual convolution
                plan.shared[shared] = (module, users)
            users.append((i, o))
        if terms == 0:
            plan.complete = False
    plan.norm_key = norm_key
    # a stable order (by kernel size and dilation); any order computes the same
    plan.convs.sort(key=lambda p: (p.depthwise.kernel_size[0], p.depthwise.dilation[0]))
    return plan


#: (groups, channels, ((kernel, dilation) per convolution), footprint, dims, device) -> where
#: each depth-wise weight goes in the fused kernels (:func:`_fused_kernels`)
_KERNEL_INDEX: dict[tuple[Any, ...], torch.Tensor] = {}


def _kernel_index(
    groups: int, c: int, layout: Sequence[tuple[int, int]], footprint: int, dims: int
) -> torch.Tensor:
    """Flat positions in the ``(G * C * M, 1, *footprint)`` kernels of every depth-wise weight
    element, in the order of the weights ``(C, 1, k, ...)`` concatenated group by group and
    convolution by convolution."""
    m, per = len(layout), footprint**dims
    parts = []
    for g in range(groups):
        for i, (kernel, dilation) in enumerate(layout):
            size = dilation * (kernel - 1) + 1
            taps = (footprint - size) // 2 + dilation * torch.arange(kernel)
            tap = torch.zeros(1, dtype=torch.long)
            for _ in range(dims):  # row-major over the spatial dimensions
                tap = (tap[:, None] * footprint + taps[None, :]).reshape(-1)
            base = ((g * c + torch.arange(c)) * m + i) * per
            parts.append((base[:, None] + tap[None, :]).reshape(-1))
    return torch.cat(parts)


def _fused_kernels(plans: Sequence[CandidatePlan], footprint: int, dims: int) -> torch.Tensor:
    """``(G * C * M, 1, *footprint)``: every convolution's depth-wise weight spread over
    ``footprint`` per dimension (``3x3`` padded to ``5x5``, ``3x3`` at dilation 2 spread over
    ``5x5``), output channels ordered (group, channel, convolution); one concatenation and one
    scatter, whatever the number of convolutions."""
    convs = plans[0].convs
    layout = tuple((p.depthwise.kernel_size[0], p.depthwise.dilation[0]) for p in convs)
    weights = [cast(torch.Tensor, p.depthwise.weight) for plan in plans for p in plan.convs]
    c, groups, m = weights[0].shape[0], len(plans), len(convs)
    key = (groups, c, layout, footprint, dims, weights[0].device)
    index = _KERNEL_INDEX.get(key)
    if index is None:
        if len(_KERNEL_INDEX) >= 256:  # a bound, whatever spaces a process builds
            _KERNEL_INDEX.clear()
        index = _kernel_index(groups, c, layout, footprint, dims).to(weights[0].device)
        _KERNEL_INDEX[key] = index
    flat = torch.cat([w.reshape(-1) for w in weights])
    kernels = flat.new_zeros(groups * c * m * footprint**dims).index_copy(0, index, flat)
    return kernels.reshape(groups * c * m, 1, *(footprint,) * dims)


def _signature(plan: CandidatePlan) -> tuple[Any, ...]:
    """What must agree for plans to run as groups of one computation."""
    convs = tuple(
        (p.consumer, p.op, p.residual, p.depthwise.kernel_size[0], p.depthwise.dilation[0])
        for p in plan.convs
    )
    shared = tuple((key, tuple(users)) for key, (_m, users) in plan.shared.items())
    return convs, shared, plan.norm_key, tuple(plan.single), plan.complete


#: (plan signature, consumers, operations, device, dtype) -> :func:`_routing`'s tensors
_ROUTING: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def _routing(
    plan: CandidatePlan,
    signature: tuple[Any, ...],
    count: int,
    n_ops: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(select, route)``, 0/1 tensors that turn the ``(groups, consumers, operations)``
    weights into each fused term's coefficients (one product each): ``select[i, o, m]`` when
    convolution ``m`` is operation ``o`` of consumer ``i``, ``route[i, o, s]`` when operation
    ``o`` of consumer ``i`` uses shared term ``s``. Built once per plan layout
    (``signature``, :func:`_signature` of ``plan``)."""
    key = (signature, count, n_ops, device, dtype)
    cached = _ROUTING.get(key)
    if cached is None:
        select = torch.zeros(count, n_ops, len(plan.convs))
        for m, conv in enumerate(plan.convs):
            select[conv.consumer, conv.op, m] = 1.0
        route = torch.zeros(count, n_ops, len(plan.shared))
        for s, (_module, users) in enumerate(plan.shared.values()):
            for i, o in users:
                route[i, o, s] = 1.0
        if len(_ROUTING) >= 256:  # a bound, whatever spaces a process builds
            _ROUTING.clear()
        cached = _ROUTING[key] = (select.to(device, dtype), route.to(device, dtype))
    return cached

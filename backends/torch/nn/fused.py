"""The candidate operations of several mixed ops on one input, computed together.

In a :class:`~msnas_graph.backends.torch.nn.cells.SearchCell` the state ``X_j`` feeds the mixed
ops of blocks ``j .. N-1``: ``N - j`` mixed ops, each over the same candidate operations, on the
same (partial-width) input. Run one by one, that is ``N - j`` copies of every parameter-free
operation (pooling, identity) and, for every separable convolution, its own ReLU, depth-wise
convolution, point-wise convolution and BatchNorm: a few thousand small kernels per step, on
2-128 channels, where PyTorch's per-call cost and its slow depth-wise kernels at few channels
dominate (``benchmarks/results/search_step.md``). :func:`mix_together` computes
``[sum_o w[i][o] * mixed[i].ops[o](x) for i]`` with

- **one ReLU** of ``x`` for all separable convolutions (they all start with ``ReLU(x)``);
- **one depth-wise convolution** with a channel multiplier: every convolution's depth-wise
  kernel embedded in the largest footprint among them (``3x3`` padded to ``5x5``; ``3x3`` at
  dilation 2 spread over ``5x5``), which computes the same sums (running the ``3x3`` kernels
  unpadded could make a search step at most ~1.1x faster: ``benchmarks/results/keep_or_remove.md``);
- **one batched point-wise product** (one matrix per convolution) and **one BatchNorm** over
  all their channels (BatchNorm is per channel, so this is every BatchNorm at once; the running
  statistics are written back to each module); in training the point-wise products and the
  normalised values are recomputed in the backward pass rather than saved, and with
  ``recompute`` (what the supernet's ``recompute`` option asks for) the ReLU and the
  depth-wise convolution too, so that only the input is saved;
- **each parameter-free operation once** (``avg_pool_3x3``, ``max_pool_3x3``, ``skip_connect``,
  and the input term of the residual convolutions), shared by all mixed ops; the pooling runs
  again in the backward pass rather than saving max pooling's indices (and, with
  ``recompute``, rather than saving the pooled outputs for the coefficients' gradient);
- **two matrix products** for all weighted sums: ``(consumers x terms) @ (terms x pixels)``.

:func:`mix_groups` does the same for several such inputs at once (the cells into one supernet
node), on the inputs concatenated along the channels. The parameters stay in the mixed ops' own
modules (checkpoints, decoding and weight transfer see no difference); results equal the
one-by-one evaluation (:meth:`~msnas_graph.backends.torch.nn.mixed.PartialChannelMixedOp.mix`)
up to float rounding. Operations it does not know (a user's registered operation, a module with
hooks, a BatchNorm configured unlike the others or synchronised across processes) run one by
one, as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from torch.nn.modules.conv import _ConvNd

from msnas_graph.backends.torch.nn.ops import AvgPool3x3, DilConv, SepConvResidual, Zero

__all__ = ["mix_groups", "mix_together", "plan_candidates"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
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


def _affine(
    norms: Sequence[nn.modules.batchnorm._BatchNorm],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The BatchNorms' weights and biases, concatenated (``None`` when not affine)."""
    if not norms[0].affine:
        return None, None
    weight = torch.cat([cast(torch.Tensor, n.weight) for n in norms])
    return weight, torch.cat([cast(torch.Tensor, n.bias) for n in norms])


def _batch_norm(z: torch.Tensor, norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> torch.Tensor:
    """Every BatchNorm of ``norms`` (one per consecutive channel group of ``z``, configured
    alike) as one call; running statistics are updated as each module would update its own."""
    first = norms[0]
    training = first.training
    track = first.track_running_stats
    weight, bias = _affine(norms)
    if not track:
        return F.batch_norm(z, None, None, weight, bias, True, 0.0, first.eps)
    mean = torch.cat([cast(torch.Tensor, n.running_mean) for n in norms])
    var = torch.cat([cast(torch.Tensor, n.running_var) for n in norms])
    momentum = cast(float, first.momentum)
    y = F.batch_norm(z, mean, var, weight, bias, training, momentum, first.eps)
    if training:
        with torch.no_grad():
            _update_running_stats(norms, mean, var, 1.0)
    return y


def _update_running_stats(
    norms: Sequence[nn.modules.batchnorm._BatchNorm],
    mean: torch.Tensor,
    var: torch.Tensor,
    momentum: float,
) -> None:
    """``running <- running + momentum * (new - running)`` for every module's statistics (one
    consecutive group of ``mean``/``var`` each), and one more batch tracked: three calls in all
    instead of three per module."""
    means = [cast(torch.Tensor, n.running_mean) for n in norms]
    variances = [cast(torch.Tensor, n.running_var) for n in norms]
    mean, var = mean.to(means[0].dtype), var.to(variances[0].dtype)
    torch._foreach_lerp_(means, list(mean.chunk(len(norms))), momentum)
    torch._foreach_lerp_(variances, list(var.chunk(len(norms))), momentum)
    torch._foreach_add_([cast(torch.Tensor, n.num_batches_tracked) for n in norms], 1)


def _depthwise(
    x: torch.Tensor, kernels: torch.Tensor, groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ReLU(x), d)``: ``d`` the depth-wise convolution of every plan at once, as
    ``(N, G, M, C, pixels)``, contiguous (the point-wise products use it convolution-major;
    copied once here rather than by every product)."""
    dims = x.dim() - 2
    relu = F.relu(x)
    n, gc = x.shape[:2]
    c = gc // groups
    m = kernels.shape[0] // gc
    z = _CONV[dims](relu, kernels, None, 1, kernels.shape[-1] // 2, 1, gc)
    d = z.reshape(n, groups, c, m, -1).transpose(2, 3).contiguous()
    return relu, d


class _SeparableMix(torch.autograd.Function):
    """``coefficients @ BN(pointwise @ dw(ReLU(x)))`` with batch statistics.

    ``x``: ``(N, G * C, *spatial)`` (``G`` groups), ``kernels``: ``(G * C * M, 1, *footprint)``
    depth-wise kernels (``M`` convolutions per input channel, channel-major),
    ``pointwise``: ``(G, M, C, C)``, ``coefficients``: ``(G, K, M)``, ``weight``/``bias``:
    ``(G * M * C,)`` or ``None``. Returns the ``(N, G, K, C * pixels)`` weighted sums and the
    batch mean and (biased) variance per channel.

    The point-wise products and the normalised values are recomputed in the backward pass
    rather than saved. With ``recompute`` so are the ReLU and the depth-wise convolution: only
    ``x`` is saved (which the pooling candidates on the same input keep anyway), not the
    depth-wise output, ``M`` times the input's width and the largest tensor a search saves
    (40 % of a `paper` architecture step's activation memory at width 8), for one more
    depth-wise convolution per step.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        kernels: torch.Tensor,
        pointwise: torch.Tensor,
        coefficients: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
        groups: int,
        recompute: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, enabled=False):  # the caller cast to one dtype
            relu, d = _depthwise(x, kernels, groups)
            n, g, m, c = d.shape[:4]
            p = torch.matmul(pointwise, d).reshape(n, g * m * c, -1)
            y, mean, invstd = torch.native_batch_norm(p, weight, bias, None, None, True, 0.0, eps)
            out = torch.matmul(coefficients, y.reshape(n, g, m, -1))
        ctx.eps, ctx.groups = eps, groups
        kept = (x, None, None) if recompute else (None, relu, d)
        ctx.save_for_backward(*kept, kernels, pointwise, coefficients, weight, bias, mean, invstd)
        var = invstd.pow(-2).sub_(eps)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, g_out: torch.Tensor, _g_mean: torch.Tensor, _g_var: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, relu, d, kernels, pointwise, coefficients, weight, bias, mean, invstd = ctx.saved_tensors
        if x is not None:
            with torch.autocast(x.device.type, enabled=False):
                relu, d = _depthwise(x, kernels, ctx.groups)
        n, g, m, c = d.shape[:4]
        p = torch.matmul(pointwise, d).reshape(n, g * m * c, -1)
        g_y = torch.matmul(coefficients.transpose(-1, -2), g_out).reshape(p.shape)
        g_coefficients = None
        if ctx.needs_input_grad[3]:
            y = (p - mean[:, None]) * invstd[:, None]
            if weight is not None:
                y = y * weight[:, None] + bias[:, None]
            y = y.to(g_out.dtype).reshape(n, g, m, -1)
            g_coefficients = torch.matmul(g_out, y.transpose(-1, -2)).sum(0)
        affine = weight is not None
        g_p, g_weight, g_bias = torch.ops.aten.native_batch_norm_backward(
            g_y, p, weight, None, None, mean, invstd, True, ctx.eps, [True, affine, affine]
        )
        g_p = g_p.reshape(n, g, m, c, -1)
        g_pointwise = g_x = g_kernels = None
        if ctx.needs_input_grad[2]:
            g_pointwise = torch.matmul(g_p, d.transpose(-1, -2)).sum(0)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            g_d = torch.matmul(pointwise.transpose(-1, -2), g_p)  # (N, G, M, C, pixels)
            # the gradient of the depth-wise output, its channels as it has them (group, channel,
            # convolution)
            g_z = g_d.transpose(2, 3).reshape(n, -1, *relu.shape[2:])
            dims = relu.dim() - 2
            g_relu, g_kernels, _ = torch.ops.aten.convolution_backward(
                g_z,
                relu,
                kernels,
                None,
                [1] * dims,
                [kernels.shape[-1] // 2] * dims,
                [1] * dims,
                False,
                [0] * dims,
                relu.shape[1],
                [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False],
            )
            if g_relu is not None:
                g_x = torch.ops.aten.threshold_backward(g_relu, relu, 0.0)
        grads = (g_x, g_kernels, g_pointwise, g_coefficients, g_weight, g_bias)
        return (*grads, None, None, None)


def _convolutions(
    x: torch.Tensor, plans: Sequence[CandidatePlan], coefficients: torch.Tensor, recompute: bool
) -> torch.Tensor:
    """``coefficients @ BN(pw(dw(ReLU(x))))`` over the convolutions of every plan:
    ``(N, G, K, C * P)`` for ``G`` plans of ``M`` convolutions each (group ``g`` on channels
    ``g * C .. (g + 1) * C`` of ``x``) and ``(G, K, M)`` coefficients."""
    dims = x.dim() - 2
    groups = len(plans)
    n = x.shape[0]
    c = x.shape[1] // groups
    m = len(plans[0].convs)
    footprint = max(p.footprint for p in plans[0].convs)
    kernels = _fused_kernels(plans, footprint, dims)
    convs = [p for plan in plans for p in plan.convs]
    pointwise = torch.stack([cast(torch.Tensor, p.pointwise.weight) for p in convs])
    pointwise = pointwise.reshape(groups, m, c, c)
    norms = [p.norm for p in convs]
    first = norms[0]
    if (first.training or not first.track_running_stats) and torch.is_grad_enabled():
        count = n * math.prod(x.shape[2:])
        if count <= 1:
            raise ValueError(
                "Expected more than 1 value per channel when training, got input size "
                f"{[n, c, *x.shape[2:]]}"
            )
        weight, bias = _affine(norms)
        # one dtype for the whole computation: autocast's where it would lower the convolution
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        x, kernels = x.to(dtype), kernels.to(dtype)
        pointwise, coefficients = pointwise.to(dtype), coefficients.to(dtype)
        out, mean, var = _SeparableMix.apply(
            x,
            kernels,
            pointwise,
            coefficients,
            weight,
            bias,
            first.eps,
            groups,
            recompute,
        )
        if first.training and first.track_running_stats:
            momentum = cast(float, first.momentum)
            unbiased = var * (count / (count - 1))
            with torch.no_grad():
                _update_running_stats(norms, mean, unbiased, momentum)
        return cast(torch.Tensor, out)
    _relu, d = _depthwise(x, kernels, groups)
    z = torch.matmul(pointwise.to(d.dtype), d)  # (N, G, M, C, pixels)
    z = _batch_norm(z.reshape(n, groups * m * c, *x.shape[2:]), norms)
    return torch.matmul(coefficients.to(z.dtype), z.reshape(n, groups, m, -1))


def _shared_terms(
    x: torch.Tensor, modules: Sequence[nn.Module | None], groups: int
) -> torch.Tensor:
    """``(N, S, G, C * pixels)``: each parameter-free operation of ``modules`` on ``x``
    (``None``: the identity), group by group."""
    outputs = [x if m is None else cast(torch.Tensor, m(x)) for m in modules]
    return torch.stack(outputs, dim=1).reshape(x.shape[0], len(outputs), groups, -1)


class _SharedMix(torch.autograd.Function):
    """``einsum("gis,nsgl->ngil", coefficients, terms)`` over the parameter-free operations'
    outputs ``terms`` (:func:`_shared_terms`).

    The operations (identity, pooling) run again in the backward pass for the gradient of
    ``x``, so max pooling saves no int64 index per output. With ``recompute`` they also run
    again for the gradient of the coefficients, and nothing but ``x`` is saved (which the
    convolutions on the same input keep anyway); without, their outputs are saved for it.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        coefficients: torch.Tensor,
        modules: Sequence[nn.Module | None],
        groups: int,
        recompute: bool,
    ) -> torch.Tensor:
        ctx.modules, ctx.groups = modules, groups
        terms = _shared_terms(x, modules, groups)
        kept = None if recompute or not coefficients.requires_grad else terms
        ctx.save_for_backward(x, coefficients, kept)
        return torch.einsum("gis,nsgl->ngil", coefficients.to(terms.dtype), terms)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, coefficients, terms = ctx.saved_tensors
        modules: Sequence[nn.Module | None] = ctx.modules
        need_x, need_coefficients = ctx.needs_input_grad[:2]
        g_x: torch.Tensor | None = None
        g_terms = None
        if need_x:
            g_terms = torch.einsum("gis,ngil->nsgl", coefficients.to(g.dtype), g)
            g_terms = g_terms.reshape(x.shape[0], len(modules), *x.shape[1:])
        pooled: dict[int, torch.Tensor] = {}
        for s, m in enumerate(modules):
            g_s = None if g_terms is None else g_terms[:, s]
            term = None
            if m is None:  # the identity
                term = g_s
            elif g_s is not None and isinstance(m, AvgPool3x3):  # linear: no forward pass
                term = m.adjoint(g_s)
            elif g_s is not None:  # max pooling: run again, its indices found again
                with torch.enable_grad():
                    xr = x.detach().requires_grad_()
                    y = cast(torch.Tensor, m(xr))
                (term,) = torch.autograd.grad(y, xr, g_s.to(y.dtype))
                pooled[s] = y.detach()
            if term is not None:
                g_x = term if g_x is None else g_x + term
        g_coefficients = None
        if need_coefficients:
            if terms is None:
                with torch.no_grad():
                    outs = [
                        x if m is None else pooled[s] if s in pooled else cast(torch.Tensor, m(x))
                        for s, m in enumerate(modules)
                    ]
                terms = torch.stack(outs, 1).reshape(x.shape[0], len(modules), ctx.groups, -1)
            # one dtype (under autocast the sums were lower precision than x)
            dtype = torch.promote_types(g.dtype, terms.dtype)
            g_coefficients = torch.einsum("ngil,nsgl->gis", g.to(dtype), terms.to(dtype))
            g_coefficients = g_coefficients.to(coefficients.dtype)
        return g_x, g_coefficients, None, None, None


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


def mix_together(
    x: torch.Tensor,
    mixed: Sequence[nn.Module],
    weights: Sequence[torch.Tensor],
    recompute: bool = False,
) -> list[torch.Tensor]:
    """``[sum_o weights[i][o] * mixed[i].ops[o](x) for i]``, computed together (module doc).

    ``mixed`` are mixed ops (anything with an ``ops`` list of candidate modules) over the same
    input ``x``; ``weights[i]`` the 1-D coefficients of ``mixed[i]``'s operations. As in
    :meth:`~msnas_graph.backends.torch.nn.mixed.PartialChannelMixedOp.mix`, ``none`` adds
    nothing. ``recompute``: in training, save only ``x`` for the backward pass and compute the
    ReLU, the depth-wise convolution and the pooling again there (less memory, one more
    depth-wise convolution); results and gradients are the same either way.

    >>> from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp
    >>> ops = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "avg_pool_3x3", "skip_connect"]
    >>> mixed = [PartialChannelMixedOp(4, ops, k=1) for _ in range(2)]
    >>> x, w = torch.randn(2, 4, 8, 8), torch.softmax(torch.randn(2, 5), dim=1)
    >>> together = mix_together(x, mixed, list(w))
    >>> alone = [m.mix(x, wi) for m, wi in zip(mixed, w)]
    >>> all(torch.allclose(a, b, atol=1e-5) for a, b in zip(together, alone))
    True
    """
    return mix_groups([x], [mixed], [weights], recompute)[0]


def _signature(plan: CandidatePlan) -> tuple[Any, ...]:
    """What must agree for plans to run as groups of one computation."""
    convs = tuple(
        (p.consumer, p.op, p.residual, p.depthwise.kernel_size[0], p.depthwise.dilation[0])
        for p in plan.convs
    )
    shared = tuple((key, tuple(users)) for key, (_m, users) in plan.shared.items())
    return convs, shared, plan.norm_key, tuple(plan.single), plan.complete


def _rows(weights: Sequence[torch.Tensor] | torch.Tensor) -> Sequence[torch.Tensor]:
    return [weights] if isinstance(weights, torch.Tensor) else weights


def _stacked(weights: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return weights if isinstance(weights, torch.Tensor) else torch.stack(list(weights))


def mix_groups(
    xs: Sequence[torch.Tensor],
    mixed: Sequence[Sequence[nn.Module]],
    weights: Sequence[Sequence[torch.Tensor] | torch.Tensor],
    recompute: bool = False,
) -> list[list[torch.Tensor]]:
    """:func:`mix_together` of several groups at once: ``mix_together(xs[g], mixed[g],
    weights[g])`` for every ``g``, as one computation on the inputs concatenated along the
    channels (every operation here is per channel or block-diagonal across groups).
    ``weights[g]`` may also be one ``(consumers, operations)`` tensor; ``recompute`` as in
    :func:`mix_together`.

    The groups must be alike (same input shape, same operations in the same places, e.g. the
    cells into one supernet node); groups that are not run one group at a time.

    >>> from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp
    >>> ops = ["sep_conv_3x3", "max_pool_3x3", "skip_connect"]
    >>> groups = [[PartialChannelMixedOp(4, ops, k=1) for _ in range(2)] for _ in range(3)]
    >>> xs = [torch.randn(2, 4, 8, 8) for _ in range(3)]
    >>> ws = [list(torch.softmax(torch.randn(2, 3), dim=1)) for _ in range(3)]
    >>> out = mix_groups(xs, groups, ws)
    >>> bool(torch.allclose(out[2][1], groups[2][1].mix(xs[2], ws[2][1]), atol=1e-5))
    True
    """
    # rebuilt on every call, so any change to the modules is seen: 1.6 % of a `paper` search
    # step at width 32, so a cache could pay at most 1.02x (benchmarks/results/keep_or_remove.md)
    plans = [plan_candidates(m) for m in mixed]
    signature = _signature(plans[0])
    sizes = {int(w.shape[-1]) for ws in weights for w in _rows(ws)}
    if len(plans) > 1:
        alike = all(_signature(p) == signature for p in plans[1:])
        alike = alike and len({x.shape for x in xs}) == 1
        if not alike or plans[0].single or not plans[0].complete or len(sizes) != 1:
            return [
                mix_groups([x], [m], [w], recompute)[0]
                for x, m, w in zip(xs, mixed, weights, strict=True)
            ]
    plan = plans[0]
    if not plan.complete or len(sizes) != 1:
        return [
            [m.mix(xs[0], w) for m, w in zip(mixed[0], weights[0], strict=True)]  # type: ignore[operator]
        ]
    groups = len(xs)
    x = xs[0] if groups == 1 else torch.cat(list(xs), dim=1)
    n, c = xs[0].shape[:2]
    spatial = xs[0].shape[2:]
    count = len(mixed[0])
    w = torch.stack([_stacked(ws) for ws in weights])  # (groups, consumers, operations)
    out: torch.Tensor | None = None
    select, route = _routing(plan, signature, count, int(w.shape[2]), w.device, w.dtype)
    if plan.convs:
        coefficients = torch.einsum("gio,iom->gim", w, select)
        out = _convolutions(x, plans, coefficients, recompute)  # (N, groups, consumers, C * P)
    if plan.shared:
        modules = [None if key == _IDENTITY else module for key, (module, _) in plan.shared.items()]
        coefficients = torch.einsum("gio,ios->gis", w, route)
        # without gradients only the Function's forward runs, and no graph keeps anything
        shared = _SharedMix.apply(x, coefficients, modules, groups, recompute)
        out = shared if out is None else out + shared
    results: list[list[torch.Tensor | None]] = [[None] * count for _ in range(groups)]
    if out is not None:
        # unbound, not indexed: the backward pass is one stack, not a full-size zero tensor
        # per term
        for g, row in enumerate(out.unbind(1)):
            results[g] = [y.reshape(n, c, *spatial) for y in row.unbind(1)]
    for i, o in plan.single:  # only with one group
        term = weights[0][i][o] * _ops(mixed[0][i])[o](x)
        prev = results[0][i]
        results[0][i] = term if prev is None else prev + term
    return [[cast(torch.Tensor, r) for r in row] for row in results]

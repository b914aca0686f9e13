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
  ``recompute`` (a cell's ``recompute``; the supernet no longer asks for it) the ReLU and the
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
one, as before: :mod:`~msnas_graph.backends.torch.nn.fused_plan` sorts them (the plan).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from msnas_graph.backends.torch.nn.fused_plan import (
    _IDENTITY,
    CandidatePlan,
    _fused_kernels,
    _ops,
    _routing,
    _signature,
    has_own_hooks,
    plan_candidates,
)
from msnas_graph.backends.torch.nn.ops import AvgPool3x3

__all__ = ["has_own_hooks", "mix_groups", "mix_together", "plan_candidates"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


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

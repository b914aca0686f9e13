"""The operation registry of the torch backend: candidate operations by name.

Every operation is built by a *factory* ``factory(channels, spatial_dims=2, **options)`` that
returns an ``nn.Module`` mapping ``(N, C, *spatial)`` to the same shape: all operations have
stride 1 and keep the channel count (scaling happens outside the cells). The registry drives
the test matrix: every registered operation is tested automatically.

Registering an operation here also registers its *name* with the core
(:func:`msnas_graph.operations.register_operation_name`), so a search space that uses it
validates once the module defining it has been imported.

The default operations (DESIGN.md "Operations"; paper Fig. 2):

================  ==========================================================================
``sep_conv_3x3``  ``x + BN(pointwise(depthwise3x3(ReLU(x))))`` -- residual separable conv
``sep_conv_5x5``  ``x + BN(pointwise(depthwise5x5(ReLU(x))))``
``dil_conv_3x3``  ``BN(pointwise(depthwise3x3_dilation2(ReLU(x))))`` -- no residual
``conv_3x3``      ``BN(conv3x3(ReLU(x)))`` -- dense convolution (DiNTS's operation), no residual
``conv_3x3_dil2`` ``BN(conv3x3_dilation2(ReLU(x)))`` -- dense dilated convolution
``conv_3x3_dil4`` ``BN(conv3x3_dilation4(ReLU(x)))`` -- the same MACs, a 9x9 field
``conv_5x5``      ``BN(conv5x5(ReLU(x)))`` -- dense, 2.8x ``conv_3x3``'s MACs
``avg_pool_3x3``  average pooling 3x3, stride 1, padding 1, ``count_include_pad=False``
``max_pool_3x3``  max pooling 3x3, stride 1, padding 1
``skip_connect``  identity
``none``          zero (``x.mul(0.0)``): takes part in the search, never decoded
================  ==========================================================================

The paper's separable convolutions were designed for mobile FLOPs; a dense ``3x3`` convolution
has 6-8x the MACs of the separable pair at widths 16-64 but runs many times faster per MAC on
CPUs and GPUs (one large kernel instead of a depth-wise and a point-wise one), and a user
weighs measured latency. The dense ones are registered beside the paper's: the ``quick``
preset searches ``conv_3x3`` and ``conv_3x3_dil2``; ``conv_3x3_dil4`` and ``conv_5x5`` no preset
uses (``--set ops=conv_3x3,conv_5x5,...`` on the command line does).

The convolutional operations take ``affine`` (default ``True``): whether their BatchNorm has a
learnable scale and shift. DARTS and PC-DARTS build the *supernet* with ``affine=False`` (the
architecture weights then act as the only per-op scale); the final network uses
``affine=True``. Pass it through :func:`build_op` (``build_op(name, C, affine=False)``).
Every default operation accepts ``affine`` (the parameter-free ones ignore it), so a supernet
can pass it to all of them; a user's factory need only accept the options it is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from torch import nn

from msnas_graph._util import unknown_name
from msnas_graph.errors import BackendError
from msnas_graph.operations import register_operation_name

from .layers import AvgPool3x3, NdLayers, nd_layers

__all__ = [
    "WIDTH_CHANGING_OPS",
    "DilConv",
    "NdLayers",
    "OpFactory",
    "SepConvResidual",
    "Zero",
    "build_entry_op",
    "build_op",
    "nd_layers",
    "op_description",
    "register_op",
    "registered_ops",
    "relu_conv_bn",
    "unregister_op",
]


#: An operation factory: ``factory(channels, spatial_dims=2, **options) -> nn.Module``.
OpFactory = Callable[..., nn.Module]
_F = TypeVar("_F", bound=OpFactory)


@dataclass(frozen=True)
class _OpEntry:
    name: str
    factory: OpFactory
    description: str
    #: One of this module's operations (tested by the suite), not a plug-in's.
    builtin: bool = False


_REGISTRY: dict[str, _OpEntry] = {}


def register_op(name: str, description: str = "", *, override: bool = False) -> Callable[[_F], _F]:
    """Decorator registering an operation factory under ``name``.

    The factory is called as ``factory(channels, spatial_dims=2, **options)`` and must return a
    module whose output has the shape of its input. The name is also registered with the core
    so that search spaces may use it. Registering a name twice raises :class:`BackendError`
    unless ``override=True``.

    >>> @register_op("doc_example_identity", "identity, registered in a doctest")
    ... def _identity(channels, spatial_dims=2):
    ...     return nn.Identity()
    >>> "doc_example_identity" in registered_ops()
    True
    >>> unregister_op("doc_example_identity")
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise BackendError(
            f"register_op: operation name {name!r} is invalid; use letters, digits and "
            "underscores (e.g. 'my_conv_3x3')"
        )
    if name in _REGISTRY and not override:
        raise BackendError(
            f"register_op: operation '{name}' is already registered; pass override=True to "
            "replace it or choose another name"
        )

    def decorator(factory: _F) -> _F:
        if not callable(factory):
            raise BackendError(f"register_op('{name}'): the factory must be callable")
        register_operation_name(name, description)
        _REGISTRY[name] = _OpEntry(name, factory, description)
        return factory

    return decorator


def unregister_op(name: str) -> None:
    """Remove ``name`` from the backend registry (the core keeps knowing the name).

    Meant for tests and interactive sessions; unknown names raise :class:`BackendError`.
    """
    if name not in _REGISTRY:
        raise BackendError(unknown_name("operation", name, _REGISTRY))
    del _REGISTRY[name]


def registered_ops() -> list[str]:
    """The names of all registered operations, sorted.

    >>> {"sep_conv_3x3", "none", "skip_connect"} <= set(registered_ops())
    True
    """
    return sorted(_REGISTRY)


def op_description(name: str) -> str:
    """The one-line description an operation was registered with."""
    if name not in _REGISTRY:
        raise BackendError(unknown_name("operation", name, _REGISTRY))
    return _REGISTRY[name].description


def build_op(name: str, channels: int, spatial_dims: int = 2, **options: Any) -> nn.Module:
    """Build the operation ``name`` for ``channels`` channels.

    ``options`` (e.g. ``affine=False``) are passed to the factory; only give options the
    factory accepts (all default convolutional ops accept ``affine``).

    A plug-in operation (one registered outside this module) is checked the first time it is
    built at a width: a second instance runs on a small random input (``8`` pixels a side,
    the global random state left as it was) and must return a tensor of the input's shape. A
    factory that raises, a forward pass that fails, or another shape is one
    :class:`BackendError` line naming the operation and the module that registered it, so a
    search, a training run, an export or a budget decode refuses it before any work.

    >>> op = build_op("sep_conv_3x3", 8)
    >>> op(torch.zeros(1, 8, 16, 16)).shape
    torch.Size([1, 8, 16, 16])
    >>> @register_op("doc_example_stride_2", "halves the size: breaks the shape rule")
    ... def _halve(channels, spatial_dims=2):
    ...     return nn.AvgPool2d(2)
    >>> build_op("doc_example_stride_2", 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    msnas_graph.errors.BackendError: operation 'doc_example_stride_2' (registered by ...): it maps an input of shape (1, 4, 8, 8) to (1, 4, 4, 4); ...
    >>> unregister_op("doc_example_stride_2")
    """  # noqa: E501
    if name not in _REGISTRY:
        raise BackendError(unknown_name("operation", name, _REGISTRY))
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise BackendError(f"build_op('{name}'): channels must be a positive int, got {channels!r}")
    nd_layers(spatial_dims)  # validates spatial_dims with a clear message
    entry = _REGISTRY[name]
    _check_options(name, entry.factory, channels, spatial_dims, options)
    module = _call_factory(entry, channels, spatial_dims, options)
    if not entry.builtin:
        _check_plugin_op(entry, channels, spatial_dims, options)
    return module


def _call_factory(
    entry: _OpEntry, channels: int, spatial_dims: int, options: dict[str, Any]
) -> nn.Module:
    try:
        module = entry.factory(channels, spatial_dims, **options)
    except TypeError as exc:
        if options:
            raise BackendError(
                f"build_op('{entry.name}'): the factory rejected options {sorted(options)}: {exc}"
            ) from exc
        raise _op_error(entry, f"its factory raised TypeError: {exc}") from exc
    except Exception as exc:  # a plug-in's own bug: one line naming the operation
        raise _op_error(entry, f"its factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise _op_error(entry, f"its factory returned {type(module).__name__}, not an nn.Module")
    return module


def _op_error(entry: _OpEntry, problem: str) -> BackendError:
    first = (problem.strip().splitlines() or [""])[0][:200]
    where = getattr(entry.factory, "__module__", None) or "its module"
    return BackendError(
        f"operation '{entry.name}' (registered by {where}): {first}; fix the operation: its "
        "factory(channels, spatial_dims, **options) must return a module that keeps its "
        "input's shape"
    )


#: Plug-in operations already checked, by (name, factory, channels, spatial_dims, options).
_CHECKED: set[tuple[Any, ...]] = set()
#: The side of the probe input used to check a plug-in operation.
_PROBE_SIDE = 8


def _check_plugin_op(
    entry: _OpEntry, channels: int, spatial_dims: int, options: dict[str, Any]
) -> None:
    """Run a fresh instance of a plug-in operation once per width on a small random input and
    refuse it in one line unless the output is a tensor of the input's shape. The global
    random state is left as it was (the probe draws from a forked generator)."""
    key = (entry.name, id(entry.factory), channels, spatial_dims, repr(sorted(options.items())))
    if key in _CHECKED:
        return
    shape = (1, channels, *([_PROBE_SIDE] * spatial_dims))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        probe = _call_factory(entry, channels, spatial_dims, options).eval()
        try:
            out = probe(torch.randn(shape))
        except Exception as exc:
            raise _op_error(
                entry, f"a forward pass on {tuple(shape)} raised {type(exc).__name__}: {exc}"
            ) from exc
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != shape:
        raise _op_error(entry, f"it maps an input of shape {shape} to {got}")
    _CHECKED.add(key)


def _check_options(
    name: str,
    factory: Callable[..., Any],
    channels: int,
    spatial_dims: int,
    options: dict[str, Any],
) -> None:
    """Refuse options the factory's signature cannot take, naming the fix (a ``**_``)."""
    try:
        inspect.signature(factory).bind(channels, spatial_dims, **options)
    except ValueError:  # no signature to inspect (some builtins): let the call decide
        return
    except TypeError:
        given = ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
        raise BackendError(
            f"operation '{name}': its factory does not take the options the network passes "
            f"({given}): end its parameters with **_ to accept and ignore them, e.g. "
            f"def {getattr(factory, '__name__', 'factory')}(channels, spatial_dims=2, **_)"
        ) from None


# --------------------------------------------------------------------------- default ops


class Zero(nn.Module):
    """The ``none`` operation: ``x * 0`` (keeps shape, dtype, device and the autograd graph)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def separable(
    channels: int, kernel_size: int, dilation: int = 1, spatial_dims: int = 2, affine: bool = True
) -> nn.Sequential:
    """``ReLU -> depth-wise k x k (dilation d, padding d * (k // 2), no bias) -> point-wise
    1 x 1 (no bias) -> BN``: the shape-preserving separable convolution both conv ops use."""
    layers = nd_layers(spatial_dims)
    return nn.Sequential(
        nn.ReLU(inplace=False),
        layers.conv(
            channels,
            channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=channels,
            bias=False,
        ),
        layers.conv(channels, channels, 1, bias=False),
        layers.batch_norm(channels, affine=affine),
    )


class SepConvResidual(nn.Module):
    """Residual separable convolution (paper Fig. 2).

    ``y = x + BN(pointwise(depthwise(ReLU(x))))``: ReLU, then a depth-wise ``k x k`` convolution
    (one filter per channel, padding ``k // 2``, no bias), then a point-wise ``1 x 1``
    convolution (no bias), then BatchNorm, and the input added back.
    """

    def __init__(
        self, channels: int, kernel_size: int, spatial_dims: int = 2, affine: bool = True
    ) -> None:
        super().__init__()
        self.body = separable(channels, kernel_size, 1, spatial_dims, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DilConv(nn.Module):
    """Dilated separable convolution, no residual.

    ``y = BN(pointwise(depthwise_dilated(ReLU(x))))`` with a depth-wise ``k x k`` convolution of
    dilation ``d`` and padding ``d * (k // 2)`` (shape-preserving).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        dilation: int = 2,
        spatial_dims: int = 2,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.body = separable(channels, kernel_size, dilation, spatial_dims, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_op("sep_conv_3x3", "residual separable conv 3x3: x + BN(pw(dw3x3(ReLU(x))))")
def _sep_conv_3x3(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return SepConvResidual(channels, 3, spatial_dims, affine=affine)


@register_op("sep_conv_5x5", "residual separable conv 5x5: x + BN(pw(dw5x5(ReLU(x))))")
def _sep_conv_5x5(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return SepConvResidual(channels, 5, spatial_dims, affine=affine)


@register_op("dil_conv_3x3", "dilated separable conv 3x3, rate 2: BN(pw(dw3x3_d2(ReLU(x))))")
def _dil_conv_3x3(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return DilConv(channels, 3, 2, spatial_dims, affine=affine)


def relu_conv_bn(
    channels: int,
    dilation: int = 1,
    spatial_dims: int = 2,
    affine: bool = True,
    in_channels: int | None = None,
    kernel: int = 3,
) -> nn.Sequential:
    """``ReLU -> conv kxk (dilation d, "same" padding, no bias) -> BN``: the dense,
    shape-preserving convolution of ``conv_3x3``, ``conv_3x3_dil2``, ``conv_3x3_dil4`` and
    ``conv_5x5`` (the BatchNorm folds into the conv); with ``in_channels``, it maps that width to
    ``channels`` (the ``lean`` cell glue's entry).

    >>> relu_conv_bn(4, dilation=2)(torch.zeros(1, 4, 9, 9)).shape
    torch.Size([1, 4, 9, 9])
    >>> relu_conv_bn(4, in_channels=2, kernel=5)(torch.zeros(1, 2, 9, 9)).shape
    torch.Size([1, 4, 9, 9])
    """
    layers = nd_layers(spatial_dims)
    c_in = channels if in_channels is None else in_channels
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.ReLU(inplace=False),
        layers.conv(c_in, channels, kernel, padding=pad, dilation=dilation, bias=False),
        layers.batch_norm(channels, affine=affine),
    )


#: The operations that can read another width than they write, as (kernel, dilation): the
#: dense convolutions, which the ``lean`` cell glue lets take a cell's input without a
#: preprocess.
WIDTH_CHANGING_OPS: dict[str, tuple[int, int]] = {
    "conv_3x3": (3, 1),
    "conv_3x3_dil2": (3, 2),
    "conv_3x3_dil4": (3, 4),
    "conv_5x5": (5, 1),
}


def build_entry_op(name: str, in_channels: int, channels: int, spatial_dims: int = 2) -> nn.Module:
    """Operation ``name`` reading ``in_channels`` and writing ``channels``: one of
    :data:`WIDTH_CHANGING_OPS`, or any operation when the widths are equal (:func:`build_op`).

    >>> build_entry_op("conv_3x3", 8, 16)(torch.zeros(1, 8, 5, 5)).shape
    torch.Size([1, 16, 5, 5])
    """
    if in_channels == channels:
        return build_op(name, channels, spatial_dims)
    if name not in WIDTH_CHANGING_OPS:
        raise BackendError(
            f"operation '{name}' cannot map {in_channels} to {channels} channels (only "
            f"{', '.join(WIDTH_CHANGING_OPS)} can)"
        )
    kernel, dilation = WIDTH_CHANGING_OPS[name]
    return relu_conv_bn(channels, dilation, spatial_dims, in_channels=in_channels, kernel=kernel)


@register_op("conv_3x3", "dense conv 3x3: BN(conv3x3(ReLU(x)))")
def _conv_3x3(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return relu_conv_bn(channels, 1, spatial_dims, affine=affine)


@register_op("conv_3x3_dil2", "dense dilated conv 3x3, rate 2: BN(conv3x3_d2(ReLU(x)))")
def _conv_3x3_dil2(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return relu_conv_bn(channels, 2, spatial_dims, affine=affine)


@register_op("conv_3x3_dil4", "dense dilated conv 3x3, rate 4: BN(conv3x3_d4(ReLU(x)))")
def _conv_3x3_dil4(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return relu_conv_bn(channels, 4, spatial_dims, affine=affine)


@register_op("conv_5x5", "dense conv 5x5: BN(conv5x5(ReLU(x)))")
def _conv_5x5(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return relu_conv_bn(channels, 1, spatial_dims, affine=affine, kernel=5)


@register_op("avg_pool_3x3", "average pooling 3x3, stride 1, padding 1 (count_include_pad=False)")
def _avg_pool_3x3(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return AvgPool3x3(spatial_dims)


@register_op("max_pool_3x3", "max pooling 3x3, stride 1, padding 1")
def _max_pool_3x3(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return nd_layers(spatial_dims).max_pool(3, stride=1, padding=1)


@register_op("skip_connect", "identity")
def _skip_connect(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return nn.Identity()


@register_op("none", "zero (disconnection); searchable, never decoded")
def _none(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    return Zero()


#: The operations above are this module's own: tested by the suite, never probed at build time.
_REGISTRY.update({n: replace(e, builtin=True) for n, e in _REGISTRY.items()})

"""Layer classes by number of spatial dimensions, and the average pooling the ``avg_pool_3x3``
operation uses (:mod:`~msnas_graph.backends.torch.nn.ops` registers the operations and
re-exports these names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from msnas_graph.errors import BackendError

__all__ = ["AvgPool3x3", "NdLayers", "nd_layers"]


@dataclass(frozen=True)
class NdLayers:
    """The layer classes for one number of spatial dimensions (1, 2 or 3)."""

    spatial_dims: int
    conv: type[nn.Module]
    conv_transpose: type[nn.Module]
    batch_norm: type[nn.Module]
    max_pool: type[nn.Module]
    avg_pool: type[nn.Module]
    interpolation: str  # the linear interpolation mode: "linear", "bilinear" or "trilinear"


_ND_LAYERS: dict[int, NdLayers] = {
    d: NdLayers(
        d,
        conv=getattr(nn, f"Conv{d}d"),
        conv_transpose=getattr(nn, f"ConvTranspose{d}d"),
        batch_norm=getattr(nn, f"BatchNorm{d}d"),
        max_pool=getattr(nn, f"MaxPool{d}d"),
        avg_pool=getattr(nn, f"AvgPool{d}d"),
        interpolation=mode,
    )
    for d, mode in ((1, "linear"), (2, "bilinear"), (3, "trilinear"))
}


def nd_layers(spatial_dims: int) -> NdLayers:
    """The conv / BN / pooling classes for ``spatial_dims`` (1, 2 or 3).

    >>> nd_layers(3).conv.__name__
    'Conv3d'
    """
    try:
        return _ND_LAYERS[spatial_dims]
    except (KeyError, TypeError):
        raise BackendError(
            f"spatial_dims={spatial_dims!r} is not supported by the torch backend; use 1, 2 or 3"
        ) from None


class AvgPool3x3(nn.Module):
    """Average pooling 3x3 (3x3x3), stride 1, padding 1, ``count_include_pad=False``.

    In training (where the backward pass costs as much again) it is computed as box sums,
    one shifted three-term sum per spatial dimension, times the reciprocal of each position's
    window count: on the CPU 0.3-0.6x the time of ``avg_pool2d`` forward and backward at the
    widths a search uses (``benchmarks/depthwise_probe.py`` setting). In eval mode, and in
    exports, it is the library's ``AvgPool``. Both agree up to float rounding.

    >>> pool = AvgPool3x3(2)
    >>> x = torch.randn(1, 3, 5, 6)
    >>> bool(torch.allclose(pool.train()(x), pool.eval()(x), atol=1e-6))
    True
    """

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.pool = nd_layers(spatial_dims).avg_pool(
            3, stride=1, padding=1, count_include_pad=False
        )
        self._inverse_counts: dict[tuple[Any, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return cast(torch.Tensor, self.pool(x))
        return self._box_sums(x) * self._inverse_count(x)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """The gradient of the input given ``g``, the gradient of the output (the pooling is
        linear, and its box sums with zero padding are symmetric): ``box_sums(g / count)``.

        >>> pool, x = AvgPool3x3(2).train(), torch.randn(1, 2, 4, 5, requires_grad=True)
        >>> g = torch.randn(1, 2, 4, 5)
        >>> pool(x).backward(g)
        >>> bool(torch.allclose(pool.adjoint(g), x.grad, atol=1e-6))
        True
        """
        return self._box_sums(g * self._inverse_count(g))

    def _box_sums(self, x: torch.Tensor) -> torch.Tensor:
        total = x
        for dim in range(x.dim() - self.spatial_dims, x.dim()):
            pad = [0, 0] * (x.dim() - dim - 1) + [1, 1]
            padded = nn.functional.pad(total, pad)
            n = total.shape[dim]
            total = padded.narrow(dim, 0, n) + padded.narrow(dim, 1, n) + padded.narrow(dim, 2, n)
        return total

    def _inverse_count(self, x: torch.Tensor) -> torch.Tensor:
        """``1 / (window positions inside the input)`` per position, broadcast over N and C."""
        spatial = tuple(x.shape[-self.spatial_dims :])
        key = (spatial, x.device, x.dtype)
        cached = self._inverse_counts.get(key)
        if cached is None:
            inverse = torch.ones((), device=x.device, dtype=x.dtype)
            for i, n in enumerate(spatial):
                count = torch.full((n,), 3.0, device=x.device, dtype=x.dtype)
                count[0] -= 1
                count[-1] -= 1
                if n == 1:
                    count[0] = 1
                shape = [1] * self.spatial_dims
                shape[i] = n
                inverse = inverse * (1.0 / count).reshape(shape)
            cached = inverse.reshape(1, 1, *spatial)
            self._inverse_counts = {key: cached}  # one size at a time: no growth
        return cached

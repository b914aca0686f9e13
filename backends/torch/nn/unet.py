"""The classic U-Net baseline (Ronneberger et al. 2015) in the common "milesial" layout.

``depth`` resolution levels (``depth - 1`` max-poolings); at level ``l`` a double convolution
(``conv3x3 - BN - ReLU``, twice) with ``base_channels * 2**l`` channels. The decoder upsamples,
concatenates the encoder's skip features and applies a double convolution.

With ``bilinear=True`` (the default) upsampling is parameter-free linear interpolation and, as
in the widely used ``milesial/Pytorch-UNet``, the bottleneck and every decoder output but the
last are halved (``factor = 2``) so that upsampled and skip features have equal widths; the
decoder's double conv then goes ``2c -> c -> c/2``. With ``bilinear=False`` a stride-2
transposed convolution halves the channels instead and no widths are halved.

The defaults (5 levels, base width 56, bilinear, BN, 1 input channel, 2 classes) give
13,217,178 parameters and 30.56 G multiply-accumulates at ``1x1x256x256``
(:func:`~msnas_graph.backends.torch.cost.count_macs_flops`), the baseline the issue measured;
the paper's U-Net row reads 13.39 M / 31.01 G "FLOPs" (which are MACs). The layout check:
width 64 gives 17.26 M parameters (bilinear) and 31.04 M (transposed convolutions), the
figures of milesial's U-Net. ``bilinear=False`` at width 56 has 23.76 M parameters and
36.83 G MACs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from msnas_graph.backends.torch.nn.ops import nd_layers
from msnas_graph.errors import BackendError

__all__ = ["DoubleConv", "UNet"]


class DoubleConv(nn.Module):
    """``(conv3x3 -> BN -> ReLU) x 2``; without BN the convolutions have a bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        *,
        batch_norm: bool = True,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        layers = nd_layers(spatial_dims)
        mid = mid_channels or out_channels
        modules: list[nn.Module] = []
        for c_in, c_out in ((in_channels, mid), (mid, out_channels)):
            modules.append(layers.conv(c_in, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                modules.append(layers.batch_norm(c_out))
            modules.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Up(nn.Module):
    """Upsample ``x`` to the skip's size, concatenate ``[skip, x]``, double conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bilinear: bool,
        batch_norm: bool,
        spatial_dims: int,
    ) -> None:
        super().__init__()
        layers = nd_layers(spatial_dims)
        self.mode = layers.interpolation
        self.bilinear = bilinear
        self.up: nn.Module
        if bilinear:
            self.up = nn.Identity()
            self.conv = DoubleConv(
                in_channels,
                out_channels,
                in_channels // 2,
                batch_norm=batch_norm,
                spatial_dims=spatial_dims,
            )
        else:
            self.up = layers.conv_transpose(in_channels, in_channels // 2, 2, stride=2)
            self.conv = DoubleConv(
                in_channels, out_channels, batch_norm=batch_norm, spatial_dims=spatial_dims
            )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.bilinear:
            # Interpolating straight to the skip's size handles odd sizes and exports to ONNX
            # with dynamic spatial axes (a Resize with computed sizes).
            x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
        else:
            x = self.up(x)
            pad: list[int] = []
            for dim in range(skip.dim() - 1, 1, -1):  # F.pad lists the last dim first
                diff = skip.shape[dim] - x.shape[dim]
                pad += [diff // 2, diff - diff // 2]
            x = F.pad(x, pad)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net baseline; ``forward(x)`` maps ``(N, in_channels, *S)`` to ``(N, num_classes, *S)``.

    Args:
        in_channels: input channels (1 for CT/MR slices).
        num_classes: output channels (logits, background included).
        base_channels: width of the first level; level ``l`` has ``base * 2**l``.
        depth: number of resolution levels (5 gives 4 poolings, the classic U-Net).
        bilinear: linear-interpolation upsampling (halved bottleneck) instead of transposed
            convolutions.
        batch_norm: BatchNorm after every 3x3 convolution.
        spatial_dims: 2 for images, 3 for volumes.

    Spatial sizes that are multiples of ``2**(depth - 1)`` avoid any rounding in the
    poolings; other sizes work too (the decoder resizes or pads to the skip's size).

    >>> net = UNet(base_channels=4, depth=3)
    >>> net(torch.zeros(1, 1, 16, 16)).shape
    torch.Size([1, 2, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 56,
        depth: int = 5,
        bilinear: bool = True,
        batch_norm: bool = True,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("num_classes", num_classes, 1),
            ("base_channels", base_channels, 1),
            ("depth", depth, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BackendError(f"UNet: {name} must be an int >= {low}, got {value!r}")
        factor = 2 if bilinear else 1
        if bilinear and base_channels % 2 != 0:
            raise BackendError(
                f"UNet: base_channels={base_channels} must be even with bilinear=True "
                "(the decoder halves the widths); use an even base width"
            )
        layers = nd_layers(spatial_dims)
        self.depth = depth
        self.spatial_dims = spatial_dims
        widths = [base_channels * 2**level for level in range(depth)]
        widths[-1] //= factor
        self.inc = DoubleConv(
            in_channels, widths[0], batch_norm=batch_norm, spatial_dims=spatial_dims
        )
        self.pool = layers.max_pool(2)
        self.downs = nn.ModuleList(
            DoubleConv(widths[i - 1], widths[i], batch_norm=batch_norm, spatial_dims=spatial_dims)
            for i in range(1, depth)
        )
        ups = []
        for level in range(depth - 2, -1, -1):
            in_ch = base_channels * 2 ** (level + 1)
            out_ch = base_channels * 2**level // (factor if level > 0 else 1)
            ups.append(
                _Up(
                    in_ch,
                    out_ch,
                    bilinear=bilinear,
                    batch_norm=batch_norm,
                    spatial_dims=spatial_dims,
                )
            )
        self.ups = nn.ModuleList(ups)
        self.head = layers.conv(base_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)

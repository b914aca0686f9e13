"""Building blocks shared by the supernet and the final network: stem, head, resampling,
preprocess/projection and fusion; node and edge module names; input checks.

Both networks are built from the same parts, so that a supernet with one-hot architecture
weights computes the same function as the final network compiled from that choice (the parity
test), and :func:`~msnas_graph.backends.torch.nn.transfer.transfer_weights` can copy weights between
them module by module.

* :class:`Stem`: ``conv3x3(in_channels -> C) -> BN -> ReLU``, writes node ``L0.s0``.
* :class:`Head`: per output node a bias-free ``1x1`` conv to ``num_classes``, bilinearly
  upsampled by ``2**scale`` to the input size, summed over the output nodes, plus one shared bias.
  (One bias instead of one per output conv: the sum of several biases is one bias, and a node
  whose features are zero contributes exactly zero, which keeps the parity test exact when a
  decoded architecture drops an output scale.)
* A *cell edge* into a node of width ``C_dst``: :func:`resample` for its kind (``contract``:
  max-pool 2, ``expand``: bilinear x2 upsample, ``keep``: nothing), then
  :class:`Preprocess` (``ReLU -> 1x1 conv -> BN``, ``C_src -> C_dst``), then ``N`` blocks,
  then the concatenation of all block outputs and :class:`Projection`
  (``1x1 conv -> BN``, ``N * C_dst -> C_dst``).
  (the cells themselves are in :mod:`~msnas_graph.backends.torch.nn.cells`).
* :class:`ConcatFusion`: the final network's multi-scale fusion,
  ``concat -> 1x1 conv -> BN -> ReLU`` back to the node width.

Module names inside ``nn.ModuleDict`` cannot contain ``.``: nodes are named ``L3_s2``
(:func:`node_key`) and edges ``L3_s2_contract`` (:func:`edge_key`; an edge is determined by its
destination and kind).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, cast

import torch
from torch import nn

from msnas_graph.backends.torch.nn.ops import nd_layers
from msnas_graph.errors import BackendError
from msnas_graph.graph import Edge, NodeId
from msnas_graph.kinds import edge_kind

__all__ = [
    "ConcatFusion",
    "Head",
    "Preprocess",
    "Projection",
    "SplitConv",
    "Stem",
    "check_input",
    "conv_of_concat",
    "edge_key",
    "node_key",
    "resample",
]


def node_key(node: NodeId) -> str:
    """Module-name form of a node id: ``L3.s2`` -> ``"L3_s2"``.

    >>> node_key(NodeId(3, 2))
    'L3_s2'
    """
    return f"L{node.layer}_s{node.scale}"


def edge_key(edge: Edge) -> str:
    """Module-name form of an edge: ``"<dst>_<kind>"`` (the destination and kind fix the source).

    >>> edge_key(Edge(NodeId(0, 0), NodeId(1, 1), "contract"))
    'L1_s1_contract'
    """
    return f"{node_key(edge.dst)}_{edge.kind}"


def _tracing() -> bool:
    """Whether the module is being traced/exported (skip Python-side input checks then)."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


def check_input(
    x: torch.Tensor, in_channels: int, spatial_dims: int, factor: int, where: str
) -> None:
    """Raise a one-line :class:`BackendError` unless ``x`` is ``(N, in_channels, *spatial)``
    with every spatial size divisible by ``factor`` (``2**deepest_scale``)."""
    if _tracing():
        return
    want_dims = 2 + spatial_dims
    spatial = "x".join(["S"] * spatial_dims)
    expected = f"(batch, {in_channels}, {spatial}) with S a multiple of {factor}"
    if not isinstance(x, torch.Tensor) or x.dim() != want_dims:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise BackendError(f"{where}: input has shape {got}, expected {expected}")
    if x.shape[1] != in_channels:
        raise BackendError(
            f"{where}: input has {x.shape[1]} channels, the space expects "
            f"in_channels={in_channels}; expected shape {expected}"
        )
    sizes = tuple(int(s) for s in x.shape[2:])
    if any(s % factor for s in sizes):
        fixed = tuple(max(factor, round(s / factor) * factor) for s in sizes)
        raise BackendError(
            f"{where}: input spatial size {sizes} is not divisible by {factor} (the deepest scale "
            f"downsamples by {factor}); resize or pad the input, e.g. to {fixed}"
        )


def resample(kind: str, spatial_dims: int) -> nn.Module:
    """The scale change of an edge kind: max-pool 2 (``contract``), bilinear (or trilinear) x2
    upsampling with ``align_corners=False`` (``expand``), identity otherwise."""
    layers = nd_layers(spatial_dims)
    how = edge_kind(kind).resample  # the kind table says how each kind resamples
    if how == "maxpool":
        return layers.max_pool(2, stride=2)
    if how == "upsample":
        return nn.Upsample(scale_factor=2.0, mode=layers.interpolation, align_corners=False)
    return nn.Identity()


class Stem(nn.Module):
    """``conv3x3(in_channels -> channels, no bias) -> BN -> ReLU`` at full resolution."""

    #: ``bn`` directly follows ``conv``: folded for inference (``backends.torch.fuse``).
    fuse_pairs: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "bn"),)

    def __init__(self, in_channels: int, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        layers = nd_layers(spatial_dims)
        self.conv = layers.conv(in_channels, channels, 3, padding=1, bias=False)
        self.bn = layers.batch_norm(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Head(nn.Module):
    """Segmentation head over several output nodes.

    ``logits = bias + sum_o upsample_{2**scale_o}(conv1x1_o(X_o))``, with the ``1x1`` convs
    bias-free; ``convs`` is keyed by :func:`node_key`.
    """

    def __init__(
        self,
        outputs: Sequence[tuple[NodeId, int]],
        num_classes: int,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        layers = nd_layers(spatial_dims)
        self.mode = layers.interpolation
        self.keys = tuple(node_key(n) for n, _ in outputs)
        self.scales = tuple(n.scale for n, _ in outputs)
        self.convs = nn.ModuleDict(
            {node_key(n): layers.conv(c, num_classes, 1, bias=False) for n, c in outputs}
        )
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self._bias_shape = (1, num_classes) + (1,) * spatial_dims

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features`` aligned with the output nodes given at construction."""
        out: torch.Tensor | None = None
        for key, scale, x in zip(self.keys, self.scales, features, strict=True):
            y = self.convs[key](x)
            if scale:
                y = nn.functional.interpolate(
                    y, scale_factor=float(2**scale), mode=self.mode, align_corners=False
                )
            out = y if out is None else out + y
        assert out is not None  # at least one output node, checked by the space
        return out + self.bias.view(self._bias_shape)


class Preprocess(nn.Module):
    """``ReLU -> 1x1 conv (no bias) -> BN``: maps a cell's input to the node width."""

    #: ``bn`` directly follows ``conv``: folded for inference (``backends.torch.fuse``).
    fuse_pairs: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "bn"),)

    def __init__(self, c_in: int, c_out: int, spatial_dims: int = 2) -> None:
        super().__init__()
        layers = nd_layers(spatial_dims)
        self.relu = nn.ReLU()
        self.conv = layers.conv(c_in, c_out, 1, bias=False)
        self.bn = layers.batch_norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


class SplitConv(nn.Module):
    """A convolution of the channel concatenation of ``parts`` computed as the sum of one
    convolution per part (the bias once), so no concatenated copy is made: ``conv(cat(a, b)) ==
    conv_a(a) + conv_b(b)`` for a convolution without groups. An inference-time rewrite
    (:func:`~msnas_graph.backends.torch.fuse.split_concat_convs`) for the ``jit`` and
    ``onnxruntime`` runtimes and ``export`` (under ``jit``, MS-NAS networks of width 32-64 at
    128x128 and batch 8 took 0.57-0.75x the time; the ``eager`` runtime keeps the
    concatenation, where the split did not pay 1.2x: ``benchmarks/results/keep_or_remove.md``).

    >>> conv = nn.Conv2d(4, 3, 1)
    >>> split = SplitConv.from_conv(conv, 2)
    >>> a, b = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5)
    >>> bool(torch.allclose(split([a, b]), conv(torch.cat([a, b], 1)), atol=1e-6))
    True
    """

    def __init__(self, convs: Sequence[nn.Module]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)

    @classmethod
    def from_conv(cls, conv: nn.Module, parts: int) -> SplitConv:
        """``conv`` (a ``Conv1d/2d/3d`` without groups) split into ``parts`` equal input
        slices; the bias goes to the first."""
        if not isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d) or conv.groups != 1:
            raise BackendError(f"SplitConv: cannot split {conv!r} (a grouped or unknown conv)")
        if parts < 1 or conv.in_channels % parts:
            raise BackendError(
                f"SplitConv: {conv.in_channels} input channels do not split into {parts} parts"
            )
        width = conv.in_channels // parts
        convs = []
        for i in range(parts):
            piece = type(conv)(
                width,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]
                stride=conv.stride,  # type: ignore[arg-type]
                padding=conv.padding,  # type: ignore[arg-type]
                dilation=conv.dilation,  # type: ignore[arg-type]
                bias=i == 0 and conv.bias is not None,
                padding_mode=conv.padding_mode,
                device=conv.weight.device,
                dtype=conv.weight.dtype,
            )
            with torch.no_grad():
                piece.weight.copy_(conv.weight[:, i * width : (i + 1) * width])
                if piece.bias is not None and conv.bias is not None:
                    piece.bias.copy_(conv.bias)
            piece.requires_grad_(conv.weight.requires_grad)
            convs.append(piece)
        return cls(convs)

    def forward(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(parts) != len(self.convs):
            raise BackendError(
                f"SplitConv: expected {len(self.convs)} inputs to concatenate, got {len(parts)}"
            )
        out: torch.Tensor = self.convs[0](parts[0])
        for conv, part in zip(self.convs[1:], parts[1:], strict=True):
            out = out + conv(part)
        return out


def conv_of_concat(conv: nn.Module, parts: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """``conv(cat(parts))``, or the split sum when ``conv`` is a :class:`SplitConv`; a tensor
    given as ``parts`` is already concatenated."""
    if isinstance(conv, SplitConv):
        if isinstance(parts, torch.Tensor):
            parts = list(parts.chunk(len(conv.convs), dim=1))
        return cast(torch.Tensor, conv(parts))
    if not isinstance(parts, torch.Tensor):
        parts = torch.cat(list(parts), dim=1)
    return cast(torch.Tensor, conv(parts))


class Projection(nn.Module):
    """``1x1 conv (no bias) -> BN``: projects the concatenated blocks back to the node width.
    ``forward`` takes the concatenation or the list of blocks (which a
    :class:`SplitConv` uses without concatenating)."""

    #: ``bn`` directly follows ``conv``: folded for inference (``backends.torch.fuse``).
    fuse_pairs: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "bn"),)
    #: ``conv`` reads the concatenation of ``parts`` equal inputs (``fuse.split_concat_convs``).
    concat_conv: ClassVar[str] = "conv"

    def __init__(self, c_in: int, c_out: int, spatial_dims: int = 2) -> None:
        super().__init__()
        layers = nd_layers(spatial_dims)
        self.conv = layers.conv(c_in, c_out, 1, bias=False)
        self.bn = layers.batch_norm(c_out)
        self.parts = max(1, c_in // c_out)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.bn(conv_of_concat(self.conv, x)))


class ConcatFusion(nn.Module):
    """Multi-scale fusion: ``concat -> 1x1 conv (no bias) -> BN -> ReLU`` to ``channels``."""

    #: ``bn`` directly follows ``conv``: folded for inference (``backends.torch.fuse``).
    fuse_pairs: ClassVar[tuple[tuple[str, str], ...]] = (("conv", "bn"),)
    #: ``conv`` reads the concatenation of ``parts`` equal inputs (``fuse.split_concat_convs``).
    concat_conv: ClassVar[str] = "conv"

    def __init__(self, n_inputs: int, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        layers = nd_layers(spatial_dims)
        self.conv = layers.conv(n_inputs * channels, channels, 1, bias=False)
        self.bn = layers.batch_norm(channels)
        self.relu = nn.ReLU()
        self.parts = n_inputs

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.relu(self.bn(conv_of_concat(self.conv, inputs))))

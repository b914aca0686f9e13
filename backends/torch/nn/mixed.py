"""The partial-channel mixed operation (paper Eq. 2, after PC-DARTS).

For an input ``x`` with ``C`` channels and a partial-channel factor ``k``::

    x_a, x_b = x[:, :C // k], x[:, C // k:]
    y = channel_shuffle(cat([sum_o w_o * o(x_a), x_b]), groups=k)

Only the first ``C / k`` channels go through the candidate operations (so their activations,
which dominate the search's memory, shrink about ``k``-fold); the rest pass unchanged, and the
shuffle interleaves the two parts so that the next mixed op samples different channels. With
``k == 1`` this is exactly the DARTS full-channel mixed op ``sum_o w_o * o(x)``: no slice and no
shuffle. The final network uses full-channel discrete operations (the DARTS convention), so no
partial-channel discrete op is provided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from msnas_graph.backends.torch.nn.ops import Zero, build_op
from msnas_graph.errors import BackendError

__all__ = ["PartialChannelMixedOp", "channel_shuffle", "channel_unshuffle", "partial_output"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel groups (ShuffleNet): a fixed channel permutation.

    Input channel ``g * (C // groups) + j`` moves to output channel ``j * groups + g``.
    The inverse is :func:`channel_unshuffle` (equivalently ``channel_shuffle(y, C // groups)``).

    >>> x = torch.arange(6.0).reshape(1, 6, 1, 1)
    >>> channel_shuffle(x, 2).flatten().tolist()
    [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """
    if x.dim() < 2:
        raise BackendError(f"channel_shuffle: expected an (N, C, ...) tensor, got shape {x.shape}")
    channels = x.shape[1]
    if groups < 1 or channels % groups != 0:
        raise BackendError(
            f"channel_shuffle: channels C={channels} not divisible by groups={groups}; "
            "use a group count that divides the channel count"
        )
    if groups == 1:
        return x
    n = x.shape[0]
    rest = x.shape[2:]
    y = x.reshape(n, groups, channels // groups, *rest).transpose(1, 2)
    return y.reshape(n, channels, *rest)


def channel_unshuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Undo :func:`channel_shuffle` with the same ``groups``.

    >>> x = torch.randn(2, 8, 3, 3)
    >>> torch.equal(channel_unshuffle(channel_shuffle(x, 4), 4), x)
    True
    """
    channels = x.shape[1]
    if groups < 1 or channels % groups != 0:
        raise BackendError(
            f"channel_unshuffle: channels C={channels} not divisible by groups={groups}; "
            "use a group count that divides the channel count"
        )
    return channel_shuffle(x, channels // groups)


def partial_output(mixed: torch.Tensor, rest: torch.Tensor | None, k: int) -> torch.Tensor:
    """Paper Eq. 2's output from its two parts: ``channel_shuffle(cat([mixed, rest]), k)``,
    ``mixed`` the (weighted) candidates' output on the partial channels and ``rest`` the
    channels that pass unchanged (``None`` with ``k == 1``: ``mixed`` alone). The cell applies
    it once per block to sums over the block's inputs (the shuffle is a permutation, so it
    commutes with the sum).

    >>> partial_output(torch.zeros(1, 1, 1, 1), torch.ones(1, 3, 1, 1), 4).flatten().tolist()
    [0.0, 1.0, 1.0, 1.0]
    """
    if rest is None:
        return mixed
    return channel_shuffle(torch.cat([mixed, rest], dim=1), k)


class PartialChannelMixedOp(nn.Module):
    """``channel_shuffle(cat([sum_o w_o * op_o(x[:, :C//k]), x[:, C//k:]]), k)`` (paper Eq. 2).

    Args:
        channels: channel count ``C`` of the input and the output.
        ops: registered operation names (see :func:`~msnas_graph.backends.torch.nn.ops.build_op`).
        k: partial-channel factor; ``C`` must be a multiple of ``k``. ``k == 1`` is the DARTS
            full-channel mixed op.
        spatial_dims: 2 for images, 3 for volumes.
        op_options: keyword options passed to every operation factory (e.g. ``affine=False``).

    ``forward(x, weights)`` takes the *already normalised* (softmaxed) 1-D weights over ``ops``,
    in the order of ``ops``. The weighted sum is accumulated in that order starting from
    ``w_0 * op_0``, so with ``k == 1`` and one-hot weights the output equals the chosen op's
    output exactly (for finite activations).

    >>> mixed = PartialChannelMixedOp(8, ["skip_connect", "none"], k=4)
    >>> mixed(torch.randn(2, 8, 4, 4), torch.tensor([0.5, 0.5])).shape
    torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self,
        channels: int,
        ops: Sequence[str],
        k: int,
        spatial_dims: int = 2,
        op_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BackendError(f"PartialChannelMixedOp: k must be a positive int, got {k!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise BackendError(
                f"PartialChannelMixedOp: channels must be a positive int, got {channels!r}"
            )
        if channels % k != 0:
            raise BackendError(
                f"PartialChannelMixedOp: channels C={channels} not divisible by k={k}, "
                "choose base channels that are a multiple of k"
            )
        if isinstance(ops, str) or len(ops) == 0:
            raise BackendError(
                f"PartialChannelMixedOp: ops must be a non-empty list of operation names, "
                f"got {ops!r}"
            )
        self.channels = channels
        self.k = k
        self.spatial_dims = spatial_dims
        self.op_names: tuple[str, ...] = tuple(ops)
        self.partial_channels = channels // k
        options = dict(op_options or {})
        self.ops = nn.ModuleList(
            build_op(name, self.partial_channels, spatial_dims, **options) for name in self.op_names
        )

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k={self.k}, ops={list(self.op_names)}"

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if weights.dim() != 1 or weights.shape[0] != len(self.ops):
            raise BackendError(
                f"PartialChannelMixedOp.forward: weights must have shape ({len(self.ops)},) "
                f"(one per op {list(self.op_names)}), got {tuple(weights.shape)}"
            )
        if x.shape[1] != self.channels:
            raise BackendError(
                f"PartialChannelMixedOp.forward: input has {x.shape[1]} channels, "
                f"the op was built for {self.channels}"
            )
        x_a, x_b = self.split(x)
        return partial_output(self.mix(x_a, weights), x_b, self.k)

    def split(self, x: torch.Tensor, copy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x_a, x_b)``: a compact *copy* of the first ``C // k`` channels (a view unless
        ``copy``) and a *view* of the rest; ``(x, None)`` with ``k == 1``.

        The copy is what the candidate operations may save for backward (average pooling and
        the ``skip_connect`` weight save their input): a slice view would keep the whole
        full-width input alive with it, a copy holds only ``C / k`` channels.

        >>> mixed = PartialChannelMixedOp(8, ["skip_connect"], k=4)
        >>> x_a, x_b = mixed.split(torch.randn(2, 8, 3, 3))
        >>> x_a.shape[1], x_b.shape[1], x_a.is_contiguous()
        (2, 6, True)
        """
        if self.k == 1:
            return x, None
        c = self.partial_channels
        layout = torch.contiguous_format
        if (
            x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            layout = torch.channels_last
        # one split, whose backward is one concatenation (two slices would each fill a
        # full-width zero tensor and copy into it)
        x_a, x_b = torch.split(x, [c, x.shape[1] - c], dim=1)
        return (x_a.clone(memory_format=layout) if copy else x_a), x_b

    def mix(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_o weights[o] * op_o(x)`` on the (partial-width) input ``x``, in ``ops`` order.

        The ``none`` operation (:class:`~msnas_graph.backends.torch.nn.ops.Zero`) contributes
        ``w * 0`` and its weight's gradient is ``<g, 0> = 0`` whatever ``w``: it is left out of
        the sum (saving a zero tensor per mixed op for backward) unless it is the only
        operation. ``weights`` may be any per-op coefficients (the cell folds its input weight
        ``p`` in: ``p_j * alpha_j``), so only the operations' outputs are saved for the
        coefficients' gradients, never a second full-width product.
        """
        out: torch.Tensor | None = None
        for i, op in enumerate(self.ops):
            if isinstance(op, Zero) and len(self.ops) > 1:
                continue
            term = weights[i] * op(x)
            out = term if out is None else out + term
        if out is None:
            return weights[0] * self.ops[0](x)
        return out

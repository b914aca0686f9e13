"""The cells on the network's edges: :class:`SearchCell` (supernet) and :class:`DiscreteCell`
(final network).

A *cell edge* into a node of width ``C_dst``: :func:`~.blocks.resample` for its kind
(``contract``: max-pool 2, ``expand``: bilinear x2 upsample, ``keep``: nothing), then
:class:`~.blocks.Preprocess` (``ReLU -> 1x1 conv -> BN``, ``C_src -> C_dst``), then ``N``
blocks, then the concatenation of all block outputs and :class:`~.blocks.Projection`
(``1x1 conv -> BN``, ``N * C_dst -> C_dst``). :class:`SearchCell` mixes every candidate input
and operation (paper Eq. 1 and 2); :class:`DiscreteCell` runs a decoded
:class:`~msnas_graph.genotype.CellGenotype`. Both use the same submodule names, so that
:func:`~msnas_graph.backends.torch.nn.transfer.transfer_weights` can copy weights between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from msnas_graph.backends.torch.nn.blocks import Preprocess, Projection, resample
from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp
from msnas_graph.backends.torch.nn.ops import build_op
from msnas_graph.errors import BackendError
from msnas_graph.genotype import CellGenotype

__all__ = ["DiscreteCell", "SearchCell"]


class SearchCell(nn.Module):
    """A searchable cell on one network edge (paper Eq. 1 and 2).

    ``resample -> preprocess``, then block ``b`` (0-based) computes
    ``X_b = sum_{j<=b} p_w[b][j] * PCMixedOp_{b,j}(X_j; alpha_w[b][j])`` where ``X_0`` is the
    preprocessed input and ``X_j`` block ``j``'s output; the output is
    ``projection(cat(X_1..X_N))``. The weights are given to :meth:`forward` (post-softmax), since
    they are shared by all cells of a type and owned by the supernet.

    ``mixed[b][j]`` is the :class:`PartialChannelMixedOp` of input ``j`` of block ``b``.
    """

    def __init__(
        self,
        kind: str,
        c_in: int,
        c_out: int,
        ops: Sequence[str],
        blocks: int,
        partial_k: int,
        spatial_dims: int = 2,
        op_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.blocks = blocks
        self.resample = resample(kind, spatial_dims)
        self.preprocess = Preprocess(c_in, c_out, spatial_dims)
        self.mixed = nn.ModuleList(
            nn.ModuleList(
                PartialChannelMixedOp(c_out, ops, partial_k, spatial_dims, op_options)
                for _ in range(b + 1)
            )
            for b in range(blocks)
        )
        self.projection = Projection(blocks * c_out, c_out, spatial_dims)

    def forward(
        self,
        x: torch.Tensor,
        alpha_w: Sequence[torch.Tensor],
        p_w: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """``alpha_w[b]``: ``(b+1, n_ops)`` op weights; ``p_w[b]``: ``(b+1,)`` input weights."""
        states = [self.preprocess(self.resample(x))]
        for b, row in enumerate(cast(Sequence[nn.ModuleList], self.mixed)):
            aw, pw = alpha_w[b], p_w[b]
            out = pw[0] * row[0](states[0], aw[0])
            for j in range(1, b + 1):
                out = out + pw[j] * row[j](states[j], aw[j])
            states.append(out)
        return self.projection(torch.cat(states[1:], dim=1))


class _Block(nn.Module):
    """A decoded block: the sum of its kept inputs' operations, in genotype order."""

    def __init__(self, sources: Sequence[int], ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.ops = nn.ModuleList(ops)

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor | None = None
        for src, op in zip(self.sources, self.ops, strict=True):
            y = op(states[src])
            out = y if out is None else out + y
        assert out is not None  # a validated genotype has at least one input per block
        return out


class DiscreteCell(nn.Module):
    """A decoded cell on one network edge: ``resample -> preprocess``, block ``b`` is the sum
    over its kept inputs ``(source, op)`` of ``op(X_source)`` with full-channel operations, then
    ``projection(cat(X_1..X_N))``. ``blocks[b].ops[i]`` runs the genotype's ``blocks[b][i]``."""

    def __init__(
        self,
        kind: str,
        c_in: int,
        c_out: int,
        genotype: CellGenotype,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if not genotype.blocks:
            raise BackendError(f"cell '{genotype.cell_type}': the genotype has no blocks")
        self.kind = kind
        self.genotype = genotype
        self.resample = resample(kind, spatial_dims)
        self.preprocess = Preprocess(c_in, c_out, spatial_dims)
        self.blocks = nn.ModuleList(
            _Block(
                [i.source for i in inputs],
                [build_op(i.op, c_out, spatial_dims) for i in inputs],
            )
            for inputs in genotype.blocks
        )
        self.projection = Projection(len(genotype.blocks) * c_out, c_out, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess(self.resample(x))]
        for block in self.blocks:
            states.append(block(states))
        return self.projection(torch.cat(states[1:], dim=1))

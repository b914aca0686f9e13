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

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from msnas_graph._util import unknown_name
from msnas_graph.backends.torch.nn.blocks import Preprocess, Projection, resample
from msnas_graph.backends.torch.nn.fused import mix_groups
from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp, partial_output
from msnas_graph.backends.torch.nn.ops import WIDTH_CHANGING_OPS, build_entry_op
from msnas_graph.errors import BackendError
from msnas_graph.genotype import CellGenotype
from msnas_graph.kinds import edge_kind
from msnas_graph.spec import CELL_GLUES

__all__ = ["DiscreteCell", "SearchCell", "block_coefficients", "forward_cells", "recompute_pieces"]


class _KeepBatchNormStats:
    """Context restoring the BatchNorm running statistics of ``module`` on exit (so that a
    checkpoint's recomputation does not update them a second time)."""

    def __init__(self, module: nn.Module) -> None:
        self.buffers = [
            buf
            for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
            if buf is not None
        ]
        self.saved: list[torch.Tensor] = []

    def __enter__(self) -> None:
        self.saved = [b.detach().clone() for b in self.buffers]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buf, old in zip(self.buffers, self.saved, strict=True):
                buf.copy_(old)
        self.saved = []


def recompute_pieces(
    fn: Callable[..., torch.Tensor], stats_of: nn.Module, *args: Any
) -> torch.Tensor:
    """``fn(*args)`` under non-reentrant :func:`torch.utils.checkpoint.checkpoint`: only the
    tensor arguments are saved, ``fn`` runs again in the backward pass. The recomputation leaves
    the BatchNorm running statistics of ``stats_of`` as the forward pass left them (plain
    checkpointing would update them twice per step).

    >>> bn = nn.BatchNorm2d(2)
    >>> x = torch.randn(4, 2, 3, 3, requires_grad=True)
    >>> recompute_pieces(bn, bn, x).sum().backward()
    >>> int(bn.num_batches_tracked)
    1
    """

    def contexts() -> tuple[contextlib.AbstractContextManager[None], _KeepBatchNormStats]:
        return contextlib.nullcontext(), _KeepBatchNormStats(stats_of)

    return cast(
        torch.Tensor,
        checkpoint(fn, *args, use_reentrant=False, context_fn=contexts, preserve_rng_state=False),
    )


class SearchCell(nn.Module):
    """A searchable cell on one network edge (paper Eq. 1 and 2).

    ``resample -> preprocess``, then block ``b`` (0-based) computes
    ``X_b = sum_{j<=b} p_w[b][j] * PCMixedOp_{b,j}(X_j; alpha_w[b][j])`` where ``X_0`` is the
    preprocessed input and ``X_j`` block ``j``'s output; the output is
    ``projection(cat(X_1..X_N))``. The weights are given to :meth:`forward` (post-softmax), since
    they are shared by all cells of a type and owned by the supernet.

    ``mixed[b][j]`` is the :class:`PartialChannelMixedOp` of input ``j`` of block ``b``.

    ``fuse`` (default ``True``, switchable via ``.fuse``): compute the mixed ops that share an
    input together (:func:`~msnas_graph.backends.torch.nn.fused.mix_groups`: one ReLU, one
    depth-wise, one point-wise convolution and one BatchNorm for all their separable
    convolutions, each parameter-free operation once); ``False`` runs them one by one
    (:meth:`PartialChannelMixedOp.mix`, the reference). Both give the same outputs, gradients
    and running statistics up to float rounding.
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
        fuse: bool = True,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.blocks = blocks
        self.fuse = fuse
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
        scale: torch.Tensor | None = None,
        recompute: bool = False,
    ) -> torch.Tensor:
        """``alpha_w[b]``: ``(b+1, n_ops)`` op weights; ``p_w[b]``: ``(b+1,)`` input weights.

        ``scale`` (a scalar tensor, e.g. the edge's ``beta`` weight) multiplies the output:
        ``scale * cell(x)``, computed so that the cell's output need not be saved for the
        gradient of ``scale``. ``recompute`` recomputes the cheap full-width pieces (resample
        and preprocess, concatenation and projection, and the ``scale`` product) in the
        backward pass instead of saving their activations (:func:`recompute_pieces`), and with
        ``fuse`` the candidates' ReLU, depth-wise convolution and pooling too (only their
        input is saved; :func:`~msnas_graph.backends.torch.nn.fused.mix_groups`); the result
        and the gradients are those of the plain pass.

        The blocks are computed by :func:`forward_cells`, the one statement of Eq. 1 and 2.
        """
        return forward_cells([self], [x], [alpha_w], [p_w], [scale], recompute)[0]

    def _enter(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.preprocess(self.resample(x)))

    def _leave(self, scale: torch.Tensor | None, *blocks: torch.Tensor) -> torch.Tensor:
        y = cast(torch.Tensor, self.projection(torch.cat(blocks, dim=1)))
        return y if scale is None else scale * y


def _piece(
    recompute: bool, fn: Callable[..., torch.Tensor], module: nn.Module, *args: Any
) -> torch.Tensor:
    return recompute_pieces(fn, module, *args) if recompute else fn(*args)


def forward_cells(
    cells: Sequence[SearchCell],
    xs: Sequence[torch.Tensor],
    alpha_ws: Sequence[Sequence[torch.Tensor]],
    p_ws: Sequence[Sequence[torch.Tensor]],
    scales: Sequence[torch.Tensor | None],
    recompute: bool = False,
    memo: dict[tuple[int, int, int], tuple[torch.Tensor, list[torch.Tensor]]] | None = None,
) -> list[torch.Tensor]:
    """``[cells[g](xs[g], alpha_ws[g], p_ws[g], scales[g], recompute) for g]``: what every
    :class:`SearchCell` computes (:meth:`SearchCell.forward` calls it with one cell). With the
    cells' ``fuse``, the mixed ops are computed together
    (:func:`~msnas_graph.backends.torch.nn.fused.mix_groups`): within a cell, all blocks' mixed
    ops on state ``X_j`` as soon as ``X_j`` exists; across cells of the same width and
    resolution (the cells into one supernet node), as one computation. Results equal the cells
    run one by one up to float rounding.

    ``memo``: a dict the caller keeps for one forward pass, in which the coefficients
    (:func:`block_coefficients`) are computed once per weight lists and state (the cells of one
    type share their weights), not once per cell.
    """
    states = [
        [_piece(recompute, c._enter, c.preprocess, x)] for c, x in zip(cells, xs, strict=True)
    ]
    _blocks(cells, states, alpha_ws, p_ws, {} if memo is None else memo, recompute)
    return [
        _piece(recompute, cell._leave, cell.projection, scale, *st[1:])
        for cell, scale, st in zip(cells, scales, states, strict=True)
    ]


def block_coefficients(
    alpha_w: Sequence[torch.Tensor], p_w: Sequence[torch.Tensor], j: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The weights of state ``X_j`` in the blocks ``b = j .. N-1`` that read it (paper Eq. 1 and
    2): ``(coefficients, p_j)`` with ``coefficients[b - j] = p_w[b][j] * alpha_w[b][j]`` (the
    input weight folded into the operation weights, so that only the candidates' partial-width
    outputs are saved for the weights' gradients) and ``p_j[b - j] = p_w[b][j]`` (the weight of
    the channels that pass unchanged).

    >>> alpha = [torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    >>> coefficients, p_j = block_coefficients(alpha, [torch.ones(1), torch.tensor([0.2, 0.8])], 0)
    >>> coefficients.tolist(), [float(q) for q in p_j]
    ([[0.5, 0.5], [0.20000000298023224, 0.0]], [1.0, 0.20000000298023224])
    """
    p_j = [p_w[b][j] for b in range(j, len(p_w))]
    return torch.stack([q * alpha_w[b][j] for b, q in enumerate(p_j, j)]), p_j


def _blocks(
    cells: Sequence[SearchCell],
    states: list[list[torch.Tensor]],
    alpha_ws: Sequence[Sequence[torch.Tensor]],
    p_ws: Sequence[Sequence[torch.Tensor]],
    memo: dict[tuple[int, int, int], tuple[torch.Tensor, list[torch.Tensor]]],
    recompute: bool,
) -> None:
    """Paper Eq. 1 and 2, the one place they are written: append to every cell's ``states``
    (which hold ``X_0``) its block outputs
    ``X_b = partial_output(sum_{j<=b} mix_{b,j}(x_a_j; p_w[b][j] * alpha_w[b][j]),
    sum_{j<=b} p_w[b][j] * x_b_j, k)``, ``x_a_j`` / ``x_b_j`` the partial / passing channels of
    ``X_j``: the shuffle is a permutation, so it commutes with the sum over inputs and runs once
    per block. State by state: as soon as ``X_j`` exists, the mixed ops of every block on it."""
    blocks = cells[0].blocks
    rows = [cast(Sequence[nn.ModuleList], cell.mixed) for cell in cells]
    first = cast(PartialChannelMixedOp, rows[0][0][0])
    together = cells[0].fuse
    mixed: list[list[torch.Tensor | None]] = [[None] * blocks for _ in cells]
    rest: list[list[torch.Tensor | None]] = [[None] * blocks for _ in cells]
    for j in range(blocks):
        # a compact copy of the partial channels (a view would keep X_j alive in backward),
        # except where mix_groups concatenates them anyway
        parts = [first.split(st[j], copy=not together or len(cells) == 1) for st in states]
        consumers = [[r[b][j] for b in range(j, blocks)] for r in rows]
        weights = []
        for alpha_w, p_w in zip(alpha_ws, p_ws, strict=True):
            key = (id(alpha_w), id(p_w), j)
            if key not in memo:
                memo[key] = block_coefficients(alpha_w, p_w, j)
            weights.append(memo[key])
        x_as = [x_a for x_a, _ in parts]
        coeffs = [c for c, _ in weights]
        if together:
            ys = mix_groups(x_as, consumers, coeffs, recompute)
        else:
            ys = [
                [cast(PartialChannelMixedOp, m).mix(x_a, w) for m, w in zip(ms, c, strict=True)]
                for x_a, ms, c in zip(x_as, consumers, coeffs, strict=True)
            ]
        for g, st in enumerate(states):
            x_b, p_j = parts[g][1], weights[g][1]
            for b, y in zip(range(j, blocks), ys[g], strict=True):
                mixed[g][b] = _add(mixed[g][b], y)
                if x_b is not None:
                    rest[g][b] = _add(rest[g][b], p_j[b - j] * x_b)
            st.append(partial_output(cast(torch.Tensor, mixed[g][j]), rest[g][j], first.k))
            mixed[g][j] = rest[g][j] = None


def _add(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    return term if total is None else total + term


class _Block(nn.Module):
    """A decoded block: the sum of its kept inputs' operations, in genotype order."""

    def __init__(
        self, sources: Sequence[int], ops: Sequence[nn.Module], raw: Sequence[bool] = ()
    ) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.ops = nn.ModuleList(ops)
        #: per input: it reads the cell's resampled input before the preprocess (lean glue)
        self.raw = tuple(raw) or (False,) * len(self.sources)

    def forward(
        self, states: Sequence[torch.Tensor], raw: torch.Tensor | None = None
    ) -> torch.Tensor:
        out: torch.Tensor | None = None
        for src, op, direct in zip(self.sources, self.ops, self.raw, strict=True):
            y = op(raw if direct else states[src])
            out = y if out is None else out + y
        assert out is not None  # a validated genotype has at least one input per block
        return out


class DiscreteCell(nn.Module):
    """A decoded cell on one network edge: ``resample -> preprocess``, block ``b`` is the sum
    over its kept inputs ``(source, op)`` of ``op(X_source)`` with full-channel operations, then
    ``projection(cat(X_1..X_N))``. ``blocks[b].ops[i]`` runs the genotype's ``blocks[b][i]``.

    With ``glue="lean"`` (:attr:`~msnas_graph.spec.SearchSpace.cell_glue`): an operation
    reading ``X_0`` reads the resampled input itself where the widths agree (``keep``) or it
    is a dense convolution (it maps ``C_src`` to ``C_dst`` channels); the preprocess is built
    only for the other readers; ``expand`` runs its preprocess before the upsampling, at the
    coarse scale, for every reader; the output is the one block no other block reads (its
    ``projection`` is the identity), or the projection of the unread blocks' concatenation.

    >>> from msnas_graph.genotype import CellGenotype
    >>> g = CellGenotype.from_dict({"cell_type": "contract", "blocks": [
    ...     [{"source": 0, "op": "conv_3x3"}], [{"source": 1, "op": "conv_3x3"}]]})
    >>> cell = DiscreteCell("contract", 8, 16, g, glue="lean")
    >>> cell(torch.zeros(1, 8, 10, 10)).shape, isinstance(cell.projection, nn.Identity)
    (torch.Size([1, 16, 5, 5]), True)
    """

    def __init__(
        self,
        kind: str,
        c_in: int,
        c_out: int,
        genotype: CellGenotype,
        spatial_dims: int = 2,
        glue: str = "darts",
    ) -> None:
        super().__init__()
        if not genotype.blocks:
            raise BackendError(f"cell '{genotype.cell_type}': the genotype has no blocks")
        if glue not in CELL_GLUES:
            raise BackendError(unknown_name("cell glue", glue, CELL_GLUES))
        self.kind = kind
        self.genotype = genotype
        self.resample = resample(kind, spatial_dims)
        lean = glue == "lean"
        #: ``expand`` under the lean glue: preprocess at the coarse scale, then upsample.
        self.preprocess_first = lean and edge_kind(kind).resample == "upsample"

        def direct(source: int, op: str) -> bool:  # reads the resampled input itself
            if not lean or self.preprocess_first or source != 0:
                return False
            return c_in == c_out or op in WIDTH_CHANGING_OPS

        readers = [(i.source, i.op) for inputs in genotype.blocks for i in inputs]
        needed = not all(direct(src, op) for src, op in readers if src == 0)
        self.preprocess = Preprocess(c_in, c_out, spatial_dims) if needed else nn.Identity()
        self.blocks = nn.ModuleList(
            _Block(
                [i.source for i in inputs],
                [
                    build_entry_op(
                        i.op, c_in if direct(i.source, i.op) else c_out, c_out, spatial_dims
                    )
                    for i in inputs
                ],
                [direct(i.source, i.op) for i in inputs],
            )
            for inputs in genotype.blocks
        )
        read = {i.source for inputs in genotype.blocks for i in inputs}
        #: the blocks (1-based states) that make the output
        self.outputs = (
            tuple(b for b in range(1, len(genotype.blocks) + 1) if b not in read)
            if lean
            else tuple(range(1, len(genotype.blocks) + 1))
        )
        self.projection: nn.Module = (
            nn.Identity()
            if len(self.outputs) == 1 and lean
            else Projection(len(self.outputs) * c_out, c_out, spatial_dims)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess_first:
            raw = x = self.resample(self.preprocess(x))
        else:
            raw = self.resample(x)
            x = self.preprocess(raw)
        states = [x]
        for block in self.blocks:
            states.append(block(states, raw))
        if isinstance(self.projection, nn.Identity):
            return states[self.outputs[0]]
        return cast(torch.Tensor, self.projection([states[b] for b in self.outputs]))

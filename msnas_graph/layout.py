"""The parameter layout of a search space: the shapes of ``alpha``, ``p`` and ``beta`` and what
each entry means, written once.

**Cells.** Every cell type has ``N = space.blocks`` blocks. Blocks are indexed from 0 here and
in the arrays (block ``b`` is drawn and printed as ``b{b+1}``). Block ``b`` reads the sources
``0..b``: source 0 is the cell input, source ``j >= 1`` the output of block ``j`` (that is, of
0-based block ``j-1``). So, per cell type:

- ``alpha[cell_type][b]`` has shape ``(b + 1, len(space.ops))``: one operation logit per source
  and operation (operations in ``space.ops`` order);
- ``p[cell_type][b]`` has shape ``(b + 1,)``: one edge-normalisation logit per source.

**Network.** ``beta[node]`` has shape ``(len(kinds),)`` for every node with incoming edges
(:attr:`ParameterLayout.beta_nodes`), one logit per kind of edge into it in canonical kind
order (:meth:`ParameterLayout.beta_kinds`).

Search states (:mod:`msnas_graph.state`), decoding, counting, rendering and the backends read
these shapes from here instead of re-deriving them.

>>> from msnas_graph.spec import SearchSpace
>>> layout = ParameterLayout(SearchSpace.preset("paper"))
>>> [list(layout.block_sources(b)) for b in range(3)]
[[0], [0, 1], [0, 1, 2]]
>>> layout.alpha_shapes, layout.p_shapes
(((1, 6), (2, 6), (3, 6)), ((1,), (2,), (3,)))
>>> layout.beta_kinds(NodeId(3, 1)), layout.beta_index(NodeId(3, 1), "expand")
(('contract', 'keep', 'expand', 'skip'), 2)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import networkx as nx

from .errors import SpecError
from .graph import NodeId, Supergraph
from .kinds import CellType, KindName
from .spec import SearchSpace

__all__ = ["ParameterLayout", "source_name"]


def source_name(source: int) -> str:
    """Name of a block input: ``0`` -> ``"in"`` (the cell input), ``j`` -> ``"b{j}"``.

    >>> source_name(0), source_name(2)
    ('in', 'b2')
    """
    return "in" if source == 0 else f"b{source}"


class ParameterLayout:
    """Shapes and meaning of the architecture parameters of ``space`` (see the module doc).

    ``graph`` is the space's supergraph (built when not given); only the ``beta`` part needs it.
    """

    def __init__(self, space: SearchSpace, graph: Supergraph | None = None) -> None:
        self.space = space
        self._graph = graph if graph is not None and graph.space == space else None

    @cached_property
    def graph(self) -> Supergraph:
        """The supergraph whose nodes carry ``beta``."""
        return self._graph if self._graph is not None else Supergraph(self.space)

    # ------------------------------------------------------------------------------ cells

    @property
    def cell_types(self) -> tuple[CellType, ...]:
        """Cell types with ``alpha`` and ``p`` parameters, in canonical order."""
        return self.space.cell_types

    @property
    def blocks(self) -> int:
        """Blocks per cell (``N``)."""
        return self.space.blocks

    @property
    def n_ops(self) -> int:
        """Candidate operations per block input (``none`` included)."""
        return len(self.space.ops)

    def block_sources(self, block: int) -> range:
        """Sources that 0-based ``block`` reads: ``0`` (cell input) to ``block``."""
        if not 0 <= block < self.blocks:
            raise SpecError(f"block {block} does not exist (blocks are 0..{self.blocks - 1})")
        return range(block + 1)

    def alpha_shape(self, block: int) -> tuple[int, int]:
        """Shape of ``alpha[cell_type][block]``: ``(sources, operations)``."""
        return (len(self.block_sources(block)), self.n_ops)

    def p_shape(self, block: int) -> tuple[int]:
        """Shape of ``p[cell_type][block]``: ``(sources,)``."""
        return (len(self.block_sources(block)),)

    @property
    def alpha_shapes(self) -> tuple[tuple[int, int], ...]:
        """:meth:`alpha_shape` of every block of a cell type."""
        return tuple(self.alpha_shape(b) for b in range(self.blocks))

    @property
    def p_shapes(self) -> tuple[tuple[int], ...]:
        """:meth:`p_shape` of every block of a cell type."""
        return tuple(self.p_shape(b) for b in range(self.blocks))

    def cell_networkx(self, cell_type: CellType) -> nx.MultiDiGraph:
        """The candidate DAG of one cell type: nodes ``in``, ``b1..bN``, ``out``; an edge per
        (source, block) carrying the candidate ``ops``; ``b -> out`` edges mark the output
        concatenation.

        >>> from msnas_graph.spec import SearchSpace
        >>> ParameterLayout(SearchSpace.preset("paper")).cell_networkx("keep").number_of_edges()
        9
        """
        G = nx.MultiDiGraph(cell_type=cell_type)
        G.add_node("in")
        for b in range(self.blocks):
            G.add_node(source_name(b + 1))
            for j in self.block_sources(b):
                G.add_edge(source_name(j), source_name(b + 1), ops=self.space.ops)
        G.add_node("out")
        for b in range(self.blocks):
            G.add_edge(source_name(b + 1), "out", ops=("concat",))
        return G

    # ---------------------------------------------------------------------------- network

    @property
    def beta_nodes(self) -> tuple[NodeId, ...]:
        """Nodes with a ``beta`` vector: those with incoming edges, in canonical order."""
        return self.graph.searchable_nodes

    def beta_kinds(self, node: NodeId) -> tuple[KindName, ...]:
        """The kinds that ``beta[node]`` weighs, in order."""
        return self.graph.node_kinds(node)

    def beta_shape(self, node: NodeId) -> tuple[int]:
        """Shape of ``beta[node]``: ``(kinds,)``."""
        return (len(self.beta_kinds(node)),)

    def beta_index(self, node: NodeId, kind: str) -> int:
        """Position of ``kind`` in ``beta[node]``."""
        kinds = self.beta_kinds(node)
        if kind not in kinds:
            raise SpecError(f"node {node} has no '{kind}' edge (its kinds: {', '.join(kinds)})")
        return kinds.index(kind)

    # ------------------------------------------------------------------------- filling

    def filled(
        self, fill: Callable[[tuple[int, ...]], Any]
    ) -> tuple[dict[CellType, list[Any]], dict[CellType, list[Any]], dict[NodeId, Any]]:
        """``(alpha, p, beta)`` with every array made by ``fill(shape)``, in layout order
        (cell types, then blocks, ``alpha`` before ``p``; then ``beta`` by node).

        >>> import numpy as np
        >>> from msnas_graph.spec import SearchSpace
        >>> alpha, p, beta = ParameterLayout(SearchSpace.preset("tiny")).filled(np.zeros)
        >>> alpha["keep"][1].shape, p["keep"][1].shape, len(beta)
        ((2, 4), (2,), 5)
        """
        alpha = {c: [fill(s) for s in self.alpha_shapes] for c in self.cell_types}
        p = {c: [fill(s) for s in self.p_shapes] for c in self.cell_types}
        beta = {n: fill(self.beta_shape(n)) for n in self.beta_nodes}
        return alpha, p, beta

    def __repr__(self) -> str:
        return (
            f"<ParameterLayout {self.space.name}: {len(self.cell_types)} cell types x "
            f"{self.blocks} blocks x {self.n_ops} ops, {len(self.beta_nodes)} beta nodes>"
        )

"""Exact sizes of a search space (Python ints, no overflow).

Conventions (the paper does not state its own; see DESIGN.md):

- **paths**: input -> output paths of the supergraph, a path being a sequence of network edges
  (so ``keep`` and ``skip`` between the same nodes are two paths), ending at any output node.
- **cells per type**: block ``b`` (1-based) has ``b`` candidate inputs and keeps
  ``m = min(inputs_per_block, b)`` distinct ones, each with one of the ``n`` decodable operations
  (``none`` excluded): ``C(b, m) * n**m`` choices; a cell type is the product over its blocks.
  For the paper (N=3, m=1, n=5): ``5 * 10 * 15 = 750``.
- **cells**: the product over the cell types of the space (paper: ``750**3 = 421,875,000``).
- **architectures**: single-path networks, as the paper counts them: paths x cells.

>>> from msnas_graph.spec import SearchSpace
>>> c = count_space(SearchSpace.preset("paper"))
>>> c.cells_per_type["keep"], c.cells
(750, 421875000)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb, prod
from typing import Any

from .graph import Supergraph
from .layout import ParameterLayout
from .paths import count_paths
from .spec import SearchSpace

__all__ = ["SpaceCounts", "count_cells", "count_space"]


@dataclass(frozen=True)
class SpaceCounts:
    """Sizes of a space: nodes, edges, paths, cells per type, cells, architectures."""

    space: str
    nodes: int
    edges: int
    paths: int
    cells_per_type: dict[str, int]
    cells: int
    architectures: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ints stay exact)."""
        return asdict(self)

    def __str__(self) -> str:
        per = ", ".join(f"{k} {v:,}" for k, v in self.cells_per_type.items())
        return (
            f"space '{self.space}': {self.nodes} nodes, {self.edges} edges\n"
            f"  input->output paths: {self.paths:,} ({self.paths:.3e})\n"
            f"  cells per type: {per}\n"
            f"  cells over all types: {self.cells:,} ({self.cells:.3e})\n"
            f"  architectures (paths x cells): {self.architectures:,} "
            f"({self.architectures:.3e})"
        )


def count_cells(space: SearchSpace) -> int:
    """Choices for one cell type (see the module doc).

    >>> from msnas_graph.spec import SearchSpace
    >>> count_cells(SearchSpace.preset("paper", inputs_per_block=2))
    9375
    """
    n = len(space.decodable_ops)
    m = space.inputs_per_block
    layout = ParameterLayout(space)
    sources = (len(layout.block_sources(b)) for b in range(layout.blocks))
    return prod(comb(s, min(m, s)) * n ** min(m, s) for s in sources)


def count_space(space: SearchSpace, graph: Supergraph | None = None) -> SpaceCounts:
    """All counts of ``space`` (see the module doc for the conventions)."""
    graph = graph if graph is not None else Supergraph(space)
    per_type: dict[str, int] = {c: count_cells(space) for c in space.cell_types}
    cells = prod(per_type.values())
    paths = count_paths(graph)
    return SpaceCounts(
        space=space.name,
        nodes=len(graph.nodes),
        edges=len(graph.edges),
        paths=paths,
        cells_per_type=per_type,
        cells=cells,
        architectures=paths * cells,
    )

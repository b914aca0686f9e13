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

import sys
from dataclasses import asdict, dataclass
from math import comb, prod
from typing import Any

from .graph import Supergraph
from .layout import ParameterLayout
from .paths import count_paths
from .spec import SearchSpace

__all__ = ["SpaceCounts", "count_cells", "count_space", "sci"]


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
        """JSON-ready dict (ints stay exact; beyond 4,000 digits as strings of digits, which
        Python's JSON could not write as numbers)."""
        data = asdict(self)
        data["cells_per_type"] = {k: _exact(v) for k, v in self.cells_per_type.items()}
        for key in ("paths", "cells", "architectures"):
            data[key] = _exact(data[key])
        return data

    def __str__(self) -> str:
        per = ", ".join(f"{k} {_grouped(v)}" for k, v in self.cells_per_type.items())
        return (
            f"space '{self.space}': {self.nodes} nodes, {self.edges} edges\n"
            f"  input->output paths: {_grouped(self.paths)} ({sci(self.paths)})\n"
            f"  cells per type: {per}\n"
            f"  cells over all types: {_grouped(self.cells)} ({sci(self.cells)})\n"
            f"  architectures (paths x cells): {_grouped(self.architectures)} "
            f"({sci(self.architectures)})"
        )


_BIG_BITS = 13000  # about 3,900 decimal digits: below Python's int-to-str limit (4,300)


def sci(n: int) -> str:
    """``n`` in scientific notation, for integers of any size (no float overflow).

    >>> sci(421875000), sci(10**400 * 3)
    ('4.219e+08', '3.000e+400')
    """
    if n.bit_length() < 1000:
        return f"{n:.3e}"
    exp = int(n.bit_length() * 0.30102999566398) - 20  # keep ~20 leading digits
    lead = n // 10**exp
    text = f"{lead:.3e}"
    mantissa, e = text.split("e")
    return f"{mantissa}e+{int(e) + exp}"


def _grouped(n: int) -> str:
    return f"{n:,}" if n.bit_length() < _BIG_BITS else f"~{sci(n)}"


def _exact(n: int) -> int | str:
    if n.bit_length() < _BIG_BITS:
        return n
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(n)
    finally:
        sys.set_int_max_str_digits(limit)


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

"""Cells searched on a fixed network: the topology a search state belongs to.

``msnas-graph search RUN --topology ARCH.json`` keeps the edges of a decoded network and searches
only its cells, on that network (the supernet runs only those edges, each node summing its kept
inputs: :meth:`~msnas_graph.backends.torch.nn.supernet.Supernet.fix_topology`), where the
two-phase search picks the cells that served the whole trellis. Its states carry the network in
their ``meta`` (key :data:`TOPOLOGY`), so that everything downstream treats them as what they
are: :func:`msnas_graph.decode.decode` gives the network's edges and paths with the state's
cells, the diagnostics weigh only the cells the network uses (there is no node decision), and a
consensus of seeds decides only those cells.

The network keeps its own width and cell glue; the cells are searched in the search's space and
built as the network was. The two spaces must share the trellis (:func:`check_topology`); the
cell structure (blocks, operations, inputs per block) is the search's, so a network's cells can
be searched again over another operation set (its own cells are replaced).

>>> from msnas_graph.decode import decode, decode_cells
>>> from msnas_graph.spec import SearchSpace
>>> space = SearchSpace.preset("tiny")
>>> net = decode(SearchState.random(space, seed=1), paths=1)
>>> state = with_topology(SearchState.random(space, seed=2), net)
>>> arch = decode(state, paths=3)  # the network's one path, the state's cells
>>> arch.edges == net.edges, all(g == decode_cells(state)[c] for c, g in arch.cells.items())
(True, True)
"""

from __future__ import annotations

from typing import Any

from .architecture import Architecture
from .errors import SpecError, StateError
from .genotype import CellGenotype
from .graph import Supergraph
from .kinds import carries_cell
from .spec import SearchSpace
from .state import SearchState

__all__ = [
    "TOPOLOGY",
    "cell_types_used",
    "check_topology",
    "on_topology",
    "shared_topology",
    "state_topology",
    "with_cell_glue",
    "with_topology",
]

#: The ``meta`` key of a state searched on a fixed network: that network's document.
TOPOLOGY = "topology"
#: The fields the search space and the network's space must share: the trellis.
_SHARED = ("layers", "scales", "edge_kinds", "output_scales", "spatial_dims")
#: The cell structure: the search's, whatever the network's cells were.
_CELL_FIELDS = ("blocks", "ops", "inputs_per_block")


def check_topology(space: SearchSpace, arch: Architecture) -> None:
    """Raise :class:`SpecError` unless ``arch``'s network can be searched in ``space``: the same
    trellis (its width, cell glue, cell structure, operations, partial channels and input size
    may differ), every edge one of ``space``'s, and at least one cell to search.

    >>> from msnas_graph.decode import decode
    >>> tiny = SearchSpace.preset("tiny")
    >>> check_topology(SearchSpace.preset("quick"), decode(SearchState.zeros(tiny), paths=1))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    msnas_graph.errors.SpecError: the topology's network is of another trellis: layers 3 against ...
    """
    mine, theirs = space.to_dict(), arch.space.to_dict()
    for field in _SHARED:
        if mine[field] != theirs[field]:
            raise SpecError(
                f"the topology's network is of another trellis: {field} {theirs[field]} against "
                f"the search's {mine[field]}; search with the network's trellis (--set "
                f"{field}=...)"
            )
    graph = Supergraph(space)
    foreign = [e for e in arch.edges if not graph.has_edge(e)]
    if foreign:
        raise SpecError(f"the topology's edge {foreign[0]} is not in the search space")
    if not cell_types_used(arch):
        raise SpecError("the topology's network has only identity edges: no cell to search")


def cell_types_used(arch: Architecture) -> tuple[str, ...]:
    """The cell types of ``arch``'s edges, in the space's order."""
    kinds = {e.kind for e in arch.edges if carries_cell(e.kind)}
    return tuple(c for c in arch.space.cell_types if c in kinds)


def state_topology(state: SearchState) -> Architecture | None:
    """The network ``state`` was searched on, or ``None`` (a search of the whole trellis)."""
    doc = state.meta.get(TOPOLOGY)
    return None if doc is None else Architecture.from_dict(doc, f"the state's {TOPOLOGY}")


def with_topology(state: SearchState, arch: Architecture) -> SearchState:
    """``state`` marked as searched on ``arch``'s network (a copy; the logits are shared)."""
    check_topology(state.space, arch)
    return SearchState(
        state.space, state.alpha_logits, state.p_logits, state.beta_logits,
        meta={**state.meta, TOPOLOGY: arch.to_dict()}, graph=state.graph,
    )  # fmt: skip


def with_cell_glue(state: SearchState, glue: str) -> SearchState:
    """:meth:`SearchState.with_cell_glue`, the network of a state searched on one rebuilt with
    ``glue`` too (what it decodes to is built with it)."""
    glued = state.with_cell_glue(glue)
    net = state_topology(glued)
    if net is None or net.space.cell_glue == glue:
        return glued
    meta = {**glued.meta, TOPOLOGY: net.with_cell_glue(glue).to_dict()}
    return SearchState(glued.space, glued.alpha_logits, glued.p_logits, glued.beta_logits,
                       meta=meta, graph=glued.graph)  # fmt: skip


def shared_topology(states: list[SearchState]) -> Architecture | None:
    """The network all ``states`` were searched on (``None`` if none was); a mix is refused
    with :class:`StateError`: a consensus combines searches of one kind."""
    docs = [s.meta.get(TOPOLOGY) for s in states]
    if all(d is None for d in docs):
        return None
    if any(d != docs[0] for d in docs):
        raise StateError(
            "the states were searched on different networks (search --topology), or some on "
            "the whole trellis: combine searches of one network"
        )
    return state_topology(states[0])


def on_topology(
    arch: Architecture,
    cells: dict[str, CellGenotype],
    space: SearchSpace,
    meta: dict[str, Any] | None = None,
) -> Architecture:
    """``arch``'s edges and paths with ``cells`` (those of its cell types), searched in
    ``space``: the network's width and glue, ``space``'s cell structure and operations.

    >>> from msnas_graph.decode import decode, decode_cells
    >>> tiny = SearchSpace.preset("tiny")
    >>> net = decode(SearchState.random(tiny, seed=1), paths=1)
    >>> dense = tiny.replace(ops=["conv_3x3", "conv_5x5", "none"])
    >>> arch = on_topology(net, decode_cells(SearchState.random(dense, seed=2)), dense)
    >>> arch.edges == net.edges, arch.space.ops, arch.space.channels == net.space.channels
    (True, ('conv_3x3', 'conv_5x5', 'none'), True)
    """
    used = cell_types_used(arch)
    cell_space = arch.space.replace(**{f: getattr(space, f) for f in _CELL_FIELDS})
    return Architecture(
        cell_space, arch.edges, {c: g for c, g in cells.items() if c in used}, arch.paths,
        {**(meta or {}), TOPOLOGY: arch.content_hash}, graph=arch.supergraph,
    )  # fmt: skip

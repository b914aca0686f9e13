"""The search space as graphs: the network trellis (supergraph) and the cell spaces.

Nodes of the network graph are :class:`NodeId` (``L3.s2`` = layer 3, scale 2). Edges are
:class:`Edge` objects keyed by their kind, so the ``keep`` cell and the ``skip`` identity between
the same two nodes are distinct (the graph is a multigraph). Every object has a canonical order,
which is what makes decoding deterministic.

>>> from msnas_graph.spec import SearchSpace
>>> g = Supergraph(SearchSpace.preset("tiny"))
>>> print(g.nodes)
(L0.s0, L1.s0, L1.s1, L2.s0, L2.s1, L3.s0)
>>> [str(e) for e in g.in_edges(NodeId(2, 0))]
['L1.s0 -keep-> L2.s0', 'L1.s1 -expand-> L2.s0', 'L1.s0 -skip-> L2.s0']
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import networkx as nx
import numpy as np

from .errors import SpecError
from .kinds import KIND_NAMES, KindName, edge_kind, source_scale
from .spec import SearchSpace

__all__ = ["Edge", "NodeId", "Supergraph"]

_NODE_RE = re.compile(r"^L(\d+)\.s(\d+)$")
_KIND_ORDER = {k: i for i, k in enumerate(KIND_NAMES)}


class _EdgeWeights(Protocol):
    """Anything that weighs the supergraph's edges (a :class:`~msnas_graph.state.SearchState`)."""

    def edge_weights(self) -> np.ndarray: ...


@dataclass(frozen=True, order=True)
class NodeId:
    """A trellis node: features of ``layer`` at ``scale`` (downsampled by ``2**scale``).

    >>> NodeId.parse("L3.s2")
    L3.s2
    >>> NodeId(3, 2) < NodeId(4, 0)
    True
    """

    layer: int
    scale: int

    def __str__(self) -> str:
        return f"L{self.layer}.s{self.scale}"

    __repr__ = __str__

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parse ``"L<layer>.s<scale>"``."""
        m = _NODE_RE.match(text.strip())
        if not m:
            from ._util import shown  # lazy: only on the error path

            raise SpecError(f"{shown(text)} is not a node id (expected e.g. 'L3.s2')")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class Edge:
    """A network edge from ``src`` (layer ``l-1``) to ``dst`` (layer ``l``) of one ``kind``.

    >>> e = Edge(NodeId(0, 0), NodeId(1, 1), "contract")
    >>> str(e), e.key
    ('L0.s0 -contract-> L1.s1', 'L0.s0>L1.s1:contract')
    >>> Edge.parse(e.key) == e
    True
    """

    src: NodeId
    dst: NodeId
    kind: KindName

    def __str__(self) -> str:
        return f"{self.src} -{self.kind}-> {self.dst}"

    __repr__ = __str__

    @property
    def key(self) -> str:
        """Compact id used in JSON: ``"L0.s0>L1.s1:contract"``."""
        return f"{self.src}>{self.dst}:{self.kind}"

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """Canonical order: by destination (layer, scale), then kind."""
        return (self.dst.layer, self.dst.scale, _KIND_ORDER[self.kind])

    @classmethod
    def parse(cls, key: str) -> Edge:
        """Parse :attr:`key`."""
        try:
            nodes, kind = key.rsplit(":", 1)
            src, dst = nodes.split(">")
        except ValueError:
            raise SpecError(
                f"'{key}' is not an edge id (expected e.g. 'L0.s0>L1.s1:contract')"
            ) from None
        try:
            name = edge_kind(kind).name
        except SpecError as exc:
            raise SpecError(f"edge '{key}': {exc}") from None
        return cls(NodeId.parse(src), NodeId.parse(dst), name)


class Supergraph:
    """The network search space: a layers x scales trellis DAG, pruned to the nodes that lie on
    some input -> output path.

    The stem writes the input node ``L0.s0``; the head reads the output nodes
    ``L{layers}.s{o}`` for ``o`` in ``space.output_scales``. Edges into ``(l, i)`` come from layer
    ``l-1``: ``contract`` from scale ``i-1``, ``keep`` and ``skip`` from ``i``, ``expand`` from
    ``i+1`` (each only if the space allows the kind and the source node exists).
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.input_node = NodeId(0, 0)
        self.output_nodes: tuple[NodeId, ...] = tuple(
            NodeId(space.layers, o) for o in sorted(space.output_scales)
        )
        self._build()

    def _build(self) -> None:
        space = self.space
        kinds = space.edge_kinds
        # Forward reachability from the input.
        reach: set[NodeId] = {self.input_node}
        for layer in range(1, space.layers + 1):
            for scale in range(space.scales):
                node = NodeId(layer, scale)
                if any(src in reach for src, _ in self._candidate_sources(node, kinds)):
                    reach.add(node)
        # Backward: nodes that reach an output.
        alive: set[NodeId] = {n for n in self.output_nodes if n in reach}
        for layer in range(space.layers, 0, -1):
            for scale in range(space.scales):
                node = NodeId(layer, scale)
                if node not in alive:
                    continue
                for src, _ in self._candidate_sources(node, kinds):
                    if src in reach:
                        alive.add(src)
        missing = [n for n in self.output_nodes if n not in alive]
        if missing:
            raise SpecError(
                f"output node(s) {', '.join(map(str, missing))} cannot be reached from the input "
                f"with edge kinds {', '.join(kinds)}"
            )
        self.nodes: tuple[NodeId, ...] = tuple(sorted(alive))
        edges = [
            Edge(src, node, kind)
            for node in self.nodes
            for src, kind in self._candidate_sources(node, kinds)
            if src in alive
        ]
        self.edges: tuple[Edge, ...] = tuple(sorted(edges, key=lambda e: e.sort_key))
        self._in_edges: dict[NodeId, tuple[Edge, ...]] = {n: () for n in self.nodes}
        self._out_edges: dict[NodeId, list[Edge]] = {n: [] for n in self.nodes}
        for e in self.edges:
            self._in_edges[e.dst] = (*self._in_edges[e.dst], e)
            self._out_edges[e.src].append(e)
        self._edge_index = {e: i for i, e in enumerate(self.edges)}

    def _candidate_sources(
        self, node: NodeId, kinds: tuple[KindName, ...]
    ) -> Iterator[tuple[NodeId, KindName]]:
        if node.layer == 0:
            return
        for kind in kinds:
            src_scale = source_scale(kind, node.scale)
            if not 0 <= src_scale < self.space.scales:
                continue
            if node.layer - 1 == 0 and src_scale != 0:
                continue  # layer 0 holds only the stem's node
            yield NodeId(node.layer - 1, src_scale), kind

    # --------------------------------------------------------------------------- queries

    def in_edges(self, node: NodeId) -> tuple[Edge, ...]:
        """Edges into ``node`` in canonical (kind) order."""
        return self._in_edges[node]

    def out_edges(self, node: NodeId) -> tuple[Edge, ...]:
        """Edges out of ``node`` in canonical order."""
        return tuple(self._out_edges[node])

    def edge_index(self, edge: Edge) -> int:
        """Position of ``edge`` in :attr:`edges` (its canonical index)."""
        try:
            return self._edge_index[edge]
        except KeyError:
            raise SpecError(f"edge {edge} is not in this search space") from None

    def has_edge(self, edge: Edge) -> bool:
        """Whether ``edge`` belongs to this supergraph."""
        return edge in self._edge_index

    @cached_property
    def searchable_nodes(self) -> tuple[NodeId, ...]:
        """Nodes with incoming edges: the ones that carry network parameters ``beta``."""
        return tuple(n for n in self.nodes if self._in_edges[n])

    def node_kinds(self, node: NodeId) -> tuple[KindName, ...]:
        """Kinds of the edges into ``node``: the entries of its ``beta`` vector, in order."""
        return tuple(e.kind for e in self._in_edges[node])

    def channels(self, node: NodeId) -> int:
        """Feature channels at ``node``."""
        return self.space.scale_channels(node.scale)

    def to_networkx(self, state: _EdgeWeights | None = None) -> nx.MultiDiGraph:
        """A networkx ``MultiDiGraph``: nodes are id strings (``"L3.s2"``) with ``layer``,
        ``scale`` and ``channels``; edges are keyed by kind and carry ``kind`` and, when a
        ``state`` is given, ``weight`` (``softmax(beta)`` at the destination node).

        >>> from msnas_graph.spec import SearchSpace
        >>> G = Supergraph(SearchSpace.preset("tiny")).to_networkx()
        >>> G.number_of_nodes(), G.number_of_edges(), sorted(G["L0.s0"]["L1.s0"])
        (6, 12, ['keep', 'skip'])
        """
        G = nx.MultiDiGraph(space=self.space.name)
        for n in self.nodes:
            G.add_node(str(n), layer=n.layer, scale=n.scale, channels=self.channels(n))
        weights = state.edge_weights() if state is not None else None
        for i, e in enumerate(self.edges):
            attrs: dict[str, object] = {"kind": e.kind}
            if weights is not None:
                attrs["weight"] = float(weights[i])
            G.add_edge(str(e.src), str(e.dst), key=e.kind, **attrs)
        return G

    def __str__(self) -> str:
        lines = [
            f"Supergraph '{self.space.name}': {self.space.layers} layers x {self.space.scales} "
            f"scales, {len(self.nodes)} nodes, {len(self.edges)} edges",
        ]
        for n in self.searchable_nodes:
            ins = ", ".join(f"{e.kind}<-{e.src}" for e in self._in_edges[n])
            lines.append(f"  {n} [{self.channels(n)} ch]: {ins}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Supergraph {self.space.name} {len(self.nodes)} nodes {len(self.edges)} edges>"

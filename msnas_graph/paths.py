"""Exact top-K input -> output paths of the network graph.

A path's ``path_score`` is the sum of its edges' scores. :func:`top_k_paths` takes any per-edge
scores; :func:`edge_scores` makes them from a search state in one of two modes (:data:`SCORES`):

- ``"paper"`` (the default, :data:`DEFAULT_SCORE`): the edge's weight ``w_e = softmax(beta)``
  at its destination, as in the paper.
  This score carries a *topology prior*: ``beta`` is normalised over a node's incoming edges,
  so an edge into a node with a single incoming edge always weighs 1, and with untrained
  (uniform) ``beta`` the paths through such nodes (the diamond's rim ``L1.s1``, ``L2.s2``, ...)
  outscore the rest before anything is learned.
- ``"relative"``: ``w_e * indeg(dst_e) - 1``,
  the edge's weight relative to uniform at its node. It is 0 for every edge of a uniform node
  (and always for an edge that is its node's only input: no choice, no score), positive for a
  preferred edge and ``>= -1``. With all-zero ``beta`` every path scores exactly 0, so no path is
  preferred because of how many edges enter its nodes and the tie-break below decides.
  Subtracting 1 per edge shifts every path by the same ``-layers`` (all paths have ``layers``
  edges), so the ranking is that of ``sum_e w_e * indeg(dst_e)``: the paper's sum with each
  weight measured in units of its node's uniform weight.

Every input -> output path has exactly ``layers`` edges, so maximising the paper's summed
weight is the paper's Dijkstra on costs ``1 - w`` (all non-negative). We do not search on costs:
on a DAG an exact K-best dynamic programme over a topological order is simpler and faster. Each
node keeps its K best partial paths (sorted), built from its predecessors' lists, in
``O(E * K log K)`` time and ``O(V * K)`` memory; no path enumeration.

**Tie-break** (documented, deterministic, tested against brute force): paths are sorted by
``path_score`` descending; among equal scores, by the output node (lower output scale first);
then by the edge sequence read *from the output backwards*, comparing edges by their canonical
index in :attr:`Supergraph.edges` (destination layer, destination scale, kind order
contract < keep < expand < skip). Scores are *compared* exactly, as integers on a fixed-point
grid of ``2**-40`` (float sums of the same numbers in another order can differ in the last bit,
which would order equal paths inconsistently); the reported ``path_score`` is the float64 sum
in path order from the input, which the brute-force reference reproduces bit for bit.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.graph import Supergraph
>>> import numpy as np
>>> g = Supergraph(SearchSpace.preset("tiny"))
>>> w = np.linspace(0.1, 0.9, len(g.edges))
>>> best = top_k_paths(g, w, 3)
>>> [round(p.path_score, 3) for p in best]
[1.755, 1.682, 1.536]
>>> [p.path_score for p in best] == [p.path_score for p in brute_force_paths(g, w)[:3]]
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import DecodeError
from .graph import Edge, NodeId, Supergraph

if TYPE_CHECKING:
    from .state import SearchState

__all__ = [
    "DEFAULT_SCORE",
    "SCORES",
    "Path",
    "brute_force_paths",
    "count_paths",
    "edge_scores",
    "rank_paths",
    "relative_scores",
    "top_k_paths",
    "top_paths",
    "with_min_scale",
]

#: Path-score modes of :func:`edge_scores` (the first is the default of ``decode``).
SCORES: tuple[str, ...] = ("paper", "relative")

#: The default path score: ``paper``. Decoded from the same searches on HC18, it beat
#: ``relative`` in three of four search groups (by 0.14-0.39 Dice where the search weighed a
#: cost: ``relative`` decoded full-resolution, identity-heavy networks) and tied in the fourth
#: (``benchmarks/results/frontier.md``). Its price is the topology prior above: an undecided
#: state decodes to the diamond's rim, which the decision diagnostics flag.
DEFAULT_SCORE = SCORES[0]


@dataclass(frozen=True)
class Path:
    """An input -> output path: its edges in order and its ``path_score``."""

    edges: tuple[Edge, ...]
    path_score: float

    @property
    def nodes(self) -> tuple[NodeId, ...]:
        """The visited nodes, input first."""
        return (self.edges[0].src, *(e.dst for e in self.edges))

    @property
    def scales(self) -> tuple[int, ...]:
        """The scale at each visited node (a compact picture of the path)."""
        return tuple(n.scale for n in self.nodes)

    def __str__(self) -> str:
        parts = [str(self.edges[0].src)]
        for e in self.edges:
            parts.append(f"-{e.kind}-> {e.dst}")
        return " ".join(parts) + f"  (score {self.path_score:.4f})"


def count_paths(graph: Supergraph, below: int | None = None) -> int:
    """Exact number of input -> output paths (Python int, no overflow); with ``below``, of
    those that stay below that scale (so ``count_paths(g) - count_paths(g, k)`` paths reach
    scale ``k``).

    Convention: a path is a sequence of network edges, so the ``keep`` cell and the ``skip``
    identity between the same two nodes make two different paths; a path ends at any output
    node.

    >>> from msnas_graph.spec import SearchSpace
    >>> g = Supergraph(SearchSpace.preset("tiny"))
    >>> count_paths(g), count_paths(g, below=1)  # 8 of the 14 stay at full resolution
    (14, 8)
    """
    ways: dict[NodeId, int] = {graph.input_node: 1}
    for node in graph.nodes:
        if node != graph.input_node:
            shallow = below is None or node.scale < below
            ways[node] = sum(ways[e.src] for e in graph.in_edges(node)) if shallow else 0
    return sum(ways[o] for o in graph.output_nodes)


def _weights(graph: Supergraph, edge_weight: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(edge_weight, dtype=np.float64)
    if w.shape != (len(graph.edges),):
        raise DecodeError(
            f"edge weights have shape {w.shape}, the space has {len(graph.edges)} edges"
        )
    if not np.all(np.isfinite(w)):
        raise DecodeError("edge weights contain NaN or infinity")
    return w


def relative_scores(graph: Supergraph, edge_weight: Sequence[float] | np.ndarray) -> np.ndarray:
    """``w_e * indeg(dst_e) - 1`` for every edge: each weight relative to uniform at its node.

    >>> from msnas_graph.spec import SearchSpace
    >>> g = Supergraph(SearchSpace.preset("tiny"))
    >>> w = np.array([1.0 / len(g.in_edges(e.dst)) for e in g.edges])  # uniform beta
    >>> relative_scores(g, w).tolist() == [0.0] * len(g.edges)
    True
    """
    w = _weights(graph, edge_weight)
    indeg = np.array([len(graph.in_edges(e.dst)) for e in graph.edges], dtype=np.float64)
    return w * indeg - 1.0


def edge_scores(state: SearchState, score: str = DEFAULT_SCORE) -> np.ndarray:
    """Per-edge scores of ``state`` for :func:`top_k_paths`, aligned with ``graph.edges``.

    ``score`` is ``"paper"`` (``softmax(beta)``, the default) or ``"relative"``
    (``softmax(beta) * indeg - 1``, no topology prior); see the module doc.

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> zero = SearchState.zeros(SearchSpace.preset("quick"))  # an untrained state
    >>> {p.path_score for p in brute_force_paths(zero.graph, edge_scores(zero, "relative"))}
    {0.0}
    >>> paper = brute_force_paths(zero.graph, edge_scores(zero, "paper"))
    >>> round(paper[0].path_score, 4), paper[0].scales  # the prior dives to the deepest scale
    (2.5833, (0, 1, 2, 1, 0))
    """
    if score not in SCORES:
        from ._util import unknown_name

        raise DecodeError(unknown_name("path score", score, SCORES))
    w = state.edge_weights()
    return relative_scores(state.graph, w) if score == "relative" else w


#: Bits after the binary point of the fixed-point grid on which path scores are compared.
SCORE_BITS = 40


def _fixed_point(w: np.ndarray, path_length: int) -> np.ndarray:
    """``w`` as int64 multiples of ``2**-SCORE_BITS`` (fewer bits if the weights are so large
    that a path's sum could overflow), so that summing in any order gives the same number."""
    bits = SCORE_BITS
    bound = float(np.abs(w).max(initial=0.0)) * max(path_length, 1)
    if bound > 0:
        bits = min(bits, int(np.floor(np.log2(2.0**62 / bound))))
    return np.rint(np.ldexp(w, bits)).astype(np.int64)


def _path_score(graph: Supergraph, w: np.ndarray, edges: Sequence[Edge]) -> float:
    score = 0.0
    for e in edges:
        score += float(w[graph.edge_index(e)])
    return score


def top_k_paths(graph: Supergraph, edge_weight: Sequence[float] | np.ndarray, k: int) -> list[Path]:
    """The ``k`` highest-scoring input -> output paths, best first (exact; see module doc).

    ``edge_weight`` is aligned with ``graph.edges``. Raises :class:`DecodeError` if ``k`` is
    not positive or exceeds the number of paths.
    """
    if k < 1:
        raise DecodeError(f"number of paths must be at least 1, got {k}")
    total = count_paths(graph)
    if k > total:
        raise DecodeError(
            f"asked for {k} paths but the space has only {total} input->output paths; "
            f"ask for at most {total}"
        )
    w = _weights(graph, edge_weight)
    wq = _fixed_point(w, graph.space.layers)
    index = {n: i for i, n in enumerate(graph.nodes)}
    edge_src = np.array([index[e.src] for e in graph.edges], dtype=np.int64)
    scores: list[np.ndarray] = [np.empty(0)] * len(graph.nodes)
    back_edge: list[np.ndarray] = [np.empty(0, np.int64)] * len(graph.nodes)
    back_rank: list[np.ndarray] = [np.empty(0, np.int64)] * len(graph.nodes)
    scores[index[graph.input_node]] = np.zeros(1, dtype=np.int64)

    for node in graph.nodes:  # sorted by layer: a topological order
        ins = graph.in_edges(node)
        if not ins:
            continue
        cand_s, cand_e, cand_r = [], [], []
        for e in ins:  # canonical kind order: the tie-break after the score
            ei = graph.edge_index(e)
            prev = scores[edge_src[ei]]
            cand_s.append(prev + wq[ei])
            cand_e.append(np.full(len(prev), ei, dtype=np.int64))
            cand_r.append(np.arange(len(prev), dtype=np.int64))
        s = np.concatenate(cand_s)
        order = np.argsort(-s, kind="stable")[:k]
        i = index[node]
        scores[i] = s[order]
        back_edge[i] = np.concatenate(cand_e)[order]
        back_rank[i] = np.concatenate(cand_r)[order]

    outs = [index[o] for o in graph.output_nodes]
    final_s = np.concatenate([scores[o] for o in outs])
    final_node = np.concatenate([np.full(len(scores[o]), o) for o in outs])
    final_rank = np.concatenate([np.arange(len(scores[o])) for o in outs])
    order = np.argsort(-final_s, kind="stable")[:k]

    result = []
    for j in order:
        node_i, rank = int(final_node[j]), int(final_rank[j])
        edges: list[Edge] = []
        while node_i != index[graph.input_node]:
            ei = int(back_edge[node_i][rank])
            rank = int(back_rank[node_i][rank])
            edges.append(graph.edges[ei])
            node_i = int(edge_src[ei])
        edges.reverse()
        result.append(Path(tuple(edges), _path_score(graph, w, edges)))
    return result


#: How many of the top paths :func:`top_paths` looks through for one reaching ``min_scale``.
DEEP_CANDIDATES = 256


def with_min_scale(ranked: Sequence[Path], paths: int, min_scale: int) -> list[Path]:
    """The best ``paths`` of ``ranked`` (paths best first) of which at least one reaches
    scale ``min_scale``: the top ``paths`` if one of them does, else the top ``paths - 1``
    and the best path that does (no set with a path that deep scores more). Raises
    :class:`DecodeError` when no path of ``ranked`` reaches it.

    >>> from msnas_graph.spec import SearchSpace
    >>> g = Supergraph(SearchSpace.preset("quick"))
    >>> w = np.array([1.0 if e.kind == "skip" else 0.1 for e in g.edges])
    >>> [max(p.scales) for p in top_k_paths(g, w, 2)]  # identity edges at full resolution
    [0, 0]
    >>> [max(p.scales) for p in with_min_scale(top_k_paths(g, w, 42), 2, min_scale=2)]
    [0, 2]
    """
    top = list(ranked[:paths])
    if any(max(p.scales) >= min_scale for p in top):
        return top
    deep = next((p for p in ranked[paths:] if max(p.scales) >= min_scale), None)
    if deep is None:
        raise DecodeError(
            f"none of the top {len(ranked)} paths reaches scale {min_scale}; lower --min-scale"
        )
    return [*top[: paths - 1], deep]


def check_min_scale(graph: Supergraph, min_scale: int) -> None:
    """A one-line :class:`DecodeError` when no path of ``graph`` can reach ``min_scale``."""
    deepest = max(n.scale for n in graph.nodes)
    if min_scale > deepest:
        raise DecodeError(
            f"min_scale={min_scale}: the space's paths reach scale {deepest} at most; give "
            f"--min-scale {deepest} or less"
        )


def top_paths(
    graph: Supergraph, edge_weight: Sequence[float] | np.ndarray, paths: int, min_scale: int = 0
) -> list[Path]:
    """:func:`top_k_paths`, and with ``min_scale`` the best ``paths`` of which at least one
    reaches that scale (:func:`with_min_scale` over the top :data:`DEEP_CANDIDATES`): a
    decoded network then sees at least ``1 / 2**min_scale`` of the input's side."""
    if min_scale <= 0:
        return top_k_paths(graph, edge_weight, paths)
    check_min_scale(graph, min_scale)
    k = min(count_paths(graph), max(paths, DEEP_CANDIDATES))
    return with_min_scale(top_k_paths(graph, edge_weight, k), paths, min_scale)


def _sort_key(
    graph: Supergraph, wq: Sequence[int], out_rank: dict[NodeId, int], edges: Sequence[Edge]
) -> tuple[int, int, tuple[int, ...]]:
    """The module doc's order: exact score descending, output node, edges read backwards."""
    idx = tuple(graph.edge_index(e) for e in reversed(edges))
    return (-sum(wq[i] for i in idx), out_rank[edges[-1].dst], idx)


def rank_paths(
    graph: Supergraph,
    edge_weight: Sequence[float] | np.ndarray,
    candidates: Iterable[tuple[Edge, ...]],
) -> list[Path]:
    """``candidates`` (input -> output paths, as edge tuples) scored and sorted as
    :func:`top_k_paths` sorts them, duplicates removed.

    The best ``k`` of a set that holds the exact top ``k`` are that top ``k``; a consensus
    uses this to rank only the paths some seed chose.

    >>> from msnas_graph.spec import SearchSpace
    >>> g = Supergraph(SearchSpace.preset("tiny"))
    >>> w = np.linspace(0.1, 0.9, len(g.edges))
    >>> best = top_k_paths(g, w, 4)
    >>> rank_paths(g, w, [best[3].edges, best[1].edges, best[3].edges]) == [best[1], best[3]]
    True
    """
    w = _weights(graph, edge_weight)
    wq = _fixed_point(w, graph.space.layers).tolist()
    out_rank = {o: i for i, o in enumerate(graph.output_nodes)}
    unique = sorted(set(candidates), key=lambda es: _sort_key(graph, wq, out_rank, es))
    return [Path(es, _path_score(graph, w, es)) for es in unique]


def brute_force_paths(graph: Supergraph, edge_weight: Sequence[float] | np.ndarray) -> list[Path]:
    """Every input -> output path, sorted as :func:`top_k_paths` sorts them.

    Exponential: a reference for tests and benchmarks on small spaces only.
    """
    w = _weights(graph, edge_weight)
    wq = _fixed_point(w, graph.space.layers).tolist()
    out_rank = {o: i for i, o in enumerate(graph.output_nodes)}
    found: list[tuple[int, int, tuple[int, ...], tuple[Edge, ...]]] = []

    def walk(node: NodeId, edges: list[Edge], exact: int) -> None:
        if node in out_rank:
            idx = tuple(graph.edge_index(e) for e in reversed(edges))
            found.append((exact, out_rank[node], idx, tuple(edges)))
        for e in graph.out_edges(node):
            edges.append(e)
            walk(e.dst, edges, exact + wq[graph.edge_index(e)])
            edges.pop()

    walk(graph.input_node, [], 0)
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [Path(edges, _path_score(graph, w, edges)) for _, _, _, edges in found]

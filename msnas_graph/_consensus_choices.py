"""The choices behind :func:`msnas_graph.consensus.consensus`: each seed's own decisions, the
majority vote over them, and the mean state's decisions restricted to those some seed made."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np

from .architecture import Architecture
from .decode import decode, decode_cell
from .genotype import BlockInput, CellGenotype
from .graph import Edge
from .kinds import cell_types_of
from .paths import Path, edge_scores, rank_paths, with_min_scale
from .spec import CellType
from .state import SearchState, softmax

T = TypeVar("T", bound=Hashable)


def node_choices(state: SearchState) -> dict[str, str]:
    g = state.graph
    return {
        str(n): g.node_kinds(n)[int(np.argmax(softmax(state.beta_logits[n])))]
        for n in g.searchable_nodes
        if len(g.node_kinds(n)) > 1
    }


Choice = tuple[tuple[int, str], ...]  # a block's kept (source, op) pairs
BlockKey = tuple[CellType, int]  # (cell type, 0-based block)


def cell_choices(state: SearchState, m: int | None) -> dict[BlockKey, Choice]:
    return {
        (c, b): tuple((i.source, i.op) for i in block)
        for c in state.space.cell_types
        for b, block in enumerate(decode_cell(state, c, m).blocks)
    }


def _vote(choices: Sequence[T], weight: Callable[[T], float], order: Callable[[T], Any]) -> T:
    """Most common choice; ties by higher ``weight``, then lower ``order``."""
    counts = Counter(choices)
    return min(counts, key=lambda x: (-counts[x], -weight(x), order(x)))


def cell_text(choice: Choice) -> str:
    return " + ".join(f"{op}({'in' if j == 0 else f'b{j}'})" for j, op in choice)


def majority_cells(
    states: Sequence[SearchState], per_seed: Sequence[dict[BlockKey, Choice]]
) -> tuple[dict[str, CellGenotype], dict[BlockKey, Choice]]:
    space = states[0].space

    def weight(key: BlockKey, choice: Choice) -> float:
        ws = [s.op_weights(*key) for s in states]
        return float(np.mean([sum(w[j, space.ops.index(o)] for j, o in choice) for w in ws]))

    chosen: dict[BlockKey, Choice] = {}
    for key in per_seed[0]:

        def by_weight(ch: Choice, key: BlockKey = key) -> float:
            return weight(key, ch)

        chosen[key] = _vote([sd[key] for sd in per_seed], by_weight, lambda ch: ch)
    cells = {
        str(c): CellGenotype(
            c,
            tuple(
                tuple(BlockInput(j, o, weight((c, b), ((j, o),))) for j, o in chosen[(c, b)])
                for b in range(space.blocks)
            ),
        )
        for c in space.cell_types
    }
    return cells, chosen


def majority_nodes(
    states: Sequence[SearchState], per_seed: Sequence[dict[str, str]]
) -> dict[str, str]:
    graph = states[0].graph
    chosen = {}
    for n in graph.searchable_nodes:
        if str(n) not in per_seed[0]:
            continue
        kinds: tuple[str, ...] = graph.node_kinds(n)
        mean_w = np.mean([softmax(s.beta_logits[n]) for s in states], axis=0)

        def by_weight(k: str, w: np.ndarray = mean_w, ks: tuple[str, ...] = kinds) -> float:
            return float(w[ks.index(k)])

        chosen[str(n)] = _vote([sd[str(n)] for sd in per_seed], by_weight, kinds.index)
    return chosen


def majority_paths(
    states: Sequence[SearchState], archs: Sequence[Architecture], paths: int, score: str
) -> list[Path]:
    graph = states[0].graph
    scores = [edge_scores(s, score) for s in states]

    def mean_score(edges: tuple[Edge, ...]) -> float:
        idx = [graph.edge_index(e) for e in edges]
        return float(np.mean([sum(float(sc[i]) for i in idx) for sc in scores]))

    votes = Counter(p.edges for a in archs for p in a.paths)
    ranked = sorted(
        votes,
        key=lambda es: (
            -votes[es],
            -mean_score(es),
            tuple(graph.edge_index(e) for e in reversed(es)),
        ),
    )
    return [Path(es, mean_score(es)) for es in ranked[:paths]]


def assemble(
    first: SearchState, genotypes: dict[str, CellGenotype], top: list[Path], meta: dict[str, Any]
) -> Architecture:
    """The architecture of the chosen ``top`` paths and the cells their edges use."""
    edges = {e for p in top for e in p.edges}
    used = cell_types_of(e.kind for e in edges)
    cells: dict[str, CellGenotype] = {c: g for c, g in genotypes.items() if c in used}
    arch = Architecture(first.space, edges, cells, top, meta=meta, graph=first.graph)
    arch.validate()
    return arch


def mean_cells(
    state: SearchState, per_seed: Sequence[dict[BlockKey, Choice]], m: int | None
) -> tuple[dict[BlockKey, Choice], dict[str, CellGenotype], list[str]]:
    """Per block, the mean's own choice if a seed made it, else the seeds' choice with the
    highest mean weight (ties: canonical order); the genotypes and what was replaced."""
    space = state.space
    chosen: dict[BlockKey, Choice] = {}
    replaced: list[str] = []
    for key, own in cell_choices(state, m).items():
        voted = {sd[key] for sd in per_seed}
        w = state.op_weights(*key)

        def weight(ch: Choice, w: np.ndarray = w) -> float:
            return float(sum(w[j, space.ops.index(o)] for j, o in ch))

        chosen[key] = own if own in voted else min(voted, key=lambda ch: (-weight(ch), ch))
        if chosen[key] != own:
            replaced.append(f"cell {key[0]}.b{key[1] + 1}")
    genotypes = {
        str(c): CellGenotype(
            c,
            tuple(
                tuple(
                    BlockInput(j, o, float(state.op_weights(c, b)[j, space.ops.index(o)]))
                    for j, o in chosen[(c, b)]
                )
                for b in range(space.blocks)
            ),
        )
        for c in space.cell_types
    }
    return chosen, genotypes, replaced


def mean_nodes(
    state: SearchState, per_seed: Sequence[dict[str, str]], replaced: list[str]
) -> dict[str, str]:
    """Per node, the kind with the highest mean weight among those some seed chose."""
    graph = state.graph
    chosen = {}
    for n in graph.searchable_nodes:
        kinds: tuple[str, ...] = graph.node_kinds(n)
        if len(kinds) < 2:
            continue
        w = softmax(state.beta_logits[n])
        voted = {sd[str(n)] for sd in per_seed}
        chosen[str(n)] = min(voted, key=lambda k: (-w[kinds.index(k)], kinds.index(k)))
        if chosen[str(n)] != kinds[int(np.argmax(w))]:
            replaced.append(f"node {n}")
    return chosen


def mean_paths(
    state: SearchState,
    archs: Sequence[Architecture],
    how: tuple[int, int],
    m: int | None,
    score: str,
    replaced: list[str],
) -> list[Path]:
    """The mean's top ``paths`` among the paths some seed kept (exact order of
    :func:`msnas_graph.paths.top_k_paths`), ``how = (paths, min_scale)``: with ``min_scale``,
    the best of them with a path that deep (:func:`msnas_graph.paths.with_min_scale`)."""
    paths, min_scale = how
    voted = {p.edges for a in archs for p in a.paths}
    ranked = rank_paths(state.graph, edge_scores(state, score), voted)
    top = with_min_scale(ranked, paths, min_scale) if min_scale > 0 else ranked[:paths]
    own = decode(state, paths, m, score, min_scale).paths
    replaced += [f"path {path_text(p)}" for p in own if p.edges not in voted]
    return top


def path_text(p: Path) -> str:
    kinds = "".join(e.kind[0].upper() for e in p.edges)
    return f"scales {'-'.join(map(str, p.scales))} edges {kinds}"

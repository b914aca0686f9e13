from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msnas_graph.errors import DecodeError
from msnas_graph.graph import Edge, Supergraph
from msnas_graph.paths import Path, brute_force_paths, count_paths, rank_paths, top_k_paths
from msnas_graph.spec import EDGE_KINDS, SearchSpace


@st.composite
def small_spaces(draw: st.DrawFn) -> SearchSpace:
    layers = draw(st.integers(1, 6))
    scales = draw(st.integers(1, 4))
    kinds = draw(
        st.lists(st.sampled_from(EDGE_KINDS), min_size=1, max_size=4, unique=True).filter(
            lambda ks: set(ks) & {"contract", "keep", "expand"}
        )
    )
    outs = [0]
    if "contract" in kinds and scales > 1 and layers >= 2 and draw(st.booleans()):
        outs.append(draw(st.integers(1, min(scales - 1, layers))))
    # keep only specs whose outputs are reachable
    if "keep" not in kinds and "skip" not in kinds and ("expand" not in kinds):
        kinds = [*kinds, "keep"]
    return SearchSpace(
        layers=layers,
        scales=scales,
        channels=4,
        blocks=1,
        partial_k=1,
        edge_kinds=tuple(kinds),
        output_scales=tuple(outs),
        input_size=64,
    )


def _graph_or_none(space: SearchSpace) -> Supergraph | None:
    from msnas_graph.errors import SpecError

    try:
        return Supergraph(space)
    except SpecError:
        return None


@given(
    space=small_spaces(),
    seed=st.integers(0, 10_000),
    weights=st.sampled_from(["random", "quarters", "decimals"]),
    k=st.integers(1, 60),
)
def test_top_k_equals_brute_force(space: SearchSpace, seed: int, weights: str, k: int) -> None:
    g = _graph_or_none(space)
    if g is None:
        return
    rng = np.random.default_rng(seed)
    n = len(g.edges)
    # "quarters": many exact ties; "decimals": sums that are equal in exact arithmetic but not
    # in float (0.4 + 0.4 != 0.1 + 0.7): the tie-break must still match brute force exactly
    w = {
        "random": lambda: rng.random(n),
        "quarters": lambda: rng.integers(0, 3, n) / 4,
        "decimals": lambda: rng.integers(1, 8, n) / 10,
    }[weights]()
    every = brute_force_paths(g, w)
    assert len(every) == count_paths(g)
    k = min(k, len(every))
    best = top_k_paths(g, w, k)
    assert [p.edges for p in best] == [p.edges for p in every[:k]]
    assert [p.path_score for p in best] == [p.path_score for p in every[:k]]
    scores = [p.path_score for p in best]  # sorted up to float rounding of equal sums
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(scores))
    for p in best:
        assert p.nodes[0] == g.input_node and p.nodes[-1] in g.output_nodes
        assert p.path_score == pytest.approx(sum(w[g.edge_index(e)] for e in p.edges))


def test_count_paths_against_networkx() -> None:
    g = Supergraph(SearchSpace.preset("quick"))
    G = g.to_networkx()
    n = sum(1 for o in g.output_nodes for _ in nx.all_simple_edge_paths(G, "L0.s0", str(o)))
    assert count_paths(g) == n


def test_paper_space_counts_are_golden() -> None:
    g = Supergraph(SearchSpace.preset("paper"))
    assert (len(g.nodes), len(g.edges), count_paths(g)) == (35, 108, 58785)


def test_float_rounding_does_not_break_ties() -> None:
    g = Supergraph(SearchSpace.preset("tiny"))
    w = [0.3, 0.1, 0.4, 0.7, 0.4, 0.6, 0.3, 0.1, 0.3, 0.7, 0.4, 0.2]
    assert [p.edges for p in top_k_paths(g, w, 14)] == [p.edges for p in brute_force_paths(g, w)]


def test_k_larger_than_paths_is_refused() -> None:
    g = Supergraph(SearchSpace.preset("tiny"))
    with pytest.raises(DecodeError, match="only 14 input->output paths; ask for at most 14"):
        top_k_paths(g, np.ones(len(g.edges)), 15)
    with pytest.raises(DecodeError, match="at least 1"):
        top_k_paths(g, np.ones(len(g.edges)), 0)
    with pytest.raises(DecodeError, match="shape"):
        top_k_paths(g, np.ones(3), 1)


def test_large_trellis_top_1000_is_sorted_and_distinct() -> None:
    space = SearchSpace(layers=100, scales=8, channels=4, blocks=1, partial_k=1, input_size=256)
    g = Supergraph(space)
    w = np.random.default_rng(0).random(len(g.edges))
    best = top_k_paths(g, w, 1000)
    assert len({p.edges for p in best}) == 1000
    assert all(a.path_score >= b.path_score - 1e-9 for a, b in itertools.pairwise(best))


def _spelled(path: Path) -> str:
    return " ".join([str(path.edges[0].src), *(f"-{e.kind}-> {e.dst}" for e in path.edges)])


def test_tie_break_spelled_out_by_hand() -> None:
    # tiny's 12 edges in canonical order (destination layer, scale, then kind):
    #  0 L0.s0-keep->L1.s0   1 L0.s0-skip->L1.s0   2 L0.s0-contract->L1.s1
    #  3 L1.s0-keep->L2.s0   4 L1.s1-expand->L2.s0  5 L1.s0-skip->L2.s0
    #  6 L1.s0-contract->L2.s1  7 L1.s1-keep->L2.s1  8 L1.s1-skip->L2.s1
    #  9 L2.s0-keep->L3.s0  10 L2.s1-expand->L3.s0 11 L2.s0-skip->L3.s0
    # Equal weights: every path ties, so the documented rule alone orders them: edge sequences
    # read from the output backwards, lower canonical index first: (9,3,0) (9,3,1) (9,4,2)
    # (9,5,0) (9,5,1) (10,6,0) ...
    g = Supergraph(SearchSpace.preset("tiny"))
    best = top_k_paths(g, np.full(len(g.edges), 0.5), 6)
    assert [_spelled(p) for p in best] == [
        "L0.s0 -keep-> L1.s0 -keep-> L2.s0 -keep-> L3.s0",
        "L0.s0 -skip-> L1.s0 -keep-> L2.s0 -keep-> L3.s0",
        "L0.s0 -contract-> L1.s1 -expand-> L2.s0 -keep-> L3.s0",
        "L0.s0 -keep-> L1.s0 -skip-> L2.s0 -keep-> L3.s0",
        "L0.s0 -skip-> L1.s0 -skip-> L2.s0 -keep-> L3.s0",
        "L0.s0 -keep-> L1.s0 -contract-> L2.s1 -expand-> L3.s0",
    ]
    assert [p.path_score for p in best] == [1.5] * 6


def test_score_first_then_lower_output_scale_by_hand() -> None:
    g = Supergraph(SearchSpace.preset("tiny", output_scales=(0, 1)))
    w = np.full(len(g.edges), 0.5)
    # raise the expand edge into L3.s0: the paths through it win whatever the tie-break says
    w[g.edge_index(Edge.parse("L2.s1>L3.s0:expand"))] = 0.75
    paths = top_k_paths(g, w, count_paths(g))
    assert [_spelled(p) for p in paths[:4]] == [
        "L0.s0 -keep-> L1.s0 -contract-> L2.s1 -expand-> L3.s0",
        "L0.s0 -skip-> L1.s0 -contract-> L2.s1 -expand-> L3.s0",
        "L0.s0 -contract-> L1.s1 -keep-> L2.s1 -expand-> L3.s0",
        "L0.s0 -contract-> L1.s1 -skip-> L2.s1 -expand-> L3.s0",
    ]
    assert [p.path_score for p in paths] == [1.75] * 4 + [1.5] * (len(paths) - 4)
    # among the rest (all 1.5), every path to the output at scale 0 comes before scale 1
    rest = [p.edges[-1].dst.scale for p in paths[4:]]
    assert rest == sorted(rest) and set(rest) == {0, 1}


# ----------------------------------------------------------------- path scores (issue 8)


def _zero_state(space: SearchSpace):
    from msnas_graph.state import SearchState

    return SearchState.zeros(space)


@pytest.mark.parametrize("preset", ["tiny", "quick", "paper"])
def test_all_zero_state_ties_every_path_at_zero(preset: str) -> None:
    from msnas_graph.decode import decode
    from msnas_graph.paths import edge_scores

    state = _zero_state(SearchSpace.preset(preset))
    scores = edge_scores(state, "relative")
    assert np.array_equal(scores, np.zeros(len(state.graph.edges)))  # exactly, not nearly
    if preset != "paper":  # brute force: every path's score is exactly 0
        every = brute_force_paths(state.graph, scores)
        assert len(every) == count_paths(state.graph)
        assert {p.path_score for p in every} == {0.0}
    arch = decode(state, paths=3, score="relative")
    # the documented tie-break decides: output scale, then edges from the output backwards
    assert [p.edges for p in arch.paths] == [
        p.edges for p in top_k_paths(state.graph, np.zeros(len(state.graph.edges)), 3)
    ]
    assert arch.meta["score"] == "relative"


def test_paper_score_keeps_the_topology_prior() -> None:
    from msnas_graph.decode import decode

    state = _zero_state(SearchSpace.preset("quick"))
    arch = decode(state, paths=1, score="paper")
    assert arch.paths[0].scales == (0, 1, 2, 1, 0)  # the rim wins before any learning
    assert arch.paths[0].path_score == pytest.approx(2.5833333333)
    assert arch.meta["score"] == "paper"


@given(space=small_spaces(), seed=st.integers(0, 10_000), k=st.integers(1, 40))
def test_relative_top_k_equals_brute_force(space: SearchSpace, seed: int, k: int) -> None:
    from msnas_graph.paths import edge_scores, relative_scores
    from msnas_graph.state import SearchState

    g = _graph_or_none(space)
    if g is None:
        return
    state = SearchState.random(space, seed=seed, graph=g)
    rel = edge_scores(state, "relative")
    w = state.edge_weights()
    indeg = np.array([len(g.in_edges(e.dst)) for e in g.edges])
    assert np.allclose(rel, w * indeg - 1) and np.array_equal(rel, relative_scores(g, w))
    assert np.all(rel[indeg == 1] == 0.0)  # an only input carries no score
    every = brute_force_paths(g, rel)
    k = min(k, len(every))
    best = top_k_paths(g, rel, k)
    assert [p.edges for p in best] == [p.edges for p in every[:k]]
    assert [p.path_score for p in best] == [p.path_score for p in every[:k]]
    zero = brute_force_paths(g, edge_scores(SearchState.zeros(space, graph=g), "relative"))
    assert {p.path_score for p in zero} == {0.0}


@given(seed=st.integers(0, 10_000), k=st.integers(1, 14))
def test_paper_mode_is_unchanged(seed: int, k: int) -> None:
    from msnas_graph.decode import decode
    from msnas_graph.paths import edge_scores
    from msnas_graph.state import SearchState

    state = SearchState.random(SearchSpace.preset("tiny"), seed=seed)
    assert np.array_equal(edge_scores(state, "paper"), state.edge_weights())
    arch = decode(state, paths=k, score="paper")
    ref = brute_force_paths(state.graph, state.edge_weights())[:k]
    assert [(p.edges, p.path_score) for p in arch.paths] == [(p.edges, p.path_score) for p in ref]


def test_unknown_score_is_one_line() -> None:
    from msnas_graph.decode import decode

    with pytest.raises(DecodeError, match=r"unknown path score 'papr'.*did you mean 'paper'"):
        decode(_zero_state(SearchSpace.preset("tiny")), score="papr")


@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), ties=st.booleans())
def test_rank_paths_orders_a_subset_as_top_k_does(seed: int, k: int, ties: bool) -> None:
    g = Supergraph(SearchSpace.preset("quick"))
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 3, len(g.edges)) / 4 if ties else rng.random(len(g.edges))
    every = brute_force_paths(g, w)
    assert rank_paths(g, w, [p.edges for p in reversed(every)]) == every
    top = top_k_paths(g, w, k)
    others = [p.edges for p in every[k:]][:: int(rng.integers(1, 4))]
    assert rank_paths(g, w, others + [p.edges for p in top])[:k] == top

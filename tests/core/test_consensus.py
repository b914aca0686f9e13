"""Consensus over seeds: identical runs agree fully; votes, means and errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from msnas_graph.budget import TableCostModel
from msnas_graph.consensus import consensus, mean_state
from msnas_graph.decode import decode, decode_cells
from msnas_graph.errors import DecodeError, StateError
from msnas_graph.operations import DEFAULT_OPERATIONS
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState, softmax

# the paper's operations (the tests name them), at the quick preset's size
QUICK = SearchSpace.preset("quick", ops=[*DEFAULT_OPERATIONS, "none"])


def twin(state: SearchState, k: int = 1) -> SearchState:
    """Another search that decides exactly as ``state``: one row of cell logits shifted by a
    constant (softmax is unchanged), so its content differs and consensus accepts it."""
    copy = SearchState.from_dict(state.to_dict())
    copy.alpha_logits["keep"][0][0] += 0.25 * k
    return copy


@pytest.mark.parametrize("method", ["mean", "majority"])
def test_identical_runs_agree_fully(method: str) -> None:
    s = SearchState.random(QUICK, seed=5)
    r = consensus([s, twin(s, 1), twin(s, 2)], paths=3, method=method)
    assert r.seeds == 3 and r.agreement == 1.0
    assert all(d.votes == 3 for d in r.decisions)
    assert {d.group for d in r.decisions} == {"cell", "node", "path"}
    assert r.edge_jaccard == (1.0, 1.0, 1.0) and r.path_jaccard == (1.0, 1.0, 1.0)
    assert set(r.edge_agreement.values()) == {1.0}
    ref = decode(s, paths=3)
    arch = r.architecture
    assert set(arch.edges) == set(ref.edges)
    assert [p.edges for p in arch.paths] == [p.edges for p in ref.paths]
    assert {c: str(g) for c, g in arch.cells.items()} == {c: str(g) for c, g in ref.cells.items()}
    assert arch.meta["consensus"] == method and arch.meta["seeds"] == 3
    assert "agree on 100% of decisions" in r.summary()


def test_mean_state_averages_the_normalised_weights() -> None:
    states = [SearchState.random(QUICK, seed=i) for i in range(3)]
    m = mean_state(states)
    for c in QUICK.cell_types:
        for b in range(QUICK.blocks):
            want = np.mean([softmax(s.alpha_logits[c][b]) for s in states], axis=0)
            assert np.allclose(softmax(m.alpha_logits[c][b]), want, atol=1e-12)
            want_p = np.mean([softmax(s.p_logits[c][b]) for s in states], axis=0)
            assert np.allclose(softmax(m.p_logits[c][b]), want_p, atol=1e-12)
    assert np.allclose(m.edge_weights(), np.mean([s.edge_weights() for s in states], axis=0))


def test_majority_follows_the_most_common_choice() -> None:
    a, b = SearchState.random(QUICK, seed=1), SearchState.random(QUICK, seed=2)
    r = consensus([a, b, twin(a)], method="majority")
    ref = decode(a)
    # a's paths have 2 or 3 votes, b's others 1: the set is a's (ordered by votes)
    assert {p.edges for p in r.architecture.paths} == {p.edges for p in ref.paths}
    votes = [d.votes for d in r.decisions if d.group == "path"]
    assert votes == sorted(votes, reverse=True) and min(votes) >= 2
    assert {str(g) for g in r.architecture.cells.values()} == {str(g) for g in ref.cells.values()}
    ca, cb = decode_cells(a), decode_cells(b)
    for d in r.decisions:
        if d.group == "cell":
            c, blk = d.where.split(".b")
            pick = [[(i.source, i.op) for i in x[c].blocks[int(blk) - 1]] for x in (ca, cb)]
            same = pick[0] == pick[1]
            assert d.votes == (3 if same else 2)
    assert 0.6 < r.agreement < 1.0


def test_majority_tie_goes_to_the_higher_mean_weight() -> None:
    weak, strong = SearchState.zeros(QUICK), SearchState.zeros(QUICK)
    ops = QUICK.ops
    weak.alpha_logits["keep"][0][0, ops.index("avg_pool_3x3")] = 0.5
    strong.alpha_logits["keep"][0][0, ops.index("skip_connect")] = 3.0
    r = consensus([weak, strong], method="majority")
    d = next(x for x in r.decisions if x.where == "keep.b1")
    assert d.choice == "skip_connect(in)" and d.votes == 1 and d.agreement == 0.5


def test_mean_consensus_is_pulled_by_the_confident_seed() -> None:
    unsure, sure = SearchState.zeros(QUICK), SearchState.zeros(QUICK)
    sure.alpha_logits["keep"][0][0, QUICK.ops.index("dil_conv_3x3")] = 6.0
    r = consensus([unsure, sure, twin(unsure)])
    d = next(x for x in r.decisions if x.where == "keep.b1")
    assert d.choice == "dil_conv_3x3(in)" and d.votes == 1
    assert r.state is not None and r.method == "mean"


def test_errors_are_one_line() -> None:
    with pytest.raises(DecodeError, match="at least one search state"):
        consensus([])
    with pytest.raises(DecodeError, match="unknown consensus method 'median'"):
        consensus([SearchState.zeros(QUICK)], method="median")
    tiny = SearchState.zeros(SearchSpace.preset("tiny"))
    with pytest.raises(StateError) as info:
        consensus([SearchState.zeros(QUICK), tiny], names=["a.json", "b.json"])
    msg = str(info.value)
    assert "b.json is a search of space 'tiny', a.json of 'quick'" in msg
    assert "one space" in msg and "\n" not in msg
    with pytest.raises(DecodeError, match="1 names for 2 states"):
        consensus([tiny, tiny], names=["a.json"])


def test_the_same_search_twice_is_refused() -> None:
    """Issue 18 item 5: a duplicate is not an agreeing seed (``a b a``, a copied file)."""
    a, b = SearchState.random(QUICK, seed=1), SearchState.random(QUICK, seed=2)
    copy = SearchState.from_dict(a.to_dict())
    copy.meta["note"] = "copied"  # meta is not the search
    for states in ([a, b, a], [a, copy]):
        names = ["x.json", "y.json", "z.json"][: len(states)]
        with pytest.raises(DecodeError) as info:
            consensus(states, names=names)
        msg = str(info.value)
        assert f"{names[-1]} holds the same search state as x.json" in msg and "\n" not in msg
    assert consensus([a, twin(a)]).seeds == 2  # equal decisions, different searches: fine


def test_render_and_json(tmp_path) -> None:
    states = [SearchState.random(QUICK, seed=i) for i in range(3)]
    r = consensus(states)
    src = r.to_graphviz().source
    assert "share of the 3 seeds" in src
    for e, a in r.edge_agreement.items():
        assert f'"{e.src}" -> "{e.dst}"' in src and f"{a:.0%}" in src
    assert r.render(tmp_path / "c.dot").read_text() == src
    data = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert data["seeds"] == 3 and data["architecture"]["content_hash"]
    assert len(data["edge_jaccard"]) == 3 and str(r).startswith(str(r.architecture))


def _seed_choices(states: list[SearchState], score: str = "paper") -> tuple[set, set]:
    archs = [decode(s, score=score) for s in states]
    return {p.edges for a in archs for p in a.paths}, {e for a in archs for e in a.edges}


def test_mean_keeps_no_choice_that_no_seed_made() -> None:
    """Issue 19: the plain mean of three seeds kept a path (and a block) with 0 of 3 votes."""
    states = [SearchState.random(QUICK, seed=i) for i in range(3)]
    seed_paths, _ = _seed_choices(states, "relative")
    plain = decode(mean_state(states), score="relative")  # the score of issue 19's report
    assert any(p.edges not in seed_paths for p in plain.paths)  # the failure, reproduced
    r = consensus(states, score="relative")
    assert min(d.votes for d in r.decisions) >= 1
    assert all(p.edges in seed_paths for p in r.architecture.paths)
    assert r.replaced == ("cell expand.b2", "path scales 0-1-1-0-0 edges CKES")
    assert "no seed chose the plain mean's choice" in str(r)
    assert json.loads(json.dumps(r.to_dict()))["replaced"] == list(r.replaced)


@pytest.mark.parametrize("start", range(0, 60, 3))
def test_mean_consensus_stays_within_the_seeds_choices(start: int) -> None:
    states = [SearchState.random(QUICK, seed=start + i, scale=2.0) for i in range(3)]
    seed_paths, seed_edges = _seed_choices(states)
    r = consensus(states)
    assert min(d.votes for d in r.decisions) >= 1
    assert {p.edges for p in r.architecture.paths} <= seed_paths
    assert set(r.architecture.edges) <= seed_edges
    plain = decode(mean_state(states))
    if not r.replaced:  # nothing unvoted: the consensus is the plain mean's decode
        assert [p.edges for p in r.architecture.paths] == [p.edges for p in plain.paths]
        assert r.architecture.cells == plain.cells


def test_mean_node_decision_stays_within_the_votes() -> None:
    a, b = SearchState.zeros(QUICK), SearchState.zeros(QUICK)
    node = next(n for n in a.graph.searchable_nodes if str(n) == "L2.s0")  # keep, expand, skip
    a.beta_logits[node][:] = [2.0, -5.0, 1.9]  # keep, skip second
    b.beta_logits[node][:] = [-5.0, 2.0, 1.9]  # expand, skip second
    assert np.argmax(softmax(mean_state([a, b]).beta_logits[node])) == 2  # skip: no vote
    r = consensus([a, b])
    d = next(x for x in r.decisions if x.where == "L2.s0")
    assert d.choice == "keep" and d.votes == 1  # keep outweighs expand under the mean (tie)
    assert "node L2.s0" in r.replaced


def test_a_consensus_equal_to_one_seed_names_it() -> None:
    a, b = SearchState.random(QUICK, seed=1), SearchState.random(QUICK, seed=2)
    r = consensus([a, b, twin(a)], method="majority", names=["s1", "s2", "s3"])
    assert r.identical_to == ("s1", "s3")
    assert "the consensus network is the one s1, s3 decoded" in r.summary()
    assert r.to_dict()["identical_to"] == ["s1", "s3"]
    differ = consensus([SearchState.random(QUICK, seed=i) for i in range(3)])
    assert differ.identical_to == () and "decoded" not in differ.summary()


def _simple(space: SearchSpace) -> Callable[[object], TableCostModel]:

    return lambda cells: TableCostModel.simple(space)


def test_an_unbounded_budget_gives_the_plain_consensus() -> None:
    from msnas_graph.budget import Budget

    states = [SearchState.random(QUICK, seed=40 + i, scale=2.0) for i in range(3)]
    plain = consensus(states, paths=3)
    free = consensus(states, paths=3, budget=Budget(), cost_model=_simple(QUICK))
    assert free.architecture.edges == plain.architecture.edges
    assert [p.edges for p in free.architecture.paths] == [p.edges for p in plain.architecture.paths]
    assert free.agreement == plain.agreement and free.budgeted is not None


@pytest.mark.parametrize("start", range(0, 30, 5))
def test_a_budgeted_consensus_fits_and_keeps_only_voted_paths(start: int) -> None:
    from msnas_graph.budget import Budget, budgeted_decode, network_cost

    states = [SearchState.random(QUICK, seed=start + i, scale=2.0) for i in range(3)]
    model = _simple(QUICK)(None)
    full = network_cost(consensus(states, paths=3).architecture.edges, model)
    budget = Budget(max_macs=full.macs * 2 // 3)
    r = consensus(states, paths=3, budget=budget, cost_model=_simple(QUICK))
    assert (
        r.budgeted is not None and network_cost(r.architecture.edges, model).macs <= budget.max_macs
    )
    seeds = [budgeted_decode(s, budget, model, 3) for s in states]  # each seed's own set fits
    voted = {p.edges for b in seeds for p in b.architecture.paths}
    assert {p.edges for p in r.architecture.paths} <= voted
    assert min(d.votes for d in r.decisions if d.group == "path") >= 1
    assert r.to_dict()["budget"]["cost"]["macs"] <= budget.max_macs
    assert "budget: max" in str(r)


def test_a_budget_needs_the_mean_consensus() -> None:
    from msnas_graph.budget import Budget

    states = [SearchState.random(QUICK, seed=i) for i in range(2)]
    with pytest.raises(DecodeError, match="a budget decodes the mean consensus"):
        consensus(
            states, method="majority", budget=Budget(max_macs=10**9), cost_model=_simple(QUICK)
        )


def test_min_scale_consensus_reaches_the_scale_with_voted_paths_only() -> None:

    states = []
    for i in range(3):  # identity edges favoured, as a tight cost target leaves them
        s = SearchState.random(QUICK, seed=60 + i, scale=2.0)
        s.beta_logits = {
            n: v + np.array([3.0 if k == "skip" else 0.0 for k in s.layout.beta_kinds(n)])
            for n, v in s.beta_logits.items()
        }
        states.append(s)
    assert consensus(states, paths=2).architecture.deepest_scale < 2
    r = consensus(states, paths=2, min_scale=2)
    assert r.architecture.deepest_scale == 2 and r.architecture.meta["min_scale"] == 2
    seeds = [decode(s, paths=2, min_scale=2) for s in states]
    assert all(a.deepest_scale == 2 for a in seeds)
    voted = {p.edges for a in seeds for p in a.paths}
    assert {p.edges for p in r.architecture.paths} <= voted
    with pytest.raises(DecodeError, match="min_scale decodes the mean consensus"):
        consensus(states, paths=2, method="majority", min_scale=2)
    # under a budget: each seed keeps a path that deep, and so does the consensus
    from msnas_graph.budget import Budget, budgeted_decode, network_cost

    model = _simple(QUICK)(None)
    budget = Budget(max_macs=network_cost(r.architecture.edges, model).macs)
    assert (
        consensus(
            states, paths=2, budget=budget, cost_model=_simple(QUICK)
        ).architecture.deepest_scale
        < 2
    )
    b = consensus(states, paths=2, budget=budget, cost_model=_simple(QUICK), min_scale=2)
    assert b.architecture.deepest_scale == 2 and b.architecture.meta["min_scale"] == 2
    assert network_cost(b.architecture.edges, model).macs <= budget.max_macs
    seeds = [budgeted_decode(s, budget, model, 2, min_scale=2) for s in states]
    assert all(a.architecture.deepest_scale == 2 for a in seeds)
    voted = {p.edges for a in seeds for p in a.architecture.paths}
    assert {p.edges for p in b.architecture.paths} <= voted

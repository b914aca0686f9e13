"""Decision diagnostics on hand-made states: decided, undecided, tied, flipped."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from msnas_graph.decode import decode, decode_cell
from msnas_graph.diagnostics import DECIDED_LOG_RATIO, DECIDED_MAX_ENTROPY, diagnose
from msnas_graph.errors import StateError
from msnas_graph.operations import DEFAULT_OPERATIONS
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

# the paper's operations (the tests name them), at the quick preset's size
QUICK = SearchSpace.preset("quick", ops=[*DEFAULT_OPERATIONS, "none"])


def decided_state(space: SearchSpace = QUICK, big: float = 5.0) -> SearchState:
    """Every decision has a clear winner that is not the all-zero state's tie-break choice:
    the last decodable op, the last input, the last incoming kind."""
    state = SearchState.zeros(space)
    last_op = max(i for i, o in enumerate(space.ops) if o != "none")
    for c in space.cell_types:
        for b in range(space.blocks):
            state.alpha_logits[c][b][:, last_op] = big
            state.p_logits[c][b][-1] = big
    for beta in state.beta_logits.values():
        beta[-1] = big
    return state


def test_decided_state() -> None:
    state = decided_state()
    d = diagnose(state, paths=3)
    assert d.cells and d.nodes
    assert all(x.decided for x in d.decisions)
    assert all(x.log_ratio >= DECIDED_LOG_RATIO and x.margin > 0.5 for x in d.decisions)
    assert all(x.norm_entropy < 0.5 for x in d.decisions)
    assert d.warning() is None and not d.undecided
    assert d.path_set.edges_vs_prior > 0 and d.path_set.blocks_vs_prior == len(d.cells)
    m = d.flat_metrics()
    assert (m["cell_decided"], m["node_decided"]) == (m["cell_total"], m["node_total"])
    assert f"{len(d.cells)} of {len(d.cells)} cell decisions" in d.summary()
    assert f"differs from the untrained prior in {d.path_set.edges_vs_prior} edges" in d.summary()
    # node decisions: a single-input node decides nothing and is not counted
    assert {x.where for x in d.nodes} == {
        str(n) for n in state.graph.searchable_nodes if len(state.graph.node_kinds(n)) > 1
    }
    for x in d.nodes:
        assert x.log_ratio == pytest.approx(5.0)  # the logit gap


def test_chosen_matches_the_decoder() -> None:
    state = SearchState.random(QUICK, seed=7)
    d = diagnose(state)
    for x in d.cells:
        c, b = x.where.split(".b")
        kept = decode_cell(state, c).blocks[int(b) - 1]
        assert x.chosen == " + ".join(f"{i.op}({i.source_name})" for i in kept)
    assert d.path_set.edges == len(decode(state).edges)


def test_undecided_all_zero_state() -> None:
    d = diagnose(SearchState.zeros(QUICK))
    assert not any(x.decided for x in d.decisions)
    assert all(x.margin == 0.0 and x.log_ratio == 0.0 for x in d.decisions)
    assert all(x.norm_entropy == pytest.approx(1.0) for x in d.decisions)
    assert d.path_set.gap == 0.0 and d.path_set.edges_vs_prior == 0
    assert d.undecided
    warning = d.warning()
    assert warning is not None and "\n" not in warning
    assert "has not decided" in warning and "--arch-lr" in warning and "--arch-steps" in warning
    assert "equals the untrained prior" in d.summary()


def test_noise_level_logits_are_undecided() -> None:
    # issue 8: after a short search every logit lay within +-0.004 of zero
    state = SearchState.random(QUICK, seed=3, scale=0.004)
    d = diagnose(state)
    assert sum(x.decided for x in d.decisions) == 0
    assert d.warning() is not None


def test_tied_maxima_give_margin_zero() -> None:
    state = decided_state()
    ops = QUICK.ops
    a, b = ops.index("sep_conv_3x3"), ops.index("avg_pool_3x3")
    state.alpha_logits["keep"][0][0, [a, b]] = 7.0  # block 1 has one input: two ops tie
    node = next(n for n in state.graph.searchable_nodes if len(state.graph.node_kinds(n)) == 3)
    state.beta_logits[node][:] = [4.0, 4.0, 0.0]  # two kinds tie at this node
    d = diagnose(state)
    cell = next(x for x in d.cells if x.where == "keep.b1")
    assert cell.margin == 0.0 and cell.log_ratio == 0.0 and not cell.decided
    assert cell.chosen == "sep_conv_3x3(in)"  # the documented tie-break: earlier op
    nd = next(x for x in d.nodes if x.where == str(node))
    assert nd.margin == 0.0 and not nd.decided
    assert nd.chosen == state.graph.node_kinds(node)[0]  # the earlier kind
    assert sum(not x.decided for x in d.decisions) == 2


def test_flips_are_counted_against_a_previous_state() -> None:
    before = decided_state()
    after = decided_state()
    assert diagnose(after, previous=before).flips == 0
    after.alpha_logits["keep"][1][:, 0] = 9.0  # keep.b2 switches to the first op
    node = next(n for n in after.graph.searchable_nodes if len(after.graph.node_kinds(n)) > 1)
    after.beta_logits[node][0] = 9.0  # one node switches kind
    d = diagnose(after, previous=before)
    assert d.flips == 2
    assert {x.where for x in d.decisions if x.flipped} == {"keep.b2", str(node)}
    assert "2 decisions flipped" in d.summary() and d.flat_metrics()["flips"] == 2
    assert d.path_set.changed is not None
    assert diagnose(after).flips is None and diagnose(after).flat_metrics()["flips"] == 0


def test_previous_state_of_another_space_is_refused() -> None:
    with pytest.raises(StateError, match="previous state is of space 'tiny'"):
        diagnose(SearchState.zeros(QUICK), previous=SearchState.zeros(SearchSpace.preset("tiny")))


def test_two_inputs_per_block() -> None:
    space = QUICK.model_copy(update={"inputs_per_block": 2})
    state = decided_state(space)
    d = diagnose(state, inputs_per_block=2)
    b2 = next(x for x in d.cells if x.where == "keep.b2")
    assert "+" in b2.chosen  # both inputs kept, described together
    kept = decode_cell(state, "keep", 2).blocks[1]
    assert b2.chosen == " + ".join(f"{i.op}({i.source_name})" for i in kept)
    assert b2.decided  # each kept input's op is far ahead of its next op


def test_paths_gap_and_prior_distance() -> None:
    state = decided_state()
    d = diagnose(state, paths=2)
    scores = [p.path_score for p in decode(state, paths=3).paths]
    assert d.path_set.gap == pytest.approx(scores[1] - scores[2])
    arch, prior = decode(state, paths=2), decode(SearchState.zeros(QUICK), paths=2)
    assert d.path_set.edges_vs_prior == len(set(arch.edges) ^ set(prior.edges))
    every = diagnose(SearchState.zeros(SearchSpace.preset("tiny")), paths=14)
    assert every.path_set.gap is None  # every path kept: no N_l + 1


def test_outputs_are_json_and_flat_numbers() -> None:
    d = diagnose(SearchState.random(QUICK, seed=1), previous=SearchState.random(QUICK, seed=2))
    text = json.dumps(d.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["summary"] == d.summary() and len(back["cells"]) == len(d.cells)
    flat = d.flat_metrics()
    assert {"cell_decided", "node_total", "min_margin", "flips", "edges_vs_prior"} <= set(flat)
    assert all(isinstance(v, (int, float)) and not math.isnan(v) for v in flat.values())
    assert str(d).startswith(d.summary()) and str(d).count("\n") == len(d.decisions)


def test_random_state_has_finite_metrics() -> None:
    state = SearchState.random(QUICK, seed=4)
    assert np.isfinite(diagnose(state).flat_metrics()["min_log_ratio"])


def test_near_uniform_weights_are_not_decided_however_far_the_winner_leads() -> None:
    """Issue 19: six weights 0.12-0.27 around a uniform 0.167 were "decided" (log-ratio 0.30,
    normalised entropy 0.97): the entropy bound now says they are not."""
    tiny = SearchSpace.preset("tiny")  # 3 decodable ops: block 2 chooses among 2 x 3
    state = SearchState.zeros(tiny)
    weights = np.array([[0.27, 0.15, 0.13], [0.20, 0.13, 0.12]])
    p = weights.sum(axis=1)
    state.p_logits["keep"][1][:] = np.log(p)
    alpha = np.full((2, len(tiny.ops)), -60.0)  # "none" at ~1e-26
    alpha[:, [tiny.ops.index(o) for o in tiny.ops if o != "none"]] = np.log(weights / p[:, None])
    state.alpha_logits["keep"][1][:] = alpha
    d = next(x for x in diagnose(state, paths=2).cells if x.where == "keep.b2")
    assert d.chosen == "sep_conv_3x3(in)" and d.candidates == 6
    assert d.weight == pytest.approx(0.27) and d.runner_up_weight == pytest.approx(0.20)
    assert d.log_ratio == pytest.approx(math.log(0.27 / 0.20)) and d.log_ratio > DECIDED_LOG_RATIO
    assert 0.97 < d.norm_entropy < 0.98 and d.norm_entropy > DECIDED_MAX_ENTROPY
    assert not d.decided
    lenient = diagnose(state, paths=2, max_entropy=1.0)  # the log-ratio alone: as before
    assert next(x for x in lenient.cells if x.where == "keep.b2").decided
    assert diagnose(state).to_dict()["max_norm_entropy"] == DECIDED_MAX_ENTROPY


def test_a_clear_winner_among_many_is_decided() -> None:
    tiny = SearchSpace.preset("tiny")
    state = SearchState.zeros(tiny)
    state.alpha_logits["keep"][1][0, 0] = 2.0  # the automatic lr's target: a logit move of ~2
    state.p_logits["keep"][1][0] = 2.0
    d = next(x for x in diagnose(state, paths=2).cells if x.where == "keep.b2")
    assert d.norm_entropy < DECIDED_MAX_ENTROPY and d.decided


def test_the_warning_names_both_criteria() -> None:
    warning = diagnose(SearchState.zeros(QUICK)).warning()
    assert warning is not None and f"normalised entropy of {DECIDED_MAX_ENTROPY} or less" in warning

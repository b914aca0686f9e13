from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msnas_graph.architecture import Architecture
from msnas_graph.decode import decode, decode_cell
from msnas_graph.errors import ArchitectureError, DecodeError, StateError
from msnas_graph.graph import Edge, NodeId
from msnas_graph.paths import brute_force_paths, edge_scores
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

PRESETS = st.sampled_from(["tiny", "quick"])


@given(preset=PRESETS, seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 5))
def test_state_json_round_trip_is_identity(preset: str, seed: int, scale: float) -> None:
    state = SearchState.random(SearchSpace.preset(preset), seed=seed, scale=scale)
    again = SearchState.from_json(state.to_json())
    assert again == state
    assert again.content_hash == state.content_hash
    for node, v in state.beta_logits.items():
        assert np.array_equal(again.beta_logits[node], v)  # bit-exact floats


@given(preset=PRESETS, seed=st.integers(0, 10_000), paths=st.integers(1, 8))
def test_decode_is_deterministic_and_round_trips(preset: str, seed: int, paths: int) -> None:
    state = SearchState.random(SearchSpace.preset(preset), seed=seed)
    a = decode(state, paths=paths)
    b = decode(SearchState.from_json(state.to_json()), paths=paths)
    assert a == b and a.content_hash == b.content_hash
    assert Architecture.from_json(a.to_json()) == a
    assert set(a.edges) == {e for p in a.paths for e in p.edges}
    a.validate()


@given(seed=st.integers(0, 10_000), paths=st.integers(1, 14))
def test_decoded_paths_are_the_brute_force_best(seed: int, paths: int) -> None:
    state = SearchState.random(SearchSpace.preset("tiny"), seed=seed)
    arch = decode(state, paths=paths)  # default score: relative to uniform
    ref = brute_force_paths(state.graph, edge_scores(state))[:paths]
    assert [p.edges for p in arch.paths] == [p.edges for p in ref]


def test_uniform_state_uses_the_documented_tie_break() -> None:
    # all beta logits zero: every node's kinds are equally weighted; the tie-break decides
    state = SearchState.zeros(SearchSpace.preset("tiny"))
    arch = decode(state, paths=1)
    ref = brute_force_paths(state.graph, edge_scores(state))[0]
    assert arch.paths[0].edges == ref.edges


def test_cell_decoding_picks_the_strongest_non_none_edge() -> None:
    space = SearchSpace.preset("tiny")  # ops: sep_conv_3x3, avg_pool_3x3, skip_connect, none
    state = SearchState.zeros(space)
    none = space.ops.index("none")
    state.alpha_logits["keep"][1][1, none] = 50.0  # 'none' dominates block 2, input b1 ...
    state.alpha_logits["keep"][1][0, 1] = 3.0  # ... but it is never chosen: avg_pool from in
    state.alpha_logits["keep"][0][0, 2] = 2.0  # block 1: skip_connect
    cell = decode_cell(state, "keep")
    assert [(i.source, i.op) for i in cell.blocks[0]] == [(0, "skip_connect")]
    assert [(i.source, i.op) for i in cell.blocks[1]] == [(0, "avg_pool_3x3")]
    two = decode_cell(state, "keep", inputs_per_block=2)
    assert [i.source for i in two.blocks[1]] == [0, 1]
    assert all(i.op != "none" for b in two.blocks for i in b)


def test_decode_rejects_too_many_paths() -> None:
    state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
    with pytest.raises(DecodeError, match="ask for at most 14"):
        decode(state, paths=15)


def test_state_from_another_space_is_rejected() -> None:
    tiny = SearchState.random(SearchSpace.preset("tiny"), seed=0).to_dict()
    tiny["space"] = SearchSpace.preset("quick").to_dict()
    with pytest.raises(StateError, match="not in the space|does not match|do not match"):
        SearchState.from_dict(tiny)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="x"), "not a search state"),
        (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
        (lambda d: d.pop("beta_logits"), "missing field(s) beta_logits"),
        (lambda d: d["alpha_logits"]["keep"].pop(), "blocks, the space has"),
        (lambda d: d["beta_logits"]["L1.s0"].pop("skip"), "kinds ['keep'], expected"),
        (lambda d: d["beta_logits"].update({"L9.s9": {}}), "node not in the space"),
    ],
)
def test_malformed_states_give_one_line_errors(mutate, message: str) -> None:
    d = json.loads(SearchState.random(SearchSpace.preset("tiny"), seed=0).to_json())
    mutate(d)
    with pytest.raises(StateError) as info:
        SearchState.from_dict(d, "s.json")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("s.json: ")


def test_architecture_file_errors(tmp_path) -> None:
    arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
    d = arch.to_dict()
    d["edges"].append("L1.s0>L2.s0:contract")  # not an edge of the space
    with pytest.raises(ArchitectureError, match="content hash"):
        Architecture.from_dict(d)
    d.pop("content_hash")
    with pytest.raises(ArchitectureError, match="not in the space"):
        Architecture.from_dict(d)
    bad = tmp_path / "a.json"
    bad.write_text("{not json")
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        Architecture.load(bad)
    with pytest.raises(ArchitectureError, match="no such architecture file"):
        Architecture.load(tmp_path / "nope.json")


def test_architecture_validation_catches_dangling_nodes() -> None:
    state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
    arch = decode(state, paths=1)
    dangling = Edge(NodeId(0, 0), NodeId(1, 1), "contract")
    broken = Architecture(arch.space, [*arch.edges, dangling], arch.cells | decode(state, 14).cells)
    if dangling not in arch.edges:
        with pytest.raises(ArchitectureError, match="does not reach an output"):
            broken.validate()


@pytest.mark.parametrize(
    ("fields", "edges", "deepest", "warns"),
    [
        ({}, ["L0.s0>L1.s0:skip", "L1.s0>L2.s0:keep", "L2.s0>L3.s0:skip"], 0, True),
        ({}, ["L0.s0>L1.s1:contract", "L1.s1>L2.s1:skip", "L2.s1>L3.s0:expand"], 1, False),
        ({"scales": 1}, ["L0.s0>L1.s0:keep", "L1.s0>L2.s0:keep", "L2.s0>L3.s0:skip"], 0, False),
        (
            {"output_scales": (1,)},
            ["L0.s0>L1.s1:contract", "L1.s1>L2.s1:skip", "L2.s1>L3.s1:keep"],
            1,
            False,
        ),
    ],
)
def test_context_warning_only_where_the_network_never_leaves_its_finest_output(
    fields: dict, edges: list[str], deepest: int, warns: bool
) -> None:
    space = SearchSpace.preset("tiny", **fields)
    cells = decode(SearchState.zeros(space), paths=1).cells
    arch = Architecture(space, [Edge.parse(e) for e in edges], cells)
    assert arch.deepest_scale == deepest
    warning = arch.context_warning()
    assert (warning is not None) == warns
    if warns:
        assert warning.startswith("the network never leaves scale 0 (of 0..1)")


def test_str_forms_are_readable() -> None:
    state = SearchState.random(SearchSpace.preset("quick"), seed=0)
    arch = decode(state, paths=3)
    text = str(arch)
    assert ("path 1:" in text and "cell keep:" in text) or "cell" in text
    assert "strongest network edges" in str(state)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(cells=[]), "malformed architecture"),
        (lambda d: d.update(meta=[1]), "meta: expected a mapping"),
        (lambda d: d["cells"]["keep"].update(cell_type="expand"), "holds a 'expand' cell"),
        (lambda d: d["paths"][0].update(edges=[]), "not a chain of edges"),
        (lambda d: d["paths"][0]["edges"].pop(), "not a chain of edges"),
    ],
)
def test_inconsistent_architecture_documents(mutate, message: str) -> None:
    space = SearchSpace.preset("tiny")
    d = json.loads(decode(SearchState.zeros(space), paths=2).to_json())
    d.pop("content_hash")
    if "keep" not in d["cells"]:
        pytest.skip("decoded architecture has no keep cell")
    mutate(d)
    with pytest.raises(ArchitectureError, match=message):
        Architecture.from_dict(d)


def test_state_copies_the_arrays_it_is_given() -> None:
    state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
    beta = dict(state.beta_logits)
    again = SearchState(state.space, state.alpha_logits, state.p_logits, beta)
    next(iter(beta.values()))[0] = float("nan")
    again.validate()  # unaffected by the caller's later mutation


def test_binary_files_are_refused_in_one_line(tmp_path) -> None:
    from msnas_graph.spec import load_space

    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(Exception, match="not a text file"):
        load_space(p)
    with pytest.raises(StateError, match="not a text file"):
        SearchState.load(p)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("paths", "min_scale"), [(1, 2), (2, 1), (2, 2), (3, 2)])
def test_min_scale_keeps_the_best_set_with_a_path_that_deep(
    seed: int, paths: int, min_scale: int
) -> None:
    """Against brute force over every set of ``paths`` paths: the chosen set reaches
    ``min_scale`` and no set that does scores more."""
    import itertools

    space = SearchSpace.preset("quick")
    state = SearchState.random(space, seed=seed, scale=3.0)
    state.beta_logits = {  # identity edges favoured, as a cost term leaves them
        n: v + np.array([2.0 if k == "skip" else 0.0 for k in state.layout.beta_kinds(n)])
        for n, v in state.beta_logits.items()
    }
    arch = decode(state, paths=paths, min_scale=min_scale)
    assert arch.deepest_scale >= min_scale and arch.meta["min_scale"] == min_scale
    everything = brute_force_paths(state.graph, edge_scores(state))
    best = max(
        sum(p.path_score for p in subset)
        for subset in itertools.combinations(everything, paths)
        if any(max(p.scales) >= min_scale for p in subset)
    )
    assert sum(p.path_score for p in arch.paths) == pytest.approx(best, abs=1e-9)
    plain = decode(state, paths=paths)
    if plain.deepest_scale >= min_scale:  # nothing to change: the plain decode, same hash
        assert arch.content_hash == plain.content_hash and "min_scale" not in plain.meta


def test_min_scale_beyond_the_space_is_refused() -> None:
    state = SearchState.zeros(SearchSpace.preset("quick"))
    with pytest.raises(DecodeError, match="reach scale 2 at most; give --min-scale 2 or less"):
        decode(state, paths=2, min_scale=3)

"""Tests for msnas_graph.diff: empty self-diffs, symmetry, a hand-built change, JSON, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msnas_graph.architecture import Architecture
from msnas_graph.decode import decode
from msnas_graph.diff import ArchDiff, BlockChange, diff
from msnas_graph.errors import ArchitectureError
from msnas_graph.genotype import BlockInput, CellGenotype
from msnas_graph.graph import Edge, NodeId, Supergraph
from msnas_graph.paths import Path, count_paths
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

SPACES = {name: SearchSpace.preset(name) for name in ("tiny", "quick")}
GRAPHS = {name: Supergraph(space) for name, space in SPACES.items()}


@st.composite
def decoded(draw: st.DrawFn, preset: str | None = None) -> tuple[str, SearchState, int]:
    name = preset or draw(st.sampled_from(sorted(SPACES)))
    seed = draw(st.integers(0, 10_000))
    paths = draw(st.integers(1, min(count_paths(GRAPHS[name]), 6)))
    return name, SearchState.random(SPACES[name], seed=seed, graph=GRAPHS[name]), paths


@settings(max_examples=40, deadline=None)
@given(decoded())
def test_diff_with_itself_is_empty(case: tuple[str, SearchState, int]) -> None:
    _, state, paths = case
    d = diff(state, state, paths=paths)
    assert d.is_empty
    assert str(d) == "no differences"
    assert d.edge_overlap == 1.0 and d.path_overlap == 1.0
    assert d.a == d.b == decode(state, paths).content_hash
    assert diff(decode(state, paths), state, paths=paths) == d


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_swapping_exchanges_added_and_removed(data: st.DataObject) -> None:
    name, sa, pa = data.draw(decoded())
    _, sb, pb = data.draw(decoded(name))
    a, b = decode(sa, pa), decode(sb, pb)
    d, e = diff(a, b), diff(b, a)
    assert (e.a, e.b) == (d.b, d.a)
    assert e.nodes_added == d.nodes_removed and e.nodes_removed == d.nodes_added
    assert e.edges_added == d.edges_removed and e.edges_removed == d.edges_added
    assert e.paths_added == d.paths_removed and e.paths_removed == d.paths_added
    assert e.cells_added == d.cells_removed and e.cells_removed == d.cells_added
    assert e.cells_changed == {
        c: [BlockChange(ch.block, ch.after, ch.before) for ch in chs]
        for c, chs in d.cells_changed.items()
    }
    assert d.swapped() == e
    for x in (d, e):
        assert 0.0 <= x.edge_overlap <= 1.0 and 0.0 <= x.path_overlap <= 1.0
    assert d.edge_overlap == e.edge_overlap and d.path_overlap == e.path_overlap
    # Consistency with the architectures themselves.
    assert set(a.edges) - set(d.edges_removed) | set(d.edges_added) == set(b.edges)
    assert set(a.nodes) - set(d.nodes_removed) | set(d.nodes_added) == set(b.nodes)
    common = len(set(a.edges) & set(b.edges))
    assert d.edge_overlap == pytest.approx(common / len(set(a.edges) | set(b.edges)))
    assert list(d.edges_added) == sorted(d.edges_added, key=lambda x: x.sort_key)
    assert list(d.nodes_removed) == sorted(d.nodes_removed)
    if a == b:
        assert d.is_empty
    if not d.is_empty:
        assert a != b and str(d).startswith(f"diff {a.content_hash} -> {b.content_hash}")
    json.loads(d.to_json())


# ------------------------------------------------------------------------ hand-built


def _edge(text: str) -> Edge:
    src, kind, dst = text.split()
    return Edge(NodeId.parse(src), NodeId.parse(dst), kind)  # type: ignore[arg-type]


def _arch(edges: list[str], cells: dict[str, CellGenotype], score: float = 2.0) -> Architecture:
    es = tuple(_edge(t) for t in edges)
    arch = Architecture(SPACES["tiny"], es, cells, [Path(es, score)])
    arch.validate()
    return arch


def _keep_cell(op2: str) -> CellGenotype:
    return CellGenotype("keep", ((BlockInput(0, "sep_conv_3x3", 0.5),), (BlockInput(1, op2, 0.4),)))


STRAIGHT = ["L0.s0 keep L1.s0", "L1.s0 keep L2.s0", "L2.s0 keep L3.s0"]


def test_one_edge_and_one_op_changed() -> None:
    a = _arch(STRAIGHT, {"keep": _keep_cell("skip_connect")})
    changed = [STRAIGHT[0], "L1.s0 skip L2.s0", STRAIGHT[2]]
    b = _arch(changed, {"keep": _keep_cell("avg_pool_3x3")}, score=1.5)
    d = diff(a, b)
    assert not d.is_empty
    assert d.nodes_added == () and d.nodes_removed == ()
    assert d.edges_added == (_edge("L1.s0 skip L2.s0"),)
    assert d.edges_removed == (_edge("L1.s0 keep L2.s0"),)
    assert d.cells_changed == {
        "keep": [BlockChange(2, ((1, "skip_connect"),), ((1, "avg_pool_3x3"),))]
    }
    assert d.cells_added == {} and d.cells_removed == {} and d.space_changes == ()
    assert [p.edges for p in d.paths_added] == [b.paths[0].edges]
    assert [p.edges for p in d.paths_removed] == [a.paths[0].edges]
    assert d.edge_overlap == pytest.approx(2 / 4)
    assert d.path_overlap == 0.0
    lines = str(d).splitlines()
    assert "- L1.s0 -keep-> L2.s0" in lines
    assert "+ L1.s0 -skip-> L2.s0" in lines
    assert "~ keep b2: skip_connect(b1) -> avg_pool_3x3(b1)" in lines
    assert sum(line.startswith("+ path (score 1.5000) L0.s0 -keep->") for line in lines) == 1
    data = d.to_dict()
    assert data["format"] == "msnas-graph/arch-diff" and data["is_empty"] is False
    assert data["edges_added"] == ["L1.s0>L2.s0:skip"]
    assert data["cells_changed"] == {
        "keep": [
            {
                "block": 2,
                "before": [{"source": 1, "op": "skip_connect"}],
                "after": [{"source": 1, "op": "avg_pool_3x3"}],
            }
        ]
    }
    assert json.loads(d.to_json()) == data


def test_path_scores_and_weights_are_not_differences() -> None:
    a = _arch(STRAIGHT, {"keep": _keep_cell("skip_connect")}, score=2.0)
    b = _arch(STRAIGHT, {"keep": _keep_cell("skip_connect")}, score=2.5)
    assert a != b  # the scores differ...
    assert diff(a, b).is_empty  # ...but the network is the same


def test_cell_types_only_on_one_side() -> None:
    a = _arch(STRAIGHT, {"keep": _keep_cell("skip_connect")})
    contract = CellGenotype(
        "contract", ((BlockInput(0, "avg_pool_3x3"),), (BlockInput(0, "sep_conv_3x3"),))
    )
    expand = CellGenotype(
        "expand", ((BlockInput(0, "skip_connect"),), (BlockInput(1, "sep_conv_3x3"),))
    )
    c = _arch(
        ["L0.s0 contract L1.s1", "L1.s1 expand L2.s0", "L2.s0 skip L3.s0"],
        {"contract": contract, "expand": expand},
    )
    d = diff(a, c)
    assert d.cells_added == {"contract": contract, "expand": expand}
    assert d.cells_removed == {"keep": a.cells["keep"]}
    assert d.cells_changed == {}
    assert d.nodes_added == (NodeId(1, 1),) and d.nodes_removed == (NodeId(1, 0),)
    text = str(d)
    assert "+ cell contract: b1 = avg_pool_3x3(in); b2 = sep_conv_3x3(in)" in text
    assert "- cell keep: b1 = sep_conv_3x3(in); b2 = skip_connect(b1)" in text
    assert "- L1.s0" in text.splitlines() and "+ L1.s1" in text.splitlines()


def test_spaces_with_the_same_trellis_are_compared_by_id() -> None:
    wide = SearchSpace.preset("tiny", channels=8)
    a = decode(SearchState.random(SPACES["tiny"], seed=5), paths=2)
    b = decode(SearchState.random(wide, seed=5), paths=2)
    d = diff(a, b)
    assert d.space_changes == ("channels: 4 -> 8",)
    assert not d.is_empty
    assert d.edges_added == () and d.cells_changed == {}  # same logits, same choices
    assert "~ space channels: 4 -> 8" in str(d).splitlines()
    assert d.swapped().space_changes == ("channels: 8 -> 4",)


def test_different_trellises_cannot_be_diffed() -> None:
    a = decode(SearchState.random(SPACES["tiny"], seed=0), paths=1)
    b = decode(SearchState.random(SPACES["quick"], seed=0), paths=1)
    with pytest.raises(ArchitectureError, match=r"3 layers x 2 scales .* 4 x 3"):
        diff(a, b)


def test_wrong_type_is_rejected() -> None:
    state = SearchState.random(SPACES["tiny"], seed=0)
    with pytest.raises(TypeError, match="b must be an Architecture or a SearchState"):
        diff(state, "arch.json")  # type: ignore[arg-type]


def test_architectures_are_carried_but_not_compared() -> None:
    state = SearchState.random(SPACES["tiny"], seed=0)
    d = diff(state, state)
    assert isinstance(d.arch_a, Architecture) and d.arch_a == decode(state, 3)
    bare = ArchDiff(a=d.a, b=d.b)
    assert bare == d  # arch_a / arch_b take no part in equality
    assert "arch_a" not in d.to_dict() and "arch_a" not in repr(d)

"""The edge-kind table and the parameter layout agree with what the core builds."""

from __future__ import annotations

import pytest

from msnas_graph.decode import decode_cells
from msnas_graph.errors import SpecError
from msnas_graph.graph import NodeId, Supergraph
from msnas_graph.kinds import (
    CELL_TYPES,
    EDGE_KINDS,
    KIND_NAMES,
    carries_cell,
    cell_type_of,
    edge_kind,
    source_scale,
)
from msnas_graph.layout import ParameterLayout, source_name
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

PRESETS = ("tiny", "quick", "paper")


def test_table_rows_are_named_by_their_key_and_ordered() -> None:
    assert KIND_NAMES == ("contract", "keep", "expand", "skip")
    assert all(name == kind.name for name, kind in EDGE_KINDS.items())
    assert CELL_TYPES == ("contract", "keep", "expand")
    assert [k for k in KIND_NAMES if not carries_cell(k)] == ["skip"]
    assert {EDGE_KINDS[k].resample for k in KIND_NAMES} == {"maxpool", "none", "upsample"}
    assert len({k.letter for k in EDGE_KINDS.values()}) == len(EDGE_KINDS)


def test_every_kind_is_used_by_the_supergraph_with_its_scale_step() -> None:
    graph = Supergraph(SearchSpace.preset("paper"))
    assert {e.kind for e in graph.edges} == set(KIND_NAMES)
    for e in graph.edges:
        assert e.dst.scale - e.src.scale == EDGE_KINDS[e.kind].scale_step
        assert source_scale(e.kind, e.dst.scale) == e.src.scale


def test_cell_types_of_a_space_follow_the_table() -> None:
    space = SearchSpace(layers=3, scales=2, channels=4, edge_kinds=("keep", "skip"), input_size=32)
    assert space.cell_types == ("keep",)
    assert cell_type_of("skip") is None and cell_type_of("expand") == "expand"


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"unknown edge kind 'kep' .*did you mean 'keep'"):
        edge_kind("kep")


@pytest.mark.parametrize("preset", PRESETS)
def test_layout_shapes_equal_the_state_arrays(preset: str) -> None:
    state = SearchState.random(SearchSpace.preset(preset), seed=0)
    layout = ParameterLayout(state.space)
    assert layout.cell_types == tuple(state.alpha_logits) == tuple(state.p_logits)
    for c in layout.cell_types:
        assert [a.shape for a in state.alpha_logits[c]] == list(layout.alpha_shapes)
        assert [a.shape for a in state.p_logits[c]] == list(layout.p_shapes)
    assert tuple(state.beta_logits) == layout.beta_nodes
    saved = state.to_dict()["beta_logits"]
    for node in layout.beta_nodes:
        assert state.beta_logits[node].shape == layout.beta_shape(node)
        for kind in layout.beta_kinds(node):
            i = layout.beta_index(node, kind)
            assert state.beta_logits[node][i] == saved[str(node)][kind]


def test_block_b_reads_sources_0_to_b() -> None:
    layout = ParameterLayout(SearchSpace.preset("paper"))
    assert [tuple(layout.block_sources(b)) for b in range(3)] == [(0,), (0, 1), (0, 1, 2)]
    assert [source_name(j) for j in layout.block_sources(2)] == ["in", "b1", "b2"]
    with pytest.raises(SpecError, match="block 3 does not exist"):
        layout.block_sources(3)
    G = layout.cell_networkx("keep")
    assert sorted(u for u, _ in G.in_edges("b3")) == ["b1", "b2", "in"]
    assert G.number_of_edges() == 1 + 2 + 3 + 3  # candidate inputs + concat edges


def test_beta_index_of_a_missing_kind_is_refused() -> None:
    layout = ParameterLayout(SearchSpace.preset("tiny"))
    with pytest.raises(SpecError, match="has no 'contract' edge"):
        layout.beta_index(NodeId(1, 0), "contract")


@pytest.mark.parametrize("inputs", [1, 2])
def test_decoded_cells_read_only_their_block_sources(inputs: int) -> None:
    state = SearchState.random(SearchSpace.preset("quick"), seed=5)
    for cell in decode_cells(state, inputs).values():
        for b, block in enumerate(cell.blocks):
            assert {i.source for i in block} <= set(state.layout.block_sources(b))
            assert len(block) == min(inputs, len(state.layout.block_sources(b)))

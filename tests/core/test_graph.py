from __future__ import annotations

import networkx as nx
import pytest

from msnas_graph.errors import SpecError
from msnas_graph.graph import Edge, NodeId, Supergraph
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState


def test_trellis_is_a_diamond_pruned_to_paths() -> None:
    space = SearchSpace.preset("paper")
    g = Supergraph(space)
    for n in g.nodes:
        assert n.scale <= n.layer  # reachable from the input
        assert n.scale <= space.layers - n.layer  # reaches the output at scale 0
    G = g.to_networkx()
    assert nx.is_directed_acyclic_graph(G)
    for n in G.nodes:
        assert nx.has_path(G, "L0.s0", n) and nx.has_path(G, n, "L10.s0")
    # the widest layer of 10 layers x 5 scales reaches scale 4 only in layers 4..6
    assert {n.layer for n in g.nodes if n.scale == 4} == {4, 5, 6}


def test_keep_and_skip_are_distinct_edges() -> None:
    g = Supergraph(SearchSpace.preset("tiny"))
    G = g.to_networkx()
    assert set(G["L1.s0"]["L2.s0"]) == {"keep", "skip"}
    assert g.node_kinds(NodeId(2, 1)) == ("contract", "keep", "skip")


def test_edge_kinds_restrict_the_graph() -> None:
    space = SearchSpace(layers=4, scales=3, channels=8, edge_kinds=("keep",), input_size=64)
    g = Supergraph(space)
    assert all(n.scale == 0 for n in g.nodes)
    assert {e.kind for e in g.edges} == {"keep"}


def test_weights_attached_to_networkx() -> None:
    space = SearchSpace.preset("tiny")
    state = SearchState.random(space, seed=0)
    G = Supergraph(space).to_networkx(state)
    total = sum(d["weight"] for _, _, d in G.edges(data=True))
    assert total == pytest.approx(len(Supergraph(space).searchable_nodes))


def test_ids_parse_and_reject() -> None:
    assert NodeId.parse("L10.s4") == NodeId(10, 4)
    assert Edge.parse("L0.s0>L1.s1:contract").kind == "contract"
    with pytest.raises(SpecError, match="not a node id"):
        NodeId.parse("layer3")
    with pytest.raises(SpecError, match="unknown edge kind 'kep'"):
        Edge.parse("L0.s0>L1.s0:kep")


def test_str_is_readable() -> None:
    text = str(Supergraph(SearchSpace.preset("tiny")))
    assert "L2.s1 [8 ch]: contract<-L1.s0, keep<-L1.s1, skip<-L1.s1" in text

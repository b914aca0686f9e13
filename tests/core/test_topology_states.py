"""States searched on a fixed network (msnas_graph.topology): decoding, diagnostics and the
consensus treat them as searches of that network's cells alone."""

from __future__ import annotations

import pytest

from msnas_graph.consensus import consensus, mean_state
from msnas_graph.decode import decode, decode_cells
from msnas_graph.diagnostics import diagnose
from msnas_graph.errors import DecodeError, SpecError, StateError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState
from msnas_graph.topology import (
    TOPOLOGY,
    cell_types_used,
    check_topology,
    shared_topology,
    state_topology,
    with_topology,
)

QUICK = SearchSpace.preset("quick")


@pytest.fixture
def net():
    return decode(SearchState.random(QUICK, seed=11), paths=2).widen(16)


def _states(net, n=3):
    return [with_topology(SearchState.random(QUICK, seed=s), net) for s in range(n)]


def test_a_state_decodes_to_its_network_with_its_own_cells_whatever_the_paths(net) -> None:
    state = _states(net, 1)[0]
    for paths in (1, 2, 3):
        arch = decode(state, paths=paths, min_scale=1)
        assert arch.edges == net.edges and arch.paths == net.paths
        assert arch.space == net.space  # the network's width and glue
        assert set(arch.cells) == set(cell_types_used(net))
        assert all(arch.cells[c] == decode_cells(state)[c] for c in arch.cells)
    assert state_topology(state) == net
    assert state_topology(SearchState.random(QUICK, seed=0)) is None


def test_the_state_file_keeps_the_network(tmp_path, net) -> None:
    state = _states(net, 1)[0]
    back = SearchState.load(state.save(tmp_path / "s.json"))
    assert state_topology(back) == net
    assert decode(back) == decode(state)


def test_diagnostics_weigh_only_the_networks_cells(net) -> None:
    d = diagnose(_states(net, 1)[0], paths=3)
    assert d.nodes == ()
    used = set(cell_types_used(net))
    assert {x.where.split(".")[0] for x in d.cells} <= used
    assert d.path_set.edges_vs_prior == 0
    assert "cells differ from the untrained prior's" in d.summary()


@pytest.mark.parametrize("method", ["mean", "majority"])
def test_the_consensus_decides_only_the_cells_and_keeps_the_network(net, method) -> None:
    states = _states(net)
    r = consensus(states, paths=3, method=method, names=["a", "b", "c"])
    assert r.architecture.edges == net.edges and r.architecture.paths == net.paths
    assert {d.group for d in r.decisions} == {"cell"}
    assert {d.where.split(".")[0] for d in r.decisions} <= set(cell_types_used(net))
    assert r.group_agreement("node") is None and r.group_agreement("path") is None
    assert TOPOLOGY in mean_state(states).meta


def test_searches_of_different_networks_or_of_the_trellis_are_not_combined(net) -> None:
    other = decode(SearchState.random(QUICK, seed=12), paths=1)
    assert other.edges != net.edges
    mixed = [*_states(net, 2), with_topology(SearchState.random(QUICK, seed=5), other)]
    with pytest.raises(StateError, match="different networks"):
        consensus(mixed)
    with pytest.raises(StateError, match="different networks"):
        shared_topology([*_states(net, 1), SearchState.random(QUICK, seed=5)])
    with pytest.raises(DecodeError, match="no budget or min_scale"):
        consensus(_states(net), min_scale=2)


def test_a_network_of_another_trellis_is_refused_by_name(net) -> None:
    tiny = decode(SearchState.zeros(SearchSpace.preset("tiny")), paths=1)
    with pytest.raises(SpecError, match="layers 3 against the search's 4"):
        check_topology(QUICK, tiny)
    with pytest.raises(SpecError, match=r"another trellis: output_scales .*\(--set output_scales="):
        check_topology(QUICK.replace(output_scales=(0, 1)), net)
    check_topology(QUICK.replace(channels=4, partial_k=1), net)  # width and k may differ


@pytest.mark.parametrize("method", ["mean", "majority"])
def test_cells_searched_over_another_operation_set_replace_the_networks(net, method) -> None:
    rich = QUICK.replace(ops=("conv_3x3", "conv_3x3_dil4", "conv_5x5", "none"), blocks=3)
    check_topology(rich, net)
    states = [with_topology(SearchState.random(rich, seed=s), net) for s in (1, 2)]
    for arch in (decode(states[0]), consensus(states, method=method).architecture):
        assert arch.edges == net.edges and arch.paths == net.paths
        assert arch.space.ops == rich.ops and arch.space.blocks == 3
        assert arch.space.channels == net.space.channels  # the network's width
        assert all(len(g.blocks) == 3 for g in arch.cells.values())
    assert decode(states[0]).cells == {
        c: g for c, g in decode_cells(states[0]).items() if c in arch.cells
    }


def test_a_network_of_identity_edges_only_has_nothing_to_search() -> None:
    from msnas_graph.architecture import Architecture
    from msnas_graph.graph import Edge

    edges = [Edge.parse(f"L{i}.s0>L{i + 1}.s0:skip") for i in range(QUICK.layers)]
    with pytest.raises(SpecError, match="only identity edges"):
        check_topology(QUICK, Architecture(QUICK, edges, {}))

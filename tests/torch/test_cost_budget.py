"""The measured edge cost model adds up to the whole network's count."""

from __future__ import annotations

import pytest

from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
from msnas_graph.backends.torch.cost_model import edge_cost_model
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.budget import Budget, Cost, budgeted_decode, network_cost
from msnas_graph.decode import decode, decode_cells
from msnas_graph.errors import BackendError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState


def whole_network(arch, fusion: str, size: int) -> Cost:
    net = build_network(arch, fusion)
    macs, _ = count_macs_flops(net, (1, arch.space.in_channels, size, size))
    return Cost(count_parameters(net), macs)


@pytest.mark.parametrize(
    ("preset", "fusion", "size"),
    [("tiny", "concat", 32), ("tiny", "sum", 16), ("quick", "concat", 64), ("quick", "sum", 32)],
)
def test_edge_costs_add_up_to_the_network(preset: str, fusion: str, size: int) -> None:
    space = SearchSpace.preset(preset, num_classes=3)
    for seed, paths in ((0, 1), (1, 3), (2, 5)):
        state = SearchState.random(space, seed=seed)
        model = edge_cost_model(decode_cells(state), space, input_size=size, fusion=fusion)
        arch = decode(state, paths=paths)
        assert network_cost(arch.edges, model) == whole_network(arch, fusion, size)
        # built from the architecture itself (only its cell kinds): the same figure
        own = edge_cost_model(arch, input_size=size, fusion=fusion)
        assert network_cost(arch.edges, own) == whole_network(arch, fusion, size)


def test_budgeted_network_fits_when_built() -> None:
    state = SearchState.random(SearchSpace.preset("quick"), seed=4)
    model = edge_cost_model(decode_cells(state), state.space)
    free = budgeted_decode(state, Budget(), model, paths=3)
    half = budgeted_decode(state, Budget(max_macs=free.cost.macs // 2), model, paths=3)
    measured = whole_network(half.architecture, "concat", state.space.input_size)
    assert measured == half.cost and measured.macs <= free.cost.macs // 2


def test_bad_input_size_and_missing_space() -> None:
    state = SearchState.random(SearchSpace.preset("quick"), seed=0)
    with pytest.raises(BackendError, match="not divisible by 4"):
        edge_cost_model(decode_cells(state), state.space, input_size=30)
    with pytest.raises(BackendError, match="give the space"):
        edge_cost_model(decode_cells(state))


def test_latency_model_times_every_part_and_keeps_counts() -> None:
    state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
    cells = decode_cells(state)
    plain = edge_cost_model(cells, state.space, input_size=32)
    timed = edge_cost_model(cells, state.space, input_size=32, latency=True, repeats=2)
    assert plain.base.latency_ns == 0 and timed.base.latency_ns > 0
    for key, cost in plain.edges.items():  # same counts, and a time for every real cell
        got = timed.edges[key]
        assert (got.params, got.macs) == (cost.params, cost.macs)
        assert (got.latency_ns > 0) == (key[0] != "skip")
    assert all(c.latency_ns > 0 for c in timed.outputs.values())
    with pytest.raises(BackendError, match="repeats"):
        edge_cost_model(cells, state.space, latency=True, repeats=0)


def test_built_cost_counts_as_the_parts_and_times_the_whole_network() -> None:
    """``built_cost``: the parts' count, and with ``latency`` one whole timing in the named
    runtime; ``unet_cost(runtime=...)`` times the U-Net the same way (the reference of 0.5x)."""
    from msnas_graph.backends.torch.cost_model import built_cost, unet_cost

    arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=1), paths=2)
    counted = built_cost(arch, 16)
    assert counted == whole_network(arch, arch.space.fusion, 16) and counted.latency_ns == 0
    timed = built_cost(arch, 16, latency=True, runtime="eager", repeats=2)
    assert (timed.params, timed.macs) == (counted.params, counted.macs) and timed.latency_ns > 0
    unet = unet_cost(arch.space, 16, latency=True, runtime="eager", repeats=2)
    assert unet.latency_ns > 0 and unet.macs == unet_cost(arch.space, 16).macs
    with pytest.raises(BackendError, match="not divisible"):
        built_cost(arch, 15)

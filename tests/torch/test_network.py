"""FinalNetwork: structure from the architecture, forward/backward for random architectures,
fusion modes, input checks, and (being static) tracing."""

from __future__ import annotations

import pytest
import torch

from msnas_graph.backends.torch import FinalNetwork, build_network
from msnas_graph.backends.torch.nn.blocks import ConcatFusion
from msnas_graph.backends.torch.nn.cells import DiscreteCell
from msnas_graph.decode import decode
from msnas_graph.errors import BackendError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

QUICK = SearchSpace.preset("quick")
TINY = SearchSpace.preset("tiny")


def _x(space: SearchSpace, batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(
        batch, space.in_channels, size, size, generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("paths", [1, 2, 3, 4, 5])
def test_random_architectures_forward_backward(paths: int, fusion: str) -> None:
    torch.manual_seed(paths)
    arch = decode(SearchState.random(QUICK, seed=10 + paths), paths=paths)
    net = build_network(arch, fusion=fusion).train()
    # structure: one cell per kept non-skip edge, a fusion module per fusion node (concat only)
    assert set(net.cells) == {
        f"L{e.dst.layer}_s{e.dst.scale}_{e.kind}" for e in arch.edges if e.kind != "skip"
    }
    assert all(isinstance(c, DiscreteCell) for c in net.cells.values())
    if fusion == "concat":
        assert len(net.fusions) == len(arch.fusion_nodes)
        assert all(isinstance(f, ConcatFusion) for f in net.fusions.values())
    else:
        assert len(net.fusions) == 0
    y = net(_x(QUICK))
    assert y.shape == (2, QUICK.num_classes, 32, 32)
    y.square().mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


def test_cells_follow_the_genotypes() -> None:
    arch = decode(SearchState.random(QUICK, seed=5), paths=3, inputs_per_block=2)
    net = build_network(arch)
    for key, cell in net.cells.items():
        kind = key.rsplit("_", 1)[1]
        assert cell.genotype == arch.cells[kind]
        for block, inputs in zip(cell.blocks, arch.cells[kind].blocks, strict=True):
            assert block.sources == tuple(i.source for i in inputs)
            assert len(block.ops) == len(inputs)


def test_fusion_default_comes_from_the_space_and_unknown_fusion_raises() -> None:
    sum_space = TINY.model_copy(update={"fusion": "sum"})
    arch = decode(SearchState.random(sum_space, seed=1), paths=3)
    assert build_network(arch).fusion == "sum"
    assert build_network(arch, fusion="concat").fusion == "concat"
    with pytest.raises(BackendError, match=r"unknown fusion 'cat'.*did you mean 'concat'"):
        build_network(arch, fusion="cat")


def test_head_reads_the_kept_output_nodes() -> None:
    space = QUICK.model_copy(update={"output_scales": (0, 1, 2)})
    arch = decode(SearchState.random(space, seed=0), paths=5)
    net = build_network(arch)
    assert set(net.head.convs) == {f"L{o.layer}_s{o.scale}" for o in arch.output_nodes}
    assert net(_x(space)).shape == (2, space.num_classes, 32, 32)


def test_bad_input_raises_backend_error() -> None:
    arch = decode(SearchState.random(QUICK, seed=0), paths=3)
    net = build_network(arch)
    with pytest.raises(BackendError, match="input has 3 channels, the space expects in_channels=1"):
        net(torch.zeros(1, 3, 32, 32))
    factor = net._factor
    if factor > 1:
        with pytest.raises(BackendError, match=f"not divisible by {factor}"):
            net(torch.zeros(1, 1, 32 + factor // 2, 32))


def test_static_structure_exports() -> None:
    """No data-dependent control flow: ``torch.export`` captures a graph that reproduces the
    eager output on another input."""
    arch = decode(SearchState.random(QUICK, seed=2), paths=3)
    net: FinalNetwork = build_network(arch).eval()
    x = _x(QUICK, batch=1)
    exported = torch.export.export(net, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x * 2), net(x * 2))

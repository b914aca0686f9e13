"""The ``lean`` cell glue (``SearchSpace.cell_glue``): which cells keep a preprocess and a
projection, and that costs, exports and files follow it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
from msnas_graph.backends.torch.cost_model import edge_cost_model
from msnas_graph.backends.torch.export import export_onnx
from msnas_graph.backends.torch.nn.blocks import Preprocess, Projection
from msnas_graph.backends.torch.nn.cells import DiscreteCell
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.search_cost import SearchCostTable, measure_search_costs
from msnas_graph.budget import Cost, network_cost
from msnas_graph.decode import decode
from msnas_graph.errors import BackendError, SpecError
from msnas_graph.genotype import CellGenotype
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

DENSE = ("conv_3x3", "conv_3x3_dil2", "skip_connect", "avg_pool_3x3", "none")


def genotype(kind: str, *blocks: tuple[int, str]) -> CellGenotype:
    cell = {"contract": "contract", "expand": "expand", "keep": "keep"}[kind]
    return CellGenotype.from_dict(
        {"cell_type": cell, "blocks": [[{"source": s, "op": o}] for s, o in blocks]}
    )


def test_a_chain_of_dense_convolutions_has_no_preprocess_and_no_projection() -> None:
    g = genotype("contract", (0, "conv_3x3"), (1, "conv_3x3_dil2"))
    cell = DiscreteCell("contract", 8, 16, g, glue="lean")
    assert isinstance(cell.preprocess, nn.Identity) and isinstance(cell.projection, nn.Identity)
    assert cell.blocks[0].ops[0][1].in_channels == 8  # the first convolution changes the width
    assert cell(torch.randn(2, 8, 12, 12)).shape == (2, 16, 6, 6)
    darts = DiscreteCell("contract", 8, 16, g)
    assert isinstance(darts.preprocess, Preprocess) and isinstance(darts.projection, Projection)
    x = torch.randn(1, 8, 32, 32)
    assert count_macs_flops(cell, tuple(x.shape))[0] < count_macs_flops(darts, tuple(x.shape))[0]


@pytest.mark.parametrize(
    ("op", "kernel", "dilation"), [("conv_3x3_dil4", 3, 4), ("conv_5x5", 5, 1)]
)
def test_every_dense_convolution_changes_the_width_itself(
    op: str, kernel: int, dilation: int
) -> None:
    g = genotype("contract", (0, op), (1, "conv_3x3"))
    cell = DiscreteCell("contract", 8, 16, g, glue="lean")
    conv = cell.blocks[0].ops[0][1]
    assert isinstance(cell.preprocess, nn.Identity) and conv.in_channels == 8
    assert conv.kernel_size == (kernel, kernel) and conv.dilation == (dilation, dilation)
    assert cell(torch.randn(2, 8, 12, 12)).shape == (2, 16, 6, 6)


def test_lean_keeps_what_the_genotype_needs() -> None:
    # an identity reads the input of a width-changing edge: the preprocess stays
    g = genotype("contract", (0, "skip_connect"), (1, "conv_3x3"))
    assert isinstance(DiscreteCell("contract", 8, 16, g, glue="lean").preprocess, Preprocess)
    # same width: no preprocess whatever reads the input
    g = genotype("keep", (0, "avg_pool_3x3"), (1, "conv_3x3"))
    assert isinstance(DiscreteCell("keep", 8, 8, g, glue="lean").preprocess, nn.Identity)
    # two blocks nobody reads: the projection of those two stays
    g = genotype("keep", (0, "conv_3x3"), (0, "conv_3x3"), (1, "conv_3x3"))
    cell = DiscreteCell("keep", 8, 8, g, glue="lean")
    assert cell.outputs == (2, 3) and isinstance(cell.projection, Projection)
    assert cell.projection.conv.in_channels == 16
    # expand: the 1x1 preprocess runs before the upsampling, at the coarse scale
    g = genotype("expand", (0, "conv_3x3"), (1, "conv_3x3"))
    cell = DiscreteCell("expand", 16, 8, g, glue="lean")
    assert cell.preprocess_first and isinstance(cell.preprocess, Preprocess)
    assert cell(torch.randn(1, 16, 5, 5)).shape == (1, 8, 10, 10)
    with pytest.raises(BackendError, match="unknown cell glue 'thin'"):
        DiscreteCell("keep", 8, 8, g, glue="thin")


def test_the_field_is_written_only_when_lean_so_old_hashes_hold(tmp_path) -> None:
    state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
    arch = decode(state, paths=2)
    assert arch.content_hash == "fae147aae3e96c4e"  # the hash files written before it existed
    assert "cell_glue" not in arch.to_dict()["space"]
    lean = arch.with_cell_glue("lean")
    assert lean.content_hash != arch.content_hash
    assert Architecture.load(lean.save(tmp_path / "a.json")) == lean
    assert lean.with_cell_glue("darts") == arch
    with pytest.raises(SpecError, match="cell_glue"):
        SearchSpace.preset("tiny", cell_glue="thin")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lean_edge_costs_add_up_to_the_network(seed: int) -> None:
    space = SearchSpace.preset("quick", ops=DENSE, cell_glue="lean")
    arch = decode(SearchState.random(space, seed=seed), paths=3)
    net = build_network(arch)
    macs, _ = count_macs_flops(net, (1, 1, 32, 32))
    model = edge_cost_model(arch, input_size=32)
    assert network_cost(arch.edges, model) == Cost(count_parameters(net), macs)
    darts = build_network(arch.with_cell_glue("darts"))
    assert macs < count_macs_flops(darts, (1, 1, 32, 32))[0]


def test_lean_network_exports_and_onnxruntime_agrees(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    space = SearchSpace.preset("quick", ops=DENSE, cell_glue="lean")
    net = build_network(decode(SearchState.random(space, seed=3), paths=3))
    report = export_onnx(net, tmp_path / "lean.onnx", (1, 1, 32, 32), exporter="torchscript")
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4


def test_the_search_cost_table_counts_the_lean_glue() -> None:
    space = SearchSpace.preset("quick", ops=DENSE, cell_glue="darts")
    darts = measure_search_costs(space, 32)
    lean = measure_search_costs(space.replace(cell_glue="lean"), 32)
    assert lean.ops == darts.ops and lean.base == darts.base
    assert not (darts.entry or darts.projection or darts.preprocess)
    for key, fixed in darts.cells.items():
        assert 0 <= lean.cells[key] < fixed
    assert lean.cells[("expand", 0)] > 0 == lean.cells[("keep", 0)]  # the coarse 1x1 stays
    # a contract cell's first convolution reads half the width
    assert lean.entry[("contract", 1, "conv_3x3")] == lean.ops[(1, "conv_3x3")] / 2
    assert lean.entry[("contract", 1, "skip_connect")] == 0 < lean.preprocess[("contract", 1)]
    assert SearchCostTable.from_dict(lean.to_dict()) == lean  # kept in search checkpoints


def test_the_preprocess_is_built_only_for_the_readers_that_need_it() -> None:
    g = genotype("contract", (0, "avg_pool_3x3"), (0, "conv_3x3"))
    cell = DiscreteCell("contract", 8, 16, g, glue="lean")
    assert isinstance(cell.preprocess, Preprocess)
    assert cell.blocks[1].raw == (True,) and cell.blocks[1].ops[0][1].in_channels == 8
    assert cell.blocks[0].raw == (False,) and cell.outputs == (1, 2)
    assert cell(torch.randn(1, 8, 8, 8)).shape == (1, 16, 4, 4)

"""A measured cost table for budgeted decoding: what each edge kind's cell, each fusion, head
and the stem cost at each scale (:func:`edge_cost_model`).

Also importable from :mod:`msnas_graph.backends.torch.cost`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from msnas_graph.architecture import Architecture
from msnas_graph.budget import Cost, TableCostModel
from msnas_graph.errors import BackendError
from msnas_graph.graph import NodeId, Supergraph
from msnas_graph.kinds import carries_cell

from .cost import count_macs_flops, count_parameters, latency_runner, timed_passes
from .fuse import fuse_for_inference
from .nn.blocks import ConcatFusion, Head, Stem
from .nn.cells import DiscreteCell
from .nn.network import build_network
from .nn.unet import UNet

if TYPE_CHECKING:
    from msnas_graph.genotype import CellGenotype
    from msnas_graph.spec import SearchSpace

__all__ = [
    "UNET_DEPTH",
    "ListInput",
    "PartMeasure",
    "built_cost",
    "edge_cost_model",
    "runtime_ns",
    "unet_cost",
]

#: The levels of the U-Net a relative target or budget refers to (``U-Net(width, 4)``, three
#: poolings): ``search --target-macs 0.8x``, ``decode --max-macs 0.8x``.
UNET_DEPTH = 4


class ListInput(nn.Module):
    """Feeds a module that takes a list of ``n`` tensors from one tensor of ``n`` channel
    chunks (so :func:`count_macs_flops` can run it; chunking counts no FLOPs)."""

    def __init__(self, module: nn.Module, n: int) -> None:
        super().__init__()
        self.module, self.n = module, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(list(x.chunk(self.n, dim=1)))


def edge_cost_model(
    cells: Architecture | Mapping[str, CellGenotype],
    space: SearchSpace | None = None,
    input_size: int | None = None,
    fusion: str | None = None,
    *,
    latency: bool = False,
    device: str | torch.device = "cpu",
    repeats: int = 20,
) -> TableCostModel:
    """A measured :class:`~msnas_graph.budget.TableCostModel` for budgeted decoding.

    ``cells`` is an :class:`~msnas_graph.architecture.Architecture` (its cells and space) or a
    mapping cell type -> :class:`~msnas_graph.genotype.CellGenotype` (e.g.
    ``decode_cells(state)``, with ``space`` given). Each distinct ``(kind, destination scale)``
    cell of the space is built once (as the final network builds it, resampling included) and
    counted with :func:`count_parameters` and :func:`count_macs_flops` on an input of
    ``input_size`` (default ``space.input_size``) at batch 1; so is each concat fusion per
    ``(scale, n_inputs)`` (``fusion`` default: the space's; ``sum`` costs nothing), each
    output's head convolution, and the stem with the head bias. The model's
    :func:`~msnas_graph.budget.network_cost` of an architecture equals the whole network's
    count (tested).

    With ``latency``, each part is also timed alone at batch 1 on ``device``, as the ``eager``
    inference runtime runs it (``predict --runtime eager``): the fastest of ``repeats`` passes
    after 3 warm-up passes, with the torch threads as they are (:func:`fastest_ns`). The
    model's latencies add up: the latency of a network is approximated by the sum of its
    parts' (``benchmarks/budget_decode.py`` reports how close that sum comes to the measured
    whole). ``decode --max-latency-ms`` uses this.

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> from msnas_graph.decode import decode_cells
    >>> state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
    >>> model = edge_cost_model(decode_cells(state), state.space)
    >>> sorted(model.edges)[:3]
    [('contract', 1), ('expand', 0), ('keep', 0)]
    """
    cells, graph, fusion, size = _check_arguments(cells, space, input_size, fusion)
    space = graph.space
    if repeats < 1:
        raise BackendError(f"edge_cost_model: repeats must be at least 1, got {repeats}")
    measure = PartMeasure(
        size, space.spatial_dims, torch.device(device) if latency else None, repeats
    )
    classes = space.num_classes
    return TableCostModel(
        measure.stem(space) + Cost(classes, 0),
        _edge_costs(graph, cells, measure),
        _fusion_costs(graph, measure) if fusion == "concat" else {},
        {o.scale: measure.head(o, graph.channels(o), classes) for o in graph.output_nodes},
    )


def unet_cost(
    space: SearchSpace,
    input_size: int | None = None,
    *,
    latency: bool = False,
    device: str | torch.device = "cpu",
    repeats: int = 20,
    measure: PartMeasure | None = None,
    runtime: str | None = None,
) -> Cost:
    """What the U-Net a user would otherwise train costs, measured as :func:`edge_cost_model`
    measures a network's parts: U-Net(``space.channels``, :data:`UNET_DEPTH`) with the space's
    image channels and classes, at batch 1 on an input of side ``input_size`` (default the
    space's); with ``latency``, also timed on ``device`` in the eager runtime (``measure``:
    how, where the caller already holds one), or whole in ``runtime`` where one is named, as
    :func:`built_cost` times a network. A relative budget or target is a multiple of it.

    >>> from msnas_graph.spec import SearchSpace
    >>> unet_cost(SearchSpace.preset("quick", channels=16), 64).macs
    118685696
    """
    if measure is None:
        size = _checked_size(Supergraph(space), input_size)
        timed = torch.device(device) if latency else None
        measure = PartMeasure(size, space.spatial_dims, timed, repeats)
    unet = UNet(
        space.in_channels, space.num_classes, space.channels, UNET_DEPTH,
        spatial_dims=space.spatial_dims,
    )  # fmt: skip
    if runtime is None or not latency:
        return measure(unet.eval(), space.in_channels, 0)
    counted = PartMeasure(measure.size, measure.dims)(unet.eval(), space.in_channels, 0)
    ns = runtime_ns(unet, (1, space.in_channels, *[measure.size] * measure.dims), device,
                    runtime, repeats)  # fmt: skip
    return Cost(counted.params, counted.macs, ns)


def built_cost(
    arch: Architecture,
    input_size: int | None = None,
    *,
    latency: bool = False,
    device: str | torch.device = "cpu",
    runtime: str = "auto",
    repeats: int = 20,
) -> Cost:
    """The parameters and batch-1 MACs of ``arch``'s built network on an input of side
    ``input_size`` (default the space's); with ``latency``, also its fastest batch-1 pass,
    whole, in the inference ``runtime`` (``auto``: what ``predict`` runs) on ``device``
    (:func:`runtime_ns`). Where :func:`edge_cost_model` sums parts timed alone in the eager
    runtime, this is what a user of the network measures; it takes a build (and an ONNX export)
    per network, so it is for a few networks, not for choosing paths.

    >>> from msnas_graph.decode import decode
    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
    >>> model = edge_cost_model(arch, input_size=32)
    >>> from msnas_graph.budget import network_cost
    >>> built_cost(arch, 32).macs == network_cost(arch.edges, model).macs
    True
    """
    size = _checked_size(Supergraph(arch.space), input_size)
    space = arch.space
    shape = (1, space.in_channels, *[size] * space.spatial_dims)
    net = build_network(arch).eval()
    cost = Cost(count_parameters(net), count_macs_flops(net, shape)[0])
    if not latency:
        return cost
    return Cost(cost.params, cost.macs, runtime_ns(net, shape, device, runtime, repeats))


def runtime_ns(
    model: nn.Module,
    shape: tuple[int, ...],
    device: str | torch.device,
    runtime: str,
    repeats: int = 20,
    warmup: int = 3,
) -> int:
    """The fastest of ``repeats`` passes of ``model`` on a random input of ``shape`` through the
    inference ``runtime`` (BatchNorm folded, as ``predict`` runs it; built before the timing),
    in whole nanoseconds: the minimum, as :func:`fastest_ns` takes it, because other processes
    only ever add time."""
    dev = torch.device(device)
    work = latency_runner(model, dev, runtime)
    x = torch.randn(*shape, device=dev)
    with torch.inference_mode():
        work(x)  # the runtime is built (traced, exported) on its first call
    return max(1, min(timed_passes(work, x, dev, warmup, repeats)))


def _check_arguments(
    cells: Architecture | Mapping[str, CellGenotype],
    space: SearchSpace | None,
    input_size: int | None,
    fusion: str | None,
) -> tuple[Mapping[str, CellGenotype], Supergraph, str, int]:
    """``(cells, supergraph, fusion, input size)`` with the defaults filled in, or a one-line
    :class:`BackendError`."""
    if isinstance(cells, Architecture):
        space = cells.space if space is None else space
        cells = cells.cells
    if space is None:
        raise BackendError("edge_cost_model: give the space when passing cell genotypes")
    fusion = space.fusion if fusion is None else fusion
    if fusion not in ("concat", "sum"):
        raise BackendError(f"edge_cost_model: fusion must be 'concat' or 'sum', got '{fusion}'")
    graph = Supergraph(space)
    return cells, graph, fusion, _checked_size(graph, input_size)


def _checked_size(graph: Supergraph, input_size: int | None) -> int:
    """``input_size`` (default the space's), or a one-line :class:`BackendError` when the
    space's deepest scale does not divide it."""
    size = graph.space.input_size if input_size is None else input_size
    deepest = 2 ** max(n.scale for n in graph.nodes)
    if size < deepest or size % deepest:
        raise BackendError(
            f"input size {size} is not divisible by {deepest} (the space's deepest scale); "
            f"use a multiple of {deepest}"
        )
    return size


class PartMeasure:
    """Counts a module on a batch-1 input at one scale of an ``input_size`` image."""

    def __init__(
        self, input_size: int, dims: int, device: torch.device | None = None, repeats: int = 20
    ) -> None:
        self.size, self.dims, self.device, self.repeats = input_size, dims, device, repeats

    def __call__(self, module: nn.Module, channels: int, scale: int) -> Cost:
        shape = (1, channels, *[self.size // 2**scale] * self.dims)
        cost = Cost(count_parameters(module), count_macs_flops(module, shape)[0])
        if self.device is None:
            return cost
        return Cost(cost.params, cost.macs, fastest_ns(module, shape, self.device, self.repeats))

    def head(self, output: NodeId, channels: int, classes: int) -> Cost:
        """An output's head convolution without its bias (counted once, with the stem)."""
        head = Head([(output, channels)], classes, self.dims)
        cost = self(ListInput(head, 1), channels, output.scale)
        return Cost(cost.params - classes, cost.macs, cost.latency_ns)

    def stem(self, space: SearchSpace) -> Cost:
        stem = Stem(space.in_channels, space.scale_channels(0), self.dims)
        return self(stem, space.in_channels, 0)


def fastest_ns(
    module: nn.Module, shape: tuple[int, ...], device: torch.device, repeats: int, warmup: int = 3
) -> int:
    """The fastest of ``repeats`` inference passes of ``module`` as the ``eager`` runtime runs
    it inside a network (:class:`~msnas_graph.backends.torch.runtimes.InferenceRuntime`:
    BatchNorm folded, eval mode, for 2D inputs on the CPU channels-last, no layout conversion
    at the part's borders; synchronised on CUDA) on a random input of ``shape``, in whole
    nanoseconds (at least 1). The minimum, not the median: other processes only ever add time,
    so on a shared machine the fastest pass is the steadiest estimate of the work itself."""
    # the eager runtime's model and layout (channels-last for 2D inputs on the CPU), with the
    # part's input already in it and its output left in it, as between the parts of a network
    last = device.type == "cpu" and len(shape) == 4
    work = fuse_for_inference(module, channels_last=last).to(device)
    x = torch.randn(*shape, device=device)
    if last:
        x = x.contiguous(memory_format=torch.channels_last)
    return max(1, min(timed_passes(work, x, device, warmup, repeats)))


def _edge_costs(
    graph: Supergraph, cells: Mapping[str, CellGenotype], measure: PartMeasure
) -> dict[tuple[str, int], Cost]:
    """Each ``(kind, destination scale)`` cell built once, as the final network builds it
    (``skip`` costs nothing; kinds without a cell are left out)."""
    edges: dict[tuple[str, int], Cost] = {}
    for e in graph.edges:
        key = (str(e.kind), e.dst.scale)
        if key in edges or (carries_cell(e.kind) and e.kind not in cells):
            continue
        if not carries_cell(e.kind):
            edges[key] = Cost()
            continue
        c_in, c_out = graph.channels(e.src), graph.channels(e.dst)
        space = graph.space
        cell = DiscreteCell(e.kind, c_in, c_out, cells[e.kind], space.spatial_dims, space.cell_glue)
        edges[key] = measure(cell, c_in, e.src.scale)
    return edges


def _fusion_costs(graph: Supergraph, measure: PartMeasure) -> dict[tuple[int, int], Cost]:
    """Each concat fusion of ``n`` inputs at each scale that has a node with ``n`` in-edges."""
    fusions: dict[tuple[int, int], Cost] = {}
    for node in graph.nodes:
        c = graph.channels(node)
        for n in range(2, len(graph.in_edges(node)) + 1):
            if (node.scale, n) not in fusions:
                module = ListInput(ConcatFusion(n, c, graph.space.spatial_dims), n)
                fusions[(node.scale, n)] = measure(module, n * c, node.scale)
    return fusions

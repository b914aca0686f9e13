"""The final network compiled from a decoded :class:`~msnas_graph.architecture.Architecture`.

Only the kept nodes and edges are built. Every non-skip kept edge becomes a
:class:`~msnas_graph.backends.torch.nn.cells.DiscreteCell` of its kind's genotype (full-channel
operations); ``skip`` is the identity. A node with one kept incoming edge takes that edge's
output; where several meet (the paper's multi-scale fusion) they are merged by ``fusion``:
``"concat"`` (concatenate in canonical edge order, then ``1x1 conv -> BN -> ReLU`` back to the node
width) or ``"sum"``. Stem and head are those of the supernet; the head reads
``arch.output_nodes``. The structure is static (a fixed plan, no data-dependent control flow),
so the network traces and exports to ONNX.

:func:`~msnas_graph.backends.torch.nn.transfer.transfer_weights` copies a supernet's weights
into a final network, module by module.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> from msnas_graph.decode import decode
>>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
>>> net = build_network(arch)
>>> net(torch.randn(2, 1, 32, 32)).shape
torch.Size([2, 2, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from msnas_graph._util import unknown_name
from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.nn.blocks import (
    ConcatFusion,
    Head,
    Stem,
    check_input,
    edge_key,
    node_key,
)
from msnas_graph.backends.torch.nn.cells import DiscreteCell
from msnas_graph.errors import ArchitectureError, BackendError
from msnas_graph.graph import Edge, NodeId
from msnas_graph.kinds import carries_cell

__all__ = ["FUSIONS", "FinalNetwork", "Plan", "build_network", "execution_plan", "run_plan"]

#: The multi-scale fusion modes of the final network.
FUSIONS = ("concat", "sum")

#: The incoming edges of one node: ``(source, kind, cell key or None for a skip)`` each.
Inputs = tuple[tuple[NodeId, str, str | None], ...]
#: Layer by layer, ``(node, its incoming edges)`` for every node computed.
Plan = tuple[tuple[tuple[NodeId, Inputs], ...], ...]


def execution_plan(nodes: Iterable[NodeId], in_edges: Callable[[NodeId], Iterable[Edge]]) -> Plan:
    """The static plan the supernet and the final network both run: the nodes with incoming
    edges, grouped by layer in order, each with its edges in canonical order (a cell's key as
    in their ``cells`` dicts, ``None`` for an edge without a cell).

    >>> from msnas_graph.graph import Supergraph
    >>> from msnas_graph.spec import SearchSpace
    >>> g = Supergraph(SearchSpace.preset("tiny"))
    >>> plan = execution_plan(g.nodes, g.in_edges)
    >>> len(plan) == g.space.layers, plan[0][0][1][0][1:]
    (True, ('keep', 'L1_s0_keep'))
    """
    layers: dict[int, list[tuple[NodeId, Inputs]]] = {}
    for n in nodes:
        edges = tuple(in_edges(n))
        if edges:
            ins = tuple(
                (e.src, e.kind, edge_key(e) if carries_cell(e.kind) else None) for e in edges
            )
            layers.setdefault(n.layer, []).append((n, ins))
    return tuple(tuple(layers[layer]) for layer in sorted(layers))


def run_plan(
    plan: Plan,
    first: tuple[NodeId, torch.Tensor],
    node: Callable[[NodeId, Inputs, dict[NodeId, torch.Tensor]], torch.Tensor],
) -> dict[NodeId, torch.Tensor]:
    """The last layer's outputs: ``node(n, ins, outputs of the layer before)`` for every node of
    ``plan``, layer by layer, from ``first`` (the input node and the stem's output)."""
    prev = dict([first])
    for layer in plan:
        prev = {n: node(n, ins, prev) for n, ins in layer}
    return prev


class FinalNetwork(nn.Module):
    """The discrete network of an architecture (see the module doc).

    Args:
        arch: a decoded architecture (validated here).
        fusion: ``"concat"`` or ``"sum"``; default ``arch.space.fusion``.

    Submodules: ``stem``, ``cells`` (``nn.ModuleDict`` of :class:`DiscreteCell` keyed like the
    supernet's, ``"L3_s2_contract"``), ``fusions`` (``nn.ModuleDict`` of
    :class:`ConcatFusion` keyed by node, ``"L3_s2"``; empty with ``sum``), ``head``.
    """

    def __init__(self, arch: Architecture, fusion: str | None = None) -> None:
        super().__init__()
        try:
            arch.validate()
        except ArchitectureError as exc:
            raise BackendError(f"cannot build the network: {exc}") from None
        fusion = arch.space.fusion if fusion is None else fusion
        if fusion not in FUSIONS:
            raise BackendError(unknown_name("fusion", fusion, FUSIONS))
        self.arch = arch
        self.space = arch.space
        self.fusion = fusion
        space, graph = arch.space, arch.supergraph
        dims = space.spatial_dims

        self.stem = Stem(space.in_channels, space.scale_channels(0), dims)
        cells: dict[str, nn.Module] = {}
        for e in arch.edges:
            if not carries_cell(e.kind):
                continue
            cells[edge_key(e)] = DiscreteCell(
                e.kind,
                graph.channels(e.src),
                graph.channels(e.dst),
                arch.cells[e.kind],
                dims,
                space.cell_glue,
            )
        self.cells = nn.ModuleDict(cells)
        fusions: dict[str, nn.Module] = {}
        if fusion == "concat":
            for n in arch.fusion_nodes:
                fusions[node_key(n)] = ConcatFusion(len(arch.in_edges(n)), graph.channels(n), dims)
        self.fusions = nn.ModuleDict(fusions)
        self.head = Head(
            [(o, graph.channels(o)) for o in arch.output_nodes], space.num_classes, dims
        )

        self._plan = execution_plan(arch.nodes, arch.in_edges)
        self._factor = 2 ** max(n.scale for n in arch.nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)`` at the input's resolution."""
        check_input(x, self.space.in_channels, self.space.spatial_dims, self._factor, "network")
        out = run_plan(self._plan, (self.arch.input_node, self.stem(x)), self._node)
        return self.head([out[o] for o in self.arch.output_nodes])

    def _node(self, node: NodeId, ins: Inputs, prev: dict[NodeId, torch.Tensor]) -> torch.Tensor:
        """One node: its kept edges' outputs, fused (``concat``) or summed."""
        ys = [prev[s] if key is None else self.cells[key](prev[s]) for s, _, key in ins]
        if len(ys) > 1 and self.fusion == "concat":
            return self.fusions[node_key(node)](ys)
        out = ys[0]
        for y in ys[1:]:
            out = out + y
        return out

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch.content_hash}, nodes={len(self.arch.nodes)}, "
            f"edges={len(self.arch.edges)}, fusion='{self.fusion}'"
        )


def build_network(arch: Architecture, fusion: str | None = None) -> FinalNetwork:
    """The :class:`FinalNetwork` of ``arch`` (``fusion`` overrides ``arch.space.fusion``)."""
    return FinalNetwork(arch, fusion)

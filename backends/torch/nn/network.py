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
from msnas_graph.graph import NodeId
from msnas_graph.kinds import carries_cell

__all__ = ["FUSIONS", "FinalNetwork", "build_network"]

#: The multi-scale fusion modes of the final network.
FUSIONS = ("concat", "sum")


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
                e.kind, graph.channels(e.src), graph.channels(e.dst), arch.cells[e.kind], dims
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

        # Static plan, layer by layer: (node, ((src, cell key or None), ...), fusion key or None).
        plan: list[list[tuple[NodeId, tuple[tuple[NodeId, str | None], ...], str | None]]] = [
            [] for _ in range(space.layers)
        ]
        for n in arch.nodes:
            ins = arch.in_edges(n)
            if not ins:
                continue
            srcs = tuple((e.src, edge_key(e) if carries_cell(e.kind) else None) for e in ins)
            fuse = node_key(n) if node_key(n) in fusions else None
            plan[n.layer - 1].append((n, srcs, fuse))
        self._plan = tuple(tuple(layer) for layer in plan)
        self._factor = 2 ** max(n.scale for n in arch.nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)`` at the input's resolution."""
        check_input(x, self.space.in_channels, self.space.spatial_dims, self._factor, "network")
        prev: dict[NodeId, torch.Tensor] = {self.arch.input_node: self.stem(x)}
        for layer in self._plan:
            cur: dict[NodeId, torch.Tensor] = {}
            for node, srcs, fuse in layer:
                ys = [prev[s] if key is None else self.cells[key](prev[s]) for s, key in srcs]
                if fuse is not None:
                    cur[node] = self.fusions[fuse](ys)
                else:
                    out = ys[0]
                    for y in ys[1:]:
                        out = out + y
                    cur[node] = out
            prev = cur
        return self.head([prev[o] for o in self.arch.output_nodes])

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch.content_hash}, nodes={len(self.arch.nodes)}, "
            f"edges={len(self.arch.edges)}, fusion='{self.fusion}'"
        )


def build_network(arch: Architecture, fusion: str | None = None) -> FinalNetwork:
    """The :class:`FinalNetwork` of ``arch`` (``fusion`` overrides ``arch.space.fusion``)."""
    return FinalNetwork(arch, fusion)

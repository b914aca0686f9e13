"""Post-softmax architecture weights given to a supernet forward pass from outside
(:meth:`~msnas_graph.backends.torch.nn.supernet.Supernet.fix_weights`, ``forward(x, weights=)``):
a state's softmax, an exact decoded architecture, or a sample (``Supernet.sampled_weights``).

>>> from msnas_graph.spec import SearchSpace
>>> w = ArchWeights.from_state(SearchState.zeros(SearchSpace.preset("tiny")))
>>> sorted(w.alpha) == sorted(SearchSpace.preset("tiny").cell_types)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from msnas_graph.architecture import Architecture
from msnas_graph.errors import BackendError
from msnas_graph.graph import NodeId, Supergraph
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState
from msnas_graph.state import softmax as np_softmax

__all__ = ["ArchWeights"]


@dataclass
class ArchWeights:
    """Post-softmax architecture weights for one supernet forward pass.

    Attributes:
        alpha: ``alpha[cell_type][b]``, shape ``(b + 1, len(space.ops))``: the operation weights
            of each input ``j = 0..b`` of 0-based block ``b``.
        p: ``p[cell_type][b]``, shape ``(b + 1,)``: the input weights of block ``b``.
        beta: ``beta[node]``, shape ``(len(graph.node_kinds(node)),)``: the weights of the edges
            into each searchable node, in canonical kind order.

    Any values are accepted (nothing is normalised), so one-hot and "1 on each kept input"
    choices are exact.
    """

    alpha: dict[str, list[torch.Tensor]]
    p: dict[str, list[torch.Tensor]]
    beta: dict[NodeId, torch.Tensor]

    @classmethod
    def from_state(
        cls, state: SearchState, dtype: torch.dtype = torch.float32, device: Any = None
    ) -> ArchWeights:
        """``softmax`` of a state's logits (what the supernet computes from the same logits)."""

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        return cls(
            alpha={
                c: [t(np_softmax(a, axis=-1)) for a in blocks]
                for c, blocks in state.alpha_logits.items()
            },
            p={c: [t(np_softmax(a)) for a in blocks] for c, blocks in state.p_logits.items()},
            beta={n: t(np_softmax(v)) for n, v in state.beta_logits.items()},
        )

    @classmethod
    def from_architecture(
        cls, arch: Architecture, dtype: torch.dtype = torch.float32, device: Any = None
    ) -> ArchWeights:
        """The weights that select ``arch`` exactly: ``beta`` 1 on every kept edge (0 on the
        others), ``p`` 1 on every kept input of a block, ``alpha`` one-hot on its operation;
        everything else 0 (nodes off the architecture then carry zeros).

        With ``partial_k=1`` the supernet under these weights computes the function of
        ``build_network(arch, fusion="sum")`` with transferred weights (at a node with one kept
        edge both fusions are the identity, so single-path architectures match either way).
        """
        space, graph = arch.space, arch.supergraph
        n_ops = len(space.ops)
        alpha: dict[str, list[torch.Tensor]] = {
            c: [torch.zeros(b + 1, n_ops, dtype=dtype, device=device) for b in range(space.blocks)]
            for c in space.cell_types
        }
        p: dict[str, list[torch.Tensor]] = {
            c: [torch.zeros(b + 1, dtype=dtype, device=device) for b in range(space.blocks)]
            for c in space.cell_types
        }
        for c, cell in arch.cells.items():
            for b, inputs in enumerate(cell.blocks):
                for i in inputs:
                    p[c][b][i.source] = 1.0
                    alpha[c][b][i.source, space.ops.index(i.op)] = 1.0
        beta = {
            n: torch.zeros(len(graph.node_kinds(n)), dtype=dtype, device=device)
            for n in graph.searchable_nodes
        }
        for e in arch.edges:
            beta[e.dst][graph.node_kinds(e.dst).index(e.kind)] = 1.0
        return cls(alpha, p, beta)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> ArchWeights:
        """A copy on ``device`` / in ``dtype``."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype)

        return ArchWeights(
            alpha={c: [mv(a) for a in v] for c, v in self.alpha.items()},
            p={c: [mv(a) for a in v] for c, v in self.p.items()},
            beta={n: mv(v) for n, v in self.beta.items()},
        )

    def check(self, space: SearchSpace, graph: Supergraph) -> None:
        """Raise :class:`BackendError` naming the first missing or misshapen entry."""
        n_ops = len(space.ops)
        for name, table in (("alpha", self.alpha), ("p", self.p)):
            for c in space.cell_types:
                blocks = table.get(c)
                if blocks is None or len(blocks) != space.blocks:
                    raise BackendError(
                        f"ArchWeights.{name}: needs {space.blocks} blocks for cell type '{c}'"
                    )
                for b, w in enumerate(blocks):
                    want = (b + 1, n_ops) if name == "alpha" else (b + 1,)
                    if tuple(w.shape) != want:
                        raise BackendError(
                            f"ArchWeights.{name}[{c}][{b}]: shape {tuple(w.shape)}, expected {want}"
                        )
        for n in graph.searchable_nodes:
            v = self.beta.get(n)
            want_k = len(graph.node_kinds(n))
            if v is None or tuple(v.shape) != (want_k,):
                got = "missing" if v is None else f"shape {tuple(v.shape)}"
                raise BackendError(
                    f"ArchWeights.beta[{n}]: {got}, expected shape ({want_k},) "
                    f"(kinds {', '.join(graph.node_kinds(n))})"
                )

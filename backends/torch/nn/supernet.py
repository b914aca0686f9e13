"""The MS-NAS supernet: every node, edge, cell input and operation of a search space at once.

Node ``(l, i)`` (``C * 2**i`` channels) computes (paper Eq. 3)::

    X[l,i] = sum_kind softmax(beta[l,i])_kind * edge_kind(X[l-1, .])

over its incoming edge kinds in canonical order (``Supergraph.in_edges``); ``skip`` is the
identity and the other kinds are :class:`~msnas_graph.backends.torch.nn.cells.SearchCell`\\ s, one
instance (with its own weights) per edge, whose architecture weights ``alpha`` and ``p`` are shared
by every cell of the same type (paper Eq. 1 and 2).

Architecture parameters are ``nn.Parameter`` logits (zeros = uniform), kept apart from the
weights: :meth:`Supernet.cell_parameters` (``alpha``, ``p``), :meth:`Supernet.network_parameters`
(``beta``), :meth:`Supernet.arch_parameters` (both) and :meth:`Supernet.weight_parameters`
(everything else), so a search can give each group its own optimizer. :meth:`Supernet.state`
exports them as a backend-free :class:`~msnas_graph.state.SearchState` and
:meth:`Supernet.load_state` reads one back.

**Fixed architecture weights.** ``forward(x, weights=...)`` (or :meth:`Supernet.fix_weights`)
runs the supernet with externally given *post-softmax* weights, an :class:`ArchWeights`, instead
of ``softmax`` of its logits. The vectors are used as given (they need not sum to 1), so exact
one-hot choices and, for a block keeping two inputs, weight 1 on each are expressible:
:meth:`ArchWeights.from_architecture` builds exactly the weights under which the supernet (with
``partial_k=1``) computes the function of the decoded network, with ``sum`` fusion.

>>> from msnas_graph.spec import SearchSpace
>>> net = build_supernet(SearchSpace.preset("tiny"))
>>> net(torch.randn(2, 1, 32, 32)).shape
torch.Size([2, 2, 32, 32])
>>> net.state() == SearchState.zeros(net.space)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from msnas_graph._util import unknown_name
from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.nn.arch_weights import ArchWeights
from msnas_graph.backends.torch.nn.blocks import Head, Stem, check_input, edge_key, node_key
from msnas_graph.backends.torch.nn.cells import SearchCell, forward_cells, recompute_pieces
from msnas_graph.backends.torch.nn.fused import has_own_hooks
from msnas_graph.backends.torch.nn.network import Inputs, execution_plan, run_plan
from msnas_graph.errors import BackendError, MsnasError, StateError
from msnas_graph.graph import NodeId, Supergraph
from msnas_graph.kinds import carries_cell
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState
from msnas_graph.topology import TOPOLOGY, cell_types_used, check_topology

__all__ = ["MEMORY_MODES", "ArchWeights", "Supernet", "build_supernet"]

#: How a training forward pass trades memory for time (:class:`Supernet`'s ``memory``).
MEMORY_MODES = ("fast", "low")

_Memo = dict[tuple[int, int, int], tuple[torch.Tensor, list[torch.Tensor]]]


class Supernet(nn.Module):
    """The MS-NAS supernet of a :class:`~msnas_graph.spec.SearchSpace`.

    Args:
        space: the search space.
        graph: its supergraph (built if not given).
        affine_ops: the ``affine`` option passed to every candidate operation's factory
            (``False``, the DARTS/PC-DARTS convention: the operations' BatchNorms have no
            learnable scale and shift in the supernet). ``None`` passes no option, for
            user operations whose factory does not accept ``affine``.
        memory: how a training forward pass with gradients trades memory for time.
            ``"fast"`` (default): store the activations the backward pass needs (only the
            fused candidates' point-wise products and normalised values are recomputed).
            ``"low"``: recompute every cell whole in the backward pass
            (:func:`~msnas_graph.backends.torch.nn.cells.recompute_pieces`, i.e.
            ``torch.utils.checkpoint``): in the ``paper`` space at width 32, a tenth to a
            fifteenth of ``"fast"``'s peak memory for about 1.7x its step time
            (``benchmarks/results/keep_or_remove.md``). Outputs, gradients and BatchNorm
            running statistics are the same in both. Can be switched later via ``.memory``.

    The mixed ops that share an input are computed together, and those of the cells into one
    node as one computation (:func:`~msnas_graph.backends.torch.nn.fused.mix_groups`): same
    outputs, gradients and running statistics as computing them one by one, up to float
    rounding; ``.fuse_candidates = False`` switches to the one-by-one reference (tests and
    ``benchmarks/gpu_check.py`` compare the two).

    Submodules: ``stem``, ``cells`` (``nn.ModuleDict`` of :class:`SearchCell` keyed
    ``"L3_s2_contract"``, one per non-skip edge), ``head``. Parameters: ``alpha_logits[c][b]``,
    ``p_logits[c][b]`` (per cell type and block) and ``beta_logits["L3_s2"]``.
    """

    def __init__(
        self,
        space: SearchSpace,
        graph: Supergraph | None = None,
        *,
        affine_ops: bool | None = False,
        memory: str = "fast",
    ) -> None:
        super().__init__()
        self.space = space
        self.graph = graph if graph is not None and graph.space == space else Supergraph(space)
        graph = self.graph
        dims = space.spatial_dims
        op_options = None if affine_ops is None else {"affine": affine_ops}
        n_ops = len(space.ops)

        self.stem = Stem(space.in_channels, space.scale_channels(0), dims)
        cells: dict[str, nn.Module] = {}
        for e in graph.edges:
            if not carries_cell(e.kind):
                continue
            cells[edge_key(e)] = SearchCell(
                e.kind,
                graph.channels(e.src),
                graph.channels(e.dst),
                space.ops,
                space.blocks,
                space.partial_k,
                dims,
                op_options,
            )
        self.cells = nn.ModuleDict(cells)
        self.head = Head(
            [(o, graph.channels(o)) for o in graph.output_nodes], space.num_classes, dims
        )

        self.alpha_logits = nn.ModuleDict(
            {
                c: nn.ParameterList(
                    nn.Parameter(torch.zeros(b + 1, n_ops)) for b in range(space.blocks)
                )
                for c in space.cell_types
            }
        )
        self.p_logits = nn.ModuleDict(
            {
                c: nn.ParameterList(nn.Parameter(torch.zeros(b + 1)) for b in range(space.blocks))
                for c in space.cell_types
            }
        )
        self.beta_logits = nn.ParameterDict(
            {
                node_key(n): nn.Parameter(torch.zeros(len(graph.node_kinds(n))))
                for n in graph.searchable_nodes
            }
        )

        self._nodes: tuple[NodeId, ...] = graph.searchable_nodes
        self._plan = execution_plan(self._nodes, graph.in_edges)
        self._beta_keys = tuple(node_key(n) for n in self._nodes)
        self._factor = 2 ** max(n.scale for n in graph.nodes)
        self._fixed: ArchWeights | None = None
        self._topology: tuple[dict[NodeId, torch.Tensor], dict[NodeId, list[int]]] | None = None
        self._network: Architecture | None = None  #: the fixed network (fix_topology)
        self.memory = memory
        #: Set (a temperature), training forwards sample one input per node (sampled_weights)
        self.sample_beta: float | None = None

    @property
    def memory(self) -> str:
        """``"fast"`` or ``"low"`` (see the class doc); anything else is refused.

        >>> net = build_supernet(SearchSpace.preset("tiny"), memory="low")
        >>> net.memory = "fast"
        >>> net.memory
        'fast'
        """
        return self._memory

    @memory.setter
    def memory(self, value: str) -> None:
        if value not in MEMORY_MODES:
            raise BackendError(unknown_name("memory mode", value, MEMORY_MODES))
        self._memory = value

    @property
    def fuse_candidates(self) -> bool:
        """Whether the cells compute the mixed ops that share an input together."""
        return all(cast(SearchCell, c).fuse for c in self.cells.values())

    @fuse_candidates.setter
    def fuse_candidates(self, value: bool) -> None:
        for c in self.cells.values():
            cast(SearchCell, c).fuse = bool(value)

    # ---------------------------------------------------------------- parameter groups

    def cell_parameters(self) -> list[nn.Parameter]:
        """The cell-level architecture parameters: every ``alpha`` and ``p`` logit tensor."""
        return self._cell_logits(self.space.cell_types)

    def network_parameters(self) -> list[nn.Parameter]:
        """The network-level architecture parameters: every ``beta`` logit tensor."""
        return list(self.beta_logits.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        """All architecture parameters (cell then network level)."""
        return [*self.cell_parameters(), *self.network_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter (the operation weights)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of :meth:`weight_parameters`."""
        arch = {id(p) for p in self.arch_parameters()}
        return ((n, p) for n, p in self.named_parameters() if id(p) not in arch)

    # ------------------------------------------------------------------- weights

    def arch_weights(self) -> ArchWeights:
        """``softmax`` of the current logits, differentiable (what :meth:`forward` uses)."""
        cts = self.space.cell_types
        logits = [self.beta_logits[k] for k in self._beta_keys]
        if self._topology is None:
            beta = {n: torch.softmax(t, dim=0) for n, t in zip(self._nodes, logits, strict=True)}
        else:  # fixed: on the logits' device and dtype wherever the supernet has moved
            fixed = self._topology[0]
            beta = {n: fixed[n].to(t) for n, t in zip(self._nodes, logits, strict=True)}
        return ArchWeights(
            alpha={
                c: [torch.softmax(a, -1) for a in self._logits(self.alpha_logits, c)] for c in cts
            },
            p={c: [torch.softmax(a, 0) for a in self._logits(self.p_logits, c)] for c in cts},
            beta=beta,
        )

    def sampled_weights(self, tau: float) -> ArchWeights:
        """:meth:`arch_weights` with each node's ``beta`` a hard Gumbel-softmax sample of its
        logits (one-hot forward, straight-through gradient; GDAS, FBNet): the pass runs one path
        through the trellis, so the loss depends on which (under ``softmax(beta)`` the other
        edges make up for a weak one and ``beta`` barely learns).

        >>> net = build_supernet(SearchSpace.preset("tiny"))
        >>> w = net.sampled_weights(1.0)
        >>> sorted({float(v.sum()) for v in w.beta.values()}), all(
        ...     set(v.tolist()) <= {0.0, 1.0} for v in w.beta.values())
        ([1.0], True)
        """
        w = self.arch_weights()
        beta = {
            n: nn.functional.gumbel_softmax(self.beta_logits[k], tau=tau, hard=True)
            for n, k in zip(self._nodes, self._beta_keys, strict=True)
        }
        return ArchWeights(alpha=w.alpha, p=w.p, beta=beta)

    def argmax_weights(self) -> ArchWeights:
        """:meth:`arch_weights` with each node's ``beta`` one-hot at its strongest input (the
        first of equals): the single path a sampled search's validation runs.

        >>> net = build_supernet(SearchSpace.preset("tiny"))
        >>> sorted({tuple(v.tolist()) for v in net.argmax_weights().beta.values()})[:2]
        [(1.0,), (1.0, 0.0)]
        """
        w = self.arch_weights()
        beta = {
            n: nn.functional.one_hot(v.argmax(), v.numel()).to(v.dtype).detach()
            for n, v in w.beta.items()
        }
        return ArchWeights(alpha=w.alpha, p=w.p, beta=beta)

    @staticmethod
    def _logits(table: nn.ModuleDict, cell_type: str) -> nn.ParameterList:
        return cast(nn.ParameterList, table[cell_type])

    def fix_weights(self, weights: ArchWeights | None) -> None:
        """Use ``weights`` in every later :meth:`forward` without explicit weights (``None``
        goes back to ``softmax`` of the logits). The tensors are used where they are: move them
        with :meth:`ArchWeights.to` if the supernet moves to another device."""
        if weights is not None:
            weights.check(self.space, self.graph)
        self._fixed = weights

    def fix_topology(self, arch: Architecture | None) -> None:
        """Run only the edges of ``arch`` (a decoded network of this space's trellis, at any
        width or cell glue): each of its nodes sums its kept inputs (``beta`` fixed at 1 on
        them, as :meth:`ArchWeights.from_architecture`), so only the cells' ``alpha`` and ``p``
        remain to be searched, on the network that will be trained. The other cells are not
        computed. ``None`` runs the whole supernet again.

        >>> from msnas_graph.decode import decode
        >>> space = SearchSpace.preset("tiny")
        >>> net = build_supernet(space)
        >>> net.fix_topology(decode(SearchState.zeros(space), paths=1))
        >>> net(torch.randn(2, 1, 32, 32)).shape, len(net.arch_weights().beta) == len(
        ...     net.beta_logits)
        (torch.Size([2, 2, 32, 32]), True)
        """
        if arch is None:
            self._topology = self._network = None
            self._plan = execution_plan(self._nodes, self.graph.in_edges)
            return
        graph = self.graph
        try:
            check_topology(self.space, arch)
        except MsnasError as exc:
            raise BackendError(f"fix_topology: {exc}") from None
        missing = [o for o in graph.output_nodes if not arch.in_edges(o)]
        if missing:
            raise BackendError(f"fix_topology: the network has no edge into output {missing[0]}")
        beta = ArchWeights.from_architecture(arch).beta  # 1 on every kept edge, 0 elsewhere
        kept = {n: torch.nonzero(b).flatten().tolist() for n, b in beta.items() if b.any()}
        self._topology = (beta, kept)
        self._network = arch
        self._plan = execution_plan([n for n in self._nodes if n in kept], arch.in_edges)

    @property
    def topology(self) -> Architecture | None:
        """The network :meth:`fix_topology` restricts the supernet to, if any."""
        return self._network

    def searched_cell_parameters(self) -> list[nn.Parameter]:
        """:meth:`cell_parameters` of the cell types the supernet runs (all of them, or those of
        its fixed network's edges): the ones a loss has a gradient for."""
        used = self.space.cell_types if self._network is None else cell_types_used(self._network)
        return self._cell_logits(used)

    def _cell_logits(self, cell_types: tuple[str, ...]) -> list[nn.Parameter]:
        """The ``alpha`` then the ``p`` logit tensors of ``cell_types``, in the space's order."""
        return [
            *(p for c in cell_types for p in self._logits(self.alpha_logits, c)),
            *(p for c in cell_types for p in self._logits(self.p_logits, c)),
        ]

    def idle_parameters(self) -> list[nn.Parameter]:
        """The weights of the cells a fixed network does not run (none without one): no loss
        has a gradient for them, so data-parallel training must not wait for one."""
        running = {key for layer in self._plan for _, ins in layer for _, _, key in ins if key}
        return [p for key, c in self.cells.items() if key not in running for p in c.parameters()]

    @property
    def fixed_weights(self) -> ArchWeights | None:
        """The weights set by :meth:`fix_weights`, if any."""
        return self._fixed

    # ------------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, weights: ArchWeights | None = None) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)`` at the input's resolution.

        ``weights`` (post-softmax, see :class:`ArchWeights`) overrides the architecture
        parameters for this call; otherwise the weights set by :meth:`fix_weights`, otherwise
        ``softmax`` of the logits (computed once per call and per cell type), with ``beta``
        sampled (:meth:`sampled_weights`) in training mode while :attr:`sample_beta` is set.
        """
        check_input(x, self.space.in_channels, self.space.spatial_dims, self._factor, "supernet")
        if weights is not None:
            weights.check(self.space, self.graph)
        sample = self.sample_beta if self.training else None
        w = weights or self._fixed or (self.sampled_weights(sample) if sample else None)
        w = w or self.arch_weights()
        whole = self.training and torch.is_grad_enabled() and self.memory == "low"
        memo: _Memo = {}

        def node(n: NodeId, ins: Inputs, prev: dict[NodeId, torch.Tensor]) -> torch.Tensor:
            terms = self._terms(n, ins, prev, w, whole, memo)
            out = terms[0]
            for term in terms[1:]:
                out = out + term
            return out

        out = run_plan(self._plan, (self.graph.input_node, self.stem(x)), node)
        return cast(torch.Tensor, self.head([out[o] for o in self.graph.output_nodes]))

    def _terms(
        self,
        node: NodeId,
        ins: Inputs,
        prev: dict[NodeId, torch.Tensor],
        w: ArchWeights,
        whole: bool,
        memo: _Memo,
    ) -> list[torch.Tensor]:
        """``beta_k * edge_k(X)`` for every edge into ``node``, in edge order (paper Eq. 3). The
        fused cells among them (two or more, without hooks of their own) run as one computation
        (:func:`~msnas_graph.backends.torch.nn.cells.forward_cells`)."""
        bw = w.beta[node]
        if self._topology is not None:  # ins: the architecture's edges into node, in order
            bw = bw[self._topology[1][node]]
        cells = {k: cast(SearchCell, self.cells[key]) for k, (_, _, key) in enumerate(ins) if key}
        fused = [k for k, c in cells.items() if c.fuse and not has_own_hooks(c) and not whole]
        grouped: dict[int, torch.Tensor] = {}
        if len(fused) > 1:
            kinds = [ins[k][1] for k in fused]
            outs = forward_cells([cells[k] for k in fused], [prev[ins[k][0]] for k in fused],
                                 [w.alpha[c] for c in kinds], [w.p[c] for c in kinds],
                                 [bw[k] for k in fused], False, memo)  # fmt: skip
            grouped = dict(zip(fused, outs, strict=True))
        terms = []
        for k, (src, kind, _) in enumerate(ins):
            args = (prev[src], w.alpha[kind], w.p[kind], bw[k]) if k in cells else ()
            if k in grouped:
                terms.append(grouped[k])
            elif k not in cells:
                terms.append(bw[k] * prev[src])
            elif whole:
                terms.append(recompute_pieces(cells[k], cells[k], *args))
            else:
                terms.append(cells[k](*args))
        return terms

    # --------------------------------------------------------------------- state

    def state(self, meta: dict[str, Any] | None = None) -> SearchState:
        """The architecture parameters as a backend-free :class:`SearchState` (float64)."""

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float64).numpy().copy()

        cts = self.space.cell_types
        if self._network is not None:  # searched on a fixed network: the state says which
            meta = {**(meta or {}), TOPOLOGY: self._network.to_dict()}
        return SearchState(
            self.space,
            alpha_logits={c: [arr(a) for a in self._logits(self.alpha_logits, c)] for c in cts},
            p_logits={c: [arr(a) for a in self._logits(self.p_logits, c)] for c in cts},
            beta_logits={
                n: arr(self.beta_logits[k])
                for n, k in zip(self._nodes, self._beta_keys, strict=True)
            },
            meta=meta,
            graph=self.graph,
        )

    def load_state(self, state: SearchState) -> None:
        """Copy a :class:`SearchState`'s logits into the architecture parameters.

        Raises :class:`StateError` if the state belongs to another search space.
        """
        if state.space != self.space:
            mine, theirs = self.space.to_dict(), state.space.to_dict()
            fields = [k for k in mine if mine[k] != theirs.get(k)]
            raise StateError(
                f"the state is for space '{state.space.name}', this supernet was built for "
                f"space '{self.space.name}' (fields differ: {', '.join(fields)}); build the "
                f"supernet with build_supernet(state.space) or load a state of this space"
            )
        with torch.no_grad():
            for c in self.space.cell_types:
                for param, a in zip(
                    self._logits(self.alpha_logits, c), state.alpha_logits[c], strict=True
                ):
                    param.copy_(torch.as_tensor(a, dtype=param.dtype))
                for param, a in zip(self._logits(self.p_logits, c), state.p_logits[c], strict=True):
                    param.copy_(torch.as_tensor(a, dtype=param.dtype))
            for n, k in zip(self._nodes, self._beta_keys, strict=True):
                param = self.beta_logits[k]
                param.copy_(torch.as_tensor(state.beta_logits[n], dtype=param.dtype))

    def extra_repr(self) -> str:
        return (
            f"space='{self.space.name}', nodes={len(self.graph.nodes)}, "
            f"edges={len(self.graph.edges)}, cells={len(self.cells)}"
        )


def build_supernet(space: SearchSpace, **options: Any) -> Supernet:
    """The :class:`Supernet` of ``space`` (``options`` go to its constructor).

    >>> from msnas_graph.spec import SearchSpace
    >>> len(build_supernet(SearchSpace.preset("tiny")).network_parameters())
    5
    """
    return Supernet(space, **options)

"""The expected cost of the searched network, as a differentiable term of the architecture loss.

A search that weighs only accuracy finds networks a user would not pick when a faster one of
the same Dice exists (FBNet, ProxylessNAS and DiNTS add the cost to the objective). With
``search --cost macs|latency`` the architecture loss becomes::

    loss = DiceCE + W * E[cost] / cost_ref                      (--cost-weight W)
    loss = DiceCE + W * max(0, log(E[cost] / target))           (--target-macs / --target-latency)

**The cost table** (:func:`measure_search_costs`) holds, for one input size, what the final
network would pay for each part, counted (MACs) or timed (batch-1 latency in the ``eager``
runtime, the fastest of ``repeats`` passes, as budgeted decoding times its parts):

* ``cells[(kind, scale)]``: the fixed part of a cell of that kind into that scale: resampling
  and preprocessing (at the source's width) and the projection of the concatenated blocks.
  Under the ``lean`` cell glue (:attr:`~msnas_graph.spec.SearchSpace.cell_glue`) the fixed
  part is the resampling (and an upsampling edge's preprocess, at the coarse scale), and
  three more parts are kept apart: ``entry[(kind, scale, op)]``, an operation reading a
  width-changing cell's input (a dense convolution reads the input's width itself),
  ``preprocess[(kind, scale)]``, paid when any other operation reads that input, and
  ``projection[(kind, scale)]``, the projection's cost per block, paid when two or more
  blocks are left unread;
* ``ops[(scale, op)]``: one candidate operation at the width and resolution of that scale
  (``none`` costs nothing: it is never decoded);
* ``base``: the stem and the head(s), paid by every network;
* ``unet``: a whole U-Net (:data:`UNET_DEPTH` levels, the space's base width) measured the
  same way, so that a target can be relative to it: ``search --target-macs 0.8x`` is 0.8 times
  this figure (the U-Net a user would otherwise train, at the width of ``--cost-channels``).

**The expectation** (:func:`expected_cost`), under post-softmax weights (an
:class:`~msnas_graph.backends.torch.nn.arch_weights.ArchWeights`):

* block ``b`` of a cell keeps ``m = min(inputs_per_block, b + 1)`` inputs (decoding keeps one
  operation per source); each input ``j`` is weighted by ``p_j`` (normalised over the block)
  and its operation cost ``c_j`` is the ``alpha_j``-weighted mean over the decodable
  operations, so ``cell(kind, scale) = fixed + sum_b m * sum_j p_j c_j``. Under the lean
  glue, ``c_0`` takes the ``entry`` costs; block ``b`` reads state ``k`` with probability
  ``r_bk = min(1, m p_k)``; the preprocess is paid with probability one minus the product
  over blocks of ``1 - r_b0 * (alpha share of the other operations)``; block ``k`` is left
  unread with probability ``u_k = prod_{b > k} (1 - r_bk)`` and the projection costs
  ``projection * (sum_k u_k - prod_{k < N} (1 - u_k))`` (blocks taken as independent, as
  decoding takes them);
* a path is drawn backwards from each output node, taking the edge into a node with
  probability ``softmax(beta)`` at that node (every input->output path has the probability of
  its product): edge ``e`` lies on it with probability ``pi_e = q(dst) * beta_e``, where
  ``q(n)`` is the probability of reaching ``n``. The decoded network keeps ``N_l`` paths;
  the term is the expected cost of the union of ``N_l`` independently drawn paths,
  ``sum_e (1 - (1 - pi_e)^N_l) * cell_e``, plus ``base``. Fusions are left out. With several
  output scales a path is drawn to each output and every head counts.

With one-hot weights (:meth:`ArchWeights.from_architecture` of a one-path architecture) the
expectation is that network's own cost (tested against the MACs of the built network).
``cost_ref`` is the expectation under uniform weights (all logits zero), so ``W`` is unitless:
the term starts at ``W``.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.backends.torch.nn.supernet import ArchWeights, Supernet
>>> space = SearchSpace.preset("tiny")
>>> table = measure_search_costs(space, 32)
>>> net = Supernet(space)
>>> term = CostTerm(table, net.graph, paths=2, weight=0.5)
>>> penalty, expected = term(net.arch_weights())
>>> round(float(penalty.detach()), 6), expected == term.reference
(0.5, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from msnas_graph.budget import COST_METRICS, Cost
from msnas_graph.errors import RunError
from msnas_graph.graph import Supergraph
from msnas_graph.kinds import carries_cell, edge_kind
from msnas_graph.operations import NONE_OP
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

from .cost_model import UNET_DEPTH, ListInput, PartMeasure, unet_cost
from .nn.arch_weights import ArchWeights
from .nn.blocks import Preprocess, Projection, resample
from .nn.ops import WIDTH_CHANGING_OPS, build_entry_op, build_op

__all__ = ["UNET_DEPTH", "CostTerm", "SearchCostTable", "expected_cost", "measure_search_costs"]


@dataclass(frozen=True)
class SearchCostTable:
    """Per-part costs of a space's networks at one input size (see the module doc), in MACs
    or milliseconds (``metric``). JSON-ready through :meth:`to_dict` (the search keeps it in
    its checkpoint, so a resumed search weighs the same numbers)."""

    metric: str
    input_size: int
    base: float
    cells: Mapping[tuple[str, int], float]
    ops: Mapping[tuple[int, str], float]
    #: lean glue: ``(kind, scale, op)``: an operation reading a width-changing cell's input
    entry: Mapping[tuple[str, int, str], float] = field(default_factory=dict)
    #: lean glue: ``(kind, scale)``: the projection's cost per block it concatenates
    projection: Mapping[tuple[str, int], float] = field(default_factory=dict)
    #: lean glue: ``(kind, scale)``: the preprocess a width-changing cell needs when an
    #: operation other than a dense convolution reads its input
    preprocess: Mapping[tuple[str, int], float] = field(default_factory=dict)
    #: the U-Net of :data:`UNET_DEPTH` levels at the table's base width, measured alike: the
    #: reference of a relative target (``search --target-macs 0.8x``); ``None`` in old tables
    unet: float | None = None

    @property
    def unit(self) -> str:
        """``"MACs"`` or ``"ms"``."""
        return "MACs" if self.metric == "macs" else "ms"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuple keys as ``"kind@scale"`` and ``"scale@op"``)."""
        return {
            "metric": self.metric,
            "input_size": self.input_size,
            "base": self.base,
            "cells": {f"{k}@{s}": v for (k, s), v in self.cells.items()},
            "ops": {f"{s}@{o}": v for (s, o), v in self.ops.items()},
            "entry": {f"{k}@{s}@{o}": v for (k, s, o), v in self.entry.items()},
            "projection": {f"{k}@{s}": v for (k, s), v in self.projection.items()},
            "preprocess": {f"{k}@{s}": v for (k, s), v in self.preprocess.items()},
            "unet": self.unet,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchCostTable:
        """Parse :meth:`to_dict` output."""
        cells = {(k, int(s)): float(v) for ks, v in data["cells"].items() for k, s in [_split(ks)]}
        ops = {(int(s), o): float(v) for so, v in data["ops"].items() for s, o in [_split(so)]}
        entry = {
            (k, int(s), o): float(v)
            for kso, v in data.get("entry", {}).items()
            for k, s, o in [kso.split("@", 2)]
        }
        projection, preprocess = (
            {(k, int(s)): float(v) for ks, v in data.get(name, {}).items() for k, s in [_split(ks)]}
            for name in ("projection", "preprocess")
        )
        return cls(
            str(data["metric"]),
            int(data["input_size"]),
            float(data["base"]),
            cells,
            ops,
            entry,
            projection,
            preprocess,
            None if data.get("unet") is None else float(data["unet"]),
        )


def _split(key: str) -> tuple[str, str]:
    a, _, b = key.partition("@")
    return a, b


def measure_search_costs(
    space: SearchSpace,
    input_size: int | None = None,
    metric: str = "macs",
    *,
    device: str | torch.device = "cpu",
    repeats: int = 20,
) -> SearchCostTable:
    """Count (``metric="macs"``) or time (``"latency"``, ms at batch 1 on ``device``) every
    part of the space's final networks once: each cell's fixed part per ``(kind, scale)``, each
    operation per scale, the stem and heads (see the module doc).

    >>> t = measure_search_costs(SearchSpace.preset("tiny"), 32)
    >>> t.ops[(0, "sep_conv_3x3")] > t.ops[(0, "avg_pool_3x3")] == t.ops[(0, "none")] == 0
    True
    """
    if metric not in COST_METRICS:
        raise RunError(f"unknown cost '{metric}' (known: {', '.join(COST_METRICS)})")
    graph = Supergraph(space)
    size = space.input_size if input_size is None else input_size
    timed = torch.device(device) if metric == "latency" else None
    measure = PartMeasure(size, space.spatial_dims, timed, repeats)
    dims = space.spatial_dims

    def in_unit(cost: Cost) -> float:
        return float(cost.macs) if timed is None else cost.latency_ns / 1e6

    def value(module: nn.Module, channels: int, scale: int) -> float:
        return in_unit(measure(module.eval(), channels, scale))

    heads = (measure.head(o, graph.channels(o), space.num_classes) for o in graph.output_nodes)
    base = in_unit(measure.stem(space)) + sum(in_unit(h) for h in heads)
    cells: dict[tuple[str, int], float] = {}
    entry: dict[tuple[str, int, str], float] = {}
    projection: dict[tuple[str, int], float] = {}
    preprocess: dict[tuple[str, int], float] = {}
    for e in graph.edges:
        key = (str(e.kind), e.dst.scale)
        if not carries_cell(e.kind) or key in cells:
            continue
        c_in, c_out = graph.channels(e.src), graph.channels(e.dst)
        if space.cell_glue == "lean":
            cells[key] = _lean_fixed(e.kind, c_in, c_out, e.src.scale, dims, value)
            projection[key] = value(Projection(c_out, c_out, dims), c_out, e.dst.scale)
            if c_in != c_out and edge_kind(e.kind).resample != "upsample":
                for op in space.ops:
                    entry[(*key, op)] = _lean_entry(op, c_in, c_out, e.dst.scale, dims, value)
                preprocess[key] = value(Preprocess(c_in, c_out, dims), c_in, e.dst.scale)
            continue
        enter = nn.Sequential(resample(e.kind, dims), Preprocess(c_in, c_out, dims))
        project = ListInput(Projection(space.blocks * c_out, c_out, dims), space.blocks)
        cells[key] = value(enter, c_in, e.src.scale) + value(
            project, space.blocks * c_out, e.dst.scale
        )
    ops: dict[tuple[int, str], float] = {}
    for scale in sorted({s for _, s in cells}):
        width = space.scale_channels(scale)
        for op in space.ops:
            ops[(scale, op)] = (
                0.0 if op == NONE_OP else value(build_op(op, width, dims), width, scale)
            )
    reference = in_unit(unet_cost(space, measure=measure))
    return SearchCostTable(metric, size, base, cells, ops, entry, projection, preprocess, reference)


def _lean_fixed(
    kind: str, c_in: int, c_out: int, scale: int, dims: int, value: Callable[..., float]
) -> float:
    """The fixed part of a cell under the ``lean`` glue: the resampling, and for an
    upsampling edge its preprocess, at the coarse scale (see the module doc)."""
    if edge_kind(kind).resample == "upsample":
        enter = nn.Sequential(Preprocess(c_in, c_out, dims), resample(kind, dims))
        return value(enter, c_in, scale)
    return value(resample(kind, dims), c_in, scale)


def _lean_entry(
    op: str, c_in: int, c_out: int, scale: int, dims: int, value: Callable[..., float]
) -> float:
    """Operation ``op`` reading a lean cell's input of ``c_in`` channels (after the
    resampling, at the destination ``scale``): a dense convolution changes the width itself;
    any other operation reads the preprocess's output (the preprocess is counted apart)."""
    if op == NONE_OP:
        return 0.0
    if op in WIDTH_CHANGING_OPS:
        return value(build_entry_op(op, c_in, c_out, dims), c_in, scale)
    return value(build_op(op, c_out, dims), c_out, scale)


def _lean_projection(reads: list[torch.Tensor], unit: float) -> torch.Tensor:
    """Expected cost of a lean cell's projection: ``unit`` per concatenated block when two or
    more blocks are left unread, nothing when one is. ``reads[b][k]`` is the probability that
    block ``b + 1`` reads state ``k`` (``0``: the cell's input). Block ``k`` is left unread with
    probability ``u_k = prod_{b > k} (1 - reads[b][k])`` (the last block always is); the
    expectation is ``unit * (sum_k u_k - prod_{k < N} (1 - u_k))``, exact for one-hot
    weights."""
    unread: list[torch.Tensor] = []
    for k in range(1, len(reads) + 1):
        u = reads[0].new_ones(())
        for b in range(k, len(reads)):  # the blocks after block k
            u = u * (1 - reads[b][k])
        unread.append(u)
    single = reads[0].new_ones(())
    for u in unread[:-1]:
        single = single * (1 - u)
    return unit * (sum(unread, reads[0].new_zeros(())) - single)


def expected_cost(
    weights: ArchWeights, table: SearchCostTable, graph: Supergraph, paths: int = 1
) -> torch.Tensor:
    """The expected cost of the network decoded with ``paths`` paths under ``weights`` (see the
    module doc), differentiable in the weights; in the table's unit."""
    space = graph.space
    ref = weights.beta[graph.searchable_nodes[0]]
    like: dict[str, Any] = {"dtype": ref.dtype, "device": ref.device}
    decodable = torch.tensor([op != NONE_OP for op in space.ops], **like)
    other = torch.tensor([op not in WIDTH_CHANGING_OPS for op in space.ops], **like)
    cell_cost: dict[tuple[str, int], torch.Tensor] = {}
    for (kind, scale), fixed in table.cells.items():
        cell = edge_cell(kind)
        op_cost = torch.tensor([table.ops[(scale, op)] for op in space.ops], **like)
        total = ref.new_tensor(fixed)
        entry = [table.entry.get((kind, scale, op)) for op in space.ops]
        # the lean glue's costs of the operations reading the input (a width-changing cell)
        first = None if entry[0] is None else torch.tensor(entry, **like).unsqueeze(0)
        reads: list[torch.Tensor] = []
        no_preprocess = ref.new_ones(())  # no reader of the input needs the preprocess
        for alpha, p in zip(weights.alpha[cell], weights.p[cell], strict=True):
            a = alpha * decodable
            costs = op_cost.expand_as(a)
            if first is not None:
                costs = torch.cat([first, costs[1:]])
            per_input = (a * costs).sum(-1) / a.sum(-1).clamp_min(1e-12)
            keep = min(space.inputs_per_block, len(p))
            block = (p * per_input).sum() / p.sum().clamp_min(1e-12)
            total = total + keep * block
            reads.append((keep * p / p.sum().clamp_min(1e-12)).clamp(max=1))
            if first is not None:
                share = (a[0] * other).sum() / a[0].sum().clamp_min(1e-12)
                no_preprocess = no_preprocess * (1 - reads[-1][0] * share)
        unit = table.projection.get((kind, scale))
        if unit is not None:
            total = total + _lean_projection(reads, unit)
        pre = table.preprocess.get((kind, scale))
        if pre is not None:
            total = total + pre * (1 - no_preprocess)
        cell_cost[(kind, scale)] = total
    reach = {o: ref.new_ones(()) for o in graph.output_nodes}
    total = ref.new_tensor(table.base)
    for node in sorted(graph.searchable_nodes, key=lambda n: -n.layer):
        q = reach.get(node)
        if q is None:  # no output below it (cannot happen in a validated space)
            continue
        beta = weights.beta[node]
        for i, e in enumerate(graph.in_edges(node)):
            pi = q * beta[i]
            reach[e.src] = reach[e.src] + pi if e.src in reach else pi
            if carries_cell(e.kind):
                used = 1 - (1 - pi.clamp(0, 1)) ** paths
                total = total + used * cell_cost[(str(e.kind), node.scale)]
    return total


def edge_cell(kind: str) -> str:
    """The cell type an edge kind carries (the table's ``kind`` names the edge kind)."""
    cell = edge_kind(kind).cell
    assert cell is not None  # only kinds that carry a cell are in the table
    return cell


class CostTerm:
    """``W * E[cost] / reference`` or, with a ``target``, ``W * max(0, log(E[cost] / target))``:
    called with the current weights it returns ``(penalty, expected cost)``; ``reference``
    is the expected cost under uniform weights, or, with ``beta`` (the fixed node weights of
    a search on one network, ``search --topology``), under uniform cell weights and ``beta``:
    that network's, so that ``W`` stays unitless there too."""

    def __init__(
        self,
        table: SearchCostTable,
        graph: Supergraph,
        paths: int,
        weight: float = 1.0,
        target: float | None = None,
        beta: Mapping[Any, torch.Tensor] | None = None,
    ) -> None:
        self.table, self.graph, self.paths = table, graph, paths
        self.weight, self.target = float(weight), target
        with torch.no_grad():
            uniform = ArchWeights.from_state(SearchState.zeros(graph.space))
            if beta is not None:
                uniform = ArchWeights(uniform.alpha, uniform.p, dict(beta))
            self.reference = float(expected_cost(uniform, table, graph, paths))
        if not (self.reference > 0 and math.isfinite(self.reference)):
            raise RunError(
                f"the space's expected {table.metric} is {self.reference}; cannot weigh it"
            )

    def __call__(self, weights: ArchWeights) -> tuple[torch.Tensor, float]:
        expected = expected_cost(weights, self.table, self.graph, self.paths)
        if self.target is None:
            penalty = self.weight * expected / self.reference
        else:
            penalty = self.weight * torch.relu(torch.log(expected / self.target))
        return penalty, float(expected.detach())

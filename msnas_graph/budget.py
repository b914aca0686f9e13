"""Decoding under a budget: the highest-scoring set of top paths whose union fits.

**Cost model.** The cost of a decoded network is additive over its parts, so it can be known
before anything is built:

* every kept edge costs its cell (a function of the edge kind, the destination scale, hence the
  channels and resolution, and the decoded cell genotype of that kind) plus its resampling
  (``skip`` costs nothing);
* every node where ``n >= 2`` kept edges meet costs a fusion (``concat`` then ``1x1 conv + BN +
  ReLU``, or ``sum``) that depends on the scale and ``n``;
* every output node the head reads costs its ``1x1`` head convolution;
* the stem and the head's bias are a constant ``base_cost``.

A :class:`CostModel` answers these four questions; :func:`network_cost` adds them up over a set
of edges. The core never measures anything: :class:`TableCostModel` holds numbers, and the
torch backend's ``edge_cost_model`` fills one by counting each distinct cell once (its total
equals the whole-network count of ``msnas-graph cost``).

**Budgeted decode** (:func:`budgeted_decode`). Among the top ``candidates`` paths (exact top-K,
:func:`msnas_graph.paths.top_k_paths`), choose **exactly** ``paths`` (``N_l``) whose union fits
the budget and whose summed ``path_score`` is highest; the architecture is their union, with
the cells of :func:`msnas_graph.decode.decode_cells`, built as plain ``decode`` builds it.
If no ``N_l``-set fits, the best ``N_l - 1``-set is taken, and so on (reported in
:attr:`BudgetedDecode.n_paths`); if not even one candidate path fits, :class:`DecodeError`.
The score of a set is the sum of its paths' scores (shared edges count once per path, as in the
paper's ranking). Ties go to the set whose candidate ranks are lexicographically smallest, so an
unbounded budget returns exactly plain ``decode``'s top ``N_l`` paths.

*Exact*: depth-first branch and bound over the subsets of candidates, in rank order. A branch is
cut when its union already exceeds the budget (adding a path never lowers the union's cost,
because every edge, fusion and head cost is non-negative and a fusion never gets cheaper with
more inputs; checked on the model, and if a model breaks it only complete sets are tested), or
when its score plus the next best scores cannot beat the best set found. The greedy answer
below seeds the search. If the search visits more than ``exact_limit`` branches it stops: the
answer is then the best set found so far (at least as good as the greedy one) and
``exact=False``. *Greedy*: take candidates in rank order whenever the union still fits (if that
does not reach ``N_l`` paths, add instead the candidate that raises the union's largest share
of a budget limit least, ``N_l`` times), then swap a chosen path for a better-ranked unchosen
one while the union still fits.

Scores are compared on a fixed-point grid of ``2**-36`` (so float rounding cannot reorder equal
sets); costs are integers.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> from msnas_graph.decode import decode
>>> state = SearchState.random(SearchSpace.preset("tiny"), seed=3)
>>> model = TableCostModel.simple(state.space)
>>> free = budgeted_decode(state, Budget(), model, paths=2)
>>> free.exact, free.architecture == decode(state, paths=2)
(True, True)
>>> tight = budgeted_decode(state, Budget(max_macs=free.cost.macs - 1), model, paths=2)
>>> tight.cost.macs < free.cost.macs, tight.score <= free.score, tight.exact
(True, True, True)
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ._budget_search import Problem, branch_and_bound, greedy, quantize
from .architecture import Architecture
from .errors import DecodeError
from .genotype import CellGenotype
from .graph import Edge, NodeId
from .kinds import EDGE_KINDS, cell_types_of
from .paths import DEFAULT_SCORE, Path, count_paths, edge_scores, top_k_paths
from .spec import SearchSpace
from .state import SearchState

__all__ = [
    "COST_METRICS",
    "Budget",
    "BudgetedDecode",
    "Cost",
    "CostModel",
    "TableCostModel",
    "architecture_from_paths",
    "budgeted_decode",
    "format_count",
    "network_cost",
    "parse_count",
]

logger = logging.getLogger(__name__)

#: What a network's cost is measured in when a search or a decode weighs it: counted
#: multiply-accumulates, or measured batch-1 latency.
COST_METRICS: tuple[str, ...] = ("macs", "latency")

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str) -> int:
    """A positive count written with an optional decimal suffix ``k``, ``M``, ``G``, ``T``
    (case-insensitive, powers of 1000) or an exponent.

    >>> parse_count("0.5G"), parse_count("500M"), parse_count("2e9"), parse_count("2m")
    (500000000, 500000000, 2000000000, 2000000)
    >>> parse_count("lots")
    Traceback (most recent call last):
    ...
    msnas_graph.errors.DecodeError: 'lots' is not a count (write e.g. 500M, 0.5G, 2e9 or 2000000)
    """
    m = _COUNT_RE.match(text)
    if not m:
        raise DecodeError(f"'{text}' is not a count (write e.g. 500M, 0.5G, 2e9 or 2000000)")
    value = float(f"{m.group(1)}e{m.group(2) or 0}") * _SUFFIX[m.group(3).lower()]
    if not math.isfinite(value) or value < 1:
        raise DecodeError(f"'{text}' is not a positive count of at least 1")
    return round(value)


def format_count(n: float) -> str:
    """``n`` with a decimal suffix and 4 significant digits.

    >>> format_count(21_330_000_000), format_count(1234), format_count(12)
    ('21.33G', '1.234k', '12')
    """
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{suffix}"
    return f"{n:.4g}"


@dataclass(frozen=True, order=True)
class Cost:
    """Parameters, multiply-accumulates and (where measured) latency of a network or a part of
    one. ``latency_ns`` is an integer number of nanoseconds, so sums are exact; ``0`` means not
    measured (a latency model fills it in, ``msnas-graph decode --max-latency-ms``).

    >>> str(Cost(2_000_000, 500_000_000, 1_250_000))
    '500M MACs, 2M params, 1.25 ms'
    >>> Cost(1, 2).to_dict()
    {'params': 1, 'macs': 2}
    """

    params: int = 0
    macs: int = 0
    latency_ns: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.params + other.params, self.macs + other.macs, self.latency_ns + other.latency_ns
        )

    @property
    def latency_ms(self) -> float:
        """The latency in milliseconds (``0.0``: not measured)."""
        return self.latency_ns / 1e6

    def __str__(self) -> str:
        text = f"{format_count(self.macs)} MACs, {format_count(self.params)} params"
        return text + (f", {self.latency_ms:.4g} ms" if self.latency_ns else "")

    def to_dict(self) -> dict[str, Any]:
        """``{"params": .., "macs": ..}``, with ``"latency_ms"`` where measured."""
        out: dict[str, Any] = {"params": self.params, "macs": self.macs}
        if self.latency_ns:
            out["latency_ms"] = self.latency_ms
        return out


@dataclass(frozen=True)
class Budget:
    """Upper bounds on a network's cost (``None``: unbounded). A latency bound needs a cost
    model that measured latency.

    >>> Budget(max_macs=500_000_000).allows(Cost(params=10**9, macs=400_000_000))
    True
    >>> str(Budget(max_macs=5 * 10**8, max_params=2 * 10**6))
    'max 500M MACs, max 2M params'
    >>> Budget(max_latency_ms=1.5).allows(Cost(latency_ns=2_000_000))
    False
    """

    max_macs: int | None = None
    max_params: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_macs", "max_params", "max_latency_ms"):
            v = getattr(self, name)
            if v is not None and (v < 0 or (isinstance(v, float) and not math.isfinite(v))):
                raise DecodeError(f"budget {name} must be a non-negative number, got {v}")

    @property
    def max_latency_ns(self) -> int | None:
        """The latency bound in whole nanoseconds (``None``: unbounded)."""
        return None if self.max_latency_ms is None else int(self.max_latency_ms * 1e6)

    def allows(self, cost: Cost) -> bool:
        """Whether ``cost`` fits."""
        lat = self.max_latency_ns
        return (
            (self.max_macs is None or cost.macs <= self.max_macs)
            and (self.max_params is None or cost.params <= self.max_params)
            and (lat is None or cost.latency_ns <= lat)
        )

    def __str__(self) -> str:
        parts = []
        if self.max_macs is not None:
            parts.append(f"max {format_count(self.max_macs)} MACs")
        if self.max_params is not None:
            parts.append(f"max {format_count(self.max_params)} params")
        if self.max_latency_ms is not None:
            parts.append(f"max {self.max_latency_ms:.4g} ms")
        return ", ".join(parts) or "unbounded"

    def to_dict(self) -> dict[str, Any]:
        """``{"max_macs": .., "max_params": ..}``, with ``"max_latency_ms"`` where bounded."""
        out: dict[str, Any] = {"max_macs": self.max_macs, "max_params": self.max_params}
        if self.max_latency_ms is not None:
            out["max_latency_ms"] = self.max_latency_ms
        return out


class CostModel(Protocol):
    """What a network's parts cost (see the module doc); all costs must be non-negative."""

    @property
    def base_cost(self) -> Cost:
        """Stem and head bias: paid once by every network."""
        ...

    def edge_cost(self, edge: Edge) -> Cost:
        """The cell of ``edge`` with its resampling (zero for ``skip``)."""
        ...

    def fusion_cost(self, node: NodeId, n_inputs: int) -> Cost:
        """Merging ``n_inputs >= 2`` kept edges at ``node``."""
        ...

    def output_cost(self, node: NodeId) -> Cost:
        """The head's part reading output node ``node``."""
        ...


@dataclass(frozen=True)
class TableCostModel:
    """A :class:`CostModel` read from tables keyed by scale.

    ``edges[(kind, dst_scale)]``, ``fusions[(scale, n_inputs)]`` (missing: zero, as with ``sum``
    fusion), ``outputs[scale]``. A missing edge or output entry raises :class:`DecodeError`.
    """

    base: Cost
    edges: Mapping[tuple[str, int], Cost]
    fusions: Mapping[tuple[int, int], Cost] = field(default_factory=dict)
    outputs: Mapping[int, Cost] = field(default_factory=dict)

    @property
    def base_cost(self) -> Cost:
        return self.base

    def edge_cost(self, edge: Edge) -> Cost:
        try:
            return self.edges[(edge.kind, edge.dst.scale)]
        except KeyError:
            raise DecodeError(
                f"the cost model has no cost for {edge.kind} edges into scale {edge.dst.scale}; "
                f"build it from all the cell types of the space (decode_cells)"
            ) from None

    def fusion_cost(self, node: NodeId, n_inputs: int) -> Cost:
        return self.fusions.get((node.scale, n_inputs), Cost())

    def output_cost(self, node: NodeId) -> Cost:
        try:
            return self.outputs[node.scale]
        except KeyError:
            raise DecodeError(
                f"the cost model has no head cost for output scale {node.scale}"
            ) from None

    @classmethod
    def simple(cls, space: SearchSpace, input_size: int | None = None) -> TableCostModel:
        """A rough analytic model (no backend needed): a cell costs ``9 * c**2`` parameters
        per block and that many MACs per output pixel, a fusion of ``n`` edges ``n * c**2``,
        the head ``c * num_classes``. For tests, examples and planning; the torch backend's
        ``edge_cost_model`` measures the real network."""
        size = space.input_size if input_size is None else input_size
        edges: dict[tuple[str, int], Cost] = {}
        fusions: dict[tuple[int, int], Cost] = {}
        outputs: dict[int, Cost] = {}
        for s in range(space.scales):
            c, pixels = space.scale_channels(s), (size // 2**s) ** space.spatial_dims
            for name, kind in EDGE_KINDS.items():  # preprocess, projection, resampling
                p = 9 * c * c * space.blocks + (2 if kind.scale_step == 0 else 3) * c * c
                edges[(name, s)] = Cost(p, p * pixels) if kind.carries_cell else Cost()
            for n in range(2, 5):
                fusions[(s, n)] = Cost(n * c * c, n * c * c * pixels)
            outputs[s] = Cost(c * space.num_classes, c * space.num_classes * pixels)
        c0 = space.scale_channels(0)
        stem = 9 * space.in_channels * c0
        base = Cost(stem + space.num_classes, stem * size**space.spatial_dims)
        return cls(base, edges, fusions, outputs)


def network_cost(edges: Iterable[Edge], cost_model: CostModel) -> Cost:
    """Total cost of the network made of ``edges`` (a decoded architecture's, or a union of
    paths): base, every edge, a fusion wherever several edges meet, and a head part for every
    output node (the nodes no kept edge leaves).

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> from msnas_graph.decode import decode
    >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
    >>> network_cost(arch.edges, TableCostModel.simple(arch.space)).macs > 0
    True
    """
    edges = set(edges)
    total = cost_model.base_cost
    fan_in: dict[NodeId, int] = {}
    for e in edges:
        total = total + cost_model.edge_cost(e)
        fan_in[e.dst] = fan_in.get(e.dst, 0) + 1
    sources = {e.src for e in edges}
    for node, n in sorted(fan_in.items()):
        if n > 1:
            total = total + cost_model.fusion_cost(node, n)
        if node not in sources:
            total = total + cost_model.output_cost(node)
    return total


def architecture_from_paths(
    state: SearchState,
    chosen: Sequence[Path],
    cells: Mapping[str, CellGenotype],
    meta: Mapping[str, Any] | None = None,
) -> Architecture:
    """The union of ``chosen`` paths with the cells they use, built as ``decode`` builds it."""
    edges = {e for p in chosen for e in p.edges}
    used = cell_types_of(e.kind for e in edges)
    keep = ("epoch", "random_seed", "run")
    provenance = {k: state.meta[k] for k in keep if k in state.meta}
    arch = Architecture(
        state.space,
        edges,
        {c: g for c, g in cells.items() if c in used},
        chosen,
        meta={"paths": len(chosen), "state_hash": state.content_hash, **provenance, **(meta or {})},
        graph=state.graph,
    )
    arch.validate()
    return arch


# ------------------------------------------------------------------------------ the API


@dataclass(frozen=True)
class BudgetedDecode:
    """What :func:`budgeted_decode` chose and why.

    ``architecture`` (its ``meta`` also records budget, cost, score and exactness), ``cost``
    (by the cost model), ``score`` (sum of the chosen paths' ``path_score``), ``exact`` (proved
    best among the candidates), ``n_paths`` chosen of ``requested`` asked, ``candidates`` (K),
    ``unconstrained_cost`` (cost of plain decode's top ``requested`` paths), ``branches``
    (subsets visited by the branch and bound).
    """

    architecture: Architecture
    cost: Cost
    score: float
    exact: bool
    n_paths: int
    requested: int
    candidates: int
    budget: Budget
    unconstrained_cost: Cost
    branches: int

    def summary(self) -> str:
        """A few lines for people: budget, choice, cost, score, exactness."""
        how = (
            f"exact (branch and bound over the top {self.candidates} paths, "
            f"{self.branches} branches)"
            if self.exact
            else f"approximate (search stopped after {self.branches} branches; best found, at "
            f"least the greedy choice)"
        )
        lines = [
            f"budget: {self.budget}",
            f"chose {self.n_paths} of {self.requested} requested paths from the top "
            f"{self.candidates}: {self.cost}, score {self.score:.4f}, {how}",
            f"unconstrained top {self.requested}: {self.unconstrained_cost}",
        ]
        if self.n_paths < self.requested:
            lines.append(
                f"no set of {self.requested} candidate paths fits the budget; kept {self.n_paths}"
            )
        if self.budget.max_latency_ms is not None:
            lines.append(
                "latency: an estimate for the eager runtime, the sum of each part timed alone at "
                "batch 1; time the whole network with `msnas-graph cost ARCH --latency "
                "--runtime eager` (other runtimes are faster)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the architecture)."""
        return {
            "budget": self.budget.to_dict(),
            "cost": self.cost.to_dict(),
            "score": self.score,
            "exact": self.exact,
            "paths": self.n_paths,
            "requested_paths": self.requested,
            "candidates": self.candidates,
            "unconstrained_cost": self.unconstrained_cost.to_dict(),
            "branches": self.branches,
        }


def budgeted_decode(
    state: SearchState,
    budget: Budget,
    cost_model: CostModel,
    paths: int = 3,
    candidates: int = 128,
    exact_limit: int = 200_000,
    inputs_per_block: int | None = None,
    edge_weight: Sequence[float] | np.ndarray | None = None,
    score: str = DEFAULT_SCORE,
) -> BudgetedDecode:
    """Decode ``state`` keeping the best ``paths`` of the top ``candidates`` paths whose union
    fits ``budget`` (see the module doc for the rule, the tie-break and exactness).

    ``cost_model`` must cost the cells :func:`~msnas_graph.decode.decode_cells` gives for
    ``inputs_per_block``. ``edge_weight`` (aligned with ``state.graph.edges``) defaults to
    ``edge_scores(state, score)``, what plain ``decode`` with the same ``score`` ranks paths
    by. ``exact_limit`` bounds the branches the exact search visits. Raises
    :class:`DecodeError` if not even the cheapest candidate path fits (naming its cost), or on
    bad ``paths``/``candidates``.
    """
    from .decode import decode_cells

    if paths < 1:
        raise DecodeError(f"number of paths must be at least 1, got {paths}")
    if candidates < paths:
        raise DecodeError(
            f"candidates ({candidates}) must be at least the number of paths ({paths})"
        )
    if exact_limit < 0:
        raise DecodeError(f"exact_limit must not be negative, got {exact_limit}")
    graph = state.graph
    w = edge_scores(state, score) if edge_weight is None else edge_weight
    k = min(candidates, count_paths(graph))
    cands = top_k_paths(graph, w, k)
    order = _rank(cands)
    cands = [cands[i] for i in order]
    prob = Problem(graph, cands, cost_model, budget)
    if budget.max_latency_ms is not None and not prob.has_latency:
        raise DecodeError(
            "the cost model has no latency figures; build it with latency measured "
            "(edge_cost_model(..., latency=True)) to use a latency budget"
        )
    top = min(paths, k)
    unconstrained = network_cost({e for p in cands[:top] for e in p.edges}, cost_model)
    exact, branches, best = True, 0, None
    for n in range(min(paths, k), 0, -1):
        seed = greedy(prob, n)
        best, complete, visited = branch_and_bound(prob, n, exact_limit, seed)
        exact, branches = exact and complete, branches + visited
        if best is not None:
            break
    if best is None:
        raise DecodeError(_too_small(budget, [network_cost(p.edges, cost_model) for p in cands]))
    chosen = [cands[j] for j in best]
    cost = network_cost({e for p in chosen for e in p.edges}, cost_model)
    total = float(sum(p.path_score for p in chosen))
    meta = {
        "score": score,
        "requested_paths": paths,
        "budget": budget.to_dict(),
        "cost": cost.to_dict(),
        "path_score_sum": total,
        "exact": exact,
        "candidates": k,
    }
    arch = architecture_from_paths(state, chosen, decode_cells(state, inputs_per_block), meta)
    if len(chosen) < paths:
        logger.info("no %d candidate paths fit %s; kept %d", paths, budget, len(chosen))
    return BudgetedDecode(
        arch, cost, total, exact, len(chosen), paths, k, budget, unconstrained, branches
    )


def _rank(cands: Sequence[Path]) -> list[int]:
    """Candidates sorted by quantized score, keeping top_k_paths' order among equal ones (it
    already is, up to float noise in the reported scores, which the bound must not see)."""
    sq = quantize([p.path_score for p in cands])
    return sorted(range(len(cands)), key=lambda i: -sq[i])


def _too_small(budget: Budget, costs: Sequence[Cost]) -> str:
    cheapest = min(costs, key=lambda c: (c.macs, c.params))
    fix = []
    if budget.max_macs is not None:
        low = min(c.macs for c in costs)
        if budget.max_macs < low:
            fix.append(f"--max-macs to at least {format_count(low)}")
    if budget.max_params is not None:
        low = min(c.params for c in costs)
        if budget.max_params < low:
            fix.append(f"--max-params to at least {format_count(low)}")
    lat = budget.max_latency_ns
    if lat is not None:
        low = min(c.latency_ns for c in costs)
        if lat < low:
            fix.append(f"--max-latency-ms to at least {low / 1e6:.4g}")
    how = " and ".join(fix) if fix else "--max-macs, --max-params or --max-latency-ms"
    return (
        f"the budget ({budget}) is below the cheapest of the top {len(costs)} candidate paths "
        f"({cheapest}); raise {how}, or consider more paths with --candidates"
    )

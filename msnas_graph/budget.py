"""Decoding under a budget: the highest-scoring set of top paths whose union fits.

**Cost model** (:mod:`msnas_graph._budget_model`, re-exported here). The cost of a decoded
network is additive over its parts (each kept edge's cell and resampling, a fusion wherever
several kept edges meet, the head part of each output node, and a constant base), so it is
known before anything is built: a :class:`CostModel` answers what each part costs,
:func:`network_cost` adds them up, :class:`TableCostModel` holds measured numbers.

**Width fitting** (:func:`fit_width`). The other way to meet a budget: keep every path and
narrow the network instead, to the widest base width whose cost fits (``decode --fit-width``).

**Budgeted decode** (:func:`budgeted_decode`). Among the top ``candidates`` paths (exact top-K,
:func:`msnas_graph.paths.top_k_paths`), choose **exactly** ``paths`` (``N_l``) whose union fits
the budget and whose summed ``path_score`` is highest; the architecture is their union, with
the cells of :func:`msnas_graph.decode.decode_cells`, built as plain ``decode`` builds it.
If no ``N_l``-set fits, the best ``N_l - 1``-set is taken, and so on (reported in
:attr:`BudgetedDecode.n_paths`); if not even one candidate path fits, :class:`DecodeError`.
With ``min_scale`` only sets that hold a path reaching that scale count (``decode --min-scale``
under a budget: a tight budget's best set may otherwise keep only full-resolution paths); the
candidates then also hold the best ``candidates`` paths that reach it.
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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._budget_model import (
    COST_METRICS,
    Budget,
    Cost,
    CostModel,
    TableCostModel,
    format_count,
    network_cost,
    parse_count,
)
from ._budget_search import Problem, branch_and_bound, greedy, quantize
from .architecture import Architecture
from .decode import decode_cells
from .errors import DecodeError
from .genotype import CellGenotype
from .graph import Edge, Supergraph
from .kinds import cell_types_of
from .paths import (
    DEEP_CANDIDATES,
    DEFAULT_SCORE,
    Path,
    check_min_scale,
    count_paths,
    edge_scores,
    rank_paths,
    top_k_paths,
    top_paths,
    with_min_scale,
)
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
    "fit_width",
    "format_count",
    "network_cost",
    "parse_count",
]

logger = logging.getLogger(__name__)


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
    among: Collection[tuple[Edge, ...]] | None = None,
    cells: Mapping[str, CellGenotype] | None = None,
    min_scale: int = 0,
) -> BudgetedDecode:
    """Decode ``state`` keeping the best ``paths`` of the top ``candidates`` paths whose union
    fits ``budget`` (see the module doc for the rule, the tie-break and exactness).

    ``among`` (paths as edge tuples) replaces the top ``candidates`` with exactly these
    paths, ranked the same way (a consensus decodes among the paths its seeds chose);
    ``cells`` replaces :func:`~msnas_graph.decode.decode_cells`'s cells (``cost_model`` must
    cost them). With ``min_scale``, only sets holding a path that reaches that scale count
    (see the module doc).

    ``cost_model`` must cost the cells :func:`~msnas_graph.decode.decode_cells` gives for
    ``inputs_per_block``. ``edge_weight`` (aligned with ``state.graph.edges``) defaults to
    ``edge_scores(state, score)``, what plain ``decode`` with the same ``score`` ranks paths
    by. ``exact_limit`` bounds the branches the exact search visits. Raises
    :class:`DecodeError` if not even the cheapest candidate path fits (naming its cost), or on
    bad ``paths``/``candidates``.
    """
    _check_sizes(paths, candidates, exact_limit)
    graph = state.graph
    w = edge_scores(state, score) if edge_weight is None else edge_weight
    check_min_scale(graph, min_scale)
    cands = _candidates(graph, w, candidates, among, min_scale)
    plain = _plain(graph, w, cands, paths, among is None, min_scale)
    k = len(cands)
    order = _rank(cands)
    cands = [cands[i] for i in order]
    prob = Problem(graph, cands, cost_model, budget, min_scale)
    if budget.max_latency_ms is not None and not prob.has_latency:
        raise DecodeError(
            "the cost model has no latency figures; build it with latency measured "
            "(edge_cost_model(..., latency=True)) to use a latency budget"
        )
    unconstrained = network_cost({e for p in plain for e in p.edges}, cost_model)
    exact, branches, best = True, 0, None
    for n in range(min(paths, k), 0, -1):
        seed = greedy(prob, n)
        best, complete, visited = branch_and_bound(prob, n, exact_limit, seed)
        exact, branches = exact and complete, branches + visited
        if best is not None:
            break
    if best is None:
        deep = [p for j, p in enumerate(cands) if prob.deep[j]]
        costs = [network_cost(p.edges, cost_model) for p in deep]
        # every path there is (that reaches min_scale) is a candidate: more would not help
        every = among is None and len(deep) == count_paths(graph) - count_paths(graph, min_scale)
        raise DecodeError(_too_small(budget, costs, min_scale, every))
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
        **({"min_scale": min_scale} if min_scale > 0 else {}),
    }
    if cells is None:
        cells = decode_cells(state, inputs_per_block)
    arch = architecture_from_paths(state, chosen, cells, meta)
    if len(chosen) < paths:
        logger.info("no %d candidate paths fit %s; kept %d", paths, budget, len(chosen))
    return BudgetedDecode(
        arch, cost, total, exact, len(chosen), paths, k, budget, unconstrained, branches
    )


def _plain(
    graph: Supergraph,
    w: Sequence[float] | np.ndarray,
    cands: list[Path],
    paths: int,
    top: bool,
    min_scale: int,
) -> list[Path]:
    """What plain ``decode`` keeps: taken from ``cands`` when they are ``top_k_paths``' (in
    order, ``top``), else decoded."""
    if not top:
        return top_paths(graph, w, min(paths, count_paths(graph)), min_scale)
    n = min(paths, len(cands))
    return with_min_scale(cands, n, min_scale) if min_scale > 0 else cands[:n]


def _check_sizes(paths: int, candidates: int, exact_limit: int) -> None:
    if paths < 1:
        raise DecodeError(f"number of paths must be at least 1, got {paths}")
    if candidates < paths:
        raise DecodeError(
            f"candidates ({candidates}) must be at least the number of paths ({paths})"
        )
    if exact_limit < 0:
        raise DecodeError(f"exact_limit must not be negative, got {exact_limit}")


def _candidates(
    graph: Supergraph,
    w: Sequence[float] | np.ndarray,
    candidates: int,
    among: Collection[tuple[Edge, ...]] | None,
    min_scale: int = 0,
) -> list[Path]:
    """The top ``candidates`` paths, or exactly ``among``, ranked alike; with ``min_scale``
    also the best ``candidates`` paths that reach it among the top
    ``max(candidates, DEEP_CANDIDATES)`` (:func:`~msnas_graph.paths.top_paths`' pool)."""
    if among is not None:
        if not among:
            raise DecodeError("no candidate paths to decode among")
        found = rank_paths(graph, w, among)
    else:
        pool = max(candidates, DEEP_CANDIDATES) if min_scale > 0 else candidates
        ranked = top_k_paths(graph, w, min(pool, count_paths(graph)))
        found = ranked[:candidates]
        found += [p for p in ranked[candidates:] if max(p.scales) >= min_scale][:candidates]
    if min_scale > 0 and not any(max(p.scales) >= min_scale for p in found):
        raise DecodeError(
            f"none of the {len(found)} candidate paths reaches scale {min_scale}; lower --min-scale"
        )
    return found


def _rank(cands: Sequence[Path]) -> list[int]:
    """Candidates sorted by quantized score, keeping top_k_paths' order among equal ones (it
    already is, up to float noise in the reported scores, which the bound must not see)."""
    sq = quantize([p.path_score for p in cands])
    return sorted(range(len(cands)), key=lambda i: -sq[i])


def _too_small(
    budget: Budget, costs: Sequence[Cost], min_scale: int = 0, every: bool = False
) -> str:
    """The error for a budget below every candidate (``every``: the candidates are all the
    space's paths, so more of them would not help)."""
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
    n, reach = len(costs), f" that reach{'es' * (len(costs) == 1)} scale {min_scale}"
    which = reach if min_scale > 0 else ""
    if not every:
        top = "the only one of the top candidate paths" if n == 1 else (
            f"the cheapest of the top {n} candidate paths")  # fmt: skip
        return (
            f"the budget ({budget}) is below {top}{which} ({cheapest}); raise {how}, or "
            "consider more paths with --candidates"
        )
    paths = "the only path" if n == 1 else f"the cheapest of all {n} paths"
    return f"the budget ({budget}) is below {paths}{which} ({cheapest}); raise {how}"


def fit_width(
    budget: Budget, cost_at: Callable[[int], Cost], start: int, multiple: int = 1
) -> tuple[int, Cost]:
    """The widest base width up to ``start`` whose cost ``cost_at(width)`` the budget allows,
    and that cost, by bisection (a network's cost grows with its width): ``start`` itself when
    it fits, else a multiple of ``multiple`` (runtimes run some channel counts faster per MAC
    than others). Raises :class:`DecodeError` when not even ``multiple`` fits.

    >>> cost_at = lambda w: Cost(params=w * w, macs=100 * w * w)
    >>> fit_width(Budget(max_macs=20_000), cost_at, start=16)  # 100 * 14**2 = 19_600
    (14, Cost(params=196, macs=19600, latency_ns=0))
    >>> fit_width(Budget(max_macs=20_000), cost_at, start=16, multiple=8)[0]
    8
    >>> fit_width(Budget(max_params=1_000), cost_at, start=16)[0]  # fits as it is
    16
    """
    costs: dict[int, Cost] = {}

    def fits(width: int) -> bool:
        if width not in costs:
            costs[width] = cost_at(width)
        return budget.allows(costs[width])

    if start < 1 or multiple < 1:
        raise DecodeError(f"fit_width: start={start} and multiple={multiple} must be at least 1")
    if fits(start):
        return start, costs[start]
    if multiple >= start or not fits(multiple):
        narrowest = min(multiple, start)
        raise DecodeError(
            f"the budget ({budget}) is below the network's cost at base width {narrowest} "
            f"({costs[narrowest]}): raise the budget, or keep fewer paths (--paths, "
            "--min-scale)" + (", or a smaller --width-multiple" if multiple > 1 else "")
        )
    lo, hi = 1, -(-start // multiple)  # in multiples: lo fits, hi does not (or is start)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid * multiple) else (lo, mid)
    return lo * multiple, costs[lo * multiple]

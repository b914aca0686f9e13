"""The subset search behind :func:`msnas_graph.budget.budgeted_decode` (see its module doc):
the candidates as integer tables with the union's cost kept incrementally, the greedy fill
with improving swaps, and the branch and bound."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._budget_model import Budget, CostModel
from .errors import DecodeError
from .graph import Edge, NodeId, Supergraph
from .paths import Path

#: The cost fields the search tracks (of :class:`msnas_graph.budget.Cost`).
_FIELDS = ("params", "macs", "latency_ns")

#: Bits after the binary point of the grid on which set scores are compared.
SCORE_BITS = 36


def quantize(scores: Sequence[float]) -> list[int]:
    """Scores as integers on a ``2**-36`` grid (coarser if they are huge), so that sums of the
    same scores in any order compare equal."""
    s = np.asarray(scores, dtype=np.float64)
    bits = SCORE_BITS
    bound = float(np.abs(s).max(initial=0.0)) * max(len(s), 1)
    if bound > 0:
        bits = min(bits, int(np.floor(np.log2(2.0**60 / bound))))
    return [int(v) for v in np.rint(np.ldexp(s, bits))]


class Problem:
    """The candidates as integer tables, and the union's cost kept up to date incrementally."""

    def __init__(
        self,
        graph: Supergraph,
        cands: Sequence[Path],
        model: CostModel,
        budget: Budget,
        min_scale: int = 0,
    ) -> None:
        self.k = len(cands)
        # with min_scale, a set must hold a path that reaches it; last_deep: the last such rank
        self.deep = [max(p.scales) >= min_scale for p in cands]
        self.last_deep = max((j for j, d in enumerate(self.deep) if d), default=-1)
        self.sq = quantize([p.path_score for p in cands])
        if any(a < b for a, b in zip(self.sq, self.sq[1:], strict=False)):
            raise DecodeError("candidate paths must be sorted by score, best first")
        self.prefix = [0]
        for s in self.sq:
            self.prefix.append(self.prefix[-1] + s)
        edge_ix: dict[Edge, int] = {}
        node_ix: dict[NodeId, int] = {}
        self.paths: list[list[int]] = []
        for p in cands:
            self.paths.append([edge_ix.setdefault(e, len(edge_ix)) for e in p.edges])
            for e in p.edges:
                node_ix.setdefault(e.dst, len(node_ix))
        self.edge_p, self.edge_m, self.edge_l, self.dst = [], [], [], []
        for e in edge_ix:
            c = model.edge_cost(e)
            self.edge_p.append(c.params)
            self.edge_m.append(c.macs)
            self.edge_l.append(c.latency_ns)
            self.dst.append(node_ix[e.dst])
        outputs = set(graph.output_nodes)
        # cost steps (params, MACs, latency) when a node's fan-in goes n -> n+1
        self.node_dp: list[list[int]] = []
        self.node_dm: list[list[int]] = []
        self.node_dl: list[list[int]] = []
        for node in node_ix:
            head = model.output_cost(node) if node in outputs else None
            prev = (0, 0, 0)
            dp, dm, dl = [], [], []
            for n in range(1, len(graph.in_edges(node)) + 1):
                parts = [c for c in (head, model.fusion_cost(node, n) if n > 1 else None) if c]
                now = tuple(sum(getattr(c, f) for c in parts) for f in _FIELDS)
                dp.append(now[0] - prev[0])
                dm.append(now[1] - prev[1])
                dl.append(now[2] - prev[2])
                prev = now
            self.node_dp.append(dp)
            self.node_dm.append(dm)
            self.node_dl.append(dl)
        steps = [*self.edge_p, *self.edge_m, *self.edge_l]
        steps += [x for d in (*self.node_dp, *self.node_dm, *self.node_dl) for x in d]
        self.monotone = all(x >= 0 for x in steps)
        base = model.base_cost
        self.base = (base.params, base.macs, base.latency_ns)
        self.has_latency = any(x > 0 for x in (base.latency_ns, *self.edge_l))
        inf = float("inf")
        self.max_p = inf if budget.max_params is None else budget.max_params
        self.max_m = inf if budget.max_macs is None else budget.max_macs
        lat = budget.max_latency_ns
        self.max_l = inf if lat is None else lat
        self.count = [0] * len(edge_ix)
        self.fan_in = [0] * len(node_ix)
        self.params, self.macs, self.latency = self.base

    def add(self, j: int) -> None:
        for ei in self.paths[j]:
            c = self.count[ei]
            self.count[ei] = c + 1
            if c == 0:
                d = self.dst[ei]
                n = self.fan_in[d]
                self.fan_in[d] = n + 1
                self.params += self.edge_p[ei] + self.node_dp[d][n]
                self.macs += self.edge_m[ei] + self.node_dm[d][n]
                self.latency += self.edge_l[ei] + self.node_dl[d][n]

    def remove(self, j: int) -> None:
        for ei in self.paths[j]:
            c = self.count[ei] - 1
            self.count[ei] = c
            if c == 0:
                d = self.dst[ei]
                n = self.fan_in[d] - 1
                self.fan_in[d] = n
                self.params -= self.edge_p[ei] + self.node_dp[d][n]
                self.macs -= self.edge_m[ei] + self.node_dm[d][n]
                self.latency -= self.edge_l[ei] + self.node_dl[d][n]

    def fits(self) -> bool:
        return self.params <= self.max_p and self.macs <= self.max_m and self.latency <= self.max_l

    def load(self) -> float:
        """The union's largest share of a budget limit."""
        return max(
            self.params / max(self.max_p, 1),
            self.macs / max(self.max_m, 1),
            self.latency / max(self.max_l, 1),
        )

    def score(self, chosen: Sequence[int]) -> int:
        return sum(self.sq[j] for j in chosen)

    def deep_in(self, chosen: Sequence[int]) -> bool:
        """Whether ``chosen`` holds a path that reaches the required scale."""
        return any(self.deep[j] for j in chosen)


class _Stop(Exception):
    pass


def greedy(prob: Problem, n: int) -> tuple[int, ...] | None:
    """Fill ``n`` paths in rank order while the union fits (or, if that fails, cheapest
    addition first; or, if the set must hold a deep path and does not, from the best deep path
    that fits), then swap in better-ranked paths while the union still fits (and stays deep)."""
    chosen = _fill(prob, n, by_cost=False) or _fill(prob, n, by_cost=True)
    if chosen and not prob.deep_in(chosen):
        for j in chosen:
            prob.remove(j)
        chosen = _fill_deep(prob, n)
    if not chosen:
        return None
    improved = True
    while improved:  # each swap makes the sorted ranks lexicographically smaller: it ends
        improved = False
        for i in reversed(range(n)):
            old = chosen[i]
            for j in range(old):
                if j in chosen:
                    continue
                prob.remove(old)
                prob.add(j)
                if prob.fits() and prob.deep_in([j, *(c for c in chosen if c != old)]):
                    chosen[i] = j
                    chosen.sort()
                    improved = True
                    break
                prob.remove(j)
                prob.add(old)
            if improved:
                break
    for j in chosen:
        prob.remove(j)
    return tuple(chosen)


def _fill(prob: Problem, n: int, by_cost: bool) -> list[int]:
    """``n`` paths added one at a time, kept in ``prob`` (or none, ``prob`` left empty)."""
    chosen: list[int] = []
    for j in range(prob.k):
        if by_cost:  # the candidate that raises the union's budget share least
            load = []
            for c in range(prob.k):
                if c not in chosen:
                    prob.add(c)
                    load.append((prob.load(), c))
                    prob.remove(c)
            j = min(load)[1]
        prob.add(j)
        if prob.fits():
            chosen.append(j)
            if len(chosen) == n:
                return sorted(chosen)
        else:
            prob.remove(j)
            if by_cost:
                break
    for j in chosen:
        prob.remove(j)
    return []


def _fill_deep(prob: Problem, n: int) -> list[int]:
    """The best-ranked path that reaches the required scale and fits alone, then others in
    rank order while the union fits: ``n`` paths kept in ``prob`` (or none, ``prob`` left
    empty)."""
    first = None
    for d in (j for j in range(prob.k) if prob.deep[j]):
        prob.add(d)
        if prob.fits():
            first = d
            break
        prob.remove(d)
    if first is None:
        return []
    chosen = [first]
    for j in range(prob.k):
        if len(chosen) == n:
            break
        if j == first:
            continue
        prob.add(j)
        if prob.fits():
            chosen.append(j)
        else:
            prob.remove(j)
    if len(chosen) == n:
        return sorted(chosen)
    for j in chosen:
        prob.remove(j)
    return []


def branch_and_bound(
    prob: Problem, n: int, limit: int, seed: tuple[int, ...] | None
) -> tuple[tuple[int, ...] | None, bool, int]:
    """Best ``n``-subset (score, then lexicographic ranks); ``(best, complete, branches)``."""
    if seed == tuple(range(n)):  # the top n fit: nothing scores higher or ranks earlier
        return seed, True, 0
    best = seed
    best_s = prob.score(seed) if seed is not None else 0
    chosen: list[int] = []
    branches = 0

    def visit(start: int, s: int, deep: bool) -> None:
        nonlocal best, best_s, branches
        r = n - len(chosen)
        if r == 0:
            t = tuple(chosen)
            if deep and prob.fits() and (best is None or s > best_s or (s == best_s and t < best)):
                best, best_s = t, s
            return
        depth = len(chosen)
        for j in range(start, prob.k - r + 1):
            if not deep and j > prob.last_deep:
                break  # no path left that reaches the required scale
            if best is not None:
                bound = s + prob.prefix[j + r] - prob.prefix[j]
                if bound < best_s or (bound == best_s and (*chosen, j) > best[: depth + 1]):
                    break  # later j have lower bounds and later ranks
            branches += 1
            if branches > limit:
                raise _Stop
            prob.add(j)
            if not prob.monotone or prob.fits():
                chosen.append(j)
                visit(j + 1, s + prob.sq[j], deep or prob.deep[j])
                chosen.pop()
            prob.remove(j)

    try:
        visit(0, 0, False)
    except _Stop:
        for j in chosen:
            prob.remove(j)
        return best, False, branches
    return best, True, branches

"""Consensus over several searches (seeds) of one space, and how much they agree.

One search is an anecdote: two seeds of the same search can choose different cells. A
consensus decodes several states together, in one of two ways (:data:`METHODS`):

- ``"mean"``: average the normalised weights ``softmax(alpha)``, ``softmax(p)`` and
  ``softmax(beta)`` over the states, hold them as a :class:`SearchState` whose logits are the
  log of the mean probabilities (so its softmax *is* the mean), and decode that state *within
  the seeds' own choices*: each decision (a block's kept inputs and operations, a node's
  strongest kind, the top-``N_l`` paths) ranks only the choices at least one seed's own
  decode made, by their weight (or path score, with :func:`msnas_graph.paths.rank_paths`'s
  exact order) under the mean. A mean of confident but different seeds can otherwise put its
  weight on a compromise that no seed chose (seeds preferring two different paths can lift a
  third that shares half of each; an identity path from input to output was kept that way
  with 0 of 3 votes). Where the plain mean's own choice has a vote it is kept unchanged, so
  the consensus equals ``decode(mean_state(states))`` whenever that decode keeps nothing
  unvoted; the decisions that had to change are listed in :attr:`ConsensusResult.replaced`;
- ``"majority"``: decode every state, then take per decision the most common choice: per cell
  type and block the kept inputs and operations, and for the network the ``N_l`` paths most
  often among the seeds' top-``N_l`` sets. Ties go to the higher mean weight (cells) or mean
  path score (paths), then to the canonical order. The architecture is the union of those paths.

The agreement of one decision is the fraction of seeds whose own choice equals the consensus
choice: per cell type and block, per trellis node with two or more incoming kinds (its
strongest kind), and per consensus path (the seeds whose top-``N_l`` set holds it). The overall
agreement is the mean over those decisions. Per seed, the Jaccard index of its edge set and of
its path set with the consensus architecture's; per consensus edge, the fraction of seeds that
keep it (drawn as edge width by :meth:`ConsensusResult.render`). When the consensus network
(its edges and the cells it uses) is the network one seed decoded on its own,
:attr:`ConsensusResult.identical_to` names that seed, so that a comparison counts the network
once.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> s = SearchState.random(SearchSpace.preset("tiny"), seed=0)
>>> twin = SearchState.from_dict(s.to_dict())
>>> twin.alpha_logits["keep"][0][0] += 1.0  # another search with the same weights (softmax)
>>> result = consensus([s, twin], paths=2)
>>> result.agreement, result.edge_jaccard, result.identical_to
(1.0, (1.0, 1.0), ('state 1', 'state 2'))
>>> set(result.architecture.edges) == set(decode(s, paths=2).edges)  # the mean is that state
True

The same search twice is not two agreeing seeds:

>>> consensus([s, s])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
msnas_graph.errors.DecodeError: state 2 holds the same search state as state 1 (content ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

import numpy as np

from ._consensus_choices import (
    BlockKey,
    Choice,
    assemble,
    cell_choices,
    cell_text,
    majority_cells,
    majority_nodes,
    majority_paths,
    mean_cells,
    mean_nodes,
    mean_paths,
    node_choices,
    path_text,
)
from ._util import unknown_name
from .architecture import Architecture
from .budget import Budget, BudgetedDecode, CostModel, budgeted_decode
from .decode import decode
from .errors import DecodeError, StateError
from .genotype import CellGenotype
from .graph import Edge
from .paths import DEFAULT_SCORE
from .state import SearchState, softmax
from .topology import TOPOLOGY, cell_types_used, on_topology, shared_topology

if TYPE_CHECKING:
    import graphviz

__all__ = ["METHODS", "ConsensusResult", "DecisionAgreement", "consensus", "mean_state"]

#: Consensus methods (the first is the default).
METHODS: tuple[str, ...] = ("mean", "majority")


@dataclass(frozen=True)
class DecisionAgreement:
    """One decision of the consensus: ``group`` (``"cell"``, ``"node"`` or ``"path"``),
    ``where`` (``"keep.b2"``, ``"L3.s1"``, ``"1"`` for path 1), the consensus ``choice`` and the
    fraction of seeds that chose it (``agreement``, ``votes`` of ``seeds``)."""

    group: str
    where: str
    choice: str
    votes: int
    seeds: int

    @property
    def agreement(self) -> float:
        """``votes / seeds``."""
        return self.votes / self.seeds

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**self.__dict__, "agreement": self.agreement}


@dataclass(frozen=True)
class ConsensusResult:
    """The consensus architecture of several states and how much the seeds agree."""

    architecture: Architecture
    method: str
    decisions: tuple[DecisionAgreement, ...]
    edge_agreement: dict[Edge, float]
    edge_jaccard: tuple[float, ...]
    path_jaccard: tuple[float, ...]
    state: SearchState | None = None
    #: The seeds (names, or ``"state k"``) whose own decoded network equals the consensus's.
    identical_to: tuple[str, ...] = ()
    #: Decisions where the plain mean's choice had no vote and a seed's choice replaced it.
    replaced: tuple[str, ...] = ()
    #: Under a budget: the consensus's budgeted decode (its cost, score and exactness).
    budgeted: BudgetedDecode | None = None

    @property
    def seeds(self) -> int:
        """Number of states combined."""
        return len(self.edge_jaccard)

    @property
    def agreement(self) -> float:
        """Mean agreement over every decision (cells, nodes and paths)."""
        return float(np.mean([d.agreement for d in self.decisions])) if self.decisions else 1.0

    def group_agreement(self, group: str) -> float | None:
        """Mean agreement over the decisions of one group (None if it has none)."""
        xs = [d.agreement for d in self.decisions if d.group == group]
        return float(np.mean(xs)) if xs else None

    def summary(self) -> str:
        """One line: overall agreement, per group, and the seeds' edge Jaccard."""
        groups = ", ".join(
            f"{g}s {a:.0%}"
            for g in ("cell", "node", "path")
            if (a := self.group_agreement(g)) is not None
        )
        same = (
            f"; the consensus network is the one {', '.join(self.identical_to)} decoded"
            if self.identical_to
            else ""
        )
        return (
            f"consensus ({self.method}) of {self.seeds} searches: the seeds agree on "
            f"{self.agreement:.0%} of decisions ({groups}); edge Jaccard with the consensus "
            f"mean {np.mean(self.edge_jaccard):.2f}, min {min(self.edge_jaccard):.2f}{same}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the architecture, the agreement per decision, edge and seed."""
        return {
            "method": self.method,
            "seeds": self.seeds,
            "summary": self.summary(),
            "agreement": self.agreement,
            "agreement_by_group": {g: self.group_agreement(g) for g in ("cell", "node", "path")},
            "edge_jaccard": list(self.edge_jaccard),
            "path_jaccard": list(self.path_jaccard),
            "identical_to": list(self.identical_to),
            "replaced": list(self.replaced),
            "edge_agreement": {e.key: a for e, a in self.edge_agreement.items()},
            "decisions": [d.to_dict() for d in self.decisions],
            "architecture": self.architecture.to_dict(),
            **({"budget": self.budgeted.to_dict()} if self.budgeted else {}),
        }

    def __str__(self) -> str:
        lines = [str(self.architecture), self.summary()]
        if self.budgeted is not None:
            lines.append(self.budgeted.summary())
        if self.replaced:
            lines.append(
                "  no seed chose the plain mean's choice, replaced by the best voted one: "
                + "; ".join(self.replaced)
            )
        if self.agreement < 1.0:
            lines.append("  where the seeds differ (consensus choice, votes):")
        lines += [
            f"  {d.group} {d.where}: {d.choice}  {d.votes}/{d.seeds}"
            for d in self.decisions
            if d.votes < d.seeds
        ]
        return "\n".join(lines)

    def to_graphviz(self) -> graphviz.Digraph:
        """The consensus architecture, each edge's width and label its agreement."""
        from .render import render_architecture

        attrs = {
            e: {"penwidth": f"{0.6 + 3.4 * a:.2f}", "label": f"{a:.0%}", "fontsize": "9"}
            for e, a in self.edge_agreement.items()
        }
        note = f"edge width and label: share of the {self.seeds} seeds that keep the edge"
        return render_architecture(self.architecture, edge_attrs=attrs, notes=[note])

    def render(self, path: str | FsPath) -> FsPath:
        """Write :meth:`to_graphviz` (``.svg``, ``.png``, ``.pdf`` or ``.dot``)."""
        from .render import save_rendering

        return save_rendering(self.to_graphviz(), path)


def _check(states: Sequence[SearchState], method: str, names: Sequence[str] | None) -> None:
    if method not in METHODS:
        raise DecodeError(unknown_name("consensus method", method, METHODS))
    if not states:
        raise DecodeError("consensus needs at least one search state (give one or more)")
    if names is not None and len(names) != len(states):
        raise DecodeError(f"{len(names)} names for {len(states)} states; give one name per state")
    label = list(names) if names is not None else [f"state {i + 1}" for i in range(len(states))]
    first = states[0].space
    for name, s in zip(label[1:], states[1:], strict=False):
        if s.space != first:
            a, b = s.space.to_dict(), first.to_dict()
            fields = ", ".join(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            raise StateError(
                f"{name} is a search of space '{s.space.name}', {label[0]} of "
                f"'{first.name}' (they differ in {fields}); a consensus needs searches of one space"
            )
    seen: dict[str, str] = {}
    for name, s in zip(label, states, strict=False):
        if (key := s.content_hash) in seen:
            raise DecodeError(
                f"{name} holds the same search state as {seen[key]} (content {key}); a "
                f"consensus counts each search once: give distinct runs (seeds)"
            )
        seen[key] = name


def _log_mean(arrays: Sequence[np.ndarray], axis: int = -1) -> np.ndarray:
    mean = np.mean([softmax(a, axis=axis) for a in arrays], axis=0)
    return np.log(np.maximum(mean, 1e-300))


def mean_state(states: Sequence[SearchState]) -> SearchState:
    """A state whose softmax weights are the mean of ``states``' (same space).

    >>> from msnas_graph.spec import SearchSpace
    >>> space = SearchSpace.preset("tiny")
    >>> a, b = SearchState.zeros(space), SearchState.zeros(space)
    >>> a.beta_logits[a.graph.searchable_nodes[0]][:] = [np.log(3.0), 0.0]  # weights .75, .25
    >>> m = mean_state([a, b])  # (.75 + .5) / 2, (.25 + .5) / 2
    >>> softmax(m.beta_logits[m.graph.searchable_nodes[0]]).round(3).tolist()
    [0.625, 0.375]
    """
    _check(states, "mean", None)
    space, graph = states[0].space, states[0].graph
    alpha = {
        c: [_log_mean([s.alpha_logits[c][b] for s in states]) for b in range(space.blocks)]
        for c in space.cell_types
    }
    p = {
        c: [_log_mean([s.p_logits[c][b] for s in states]) for b in range(space.blocks)]
        for c in space.cell_types
    }
    beta = {n: _log_mean([s.beta_logits[n] for s in states]) for n in graph.searchable_nodes}
    meta: dict[str, Any] = {"consensus": "mean", "seeds": len(states)}
    if (net := shared_topology(list(states))) is not None:  # searched on one fixed network
        meta[TOPOLOGY] = net.to_dict()
    return SearchState(space, alpha, p, beta, meta=meta)


def consensus(
    states: Sequence[SearchState],
    paths: int = 3,
    method: str = "mean",
    score: str = DEFAULT_SCORE,
    inputs_per_block: int | None = None,
    names: Sequence[str] | None = None,
    budget: Budget | None = None,
    cost_model: Callable[[Mapping[str, CellGenotype]], CostModel] | None = None,
    candidates: int = 128,
    min_scale: int = 0,
) -> ConsensusResult:
    """The consensus architecture of ``states`` (one space) and the seeds' agreement.

    ``method`` is ``"mean"`` or ``"majority"`` (module doc); ``paths``, ``score`` and
    ``inputs_per_block`` are those of :func:`msnas_graph.decode.decode`; ``names`` label the
    states in error messages. Raises :class:`DecodeError` for no state or an unknown method,
    :class:`StateError` for states of different spaces. States searched on one fixed network
    (:mod:`msnas_graph.topology`) decide only its cells. With a ``budget`` (``mean`` only;
    ``cost_model(cells)`` costs the consensus's cells, ``candidates`` as in budgeted decoding)
    the paths are chosen under it (module doc).
    With ``min_scale`` (``mean``), each seed decodes as ``decode(..., min_scale=)`` (or the
    budgeted decode) does and the consensus keeps the best voted set with a path that deep.

    >>> from msnas_graph.spec import SearchSpace
    >>> space = SearchSpace.preset("quick")
    >>> seeds = [SearchState.random(space, seed=i) for i in range(3)]
    >>> r = consensus(seeds, method="majority")
    >>> 0 < r.agreement <= 1, len(r.architecture.paths)
    (True, 3)
    """
    _check(states, method, names)
    _check_choosing(method, budget is not None, cost_model is not None, min_scale)
    m = inputs_per_block
    if (net := _fixed_network(states, budget is not None or min_scale > 0)) is not None:
        return _on_topology(states, net, method, m, names)
    archs = [decode(s, paths, m, score, min_scale) for s in states]
    cells_seed = [cell_choices(s, m) for s in states]
    nodes_seed = [node_choices(s) for s in states]
    state: SearchState | None = None
    replaced: list[str] = []
    meta: dict[str, Any] = {"paths": paths, "score": score}
    if min_scale > 0:
        meta["min_scale"] = min_scale
    budgeted: BudgetedDecode | None = None
    if method == "mean":
        state = mean_state(states)
        meta["state_hash"] = state.content_hash
        chosen_cells, genotypes, replaced = mean_cells(state, cells_seed, m)
        chosen_nodes = mean_nodes(state, nodes_seed, replaced)
        if budget is not None and cost_model is not None:
            how = (budget, cost_model(genotypes), paths, m, score, candidates, min_scale)
            archs, budgeted = _budgeted_choice(states, state, genotypes, how, replaced)
            top = list(budgeted.architecture.paths)
            meta.update({k: budgeted.architecture.meta[k] for k in ("budget", "cost", "exact")})
        else:
            top = mean_paths(state, archs, (paths, min_scale), m, score, replaced)
    else:
        genotypes, chosen_cells = majority_cells(states, cells_seed)
        chosen_nodes = majority_nodes(states, nodes_seed)
        top = majority_paths(states, archs, paths, score)
    n = len(states)
    meta.update(consensus=method, seeds=n)
    arch = assemble(states[0], genotypes, top, meta)
    seed_paths = [{p.edges for p in a.paths} for a in archs]
    decisions = _decisions(chosen_cells, cells_seed, chosen_nodes, nodes_seed, arch, seed_paths)
    kept = set(arch.edges)
    ours = {p.edges for p in arch.paths}
    return ConsensusResult(
        architecture=arch,
        method=method,
        decisions=tuple(decisions),
        edge_agreement={e: sum(e in a.edges for a in archs) / n for e in arch.edges},
        edge_jaccard=tuple(_jaccard(set(a.edges), kept) for a in archs),
        path_jaccard=tuple(_jaccard(sp, ours) for sp in seed_paths),
        state=state,
        identical_to=_identical(arch, archs, names),
        replaced=tuple(replaced),
        budgeted=budgeted,
    )


def _decisions(
    cells: Mapping[BlockKey, Choice],
    cells_seed: Sequence[Mapping[BlockKey, Choice]],
    nodes: Mapping[str, str],
    nodes_seed: Sequence[Mapping[str, str]],
    arch: Architecture,
    voted: Sequence[set[tuple[Edge, ...]]],
) -> list[DecisionAgreement]:
    """Every decision of the consensus and how many seeds made it (cells, nodes, paths)."""
    n = len(cells_seed)
    decisions = [
        DecisionAgreement(
            "cell", f"{k[0]}.b{k[1] + 1}", cell_text(v), sum(cs[k] == v for cs in cells_seed), n
        )
        for k, v in cells.items()
    ]
    decisions += [
        DecisionAgreement("node", k, v, sum(ns[k] == v for ns in nodes_seed), n)
        for k, v in nodes.items()
    ]
    decisions += [
        DecisionAgreement("path", str(i + 1), path_text(p), sum(p.edges in v for v in voted), n)
        for i, p in enumerate(arch.paths)
    ]
    return decisions


def _check_choosing(method: str, budget: bool, cost_model: bool, min_scale: int) -> None:
    """A budget (with its cost model) or ``min_scale`` chooses the mean consensus's paths."""
    if budget and (method != "mean" or not cost_model):
        raise DecodeError("a budget decodes the mean consensus (with a cost model), not a vote")
    if min_scale > 0 and method != "mean":
        raise DecodeError("min_scale decodes the mean consensus, not a vote")


def _fixed_network(states: Sequence[SearchState], choosing: bool) -> Architecture | None:
    """The network ``states`` were searched on (``search --topology``), if any; a budget or
    ``min_scale`` (``choosing`` paths) is refused for them."""
    net = shared_topology(list(states))
    if net is not None and choosing:
        raise DecodeError(
            "the states were searched on a fixed network (search --topology): its paths are "
            "given, so no budget or min_scale chooses them"
        )
    return net


def _on_topology(
    states: Sequence[SearchState],
    net: Architecture,
    method: str,
    m: int | None,
    names: Sequence[str] | None,
) -> ConsensusResult:
    """The consensus of states searched on the fixed network ``net``: its edges and paths,
    the consensus of the cells it uses, and the seeds' agreement on those cells alone."""
    cells_seed = [cell_choices(s, m) for s in states]
    state: SearchState | None = None
    replaced: list[str] = []
    if method == "mean":
        state = mean_state(states)
        chosen_cells, genotypes, replaced = mean_cells(state, cells_seed, m)
    else:
        genotypes, chosen_cells = majority_cells(states, cells_seed)
    used = cell_types_used(net)
    meta = {"consensus": method, "seeds": len(states)}
    arch = on_topology(net, dict(genotypes), states[0].space, meta)
    archs = [decode(s, inputs_per_block=m) for s in states]
    decisions = [
        d
        for d in _decisions(chosen_cells, cells_seed, {}, [{} for _ in states], arch, [])
        if d.group == "cell" and d.where.split(".")[0] in used
    ]
    return ConsensusResult(
        architecture=arch, method=method, decisions=tuple(decisions),
        edge_agreement=dict.fromkeys(arch.edges, 1.0), edge_jaccard=(1.0,) * len(states),
        path_jaccard=(1.0,) * len(states), state=state,
        identical_to=_identical(arch, archs, names), replaced=tuple(replaced),
    )  # fmt: skip


def _budgeted_choice(
    states: Sequence[SearchState],
    mean: SearchState,
    genotypes: Mapping[str, CellGenotype],
    how: tuple[Budget, CostModel, int, int | None, str, int, int],
    replaced: list[str],
) -> tuple[list[Architecture], BudgetedDecode]:
    """Each seed's budgeted network, and the mean's budgeted decode among their paths (the
    mean's own budgeted paths that no seed kept are added to ``replaced``)."""
    archs = [_budgeted(s, *how).architecture for s in states]
    voted = {p.edges for a in archs for p in a.paths}
    own = _budgeted(mean, *how, among=None, cells=genotypes)
    replaced += [f"path {path_text(p)}" for p in own.architecture.paths if p.edges not in voted]
    return archs, _budgeted(mean, *how, among=voted, cells=genotypes)


def _budgeted(
    state: SearchState,
    budget: Budget,
    model: CostModel,
    paths: int,
    m: int | None,
    score: str,
    candidates: int,
    min_scale: int,
    among: set[tuple[Edge, ...]] | None = None,
    cells: Mapping[str, CellGenotype] | None = None,
) -> BudgetedDecode:
    return budgeted_decode(
        state, budget, model, paths, candidates, inputs_per_block=m, score=score, among=among,
        cells=cells, min_scale=min_scale,
    )  # fmt: skip


def _identical(
    arch: Architecture, archs: Sequence[Architecture], names: Sequence[str] | None
) -> tuple[str, ...]:
    """The seeds whose network (edges, and the cells it uses) is ``arch``'s."""
    label = list(names) if names is not None else [f"state {i + 1}" for i in range(len(archs))]

    def network(a: Architecture) -> tuple[Any, ...]:
        cells = {
            c: [[(i.source, i.op) for i in blk] for blk in g.blocks] for c, g in a.cells.items()
        }
        return (set(a.edges), cells)

    ours = network(arch)
    return tuple(name for name, a in zip(label, archs, strict=True) if network(a) == ours)


def _jaccard(x: set[Any], y: set[Any]) -> float:
    return len(x & y) / len(x | y) if x | y else 1.0

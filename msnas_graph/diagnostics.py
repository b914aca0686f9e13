"""Decision diagnostics: how decided a search state is, decision by decision.

Decoding makes three kinds of decision, and :func:`diagnose` measures each one:

- a **cell decision** per cell type and block: which input(s) and operation the block keeps,
  among the candidates ``(j, o)``, ``o != none``, weighted ``softmax(p[b])_j *
  softmax(alpha[b, j])_o`` (what :func:`msnas_graph.decode.decode_cell` ranks);
- a **node decision** per trellis node with two or more incoming edge kinds: the strongest kind
  under ``softmax(beta)`` (a node with one incoming edge decides nothing and is not counted);
- the **path set**: the top ``N_l`` paths (:func:`msnas_graph.decode.decode`).

For every cell and node decision: the ``margin`` between the chosen candidate and the runner-up
in the decision's own weight space; the ``log_ratio`` ``log(w_chosen / w_runner_up)``, the
normalised margin (for a softmax it is the logit gap, so it does not shrink with the number of
candidates the way ``w1 - w2`` does, and it compares decisions of different arity); the
normalised entropy ``H(w) / log(n)`` (1 = uniform, 0 = one-hot); whether it is *decided*
(``log_ratio >= DECIDED_LOG_RATIO`` *and* ``norm_entropy <= DECIDED_MAX_ENTROPY``: the winner
clearly ahead of the runner-up, and the weights as a whole away from uniform); and, given a
previous state, whether it *flipped*.
For the path set: the score gap between path ``N_l`` and path ``N_l + 1``, and the number of
edges by which the decoded architecture differs from the one decoded from the untrained prior
(the all-zero state of the same space).

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> d = diagnose(SearchState.zeros(SearchSpace.preset("quick")))
>>> print(d.summary())
0 of 6 cell decisions and 0 of 6 node decisions decided; the decoded architecture equals the \
untrained prior's (0 edges differ).
>>> d.warning() is not None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .decode import decode, decode_cell, decode_cells
from .errors import StateError
from .genotype import BlockInput
from .operations import NONE_OP
from .paths import DEFAULT_SCORE, count_paths, edge_scores, top_k_paths
from .state import SearchState, softmax
from .topology import TOPOLOGY, cell_types_used, state_topology

__all__ = [
    "DECIDED_FRACTION",
    "DECIDED_LOG_RATIO",
    "DECIDED_MAX_ENTROPY",
    "Decision",
    "Diagnostics",
    "PathSetDiagnostics",
    "cell_decisions",
    "diagnose",
    "node_decisions",
]

#: A decision is *decided* when the chosen candidate outweighs the runner-up by this log-ratio
#: (winner >= 1.105 x runner-up; for a softmax, a logit gap of 0.1). Architecture logits start
#: within +-0.001 and the undecided runs of issue 8 ended within +-0.004 of zero, so 0.1 is 25x
#: the drift of a search that learned nothing; an Adam step at the default lr 3e-4 moves a logit
#: by at most ~3e-4, so reaching it takes a few hundred consistent steps: a real preference.
DECIDED_LOG_RATIO = 0.1
#: ... and its weights' normalised entropy is at most this. The log-ratio alone looks at two
#: candidates: a search reported 6 of 6 decisions decided whose six weights spread 0.12-0.27
#: around the uniform 0.167 (winner 0.27 over 0.20: log-ratio 0.30, normalised entropy 0.97).
#: 0.95 keeps the entropy at least 5 % of ``log(n)`` below uniform (a KL divergence from
#: uniform of at least ``0.05 log n``). With the losers spread evenly, the winner then needs
#: 0.63 of a 2-way choice (logit gap 0.54), 0.42 of a 4-way (1.7x uniform), 0.34 of a 6-way
#: (2x uniform) and 0.23 of a 15-way one (3.5x uniform; the third block of a cell with five
#: operations). A stricter 0.9 would ask 4.7x uniform of the 15-way cell decisions while a
#: 2-way node could pass with 1.4x; the ``--arch-lr auto`` schedule aims at logit moves of
#: about 2, which give 0.6-0.8 on 2-4 way decisions, well inside either bound.
DECIDED_MAX_ENTROPY = 0.95
#: The result is "within noise of the untrained prior" (:meth:`Diagnostics.warning`) when fewer
#: than this fraction of the cell and node decisions are decided, or when the decoded
#: architecture equals the prior's.
DECIDED_FRACTION = 0.5
_TINY = 1e-300


@dataclass(frozen=True)
class Decision:
    """One decision: what was chosen over what, by how much, and whether it is decided.

    ``group`` is ``"cell"`` or ``"node"``; ``where`` names it (``"keep.b2"``, ``"L3.s1"``);
    ``chosen`` is the decoder's choice (``"sep_conv_3x3(in)"``, with several inputs per block
    ``"sep_conv_3x3(in) + skip_connect(b1)"``; ``"keep"`` for a node) and ``runner_up`` the
    candidate of the closest comparison; ``weight`` and ``runner_up_weight`` are that
    comparison's weights, in the decision's own weight space; ``flipped`` (the choice differs
    from the previous state's) is ``None`` without a previous state.
    """

    group: str
    where: str
    chosen: str
    runner_up: str
    candidates: int
    weight: float
    runner_up_weight: float
    margin: float
    log_ratio: float
    norm_entropy: float
    decided: bool
    flipped: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)

    def __str__(self) -> str:
        state = "decided" if self.decided else "undecided"
        flip = " (flipped)" if self.flipped else ""
        return (
            f"{self.group} {self.where}: {self.chosen} over {self.runner_up}  margin "
            f"{self.margin:.4f}  log-ratio {self.log_ratio:.3f}  entropy {self.norm_entropy:.3f}"
            f"  {state}{flip}"
        )


@dataclass(frozen=True)
class PathSetDiagnostics:
    """The top-``paths`` path set: ``gap`` = score of path ``N_l`` minus path ``N_l + 1`` (None
    when every path is kept), ``edges_vs_prior`` / ``blocks_vs_prior`` = edges and cell blocks by
    which the architecture differs from the untrained prior's, ``changed`` = whether the edge set
    differs from the previous state's (None without one)."""

    paths: int
    score: str
    gap: float | None
    edges: int
    edges_vs_prior: int
    blocks_vs_prior: int
    changed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def _entropy(w: np.ndarray) -> float:
    q = w / w.sum()
    q = q[q > 0]
    return float(-(q * np.log(q)).sum() / math.log(w.size)) if w.size > 1 else 0.0


def _decision(
    group: str,
    where: str,
    chosen: str,
    pairs: list[tuple[float, float, str]],
    all_weights: np.ndarray,
    threshold: float,
    max_entropy: float,
) -> Decision:
    """The binding (smallest log-ratio) of the ``(w_win, w_lose, loser)`` comparisons."""
    ratios = [math.log(max(a, _TINY)) - math.log(max(b, _TINY)) for a, b, _ in pairs]
    i = int(np.argmin(ratios))
    w_win, w_lose, lose = pairs[i]
    entropy = _entropy(all_weights)
    return Decision(
        group,
        where,
        chosen,
        lose,
        int(all_weights.size),
        float(w_win),
        float(w_lose),
        float(w_win - w_lose),
        float(ratios[i]),
        entropy,
        bool(ratios[i] >= threshold and entropy <= max_entropy),
    )


def cell_decisions(
    state: SearchState,
    inputs_per_block: int | None = None,
    threshold: float = DECIDED_LOG_RATIO,
    max_entropy: float = DECIDED_MAX_ENTROPY,
) -> list[Decision]:
    """One :class:`Decision` per cell type and block with more than one candidate.

    The chosen inputs and operations are the decoder's (:func:`decode_cell`). With one input
    per block the runner-up is the second-best candidate ``(j, o)``; with ``m`` inputs the
    binding comparison is the weaker of "each kept input's operation over its next operation"
    and "the weakest kept input over the strongest dropped one".
    """
    space = state.space
    ops = [o for o in space.ops if o != NONE_OP]
    cols = np.array([i for i, o in enumerate(space.ops) if o != NONE_OP], dtype=np.int64)
    out = []
    for c in space.cell_types:
        cell = decode_cell(state, c, inputs_per_block)
        for b, kept in enumerate(cell.blocks):
            w = state.op_weights(c, b)[:, cols]
            pairs = []
            for k in kept:
                row = w[k.source]
                o = ops.index(k.op)
                others = [x for x in range(len(ops)) if x != o]
                if others:
                    r = max(others, key=lambda x: (row[x], -x))
                    pairs.append((row[o], row[r], _name(ops[r], k.source)))
            dropped = [j for j in range(b + 1) if j not in {k.source for k in kept}]
            if dropped:
                weakest = min(kept, key=lambda k: w[k.source, ops.index(k.op)])
                j = max(dropped, key=lambda j: (w[j].max(), -j))
                o2 = int(np.argmax(w[j]))
                pairs.append(
                    (w[weakest.source, ops.index(weakest.op)], w[j, o2], _name(ops[o2], j))
                )
            if pairs:
                chosen = " + ".join(_name(k.op, k.source) for k in kept)
                where = f"{c}.b{b + 1}"
                out.append(
                    _decision("cell", where, chosen, pairs, w.ravel(), threshold, max_entropy)
                )
    return out


def _name(op: str, source: int) -> str:
    return f"{op}({'in' if source == 0 else f'b{source}'})"


def node_decisions(
    state: SearchState,
    threshold: float = DECIDED_LOG_RATIO,
    max_entropy: float = DECIDED_MAX_ENTROPY,
) -> list[Decision]:
    """One :class:`Decision` per trellis node with two or more incoming edge kinds
    (strongest kind under ``softmax(beta)``; ties go to the earlier kind)."""
    out = []
    for node in state.graph.searchable_nodes:
        kinds = state.graph.node_kinds(node)
        if len(kinds) < 2:
            continue
        w = softmax(state.beta_logits[node])
        order = np.argsort(-w, kind="stable")
        a, b = int(order[0]), int(order[1])
        pair: list[tuple[float, float, str]] = [(w[a], w[b], kinds[b])]
        out.append(_decision("node", str(node), kinds[a], pair, w, threshold, max_entropy))
    return out


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


@dataclass(frozen=True)
class Diagnostics:
    """The decisions of one state (see the module doc); build it with :func:`diagnose`."""

    cells: tuple[Decision, ...]
    nodes: tuple[Decision, ...]
    path_set: PathSetDiagnostics
    threshold: float = DECIDED_LOG_RATIO
    max_entropy: float = DECIDED_MAX_ENTROPY

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Cell decisions, then node decisions."""
        return self.cells + self.nodes

    @property
    def flips(self) -> int | None:
        """Cell and node decisions that changed since the previous state (None without one)."""
        if self.path_set.changed is None:
            return None
        return sum(bool(d.flipped) for d in self.decisions)

    @property
    def decided_fraction(self) -> float:
        """Fraction of the cell and node decisions that are decided (1.0 if there are none)."""
        ds = self.decisions
        return sum(d.decided for d in ds) / len(ds) if ds else 1.0

    @property
    def undecided(self) -> bool:
        """Whether the result is within noise of the untrained prior (see :meth:`warning`)."""
        same = self.path_set.edges_vs_prior == 0 and self.path_set.blocks_vs_prior == 0
        return bool(self.decisions) and (self.decided_fraction < DECIDED_FRACTION or same)

    def summary(self) -> str:
        """One short paragraph: decided counts, distance from the prior, flips."""
        nc, nn = sum(d.decided for d in self.cells), sum(d.decided for d in self.nodes)
        ps = self.path_set
        prior = (
            "equals the untrained prior's (0 edges differ)"
            if ps.edges_vs_prior == 0
            else f"differs from the untrained prior in {ps.edges_vs_prior} edges"
        )
        if not self.nodes:  # a fixed network (search --topology): only its cells decided
            prior = f"'s cells differ from the untrained prior's in {ps.blocks_vs_prior} blocks"
        text = (
            f"{nc} of {len(self.cells)} cell decisions and {nn} of {len(self.nodes)} node "
            f"decisions decided; the decoded architecture{'' if not self.nodes else ' '}{prior}"
        )
        if self.flips is not None:
            text += f"; {self.flips} decisions flipped since the previous state"
        return text + "."

    def warning(self) -> str | None:
        """A one-line warning when the result is within noise of the untrained prior, else None.

        That is: fewer than :data:`DECIDED_FRACTION` of the decisions are decided, or the
        decoded architecture equals the one decoded from the all-zero state.
        """
        if not self.undecided:
            return None
        ds = self.decisions
        best = max(d.log_ratio for d in ds)
        same = self.path_set.edges_vs_prior == 0 and self.path_set.blocks_vs_prior == 0
        return (
            f"the search has not decided: {sum(d.decided for d in ds)} of {len(ds)} decisions "
            f"have a winner/runner-up log-ratio of {self.threshold} or more (largest "
            f"{best:.4f}) and a normalised entropy of {self.max_entropy} or less"
            + ("; the architecture equals the untrained prior's" if same else "")
            + ", so noise and tie-breaks, not learning, chose it; search longer (more "
            "--arch-steps or --epochs, after a --warmup of weight-only steps) or give a larger "
            "--arch-lr (the automatic one is 2 / the phase's steps, at most 3e-2)"
        )

    def flat_metrics(self) -> dict[str, float | int]:
        """A flat dict of numbers for one ``metrics.csv`` row (``flips`` is 0 without a
        previous state; ``path_gap`` is 0.0 when every path is kept; entropies are NaN when
        there is no decision of that group)."""
        ent_c = _mean([d.norm_entropy for d in self.cells])
        ent_n = _mean([d.norm_entropy for d in self.nodes])
        ds = self.decisions
        return {
            "cell_decided": sum(d.decided for d in self.cells),
            "cell_total": len(self.cells),
            "node_decided": sum(d.decided for d in self.nodes),
            "node_total": len(self.nodes),
            "mean_norm_entropy_cell": math.nan if ent_c is None else ent_c,
            "mean_norm_entropy_node": math.nan if ent_n is None else ent_n,
            "min_log_ratio": min((d.log_ratio for d in ds), default=math.nan),
            "min_margin": min((d.margin for d in ds), default=math.nan),
            "flips": self.flips or 0,
            "path_gap": self.path_set.gap or 0.0,
            "edges_vs_prior": self.path_set.edges_vs_prior,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``--json``): summary, warning, threshold, every decision."""
        return {
            "summary": self.summary(),
            "warning": self.warning(),
            "threshold_log_ratio": self.threshold,
            "max_norm_entropy": self.max_entropy,
            "decided_fraction": self.decided_fraction,
            "flips": self.flips,
            "mean_norm_entropy_cell": _mean([d.norm_entropy for d in self.cells]),
            "mean_norm_entropy_node": _mean([d.norm_entropy for d in self.nodes]),
            "path_set": self.path_set.to_dict(),
            "cells": [d.to_dict() for d in self.cells],
            "nodes": [d.to_dict() for d in self.nodes],
        }

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"  {d}" for d in self.decisions)])


def _path_set(
    state: SearchState,
    paths: int,
    inputs_per_block: int | None,
    score: str,
    previous: SearchState | None,
) -> PathSetDiagnostics:
    arch = decode(state, paths, inputs_per_block, score)
    gap = None
    if paths < count_paths(state.graph):
        nxt = top_k_paths(state.graph, edge_scores(state, score), paths + 1)
        gap = nxt[paths - 1].path_score - nxt[paths].path_score
    zero = SearchState(state.space, *_zero_logits(state), meta=state.meta, graph=state.graph)
    prior = decode(zero, paths, inputs_per_block, score)
    ours, theirs = decode_cells(state, inputs_per_block), decode_cells(zero, inputs_per_block)
    blocks = sum(
        _choices(x) != _choices(y)
        for c in (arch.cells if TOPOLOGY in state.meta else ours)  # a fixed network: its cells
        for x, y in zip(ours[c].blocks, theirs[c].blocks, strict=True)
    )
    changed = None
    if previous is not None:
        changed = set(decode(previous, paths, inputs_per_block, score).edges) != set(arch.edges)
    return PathSetDiagnostics(
        paths=paths,
        score=score,
        gap=gap,
        edges=len(arch.edges),
        edges_vs_prior=len(set(arch.edges) ^ set(prior.edges)),
        blocks_vs_prior=blocks,
        changed=changed,
    )


def _choices(block: tuple[BlockInput, ...]) -> tuple[tuple[int, str], ...]:
    return tuple((i.source, i.op) for i in block)


def diagnose(
    state: SearchState,
    paths: int = 3,
    previous: SearchState | None = None,
    score: str = DEFAULT_SCORE,
    inputs_per_block: int | None = None,
    threshold: float = DECIDED_LOG_RATIO,
    max_entropy: float = DECIDED_MAX_ENTROPY,
) -> Diagnostics:
    """Diagnose every decision that decoding ``state`` with ``paths`` (``N_l``) makes.

    ``previous`` (a state of the same space, e.g. the previous epoch's) adds flips; ``score``
    and ``inputs_per_block`` are those of :func:`msnas_graph.decode.decode`; a decision is
    decided when its log-ratio is at least ``threshold`` and its normalised entropy at most
    ``max_entropy`` (module doc).

    >>> from msnas_graph.spec import SearchSpace
    >>> state = SearchState.zeros(SearchSpace.preset("tiny"))
    >>> for node, beta in state.beta_logits.items():
    ...     beta[0] = 2.0  # every node prefers its first kind by a logit gap of 2
    >>> d = diagnose(state, paths=2)
    >>> [(x.where, x.chosen, round(x.log_ratio, 3), x.decided) for x in d.nodes][:2]
    [('L1.s0', 'keep', 2.0, True), ('L2.s0', 'keep', 2.0, True)]
    >>> d.flat_metrics()["node_decided"], d.flat_metrics()["cell_decided"]
    (4, 0)
    """
    if previous is not None and previous.space != state.space:
        raise StateError(
            f"the previous state is of space '{previous.space.name}', this one of "
            f"'{state.space.name}'; compare states of one search"
        )
    cells = cell_decisions(state, inputs_per_block, threshold, max_entropy)
    nodes = node_decisions(state, threshold, max_entropy)
    if (net := state_topology(state)) is not None:  # its network's cells: all it decides
        used = cell_types_used(net)
        cells, nodes = [d for d in cells if d.where.split(".")[0] in used], []
    if previous is not None:
        before = {
            (d.group, d.where): d.chosen
            for d in cell_decisions(previous, inputs_per_block, threshold, max_entropy)
            + node_decisions(previous, threshold, max_entropy)
        }
        cells = [_flip(d, before) for d in cells]
        nodes = [_flip(d, before) for d in nodes]
    ps = _path_set(state, paths, inputs_per_block, score, previous)
    return Diagnostics(tuple(cells), tuple(nodes), ps, threshold, max_entropy)


def _zero_logits(state: SearchState) -> tuple[Any, Any, Any]:
    """The logits of the untrained state of ``state``'s space."""
    zero = SearchState.zeros(state.space, state.graph)
    return zero.alpha_logits, zero.p_logits, zero.beta_logits


def _flip(d: Decision, before: dict[tuple[str, str], str]) -> Decision:
    from dataclasses import replace

    return replace(d, flipped=before.get((d.group, d.where), d.chosen) != d.chosen)

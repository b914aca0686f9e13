"""Two-step decoding (paper section 2.2): cells first, then the top-``N_l`` network paths.

1. *Cell level*, per cell type: every block keeps the ``inputs_per_block`` inputs whose best
   operation (``none`` excluded) has the largest ``softmax(p)_j * softmax(alpha_j)_o``; ties go to
   the lower input index, then the earlier operation in ``space.ops``. Block ``b`` has ``b + 1``
   inputs, so a block with fewer keeps them all; more than the last block has is refused.
2. *Network level*: every edge is scored from ``softmax(beta)`` at its destination node
   (:func:`msnas_graph.paths.edge_scores`; default ``score="paper"``, the paper's plain
   weight, chosen by the frontier benchmark; it prefers the trellis rim before any learning;
   ``score="relative"`` is the weight relative to uniform, so an untrained state prefers no
   path, but it decodes cost-weighed searches into full-resolution identity paths); the
   ``N_l`` highest-scoring
   input -> output paths (:func:`msnas_graph.paths.top_k_paths`, exact, with its documented
   tie-break) are kept, and their union is the architecture. The score mode is recorded in
   ``arch.meta["score"]``.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> state = SearchState.random(SearchSpace.preset("tiny"), seed=3)
>>> arch = decode(state, paths=2)
>>> len(arch.paths), arch.paths[0].path_score >= arch.paths[1].path_score
(2, True)
>>> decode(state, paths=2) == arch  # deterministic
True
>>> arch.meta["score"]
'paper'
>>> zero = SearchState.zeros(SearchSpace.preset("quick"))
>>> [p.path_score for p in decode(zero, paths=3, score="relative").paths]  # no prior: all tie
[0.0, 0.0, 0.0]
>>> [round(p.path_score, 4) for p in decode(zero, paths=3, score="paper").paths]
[2.5833, 2.0, 2.0]
"""

from __future__ import annotations

import numpy as np

from .architecture import Architecture
from .errors import DecodeError
from .genotype import BlockInput, CellGenotype
from .kinds import cell_types_of
from .operations import NONE_OP
from .paths import DEFAULT_SCORE, edge_scores, top_paths
from .spec import CellType
from .state import SearchState
from .topology import on_topology, state_topology

__all__ = ["decode", "decode_cell", "decode_cells"]


def decode_cell(
    state: SearchState, cell_type: CellType, inputs_per_block: int | None = None
) -> CellGenotype:
    """The discrete cell of ``cell_type`` (see module doc for the rule and tie-break)."""
    space = state.space
    m = space.inputs_per_block if inputs_per_block is None else inputs_per_block
    if m < 1:
        raise DecodeError(f"inputs_per_block must be at least 1, got {m}")
    if m > space.blocks:  # block b has b + 1 inputs: earlier blocks keep all of theirs
        raise DecodeError(
            f"inputs_per_block={m} exceeds the {space.blocks} inputs of the last block: use "
            f"--inputs-per-block {space.blocks} or less (blocks with fewer inputs keep them all)"
        )
    if cell_type not in space.cell_types:
        raise DecodeError(f"cell type '{cell_type}' is not in the space ({space.cell_types})")
    allowed = np.array([op != NONE_OP for op in space.ops])
    layout = state.layout
    blocks = []
    for b in range(layout.blocks):
        sources = np.array(layout.block_sources(b))
        ow = np.where(allowed[None, :], state.op_weights(cell_type, b), -np.inf)
        best_op = np.argmax(ow, axis=1)  # first maximum: earlier op wins ties
        best_w = ow[sources, best_op]
        keep = np.argsort(-best_w, kind="stable")[: min(m, len(sources))]
        blocks.append(
            tuple(
                BlockInput(int(j), space.ops[int(best_op[j])], float(best_w[j]))
                for j in sorted(int(j) for j in keep)
            )
        )
    return CellGenotype(cell_type, tuple(blocks))


def decode_cells(
    state: SearchState, inputs_per_block: int | None = None
) -> dict[str, CellGenotype]:
    """:func:`decode_cell` for every cell type of the space."""
    return {c: decode_cell(state, c, inputs_per_block) for c in state.space.cell_types}


def decode(
    state: SearchState,
    paths: int = 3,
    inputs_per_block: int | None = None,
    score: str = DEFAULT_SCORE,
    min_scale: int = 0,
) -> Architecture:
    """Decode ``state`` into an :class:`Architecture` keeping the top ``paths`` paths (``N_l``).

    ``score`` is the path score, ``"paper"`` (default) or ``"relative"`` (module doc). With
    ``min_scale``, the best ``paths`` of which at least one reaches that scale
    (:func:`msnas_graph.paths.top_paths`; recorded in ``meta``). Raises :class:`DecodeError`
    if ``paths`` is below 1 or above the number of paths, the score mode is unknown, or no
    path reaches ``min_scale``.

    A state searched on a fixed network (``search --topology``: :mod:`msnas_graph.topology`)
    decodes to that network's edges and paths with its own cells; ``paths``, ``score`` and
    ``min_scale`` then choose nothing.
    """
    if (net := state_topology(state)) is not None:
        meta = {"state_hash": state.content_hash, **_provenance(state)}
        return on_topology(net, decode_cells(state, inputs_per_block), state.space, meta)
    scores = edge_scores(state, score)
    cells = decode_cells(state, inputs_per_block)
    best = top_paths(state.graph, scores, paths, min_scale)
    edges = {e for p in best for e in p.edges}
    used = cell_types_of(e.kind for e in edges)
    arch = Architecture(
        state.space,
        edges,
        {c: g for c, g in cells.items() if c in used},
        best,
        meta={
            "paths": paths,
            "score": score,
            **({"min_scale": min_scale} if min_scale > 0 else {}),
            "state_hash": state.content_hash,
            **_provenance(state),
        },
        graph=state.graph,
    )
    arch.validate()
    return arch


def _provenance(state: SearchState) -> dict[str, object]:
    keep = ("epoch", "random_seed", "run")
    return {k: state.meta[k] for k in keep if k in state.meta}

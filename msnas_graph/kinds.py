"""The network edge kinds: one table that says what each kind is.

Every edge into node ``(l, i)`` comes from layer ``l-1`` and has one of four kinds. What a kind
means is written here once, and the supergraph, decoding, validation, rendering and the backends
read it from :data:`EDGE_KINDS` instead of comparing strings:

======== ========== ========== =========== =====================================
kind     scale_step cell       resample    drawn
======== ========== ========== =========== =====================================
contract +1         contract   maxpool     blue, solid
keep     0          keep       none        green, solid
expand   -1         expand     upsample    orange, solid
skip     0          (none)     none        grey, dashed, hollow arrowhead
======== ========== ========== =========== =====================================

**Scale convention.** ``scale_step`` is the destination scale minus the source scale: a
``contract`` edge (``+1``) goes one scale coarser, from ``(l-1, i-1)`` into ``(l, i)``; an
``expand`` edge (``-1``) one scale finer, from ``(l-1, i+1)``. :func:`source_scale` applies it.
``resample`` happens before the cell: ``maxpool`` is a stride-2 max-pool, ``upsample`` a
bilinear x2 upsampling. The table's order is the canonical kind order (also the tie-break order
when decoding).

>>> EDGE_KINDS["contract"].scale_step, EDGE_KINDS["contract"].cell, EDGE_KINDS["skip"].cell
(1, 'contract', None)
>>> source_scale("expand", 0), carries_cell("skip"), KIND_NAMES
(1, False, ('contract', 'keep', 'expand', 'skip'))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from .errors import SpecError

__all__ = [
    "CELL_TYPES",
    "EDGE_KINDS",
    "KIND_NAMES",
    "CellType",
    "EdgeKind",
    "KindName",
    "Resample",
    "carries_cell",
    "cell_type_of",
    "cell_types_of",
    "edge_kind",
    "source_scale",
]

#: The name of an edge kind, as written in specs, edge ids and JSON.
KindName = Literal["contract", "keep", "expand", "skip"]
#: The name of a cell type: the kinds that carry a cell (``skip`` is a bare identity).
CellType = Literal["contract", "keep", "expand"]
#: How an edge resamples its input before the cell: stride-2 max-pool, nothing, bilinear x2.
Resample = Literal["maxpool", "none", "upsample"]


@dataclass(frozen=True)
class EdgeKind:
    """What one network edge kind is.

    Attributes:
        name: the kind's name (``contract``, ``keep``, ``expand``, ``skip``).
        scale_step: destination scale minus source scale (``+1`` = one scale coarser).
        cell: the cell type the edge carries, or ``None`` for an identity edge.
        resample: ``maxpool`` (stride 2), ``none`` or ``upsample`` (bilinear x2), applied
            before the cell.
        note: what the edge does, in a few words (legends, help texts).
        color: render colour (``#rrggbb``).
        style: graphviz line style (``solid`` or ``dashed``).
        arrowhead: graphviz arrowhead (``normal``, ``onormal`` for identity).
        letter: one-letter abbreviation in compact path listings.
    """

    name: KindName
    scale_step: int
    cell: CellType | None
    resample: Resample
    note: str
    color: str
    style: str
    arrowhead: str
    letter: str

    @property
    def carries_cell(self) -> bool:
        """Whether the edge holds a cell (and so searchable operations and parameters)."""
        return self.cell is not None


def _row(
    name: KindName,
    step: int,
    cell: CellType | None,
    resample: Resample,
    note: str,
    color: str,
    style: str = "solid",
    arrowhead: str = "normal",
) -> tuple[KindName, EdgeKind]:
    letter = name[0].upper()
    return name, EdgeKind(name, step, cell, resample, note, color, style, arrowhead, letter)


#: The edge-kind table, in canonical kind order.
EDGE_KINDS: Mapping[KindName, EdgeKind] = MappingProxyType(dict([
    # name       step  cell        resample    note                              colour
    _row("contract", 1, "contract", "maxpool", "max-pool /2, contracting cell", "#1f77b4"),
    _row("keep", 0, "keep", "none", "non-scaling cell", "#2ca02c"),
    _row("expand", -1, "expand", "upsample", "upsample x2, expanding cell", "#ff7f0e"),
    _row("skip", 0, None, "none", "identity (no parameters)", "#7f7f7f", "dashed", "onormal"),
]))  # fmt: skip
#: The kind names in canonical order.
KIND_NAMES: tuple[KindName, ...] = tuple(EDGE_KINDS)
#: The cell types in canonical order: the cells the kinds carry.
CELL_TYPES: tuple[CellType, ...] = tuple(k.cell for k in EDGE_KINDS.values() if k.cell is not None)


def edge_kind(name: str) -> EdgeKind:
    """The table row of kind ``name``; :class:`SpecError` lists the known kinds otherwise.

    >>> edge_kind("keep").resample
    'none'
    """
    try:
        return EDGE_KINDS[name]  # type: ignore[index]
    except KeyError:
        from ._util import unknown_name

        raise SpecError(unknown_name("edge kind", name, KIND_NAMES)) from None


def carries_cell(kind: str) -> bool:
    """Whether edges of ``kind`` hold a cell.

    >>> [k for k in KIND_NAMES if carries_cell(k)]
    ['contract', 'keep', 'expand']
    """
    return edge_kind(kind).cell is not None


def cell_type_of(kind: str) -> CellType | None:
    """The cell type an edge of ``kind`` carries, or ``None`` (``skip``)."""
    return edge_kind(kind).cell


def cell_types_of(kinds: Iterable[str]) -> set[CellType]:
    """The cell types that edges of ``kinds`` need.

    >>> sorted(cell_types_of(["keep", "skip", "keep"]))
    ['keep']
    """
    return {c for c in (cell_type_of(k) for k in kinds) if c is not None}


def source_scale(kind: str, dst_scale: int) -> int:
    """Scale of the source node of a ``kind`` edge into a node at ``dst_scale``.

    >>> source_scale("contract", 2), source_scale("keep", 2), source_scale("expand", 2)
    (1, 2, 3)
    """
    return dst_scale - edge_kind(kind).scale_step

"""What changed between two architectures (or two search states, decoded first).

:func:`diff` compares by node and edge ids: kept nodes and edges, the top paths (as edge
sequences; their scores are reported, not compared), the cells block by block (inputs and
operations; decoding weights are not compared) and the search-space fields. Its result, an
:class:`ArchDiff`, prints like a unified diff and serialises to JSON.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> space = SearchSpace.preset("tiny")
>>> a = SearchState.random(space, seed=0)
>>> diff(a, a).is_empty
True
>>> print(diff(a, a))
no differences
>>> d = diff(a, SearchState.random(space, seed=1), paths=2)
>>> 0.0 <= d.edge_overlap <= 1.0
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .architecture import Architecture
from .decode import decode
from .documents import Document
from .errors import ArchitectureError
from .genotype import CellGenotype
from .graph import Edge, NodeId
from .layout import source_name
from .paths import Path
from .spec import SearchSpace
from .state import SearchState

__all__ = ["ArchDiff", "BlockChange", "diff"]

FORMAT = "msnas-graph/arch-diff"

#: One kept input of a block, as compared: ``(source, op)`` (source 0 = cell input).
SourceOp = tuple[int, str]


def _terms(inputs: tuple[SourceOp, ...]) -> str:
    return " + ".join(f"{op}({source_name(src)})" for src, op in inputs) or "(nothing)"


@dataclass(frozen=True)
class BlockChange:
    """Block ``block`` (1-based) of a cell keeps different inputs or operations."""

    block: int
    before: tuple[SourceOp, ...]
    after: tuple[SourceOp, ...]

    def describe(self, cell_type: str) -> str:
        """``"keep b2: sep_conv_3x3(in) -> skip_connect(b1)"``."""
        return f"{cell_type} b{self.block}: {_terms(self.before)} -> {_terms(self.after)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "block": self.block,
            "before": [{"source": s, "op": o} for s, o in self.before],
            "after": [{"source": s, "op": o} for s, o in self.after],
        }


@dataclass(frozen=True)
class ArchDiff(Document):
    """The difference from architecture ``a`` to architecture ``b`` ("added" = only in ``b``).

    Attributes:
        a, b: content hashes of the two architectures.
        nodes_added, nodes_removed: kept nodes only in ``b`` / only in ``a`` (sorted).
        edges_added, edges_removed: kept edges only in ``b`` / only in ``a`` (canonical order).
        paths_added, paths_removed: top paths (compared as edge sequences) only in ``b`` / only
            in ``a``, in their rank order, with their own side's ``path_score``.
        cells_changed: per cell type present on both sides, the blocks whose kept
            ``(source, op)`` inputs differ.
        cells_added, cells_removed: cell types present only in ``b`` / only in ``a``.
        space_changes: ``"field: before -> after"`` for every differing search-space field
            (only spaces with the same layers and scales can be diffed).
        path_overlap: Jaccard index of the two path sets (1.0 if both are empty).
        edge_overlap: Jaccard index of the two edge sets (1.0 if both are empty).
        arch_a, arch_b: the architectures themselves, kept for :func:`render_diff`; not
            compared, not serialised.
    """

    FORMAT: ClassVar[str] = FORMAT
    WHAT: ClassVar[str] = "an architecture diff"
    FILE_NOUN: ClassVar[str] = "diff"
    ERROR: ClassVar[type[ArchitectureError]] = ArchitectureError

    a: str
    b: str
    nodes_added: tuple[NodeId, ...] = ()
    nodes_removed: tuple[NodeId, ...] = ()
    edges_added: tuple[Edge, ...] = ()
    edges_removed: tuple[Edge, ...] = ()
    paths_added: tuple[Path, ...] = ()
    paths_removed: tuple[Path, ...] = ()
    cells_changed: dict[str, list[BlockChange]] = field(default_factory=dict)
    cells_added: dict[str, CellGenotype] = field(default_factory=dict)
    cells_removed: dict[str, CellGenotype] = field(default_factory=dict)
    space_changes: tuple[str, ...] = ()
    path_overlap: float = 1.0
    edge_overlap: float = 1.0
    arch_a: Architecture | None = field(default=None, compare=False, repr=False)
    arch_b: Architecture | None = field(default=None, compare=False, repr=False)

    @property
    def is_empty(self) -> bool:
        """Whether the two architectures are the same network (ignoring scores and weights)."""
        return not (
            self.nodes_added
            or self.nodes_removed
            or self.edges_added
            or self.edges_removed
            or self.paths_added
            or self.paths_removed
            or self.cells_changed
            or self.cells_added
            or self.cells_removed
            or self.space_changes
        )

    def swapped(self) -> ArchDiff:
        """The diff from ``b`` to ``a`` (added and removed exchanged)."""
        return ArchDiff(
            a=self.b,
            b=self.a,
            nodes_added=self.nodes_removed,
            nodes_removed=self.nodes_added,
            edges_added=self.edges_removed,
            edges_removed=self.edges_added,
            paths_added=self.paths_removed,
            paths_removed=self.paths_added,
            cells_changed={
                c: [BlockChange(ch.block, ch.after, ch.before) for ch in changes]
                for c, changes in self.cells_changed.items()
            },
            cells_added=self.cells_removed,
            cells_removed=self.cells_added,
            space_changes=tuple(_swap_change(s) for s in self.space_changes),
            path_overlap=self.path_overlap,
            edge_overlap=self.edge_overlap,
            arch_a=self.arch_b,
            arch_b=self.arch_a,
        )

    def to_dict(self) -> dict[str, Any]:
        """Versioned JSON-ready dict (node ids and edge keys as strings)."""

        def paths(ps: tuple[Path, ...]) -> list[dict[str, Any]]:
            return [{"edges": [e.key for e in p.edges], "path_score": p.path_score} for p in ps]

        return {
            **self.header(),
            "a": self.a,
            "b": self.b,
            "is_empty": self.is_empty,
            "nodes_added": [str(n) for n in self.nodes_added],
            "nodes_removed": [str(n) for n in self.nodes_removed],
            "edges_added": [e.key for e in self.edges_added],
            "edges_removed": [e.key for e in self.edges_removed],
            "paths_added": paths(self.paths_added),
            "paths_removed": paths(self.paths_removed),
            "cells_changed": {
                c: [ch.to_dict() for ch in changes] for c, changes in self.cells_changed.items()
            },
            "cells_added": {c: g.to_dict() for c, g in self.cells_added.items()},
            "cells_removed": {c: g.to_dict() for c, g in self.cells_removed.items()},
            "space_changes": list(self.space_changes),
            "path_overlap": self.path_overlap,
            "edge_overlap": self.edge_overlap,
        }

    def summary(self) -> str:
        """One line: the two hashes and the counts."""
        cells = sum(len(v) for v in self.cells_changed.values())
        return (
            f"diff {self.a} -> {self.b}: nodes +{len(self.nodes_added)}/"
            f"-{len(self.nodes_removed)}, edges +{len(self.edges_added)}/"
            f"-{len(self.edges_removed)}, paths +{len(self.paths_added)}/"
            f"-{len(self.paths_removed)}, {cells} cell block(s) changed; "
            f"edge overlap {self.edge_overlap:.3f}, path overlap {self.path_overlap:.3f}"
        )

    def __str__(self) -> str:
        if self.is_empty:
            return "no differences"
        lines = [self.summary()]
        lines += [f"~ space {s}" for s in self.space_changes]
        lines += [f"- {n}" for n in self.nodes_removed]
        lines += [f"+ {n}" for n in self.nodes_added]
        lines += [f"- {e}" for e in self.edges_removed]
        lines += [f"+ {e}" for e in self.edges_added]
        lines += [f"- path {_path_text(p)}" for p in self.paths_removed]
        lines += [f"+ path {_path_text(p)}" for p in self.paths_added]
        lines += [f"- cell {g}" for g in self.cells_removed.values()]
        lines += [f"+ cell {g}" for g in self.cells_added.values()]
        for c, changes in self.cells_changed.items():
            lines += [f"~ {ch.describe(c)}" for ch in changes]
        return "\n".join(lines)


def _path_text(p: Path) -> str:
    return f"(score {p.path_score:.4f}) " + str(p).rsplit("  (score", 1)[0]


def _swap_change(text: str) -> str:
    name, values = text.split(": ", 1)
    before, after = values.split(" -> ", 1)
    return f"{name}: {after} -> {before}"


def _jaccard(x: set[Any], y: set[Any]) -> float:
    union = x | y
    return len(x & y) / len(union) if union else 1.0


def _as_architecture(obj: Architecture | SearchState, paths: int, which: str) -> Architecture:
    if isinstance(obj, Architecture):
        return obj
    if isinstance(obj, SearchState):
        return decode(obj, paths)
    raise TypeError(
        f"diff: {which} must be an Architecture or a SearchState, not {type(obj).__name__}"
    )


def _space_changes(a: SearchSpace, b: SearchSpace) -> tuple[str, ...]:
    if (a.layers, a.scales) != (b.layers, b.scales):
        raise ArchitectureError(
            f"cannot diff architectures of different trellises: a is {a.layers} layers x "
            f"{a.scales} scales (space '{a.name}'), b is {b.layers} x {b.scales} (space "
            f"'{b.name}'); diff architectures of spaces with the same layers and scales"
        )
    da, db = a.to_dict(), b.to_dict()
    return tuple(
        f"{k}: {json.dumps(da[k])} -> {json.dumps(db[k])}" for k in da if da[k] != db.get(k)
    )


def _cell_inputs(cell: CellGenotype) -> list[tuple[SourceOp, ...]]:
    return [tuple((i.source, i.op) for i in block) for block in cell.blocks]


def _cell_changes(ca: CellGenotype, cb: CellGenotype) -> list[BlockChange]:
    ia, ib = _cell_inputs(ca), _cell_inputs(cb)
    n = max(len(ia), len(ib))
    ia += [()] * (n - len(ia))
    ib += [()] * (n - len(ib))
    return [
        BlockChange(k + 1, before, after)
        for k, (before, after) in enumerate(zip(ia, ib, strict=True))
        if before != after
    ]


def diff(a: Architecture | SearchState, b: Architecture | SearchState, paths: int = 3) -> ArchDiff:
    """The :class:`ArchDiff` from ``a`` to ``b``.

    A :class:`SearchState` is first decoded with ``decode(state, paths)``; ``paths`` is not
    used for architectures. Both must come from spaces with the same layers and scales (else
    :class:`ArchitectureError`); when other space fields differ (channels, operations, ...)
    the diff still compares ids and lists those fields in ``space_changes``.
    """
    arch_a = _as_architecture(a, paths, "a")
    arch_b = _as_architecture(b, paths, "b")
    space_changes = _space_changes(arch_a.space, arch_b.space)

    nodes_a, nodes_b = set(arch_a.nodes), set(arch_b.nodes)
    edges_a, edges_b = set(arch_a.edges), set(arch_b.edges)
    seq_a = {p.edges for p in arch_a.paths}
    seq_b = {p.edges for p in arch_b.paths}

    cells_changed: dict[str, list[BlockChange]] = {}
    for c in sorted(set(arch_a.cells) & set(arch_b.cells)):
        changes = _cell_changes(arch_a.cells[c], arch_b.cells[c])
        if changes:
            cells_changed[c] = changes

    return ArchDiff(
        a=arch_a.content_hash,
        b=arch_b.content_hash,
        nodes_added=tuple(sorted(nodes_b - nodes_a)),
        nodes_removed=tuple(sorted(nodes_a - nodes_b)),
        edges_added=tuple(e for e in arch_b.edges if e not in edges_a),
        edges_removed=tuple(e for e in arch_a.edges if e not in edges_b),
        paths_added=_unique_paths(arch_b.paths, seq_a),
        paths_removed=_unique_paths(arch_a.paths, seq_b),
        cells_changed=cells_changed,
        cells_added={c: g for c, g in arch_b.cells.items() if c not in arch_a.cells},
        cells_removed={c: g for c, g in arch_a.cells.items() if c not in arch_b.cells},
        space_changes=space_changes,
        path_overlap=_jaccard(seq_a, seq_b),
        edge_overlap=_jaccard(edges_a, edges_b),
        arch_a=arch_a,
        arch_b=arch_b,
    )


def _unique_paths(paths: tuple[Path, ...], other: set[tuple[Edge, ...]]) -> tuple[Path, ...]:
    seen: set[tuple[Edge, ...]] = set()
    out = []
    for p in paths:
        if p.edges not in other and p.edges not in seen:
            seen.add(p.edges)
            out.append(p)
    return tuple(out)

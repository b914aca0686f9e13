"""The decoded architecture: a sub-DAG of the supergraph plus one genotype per cell type.

An :class:`Architecture` is what decoding produces and what a backend compiles into the final
network. It is plain data: versioned JSON with a content hash and the space it came from.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> from msnas_graph.decode import decode
>>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
>>> Architecture.from_json(arch.to_json()) == arch
True
>>> arch.validate()
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any, ClassVar

import networkx as nx

from ._util import content_hash
from ._util import meta_of as _meta
from .documents import Document, check_finite, check_int
from .errors import ArchitectureError, SpecError
from .genotype import CellGenotype
from .graph import Edge, NodeId, Supergraph
from .kinds import cell_types_of
from .layout import ParameterLayout
from .operations import NONE_OP
from .paths import Path
from .spec import SearchSpace

__all__ = ["Architecture"]

FORMAT = "msnas-graph/architecture"


class Architecture(Document):
    """A decoded network: kept nodes and edges (the union of ``paths``) and the cells."""

    FORMAT: ClassVar[str] = FORMAT
    WHAT: ClassVar[str] = "an architecture"
    FILE_NOUN: ClassVar[str] = "architecture"
    CREATE_HINT: ClassVar[str] = "create one with `msnas-graph decode STATE --output ARCH.json`"
    UPGRADE_HINT: ClassVar[str] = "decode it again with this version of msnas-graph"
    ERROR: ClassVar[type[ArchitectureError]] = ArchitectureError

    def __init__(
        self,
        space: SearchSpace,
        edges: Iterable[Edge],
        cells: dict[str, CellGenotype],
        paths: Iterable[Path] = (),
        meta: dict[str, Any] | None = None,
        graph: Supergraph | None = None,
    ) -> None:
        self.space = space
        self.supergraph = graph if graph is not None and graph.space == space else Supergraph(space)
        self.edges: tuple[Edge, ...] = tuple(sorted(set(edges), key=lambda e: e.sort_key))
        self.cells = {c: cells[c] for c in sorted(cells)}
        self.paths: tuple[Path, ...] = tuple(paths)
        self.meta: dict[str, Any] = dict(meta or {})
        nodes = {e.src for e in self.edges} | {e.dst for e in self.edges}
        self.nodes: tuple[NodeId, ...] = tuple(sorted(nodes))

    # ---------------------------------------------------------------------- structure

    @cached_property
    def _in(self) -> dict[NodeId, tuple[Edge, ...]]:
        ins: dict[NodeId, list[Edge]] = {n: [] for n in self.nodes}
        for e in self.edges:
            ins[e.dst].append(e)
        return {n: tuple(v) for n, v in ins.items()}

    def in_edges(self, node: NodeId) -> tuple[Edge, ...]:
        """Kept edges into ``node`` (canonical order): what the final network fuses there."""
        return self._in.get(node, ())

    @property
    def input_node(self) -> NodeId:
        """The stem's node."""
        return self.supergraph.input_node

    @property
    def output_nodes(self) -> tuple[NodeId, ...]:
        """The kept output nodes (the head reads these)."""
        return tuple(n for n in self.supergraph.output_nodes if n in self._in)

    @property
    def fusion_nodes(self) -> tuple[NodeId, ...]:
        """Nodes where two or more kept edges meet (multi-scale fusion)."""
        return tuple(n for n in self.nodes if len(self.in_edges(n)) > 1)

    @property
    def deepest_scale(self) -> int:
        """The coarsest scale the network reaches (``0``: it never leaves full resolution).

        >>> from msnas_graph.decode import decode
        >>> from msnas_graph.spec import SearchSpace
        >>> from msnas_graph.state import SearchState
        >>> decode(SearchState.zeros(SearchSpace.preset("tiny")), paths=3).deepest_scale
        1
        """
        return max((n.scale for n in self.nodes), default=0)

    def context_warning(self) -> str | None:
        """A one-line warning when the network never goes below its finest output scale
        although the space has coarser ones, else None.

        Segmentation needs context, and only the coarser scales give it: on HC18 the
        decoded networks that stayed at full resolution scored 0.54-0.80 Dice, those reaching
        1/2 of the input's side 0.91-0.95, and 25 of the 30 reaching 1/4 more than the best of
        those, up to 0.959 (``benchmarks/results/depth_vs_dice.md``). A cost target or a
        decoding budget too tight for the space is what decodes such networks: the identity
        edges are its only free choice (``decode --min-scale`` keeps a path that goes deeper).

        >>> from msnas_graph.graph import Edge
        >>> from msnas_graph.spec import SearchSpace
        >>> from msnas_graph.state import SearchState
        >>> from msnas_graph.decode import decode
        >>> arch = decode(SearchState.zeros(SearchSpace.preset("tiny")), paths=3)
        >>> arch.context_warning() is None
        True
        >>> edges = [Edge.parse(f"L{i}.s0>L{i + 1}.s0:skip") for i in range(3)]
        >>> flat = Architecture(arch.space, edges, arch.cells)
        >>> print(flat.context_warning())  # doctest: +ELLIPSIS
        the network never leaves scale 0 (of 0..1): it sees little context, ...
        """
        finest = min(self.space.output_scales)
        coarser = max((n.scale for n in self.supergraph.nodes), default=0)
        if self.deepest_scale > finest or coarser <= finest:
            return None
        deeper = max(finest + 1, min(2, coarser))  # 1/4 of the side, where the space allows
        return (
            f"the network never leaves scale {finest} (of 0..{coarser}): it sees little "
            "context, and on HC18 such networks scored 0.54-0.80 Dice where those reaching "
            "1/4 of the input's side scored up to 0.96; a cost target or budget too tight for "
            f"the space buys identity edges: decode with --min-scale {deeper} (or more "
            "--paths, or a looser budget), or search with a looser --target-macs/--target-latency"
        )

    def to_networkx(self) -> nx.MultiDiGraph:
        """networkx ``MultiDiGraph`` of the kept nodes and edges (keys = kinds)."""
        G = nx.MultiDiGraph(space=self.space.name)
        for n in self.nodes:
            G.add_node(str(n), layer=n.layer, scale=n.scale, channels=self.supergraph.channels(n))
        for e in self.edges:
            G.add_edge(str(e.src), str(e.dst), key=e.kind, kind=e.kind)
        return G

    def widen(self, channels: int) -> Architecture:
        """The same graph and cells at base width ``channels`` (channels at scale ``i``:
        ``channels * 2**i``): DARTS-style searches search narrow and train wide.

        Any width will do: the final network has no partial channels, so where the search's
        ``partial_k`` does not divide ``channels`` it becomes their greatest common divisor.

        >>> from msnas_graph.spec import SearchSpace
        >>> from msnas_graph.state import SearchState
        >>> from msnas_graph.decode import decode
        >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
        >>> wide = arch.widen(48)
        >>> wide.space.channels, wide.edges == arch.edges, wide.cells == arch.cells
        (48, True, True)
        >>> arch.widen(arch.space.channels) is arch
        True
        >>> arch.widen(15).space.partial_k  # ``tiny`` searches with partial_k = 2
        1
        """
        if channels == self.space.channels:
            return self
        if channels < 1:
            raise ArchitectureError(f"widen: channels={channels} must be at least 1")
        space = self.space.widen(channels)
        return Architecture(space, self.edges, self.cells, self.paths, meta=self.meta)

    def with_cell_glue(self, glue: str) -> Architecture:
        """The same graph and cells compiled with another cell glue
        (:attr:`~msnas_graph.spec.SearchSpace.cell_glue`: ``darts`` or ``lean``).

        >>> from msnas_graph.spec import SearchSpace
        >>> from msnas_graph.state import SearchState
        >>> from msnas_graph.decode import decode
        >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
        >>> lean = arch.with_cell_glue("lean")
        >>> lean.space.cell_glue, lean.edges == arch.edges, lean.content_hash != arch.content_hash
        ('lean', True, True)
        """
        if glue == self.space.cell_glue:
            return self
        space = self.space.replace(cell_glue=glue)
        return Architecture(space, self.edges, self.cells, self.paths, meta=self.meta)

    # ------------------------------------------------------------------------ checking

    def validate(self) -> None:
        """Raise :class:`ArchitectureError` naming the first problem found.

        Checks: the edges exist in the space's supergraph (so channels and scales are
        consistent), the graph is acyclic, every kept node is reachable from the input and
        reaches an output, the cells match the space (types, blocks, sources, known operations,
        no ``none``), and the paths use kept edges only.
        """
        g = self.supergraph
        if not self.edges:
            raise ArchitectureError("architecture has no edges")
        for e in self.edges:
            if not g.has_edge(e):
                raise ArchitectureError(
                    f"edge {e} is not in the space '{self.space.name}' (scale or layer out of "
                    f"range); the architecture does not match its space"
                )
        G = self.to_networkx()
        if not nx.is_directed_acyclic_graph(G):
            raise ArchitectureError("architecture graph has a cycle")
        src = str(self.input_node)
        if src not in G:
            raise ArchitectureError(f"architecture does not contain the input node {src}")
        outs = [str(o) for o in self.output_nodes]
        if not outs:
            raise ArchitectureError("architecture reaches no output node")
        reach = nx.descendants(G, src) | {src}
        back: set[str] = set(outs)
        for o in outs:
            back |= nx.ancestors(G, o)
        for n in self.nodes:
            if str(n) not in reach:
                raise ArchitectureError(f"node {n} is not reachable from the input {src}")
            if str(n) not in back:
                raise ArchitectureError(f"node {n} does not reach an output node")
        used = cell_types_of(e.kind for e in self.edges)
        for c in sorted(used):
            if c not in self.cells:
                raise ArchitectureError(f"edges of kind '{c}' are kept but there is no {c} cell")
        for name, cell in self.cells.items():
            self._validate_cell(name, cell)
        kept = set(self.edges)
        for i, p in enumerate(self.paths):
            if not set(p.edges) <= kept:
                raise ArchitectureError(f"paths[{i}] uses an edge that is not kept")
            chained = all(a.dst == b.src for a, b in zip(p.edges, p.edges[1:], strict=False))
            if (
                not p.edges
                or p.edges[0].src != self.input_node
                or p.edges[-1].dst not in g.output_nodes
                or not chained
            ):
                raise ArchitectureError(
                    f"paths[{i}] is not a chain of edges from the input to an output node"
                )

    def _validate_cell(self, name: str, cell: CellGenotype) -> None:
        if name not in self.space.cell_types:
            raise ArchitectureError(f"cells.{name}: not a cell type of the space")
        if cell.cell_type != name:
            raise ArchitectureError(f"cells.{name}: holds a '{cell.cell_type}' cell")
        layout = ParameterLayout(self.space, self.supergraph)
        if len(cell.blocks) != layout.blocks:
            raise ArchitectureError(
                f"cells.{name}: {len(cell.blocks)} blocks, the space has {layout.blocks}"
            )
        for b, inputs in enumerate(cell.blocks, start=1):
            if not inputs:
                raise ArchitectureError(f"cells.{name}.b{b}: block has no input")
            for i in inputs:
                if i.source not in layout.block_sources(b - 1):
                    raise ArchitectureError(
                        f"cells.{name}.b{b}: source {i.source} out of range (0..{b - 1})"
                    )
                if i.op not in self.space.ops or i.op == NONE_OP:
                    raise ArchitectureError(
                        f"cells.{name}.b{b}: operation '{i.op}' is not a decodable operation of "
                        f"the space ({', '.join(self.space.decodable_ops)})"
                    )

    # ----------------------------------------------------------------------------- I/O

    def _content(self) -> dict[str, Any]:
        return {
            "space": self.space.to_dict(),
            "edges": [e.key for e in self.edges],
            "cells": {c: g.to_dict() for c, g in self.cells.items()},
            "paths": [
                {"edges": [e.key for e in p.edges], "path_score": p.path_score} for p in self.paths
            ],
        }

    def _hashed(self) -> dict[str, Any]:
        """What the architecture *is*: the space, the kept edges, each block's sources and
        operations, and each path's edges. The decoding weights and path scores are left out:
        they are floats whose last bits depend on the machine's SIMD code path, so hashing
        them would give the same decode a different hash on another machine."""
        return {
            "space": self.space.to_dict(),
            "edges": [e.key for e in self.edges],
            "cells": {
                c: [[[i.source, i.op] for i in block] for block in g.blocks]
                for c, g in self.cells.items()
            },
            "paths": [[e.key for e in p.edges] for p in self.paths],
        }

    @cached_property
    def content_hash(self) -> str:
        """Hash of the space, edges, cells and paths (not their weights and scores, not
        ``meta``), computed once; equal on every machine for the same structure.

        >>> from msnas_graph.decode import decode
        >>> from msnas_graph.state import SearchState
        >>> from msnas_graph.spec import SearchSpace
        >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
        >>> arch.content_hash
        'fae147aae3e96c4e'
        """
        return content_hash(self._hashed())

    def _legacy_hash(self) -> str:
        """The hash files written before 0.1.0's machine-independent hash carry: the whole
        content, weights and scores included (only to accept those files on load)."""
        return content_hash(self._content())

    def to_dict(self) -> dict[str, Any]:
        """Versioned, canonical JSON-ready dict with the content hash."""
        return {
            **self.header(),
            "content_hash": self.content_hash,
            **self._content(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "architecture") -> Architecture:
        """Parse :meth:`to_dict` output, check the hash, and :meth:`validate`."""
        data = cls.check_header(data, source)
        _check_numbers(data, source)
        try:
            space = SearchSpace.from_dict(data["space"], f"{source}: space")
            edges = [Edge.parse(k) for k in data["edges"]]
            cells = {
                c: CellGenotype.from_dict(v, f"{source}: cells.{c}")
                for c, v in data["cells"].items()
            }
            paths = [
                Path(tuple(Edge.parse(k) for k in p["edges"]), float(p["path_score"]))
                for p in data.get("paths", [])
            ]
        except SpecError as exc:
            raise ArchitectureError(str(exc)) from None
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ArchitectureError(
                f"{source}: malformed architecture ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
        arch = cls(space, edges, cells, paths, meta=_meta(data, source, ArchitectureError))
        stored = data.get("content_hash")
        if stored is not None and stored not in (arch.content_hash, arch._legacy_hash()):
            raise ArchitectureError(
                f"{source}: content hash {stored} does not match the content "
                f"({arch.content_hash}); the file was edited or corrupted, decode it again"
            )
        try:
            arch.validate()
        except ArchitectureError as exc:
            raise ArchitectureError(f"{source}: {exc}") from None
        return arch

    # -------------------------------------------------------------------------- dunder

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Architecture):
            return NotImplemented
        return self._content() == other._content()

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        lines = [
            f"Architecture {self.content_hash} of '{self.space.name}': {len(self.nodes)} nodes, "
            f"{len(self.edges)} edges, {len(self.paths)} paths, "
            f"fusion at {len(self.fusion_nodes)} nodes ({self.space.fusion})",
        ]
        for cell in self.cells.values():
            lines.append(f"  cell {cell}")
        for i, p in enumerate(self.paths, start=1):
            lines.append(f"  path {i}: scales {'-'.join(map(str, p.scales))}  {p}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Architecture {self.content_hash} {len(self.nodes)} nodes {len(self.edges)} edges>"


def _check_numbers(data: dict[str, Any], source: str) -> None:
    """Block sources are whole numbers, weights and path scores finite numbers (checked before
    anything converts them: ``int(0.9)`` would silently truncate)."""
    cells = data.get("cells")
    for c, cell in cells.items() if isinstance(cells, dict) else ():
        blocks = cell.get("blocks") if isinstance(cell, dict) else None
        for b, block in enumerate(blocks if isinstance(blocks, list) else ()):
            for j, inp in enumerate(block if isinstance(block, list) else ()):
                if not isinstance(inp, dict):
                    continue
                where = f"{source}: cells.{c}.blocks[{b}][{j}]"
                check_int(inp.get("source"), f"{where}.source", ArchitectureError)
                if "weight" in inp:
                    check_finite(inp["weight"], f"{where}.weight", ArchitectureError)
    paths = data.get("paths")
    for i, p in enumerate(paths if isinstance(paths, list) else ()):
        if isinstance(p, dict) and "path_score" in p:
            check_finite(p["path_score"], f"{source}: paths[{i}].path_score", ArchitectureError)

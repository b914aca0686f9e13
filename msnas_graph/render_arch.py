"""Pictures of decoded architectures, their cells and architecture diffs (graphviz).

Part of :mod:`msnas_graph.render`, which re-exports every public name here; import them from
there. The drawings share the trellis layout of :mod:`msnas_graph.render_base`.

>>> from msnas_graph.genotype import BlockInput, CellGenotype
>>> cell = CellGenotype("keep", ((BlockInput(0, "sep_conv_3x3", 0.4),),))
>>> "b1 -> out" in render_cell(cell).source
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .architecture import Architecture
from .errors import RenderError
from .genotype import CellGenotype
from .graph import Edge, NodeId
from .kinds import CELL_TYPES, EDGE_KINDS
from .layout import source_name
from .render_base import (
    _DIFF_COLORS,
    _FUSION_FILL,
    _FUSION_SWATCH,
    PATH_COLORS,
    _add_trellis,
    _base_node_attrs,
    _box_row,
    _faint_node_attrs,
    _identity_rows,
    _kind_rows,
    _legend_row,
    _legend_table,
    _new_graph,
    _scale_label_name,
)

if TYPE_CHECKING:
    import graphviz

    from .diff import ArchDiff

__all__ = ["render_architecture", "render_cell", "render_diff"]

# ---------------------------------------------------------------------------- architecture


def _path_color(i: int) -> str:
    return PATH_COLORS[i % len(PATH_COLORS)]


def render_architecture(
    arch: Architecture,
    show_cells: bool = True,
    show_supergraph: bool = True,
    edge_attrs: Mapping[Edge, Mapping[str, str]] | None = None,
    notes: Iterable[str] = (),
) -> graphviz.Digraph:
    """A decoded architecture in the trellis layout.

    Kept edges are drawn in the colours of the top paths that use them (one parallel line per
    path, so the line count is the path count), ``skip`` dashed; with ``show_supergraph`` the
    space's other nodes are drawn faint. Fusion nodes (two or more kept edges in) have a double
    border. The legend lists the paths with their ``path_score``. With ``show_cells`` every
    cell type is drawn below as a small graph ``in -> b1..bN -> concat`` with operation names on
    its edges. ``edge_attrs`` adds or overrides graphviz attributes of kept edges (e.g. a
    ``penwidth`` and ``label`` per edge) and ``notes`` adds lines to the legend.

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> from msnas_graph.decode import decode
    >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
    >>> src = render_architecture(arch).source
    >>> "path 1" in src and "cluster_cell_keep" in src
    True
    """
    dot = _new_graph(f"architecture_{arch.content_hash}")
    if show_cells and arch.cells:
        _add_cells_below(dot, arch)
    _add_trellis(dot, arch.supergraph, _arch_node_attrs(arch, show_supergraph))
    _add_arch_edges(dot, arch, edge_attrs or {})
    dot.attr(label=_arch_legend(arch, notes))
    return dot


def _arch_node_attrs(arch: Architecture, show_supergraph: bool) -> dict[NodeId, dict[str, str]]:
    """Kept nodes plain (fusion nodes double-bordered), the others faint or left out."""
    graph = arch.supergraph
    kept, fusion = set(arch.nodes), set(arch.fusion_nodes)
    attrs: dict[NodeId, dict[str, str]] = {}
    for n in graph.nodes:
        if n in kept:
            a = _base_node_attrs(n, graph)
            if n in fusion:
                a.update(peripheries="2", fillcolor=_FUSION_FILL)
                a["tooltip"] += f"; fuses {len(arch.in_edges(n))} edges ({arch.space.fusion})"
            attrs[n] = a
        elif show_supergraph:
            attrs[n] = _faint_node_attrs(n, graph)
    return attrs


def _add_cells_below(dot: graphviz.Digraph, arch: Architecture) -> None:
    """Every cell type's drawing below the trellis (declare before the trellis)."""
    # Cells go below the trellis, top to bottom in canonical order, their inputs in the
    # column of the scale labels. dot stacks clusters that share ranks upwards in the order
    # they are declared (flat-edge constraints do not reach into clusters), hence the
    # reversed declaration before the trellis.
    order: list[str] = [c for c in CELL_TYPES if c in arch.cells]
    order += [c for c in arch.cells if c not in order]
    for cell_type in reversed(order):
        _add_cell(dot, arch.cells[cell_type], prefix=f"{cell_type}.", cluster=True)
    with dot.subgraph(name="rank_cells") as col:
        col.attr(rank="same")
        for c in [*reversed(order), None]:
            col.node(f"{c}.in" if c else _scale_label_name(0))


def _add_arch_edges(
    dot: graphviz.Digraph, arch: Architecture, edge_attrs: Mapping[Edge, Mapping[str, str]]
) -> None:
    """Kept edges in the colours of the paths that use them (their kind's colour if none)."""
    on_paths: dict[Edge, list[int]] = {e: [] for e in arch.edges}
    for i, p in enumerate(arch.paths):
        for e in p.edges:
            on_paths.setdefault(e, []).append(i)
    for e in arch.edges:
        idx = on_paths[e]
        if idx:
            color = ":".join(_path_color(i) for i in idx)
            where = "path " + ", ".join(str(i + 1) for i in idx)
        else:
            color, where = EDGE_KINDS[e.kind].color, "no path"
        dot.edge(
            str(e.src),
            str(e.dst),
            color=color,
            style=EDGE_KINDS[e.kind].style,
            arrowhead=EDGE_KINDS[e.kind].arrowhead,
            **{"penwidth": "1.8", "tooltip": f"{e} ({where})", **edge_attrs.get(e, {})},
        )


def _arch_legend(arch: Architecture, notes: Iterable[str]) -> str:
    """Title, one row per path (score, scales, edge letters), fusion and identity rows."""
    space = arch.space
    title = (
        f"Architecture {arch.content_hash} of '{space.name}': {len(arch.nodes)} nodes, "
        f"{len(arch.edges)} edges, {len(arch.paths)} paths"
    )
    rows = [
        _legend_row(
            _path_color(i),
            f"path {i + 1}  score {p.path_score:.4f}",
            extra=f"scales {'-'.join(map(str, p.scales))}  edges "
            + "".join(EDGE_KINDS[e.kind].letter for e in p.edges),
        )
        for i, p in enumerate(arch.paths)
    ]
    if not arch.paths:
        rows += _kind_rows({e.kind for e in arch.edges})
    rows += _identity_rows(e.kind for e in arch.edges)
    if arch.fusion_nodes:
        rows.append(
            _box_row(
                _FUSION_SWATCH,
                "fusion node (double border)",
                extra=f"kept edges from several inputs meet ({space.fusion})",
            )
        )
    letters = ", ".join(f"{k.letter} {k.name}" for k in EDGE_KINDS.values())
    kinds_note = [f"edges: {letters}"] if arch.paths else []
    return _legend_table(rows, title, [*kinds_note, *notes])


# ----------------------------------------------------------------------------------- cells


def _cell_box(sub: graphviz.Digraph, name: str, label: str, fill: str, fontsize: str) -> None:
    """A cell's input or output: a small filled box."""
    sub.node(
        name,
        label=label,
        shape="box",
        style="rounded,filled",
        fillcolor=fill,
        fontsize=fontsize,
        width="0.4",
        height="0.25",
    )


def _add_cell(dot: graphviz.Digraph, cell: CellGenotype, prefix: str, cluster: bool) -> None:
    """Draw ``cell`` as ``in -> b1..bN -> out`` into ``dot`` (as a cluster if asked)."""
    name = f"cluster_cell_{cell.cell_type}" if cluster else f"body_{cell.cell_type}"
    with dot.subgraph(name=name) as sub:
        sub.attr(
            ordering="out",
            label=f"{cell.cell_type} cell",
            labelloc="t",
            style="rounded",
            color="#999999",
            fontsize="10",
        )
        _cell_box(sub, f"{prefix}in", "in", fill="#dbe9f6", fontsize="9")
        for b in range(1, len(cell.blocks) + 1):
            sub.node(
                f"{prefix}{source_name(b)}",
                label=source_name(b),
                shape="circle",
                fontsize="9",
                width="0.35",
                fixedsize="true",
            )
        _cell_box(sub, f"{prefix}out", "concat\\n1x1", fill="#eeeeee", fontsize="8")
        # With ordering=out and rankdir=LR, dot stacks a node's out-edges upwards in the order
        # they are declared: declare later blocks first so that b1 ends on top.
        edges = [(inp, b) for b, inputs in enumerate(cell.blocks, start=1) for inp in inputs]
        for inp, b in sorted(edges, key=lambda t: (t[0].source, -t[1])):
            sub.edge(
                f"{prefix}{inp.source_name}",
                f"{prefix}b{b}",
                label=inp.op,
                fontsize="8",
                tooltip=f"b{b} = {inp.op}({inp.source_name}), weight {inp.weight:.3f}",
            )
        for b in range(len(cell.blocks), 0, -1):
            sub.edge(f"{prefix}b{b}", f"{prefix}out", color="#aaaaaa", arrowsize="0.4")


def render_cell(cell: CellGenotype) -> graphviz.Digraph:
    """One decoded cell as a small graph: ``in -> b1..bN -> concat`` with operation names.

    >>> from msnas_graph.genotype import BlockInput, CellGenotype
    >>> cell = CellGenotype("keep", ((BlockInput(0, "sep_conv_3x3", 0.4),),))
    >>> "sep_conv_3x3" in render_cell(cell).source
    True
    """
    dot = _new_graph(f"cell_{cell.cell_type}")
    dot.attr(ranksep="0.35")
    _add_cell(dot, cell, prefix="", cluster=False)
    blocks = str(cell).split(": ", 1)[1].split("; ")
    dot.attr(label="\\l".join([f"{cell.cell_type} cell", *blocks]) + "\\l", fontsize="9")
    return dot


# ------------------------------------------------------------------------------------ diff


def render_diff(
    diff: ArchDiff, a: Architecture | None = None, b: Architecture | None = None
) -> graphviz.Digraph:
    """The union of two architectures in the trellis layout: edges only in ``b`` (added)
    green, only in ``a`` (removed) red and dashed, common edges dark grey.

    ``a`` and ``b`` default to the architectures the diff was computed from (a diff made by
    :func:`msnas_graph.diff.diff` keeps them).

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> from msnas_graph.diff import diff
    >>> space = SearchSpace.preset("tiny")
    >>> d = diff(SearchState.random(space, seed=0), SearchState.random(space, seed=1))
    >>> "added" in render_diff(d).source
    True
    """
    a = a if a is not None else diff.arch_a
    b = b if b is not None else diff.arch_b
    if a is None or b is None:
        raise RenderError(
            "this diff does not carry its architectures; pass them: render_diff(d, a, b)"
        )
    dot = _new_graph(f"diff_{diff.a}_{diff.b}")
    _add_trellis(dot, a.supergraph, _diff_node_attrs(a, b))
    edges_a, edges_b = set(a.edges), set(b.edges)
    for e in sorted(edges_a | edges_b, key=lambda e: e.sort_key):
        if e in edges_a and e in edges_b:
            status, style, width = "common", EDGE_KINDS[e.kind].style, "1.2"
        elif e in edges_b:
            status, style, width = "added", EDGE_KINDS[e.kind].style, "2.2"
        else:
            status, style, width = "removed", "dashed", "2.2"
        dot.edge(
            str(e.src),
            str(e.dst),
            color=_DIFF_COLORS[status],
            style=style,
            arrowhead=EDGE_KINDS[e.kind].arrowhead,
            penwidth=width,
            tooltip=f"{status}: {e}",
        )
    dot.attr(label=_diff_legend(diff, edges_a | edges_b))
    return dot


def _diff_node_attrs(a: Architecture, b: Architecture) -> dict[NodeId, dict[str, str]]:
    """Nodes only in ``b`` green, only in ``a`` red and dashed, in both plain, others faint."""
    graph = a.supergraph
    in_a, in_b = set(a.nodes), set(b.nodes)
    attrs: dict[NodeId, dict[str, str]] = {}
    # both spaces' nodes: a diff may compare spaces with other edge kinds on the same grid
    for n in sorted(set(graph.nodes) | set(b.supergraph.nodes)):
        if n in in_a or n in in_b:
            at = _base_node_attrs(n, graph)
            if n not in in_a:
                at.update(color=_DIFF_COLORS["added"], fillcolor="#e3f4e3", penwidth="1.5")
            elif n not in in_b:
                at.update(
                    color=_DIFF_COLORS["removed"],
                    fillcolor="#fbe3e3",
                    penwidth="1.5",
                    style="rounded,filled,dashed",
                )
            attrs[n] = at
        else:
            attrs[n] = _faint_node_attrs(n, graph)
    return attrs


def _diff_legend(diff: ArchDiff, edges: Iterable[Edge]) -> str:
    """Title with the overlaps, the colour rows, and one note per space or cell change."""
    title = (
        f"Diff {diff.a} -> {diff.b}: +{len(diff.edges_added)}/-{len(diff.edges_removed)} "
        f"edges, edge overlap {diff.edge_overlap:.2f}, path overlap {diff.path_overlap:.2f}"
    )
    rows = [
        _legend_row(_DIFF_COLORS["added"], "added", extra=f"only in {diff.b}"),
        _legend_row(_DIFF_COLORS["removed"], "removed", "dashed", f"only in {diff.a}"),
        _legend_row(_DIFF_COLORS["common"], "in both"),
    ]
    rows += _identity_rows(e.kind for e in edges)
    notes = [f"~ space {s}" for s in diff.space_changes]
    notes += [f"- cell {g}" for g in diff.cells_removed.values()]
    notes += [f"+ cell {g}" for g in diff.cells_added.values()]
    notes += [
        f"~ {ch.describe(cell_type)}"
        for cell_type, changes in diff.cells_changed.items()
        for ch in changes
    ]
    if not (notes or diff.edges_added or diff.edges_removed):
        notes.append("no differences" if diff.is_empty else "same edges; paths differ")
    return _legend_table(rows, title, notes)

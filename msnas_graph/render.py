"""Pictures of search spaces, search states, architectures, cells and diffs (graphviz).

Every ``render_*`` function returns a :class:`graphviz.Digraph` (DOT source you can inspect,
diff or save); :func:`save_rendering` writes it as ``.svg``/``.png``/``.pdf`` (needs graphviz's
``dot`` program) or ``.dot``/``.gv`` (the source text, needs no program); :func:`render` does
both for any object of the package.

The network graphs share one layout: the trellis, layers as columns (left to right, one
``rank=same`` subgraph per layer) and scales as rows (scale 0 on top). Invisible padding nodes
fill the grid positions the diamond-shaped supergraph lacks and invisible edges chain each
column top to bottom and each row left to right, so rows stay aligned. DOT node names are the
node ids (``"L3.s2"``), so the DOT text of two renderings diffs well.

The Python ``graphviz`` package is imported inside the functions that need it: importing this
module stays cheap and works without it.

>>> from msnas_graph.spec import SearchSpace
>>> dot = render_supergraph(SearchSpace.preset("tiny"))
>>> '"L1.s1"' in dot.source and "rankdir=LR" in dot.source
True
"""

from __future__ import annotations

import html
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from ._util import atomic_write
from .architecture import Architecture
from .errors import RenderError
from .genotype import CellGenotype
from .graph import Edge, NodeId, Supergraph
from .kinds import CELL_TYPES, EDGE_KINDS
from .layout import source_name
from .spec import SearchSpace
from .state import SearchState

if TYPE_CHECKING:
    import graphviz

    from .diff import ArchDiff

__all__ = [
    "DOT_MISSING_MESSAGE",
    "KIND_COLORS",
    "PATH_COLORS",
    "SUPPORTED_SUFFIXES",
    "render",
    "render_architecture",
    "render_cell",
    "render_diff",
    "render_supergraph",
    "save_rendering",
]

logger = logging.getLogger(__name__)

#: Edge colour of each network edge kind (from :data:`msnas_graph.kinds.EDGE_KINDS`, which also
#: gives each kind's line style and arrowhead).
KIND_COLORS: dict[str, str] = {k.name: k.color for k in EDGE_KINDS.values()}
#: Colours of the decoded paths (path 1 first; cycled when there are more paths).
PATH_COLORS: tuple[str, ...] = (
    "#e41a1c",
    "#377eb8",
    "#4daf4a",
    "#984ea3",
    "#ff7f00",
    "#a65628",
    "#f781bf",
    "#17becf",
    "#bcbd22",
    "#666666",
)
_DIFF_COLORS = {"added": "#2ca02c", "removed": "#d62728", "common": "#555555"}
_FAINT = "#c8c8c8"
_FUSION_FILL = "#fff2b3"
_FUSION_SWATCH = "#f2d24b"
_FONT = "Helvetica"

#: File suffixes :func:`save_rendering` writes, and the graphviz format of each.
SUPPORTED_SUFFIXES: dict[str, str] = {
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".dot": "dot",
    ".gv": "dot",
}
DOT_MISSING_MESSAGE = (
    "graphviz's `dot` program was not found; install it (Debian/Ubuntu: apt-get install "
    "graphviz; macOS: brew install graphviz; conda: conda install graphviz) or write a .dot "
    "file instead"
)


# --------------------------------------------------------------------------------- helpers


def _graphviz() -> Any:
    """The ``graphviz`` module, or :class:`RenderError` saying how to install it."""
    try:
        import graphviz
    except ImportError:
        raise RenderError(
            "the Python package 'graphviz' is not installed; install it with "
            "pip install 'msnas-graph[render]'"
        ) from None
    return graphviz


def _new_graph(name: str, rankdir: str = "LR") -> graphviz.Digraph:
    gv = _graphviz()
    dot = gv.Digraph(name=name)
    dot.attr(
        rankdir=rankdir,
        newrank="true",
        nodesep="0.25",
        ranksep="0.55",
        fontname=_FONT,
        fontsize="11",
        labeljust="l",
        labelloc="b",
    )
    dot.attr("node", fontname=_FONT, fontsize="10")
    dot.attr("edge", fontname=_FONT, fontsize="8", arrowsize="0.6")
    return dot


def _pad_name(layer: int, scale: int) -> str:
    return f"pad.L{layer}.s{scale}"


def _scale_label_name(scale: int) -> str:
    return f"scale.s{scale}"


def _add_trellis(
    dot: graphviz.Digraph,
    graph: Supergraph,
    node_attrs: Mapping[NodeId, Mapping[str, str]],
) -> None:
    """Lay the grid out: one rank per layer, scales top to bottom, rows aligned.

    ``node_attrs`` gives the attributes of every drawn node; grid positions not in it (and
    positions outside the supergraph) get invisible padding nodes.
    """
    space = graph.space
    # A leading column of scale labels: resolution and width of each row.
    with dot.subgraph(name="rank_scales") as col:
        col.attr(rank="same")
        for s in range(space.scales):
            col.node(
                _scale_label_name(s),
                label=f"s{s}  1/{2**s}  {space.scale_channels(s)} ch",
                shape="plaintext",
                fontcolor="#555555",
                fontsize="9",
            )
    names: dict[tuple[int, int], str] = {}
    for layer in range(space.layers + 1):
        with dot.subgraph(name=f"rank_L{layer}") as col:
            col.attr(rank="same")
            for s in range(space.scales):
                node = NodeId(layer, s)
                if node in node_attrs:
                    name = str(node)
                    col.node(name, **dict(node_attrs[node]))
                else:
                    name = _pad_name(layer, s)
                    col.node(name, label="", style="invis", width="0.6", height="0.3")
                names[(layer, s)] = name
    # Invisible scaffolding: columns chained top to bottom, rows chained left to right.
    with dot.subgraph(name="scaffold") as sc:
        sc.attr("edge", style="invis", arrowhead="none")
        for layer in range(-1, space.layers + 1):
            for s in range(space.scales - 1):
                a = _scale_label_name(s) if layer < 0 else names[(layer, s)]
                b = _scale_label_name(s + 1) if layer < 0 else names[(layer, s + 1)]
                sc.edge(a, b)
        for s in range(space.scales):
            sc.edge(_scale_label_name(s), names[(0, s)], weight="100")
            for layer in range(space.layers):
                sc.edge(names[(layer, s)], names[(layer + 1, s)], weight="100")


def _node_label(node: NodeId, graph: Supergraph) -> str:
    if node == graph.input_node:
        return f"{node}\\nstem"
    if node in graph.output_nodes:
        return f"{node}\\nhead"
    return str(node)


def _base_node_attrs(node: NodeId, graph: Supergraph) -> dict[str, str]:
    attrs = {
        "label": _node_label(node, graph),
        "shape": "box",
        "style": "rounded,filled",
        "fillcolor": "white",
        "color": "#333333",
        "width": "0.6",
        "height": "0.3",
        "margin": "0.05,0.03",
        "tooltip": f"{node}: layer {node.layer}, scale {node.scale} "
        f"(1/{2**node.scale}, {graph.channels(node)} channels)",
    }
    if node == graph.input_node or node in graph.output_nodes:
        attrs["fillcolor"] = "#dbe9f6"
    return attrs


def _faint_node_attrs(node: NodeId, graph: Supergraph) -> dict[str, str]:
    attrs = _base_node_attrs(node, graph)
    attrs.update(color=_FAINT, fontcolor="#b0b0b0", fillcolor="white", style="rounded")
    return attrs


def _legend_table(rows: Iterable[str], title: str, notes: Iterable[str] = ()) -> str:
    """An HTML-like graph label: a bold title, legend rows (``<TR>`` strings from
    :func:`_legend_row`/:func:`_box_row`) and free-text notes, one left-aligned cell per row
    (several columns would be stretched to the title's width)."""
    lines = [f'<TR><TD ALIGN="LEFT"><B>{html.escape(title)}</B></TD></TR>', *rows]
    lines += [
        f'<TR><TD ALIGN="LEFT"><FONT COLOR="#555555">{html.escape(n)}</FONT></TD></TR>'
        for n in notes
    ]
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
        + "".join(lines)
        + "</TABLE>>"
    )


def _legend_line(swatch_html: str, text: str, extra: str) -> str:
    note = f'   <FONT COLOR="#555555">{html.escape(extra)}</FONT>' if extra else ""
    return f'<TR><TD ALIGN="LEFT">{swatch_html}  {html.escape(text)}{note}</TD></TR>'


def _legend_row(swatch: str, text: str, style: str = "solid", extra: str = "") -> str:
    """A legend row with a line sample in colour ``swatch`` (dashed if ``style`` is)."""
    line = "- - - -" if style == "dashed" else "\u2501\u2501\u2501\u2501"
    return _legend_line(f'<FONT COLOR="{swatch}"><B>{line}</B></FONT>', text, extra)


def _box_row(fill: str, text: str, extra: str = "") -> str:
    """A legend row with a filled square in colour ``fill``."""
    return _legend_line(f'<FONT COLOR="{fill}">\u25a0\u25a0</FONT>', text, extra)


def _kind_rows(kinds: Iterable[str]) -> list[str]:
    return [
        _legend_row(kind.color, kind.name, kind.style, kind.note)
        for kind in EDGE_KINDS.values()
        if kind.name in set(kinds)
    ]


def _identity_rows(kinds: Iterable[str]) -> list[str]:
    """Legend rows for the identity kinds (no cell) among ``kinds``."""
    return [
        _legend_row("#333333", f"{kind.name} edge", kind.style, "identity, hollow arrowhead")
        for kind in EDGE_KINDS.values()
        if not kind.carries_cell and kind.name in set(kinds)
    ]


def _as_supergraph(graph: Supergraph | SearchSpace) -> Supergraph:
    if isinstance(graph, SearchSpace):
        return Supergraph(graph)
    if isinstance(graph, Supergraph):
        return graph
    raise TypeError(f"expected a Supergraph or SearchSpace, got {type(graph).__name__}")


# ------------------------------------------------------------------------------ supergraph


def render_supergraph(
    graph: Supergraph | SearchSpace,
    state: SearchState | None = None,
    edge_labels: bool | None = None,
) -> graphviz.Digraph:
    """The search space's trellis; with ``state``, edges weighted by ``softmax(beta)``.

    Edges are coloured by kind (legend below the graph), ``skip`` dashed. With a ``state`` each
    edge's pen width and opacity grow with its ``edge_weight``, and its tooltip (and label,
    when ``edge_labels`` is true; by default when the space has at most 60 edges) shows it.

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
    >>> "weight" in render_supergraph(state.graph, state).source
    True
    """
    graph = _as_supergraph(graph)
    if state is not None and state.space != graph.space:
        raise RenderError(
            f"the state belongs to space '{state.space.name}', not to the rendered space "
            f"'{graph.space.name}'; render the state's own graph (render_supergraph(state.graph, "
            f"state))"
        )
    space = graph.space
    dot = _new_graph(f"supergraph_{space.name}")
    _add_trellis(dot, graph, {n: _base_node_attrs(n, graph) for n in graph.nodes})
    weights = state.edge_weights() if state is not None else None
    show_labels = edge_labels if edge_labels is not None else len(graph.edges) <= 60
    for i, e in enumerate(graph.edges):
        kind = EDGE_KINDS[e.kind]
        attrs = {
            "color": kind.color,
            "style": kind.style,
            "arrowhead": kind.arrowhead,
            "tooltip": str(e),
        }
        if weights is not None:
            w = float(weights[i])
            alpha = round(60 + 195 * w)
            attrs.update(
                color=f"{kind.color}{alpha:02x}",
                penwidth=f"{0.4 + 4.0 * w:.2f}",
                tooltip=f"{e}: weight {w:.3f}",
            )
            if show_labels:
                attrs.update(label=f"{w:.2f}", fontcolor=kind.color)
        dot.edge(str(e.src), str(e.dst), **attrs)
    title = (
        f"Supergraph '{space.name}': {space.layers} layers x {space.scales} scales, "
        f"{len(graph.nodes)} nodes, {len(graph.edges)} edges"
    )
    notes = []
    if state is not None:
        title += f"; edge weights of state {state.content_hash}"
        notes.append("pen width and opacity = edge weight softmax(beta) at the destination node")
    dot.attr(label=_legend_table(_kind_rows(space.edge_kinds), title, notes))
    return dot


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
    graph = arch.supergraph
    space = arch.space
    dot = _new_graph(f"architecture_{arch.content_hash}")
    kept = set(arch.nodes)
    fusion = set(arch.fusion_nodes)
    attrs: dict[NodeId, dict[str, str]] = {}
    for n in graph.nodes:
        if n in kept:
            a = _base_node_attrs(n, graph)
            if n in fusion:
                a.update(peripheries="2", fillcolor=_FUSION_FILL)
                a["tooltip"] += f"; fuses {len(arch.in_edges(n))} edges ({space.fusion})"
            attrs[n] = a
        elif show_supergraph:
            attrs[n] = _faint_node_attrs(n, graph)
    if show_cells and arch.cells:
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
    _add_trellis(dot, graph, attrs)

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
            **{"penwidth": "1.8", "tooltip": f"{e} ({where})", **(edge_attrs or {}).get(e, {})},
        )

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
    if fusion:
        rows.append(
            _box_row(
                _FUSION_SWATCH,
                "fusion node (double border)",
                extra=f"kept edges from several inputs meet ({space.fusion})",
            )
        )
    letters = ", ".join(f"{k.letter} {k.name}" for k in EDGE_KINDS.values())
    kinds_note = [f"edges: {letters}"] if arch.paths else []
    dot.attr(label=_legend_table(rows, title, [*kinds_note, *notes]))
    return dot


# ----------------------------------------------------------------------------------- cells


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
        sub.node(
            f"{prefix}in",
            label="in",
            shape="box",
            style="rounded,filled",
            fillcolor="#dbe9f6",
            fontsize="9",
            width="0.4",
            height="0.25",
        )
        for b in range(1, len(cell.blocks) + 1):
            sub.node(
                f"{prefix}{source_name(b)}",
                label=source_name(b),
                shape="circle",
                fontsize="9",
                width="0.35",
                fixedsize="true",
            )
        sub.node(
            f"{prefix}out",
            label="concat\\n1x1",
            shape="box",
            style="rounded,filled",
            fillcolor="#eeeeee",
            fontsize="8",
            width="0.4",
            height="0.25",
        )
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
    graph = a.supergraph
    dot = _new_graph(f"diff_{diff.a}_{diff.b}")
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
    _add_trellis(dot, graph, attrs)
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
    title = (
        f"Diff {diff.a} -> {diff.b}: +{len(diff.edges_added)}/-{len(diff.edges_removed)} "
        f"edges, edge overlap {diff.edge_overlap:.2f}, path overlap {diff.path_overlap:.2f}"
    )
    rows = [
        _legend_row(_DIFF_COLORS["added"], "added", extra=f"only in {diff.b}"),
        _legend_row(_DIFF_COLORS["removed"], "removed", "dashed", f"only in {diff.a}"),
        _legend_row(_DIFF_COLORS["common"], "in both"),
    ]
    rows += _identity_rows(e.kind for e in edges_a | edges_b)
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
    dot.attr(label=_legend_table(rows, title, notes))
    return dot


# ------------------------------------------------------------------------------------ save


def _dot_program_missing() -> RenderError:
    return RenderError(DOT_MISSING_MESSAGE)


def save_rendering(dot: graphviz.Digraph | graphviz.Source, path: str | FsPath) -> FsPath:
    """Write a rendering to ``path``; the format comes from the suffix.

    ``.svg``, ``.png`` and ``.pdf`` are laid out by graphviz's ``dot`` program; ``.dot`` and
    ``.gv`` are the DOT source text (no program needed). The file is written atomically: on
    any failure nothing is left at ``path``. Raises :class:`RenderError` for an unknown
    suffix, a missing ``dot`` program or a failed layout.
    """
    path = FsPath(path)
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise RenderError(
            f"{path}: cannot render to '{path.suffix or '(no suffix)'}' files "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)}); choose one of those suffixes"
        )
    if fmt == "dot":
        return atomic_write(path, dot.source)
    gv = _graphviz()
    if shutil.which("dot") is None:
        raise _dot_program_missing()
    try:
        data = dot.pipe(format=fmt, engine="dot")
    except gv.ExecutableNotFound:
        raise _dot_program_missing() from None
    except gv.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise RenderError(
            f"{path}: graphviz's dot failed ({detail[0] if detail else f'exit {exc.returncode}'})"
        ) from None
    written = atomic_write(path, data)
    logger.info("wrote %s", written)
    return written


def render(obj: object, path: str | FsPath, **kwargs: Any) -> FsPath:
    """Render any msnas-graph object to ``path`` (format from the suffix, see
    :func:`save_rendering`).

    A :class:`SearchSpace` or :class:`Supergraph` draws the trellis; a :class:`SearchState`
    draws its space with its edge weights; an :class:`Architecture`, a
    :class:`CellGenotype` and an :class:`~msnas_graph.diff.ArchDiff` draw themselves.
    ``kwargs`` go to the matching ``render_*`` function.
    """
    from .diff import ArchDiff

    if isinstance(obj, (SearchSpace, Supergraph)):
        dot = render_supergraph(obj, **kwargs)
    elif isinstance(obj, SearchState):
        dot = render_supergraph(obj.graph, obj, **kwargs)
    elif isinstance(obj, Architecture):
        dot = render_architecture(obj, **kwargs)
    elif isinstance(obj, CellGenotype):
        dot = render_cell(obj, **kwargs)
    elif isinstance(obj, ArchDiff):
        dot = render_diff(obj, **kwargs)
    else:
        raise RenderError(
            f"cannot render a {type(obj).__name__}; render a SearchSpace, Supergraph, "
            f"SearchState, Architecture, CellGenotype or ArchDiff"
        )
    return save_rendering(dot, path)

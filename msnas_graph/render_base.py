"""Shared drawing pieces of :mod:`msnas_graph.render`: colours, the trellis grid, node styles
and legends (graphviz).

The ``graphviz`` package is imported only inside :func:`graphviz_module`, so importing this
module stays cheap and works without it.

>>> _pad_name(2, 1)
'pad.L2.s1'
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import RenderError
from .graph import NodeId, Supergraph
from .kinds import EDGE_KINDS
from .spec import SearchSpace

if TYPE_CHECKING:
    import graphviz

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

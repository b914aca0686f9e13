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

:func:`save_rendering` bounds the work it hands to ``dot``: a rendering with more than
:data:`DOT_MAX_ELEMENTS` node and edge statements is refused, and ``dot`` is ended (with any
process it started) after :data:`DOT_TIMEOUT_S` seconds; both bounds are keyword arguments.
The drawings of architectures, cells and diffs live in :mod:`msnas_graph.render_arch` and the
shared trellis and legend pieces in :mod:`msnas_graph.render_base`; every public name is
importable from here.

>>> from msnas_graph.spec import SearchSpace
>>> dot = render_supergraph(SearchSpace.preset("tiny"))
>>> '"L1.s1"' in dot.source and "rankdir=LR" in dot.source
True
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from ._util import atomic_write
from .architecture import Architecture
from .errors import RenderError
from .genotype import CellGenotype
from .graph import Supergraph
from .kinds import EDGE_KINDS
from .render_arch import render_architecture, render_cell, render_diff
from .render_base import (
    KIND_COLORS,
    PATH_COLORS,
    _add_trellis,
    _as_supergraph,
    _base_node_attrs,
    _graphviz,
    _kind_rows,
    _legend_table,
    _new_graph,
)
from .spec import SearchSpace
from .state import SearchState

if TYPE_CHECKING:
    import graphviz

__all__ = [
    "DOT_MAX_ELEMENTS",
    "DOT_MISSING_MESSAGE",
    "DOT_TIMEOUT_S",
    "KIND_COLORS",
    "PATH_COLORS",
    "SUPPORTED_SUFFIXES",
    "dot_elements",
    "render",
    "render_architecture",
    "render_cell",
    "render_diff",
    "render_supergraph",
    "save_rendering",
]

logger = logging.getLogger(__name__)

#: Most node and edge statements :func:`save_rendering` hands to ``dot`` by default (the
#: ``paper`` space's supergraph drawing has about 270); pass ``max_elements`` to allow more.
DOT_MAX_ELEMENTS = 20_000
#: Seconds :func:`save_rendering` lets ``dot`` run by default; pass ``timeout`` to change it.
DOT_TIMEOUT_S = 120.0

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


# ------------------------------------------------------------------------------------ save

#: One node or edge statement of DOT text as the ``graphviz`` package writes it (one a line).
_ID = r'(?:"(?:[^"\\]|\\.)*"|[\w.]+)'
_STATEMENT = re.compile(rf"^\s*(?!(?:graph|node|edge)\s*\[){_ID}(?:\s*->\s*{_ID})?\s*(?:\[|$)")


def _dot_program_missing() -> RenderError:
    return RenderError(DOT_MISSING_MESSAGE)


def dot_elements(source: str) -> int:
    r"""How many node and edge statements the DOT text ``source`` has (what
    :func:`save_rendering` compares with its ``max_elements``).

    >>> dot_elements('digraph {\n\tgraph [rankdir=LR]\n\ta [label=x]\n\ta -> b\n}')
    2
    """
    return sum(1 for line in source.splitlines() if _STATEMENT.match(line))


def _end_process_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` and every process it started (it leads its own session), then reap it."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows has no process groups to kill
            proc.kill()
    except OSError:  # already gone
        pass
    proc.communicate()


def _run_dot(source: bytes, fmt: str, path: FsPath, timeout: float) -> bytes:
    """``dot -Kdot -T<fmt>`` on ``source``, ended with all its children after ``timeout`` s
    or when the caller is interrupted."""
    try:
        proc = subprocess.Popen(
            ["dot", "-Kdot", f"-T{fmt}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches us, and we end dot's whole group
        )
    except FileNotFoundError:
        raise _dot_program_missing() from None
    except OSError as exc:
        raise RenderError(f"{path}: graphviz's dot could not start ({exc.strerror})") from None
    try:
        out, err = proc.communicate(source, timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_process_group(proc)
        raise RenderError(
            f"{path}: graphviz's dot did not finish within {timeout:g} s and was stopped; pass a "
            f"longer timeout (timeout=; on the command line --dot-timeout SECONDS) or write a .dot "
            f"file instead"
        ) from None
    except BaseException:
        _end_process_group(proc)
        raise
    detail = err.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise RenderError(
            f"{path}: graphviz's dot failed ({detail[0] if detail else f'exit {proc.returncode}'})"
        )
    for line in detail:
        logger.warning("dot: %s", line)
    return out


def save_rendering(
    dot: graphviz.Digraph | graphviz.Source,
    path: str | FsPath,
    *,
    max_elements: int = DOT_MAX_ELEMENTS,
    timeout: float = DOT_TIMEOUT_S,
) -> FsPath:
    """Write a rendering to ``path``; the format comes from the suffix.

    ``.svg``, ``.png`` and ``.pdf`` are laid out by graphviz's ``dot`` program; ``.dot`` and
    ``.gv`` are the DOT source text (no program needed, no size limit). The file is written
    atomically: on any failure nothing is left at ``path``. ``dot`` gets at most
    ``max_elements`` node and edge statements (see :func:`dot_elements`) and runs at most
    ``timeout`` seconds; it is ended, with any process it started, when the time is up or the
    caller is interrupted. Raises :class:`RenderError` for an unknown suffix, a rendering over
    the limit, a missing ``dot`` program, a timeout or a failed layout.
    """
    path = FsPath(path)
    if not 0 < timeout < float("inf"):  # also refuses nan
        raise RenderError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if max_elements < 1:
        raise RenderError(f"max_elements must be at least 1, got {max_elements!r}")
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise RenderError(
            f"{path}: cannot render to '{path.suffix or '(no suffix)'}' files "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)}); choose one of those suffixes"
        )
    if fmt == "dot":
        return atomic_write(path, dot.source)
    _graphviz()
    if shutil.which("dot") is None:
        raise _dot_program_missing()
    elements = dot_elements(dot.source)
    if elements > max_elements:
        raise RenderError(
            f"{path}: the rendering has {elements} nodes and edges, more than dot lays out "
            f"in reasonable time (limit {max_elements}); raise the limit (max_elements=; on the "
            f"command line --max-dot-elements N) or write a .dot file instead"
        )
    source = dot.source.encode(getattr(dot, "encoding", None) or "utf-8")
    written = atomic_write(path, _run_dot(source, fmt, path, timeout))
    logger.info("wrote %s", written)
    return written


def render(
    obj: object,
    path: str | FsPath,
    *,
    max_elements: int = DOT_MAX_ELEMENTS,
    timeout: float = DOT_TIMEOUT_S,
    **kwargs: Any,
) -> FsPath:
    """Render any msnas-graph object to ``path`` (format from the suffix; ``max_elements``
    and ``timeout`` bound ``dot``, see :func:`save_rendering`).

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
    return save_rendering(dot, path, max_elements=max_elements, timeout=timeout)

"""The modules of ``msnas_graph.data`` import one another in layers, with no circle.

Unlike ``test_import_graph.py`` (module-level imports of the whole core), this reads *every*
import of a data module, those inside functions included: a circle held apart by an import
inside a function is still a circle (``readers`` and ``volumes`` once were one). Imports
inside functions remain fine for optional third-party libraries, which are not data modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import msnas_graph.data

DATA = Path(msnas_graph.data.__file__).parent
PACKAGE = "msnas_graph.data"


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The dotted names an import statement may refer to, most specific first."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return [*(f"{base}.{a.name}" for a in node.names), base]


def data_import_graph(source: dict[str, str]) -> nx.DiGraph:
    """Edges ``a -> b`` between data modules (``name -> source text``), from every import
    anywhere in ``a`` (module level, ``if TYPE_CHECKING:``, functions, methods)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(source)
    for name, text in source.items():
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, PACKAGE):
                if target in source and target != name:
                    graph.add_edge(name, target)
                    break  # `from pkg import module` names the module, else the package
    return graph


def _data_sources() -> dict[str, str]:
    return {
        PACKAGE if p.stem == "__init__" else f"{PACKAGE}.{p.stem}": p.read_text(encoding="utf-8")
        for p in sorted(DATA.glob("*.py"))
    }


def test_every_import_is_read() -> None:
    graph = data_import_graph(_data_sources())
    assert graph.has_edge("msnas_graph.data.volumes", "msnas_graph.data.formats")
    assert graph.has_edge("msnas_graph.data.readers", "msnas_graph.data.volumes")
    assert graph.has_edge("msnas_graph.data.readers", "msnas_graph.data.case")  # TYPE_CHECKING


def test_an_import_inside_a_function_makes_a_circle() -> None:
    """The check fails on the circle it exists for (a lazy import closing it)."""
    source = {
        "msnas_graph.data.low": "import numpy\n",
        "msnas_graph.data.a": "from msnas_graph.data.low import x\nfrom . import b\n",
        "msnas_graph.data.b": "def f():\n    from msnas_graph.data.a import y\n",
    }
    cycles = list(nx.simple_cycles(data_import_graph(source)))
    assert sorted(cycles[0]) == ["msnas_graph.data.a", "msnas_graph.data.b"]
    del source["msnas_graph.data.b"]
    assert list(nx.simple_cycles(data_import_graph(source))) == []


def test_data_modules_have_no_circles() -> None:
    cycles = list(nx.simple_cycles(data_import_graph(_data_sources())))
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_formats_is_the_bottom_layer() -> None:
    """``formats`` (what ``readers`` and ``volumes`` both need) imports no other data module."""
    graph = data_import_graph(_data_sources())
    assert list(graph.successors("msnas_graph.data.formats")) == []

"""The core modules import one another without circles.

The import graph is read from the source with ``ast``: module-level imports, including those
under ``if TYPE_CHECKING:`` (a circle there is still a circle for a reader), excluding imports
inside functions. A second test imports every core module first, each from a clean slate of
``msnas_graph`` modules, which is what fails when an import circle bites at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

import msnas_graph

ROOT = Path(msnas_graph.__file__).parent
SKIP = ("msnas_graph.backends", "msnas_graph.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports at module level and in module-level ``if`` blocks (``TYPE_CHECKING``)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
    return found


def import_graph() -> nx.DiGraph:
    """Edges ``a -> b``: core module ``a`` imports core module ``b`` at module level."""
    files = {
        _module_name(p): p
        for p in ROOT.rglob("*.py")
        if not _module_name(p).startswith(SKIP) and "__pycache__" not in p.parts
    }
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                if target in files and target != name:
                    graph.add_edge(name, target)
                    break  # `from pkg import module` names the module, else the package
    return graph


def test_import_graph_is_read() -> None:
    graph = import_graph()
    assert graph.has_edge("msnas_graph.state", "msnas_graph.layout")
    assert graph.has_edge("msnas_graph.data.sources", "msnas_graph.data.phantom")
    assert graph.has_edge("msnas_graph.data.readers", "msnas_graph.data.case")  # TYPE_CHECKING
    assert not graph.has_edge("msnas_graph.graph", "msnas_graph._util")  # lazy, in a function


def test_core_imports_have_no_circles() -> None:
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_each_core_module_imports_first() -> None:
    names = sorted(import_graph().nodes)
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m.startswith('msnas_graph')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1]

"""The library's modules form layers: no import cycles, and the torch backend's model modules
import only lower layers, at the top of the file.

The import graph is read from the source with ``ast`` (nothing is imported): an edge
``a -> b`` for every import of library module ``b`` anywhere in ``a`` (module level, or inside
a function or class, where an import would only hide a cycle until the function runs), and
``a -> p`` for each package ``p`` above ``b`` that is not above ``a``, since importing ``b``
first runs ``p/__init__.py``. Imports under ``if TYPE_CHECKING:`` never run and are left out
of the whole-library graph (the packages ``backends.torch`` and ``backends.torch.training``
re-export their modules' names that way, loading them on first use); the core's graph keeps
them (a cycle there is still a cycle for a reader). Imports of optional dependencies (onnx,
onnxruntime, graphviz, matplotlib, ...) are not library modules, so never edges: those are
the only imports the layered modules may make inside functions (:data:`OPTIONAL`).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Collection, Mapping
from pathlib import Path

import networkx as nx

PACKAGES = ("msnas_graph", "msnas_graph.backends", "msnas_graph.cli")


#: The torch backend's model modules, lowest layer first: each imports only earlier ones.
LAYERS = ("models", "limits", "export", "runtimes", "cost", "cost_model", "inference")
#: What the layered modules may import inside functions: optional dependencies only.
OPTIONAL = ("onnx", "onnxruntime")


def _roots() -> dict[str, Path]:
    roots = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        roots[package] = Path(next(iter(spec.submodule_search_locations)))
    return roots


def _modules(roots: Mapping[str, Path]) -> dict[str, Path]:
    """Module name -> file, the subpackages that are roots of their own left to them."""
    files = {}
    for package, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            name = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
            if "__pycache__" not in path.parts and (name == package or name not in roots):
                files[name] = path
    return files


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return found


def _imports(
    name: str, path: Path, modules: Collection[str], type_checking: bool
) -> list[tuple[str, ast.stmt, bool]]:
    """(imported module, the statement, whether at module level) for each import of ``path``:
    ``from pkg import x`` imports ``pkg.x`` where that is one of ``modules``, else ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if type_checking else _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    functions = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names]
            targets = [t if t in modules else base for t in targets]
        else:
            continue
        found += [(t, node, id(node) not in functions) for t in targets]
    return found


def _packages_above(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


@functools.cache
def _library_graph(type_checking: bool) -> nx.DiGraph:
    return import_graph(_roots(), type_checking=type_checking)


def import_graph(roots: Mapping[str, Path], *, type_checking: bool = False) -> nx.DiGraph:
    """Edges ``a -> b``: library module ``a`` imports ``b`` (see the module doc); each edge
    carries the ``line`` of one such import."""
    files = _modules(roots)
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for target, node, _ in _imports(name, path, files, type_checking):
            if target not in files or target in _packages_above(name):
                continue  # the importer's own packages are being imported already
            for dst in {target} | (_packages_above(target) - _packages_above(name)):
                if dst != name and dst in files and not graph.has_edge(name, dst):
                    graph.add_edge(name, dst, line=node.lineno)
    return graph


def _cycles(graph: nx.DiGraph) -> list[frozenset[str]]:
    """The strongly connected parts of more than one module: each holds a cycle."""
    return [frozenset(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]


def _describe(graph: nx.DiGraph, cycle: frozenset[str]) -> str:
    edges = graph.subgraph(cycle).edges(data="line")
    return ", ".join(f"{a} -> {b} (line {line})" for a, b, line in sorted(edges))


def test_the_import_graph_is_read() -> None:
    graph = _library_graph(False)
    torch = "msnas_graph.backends.torch"
    assert graph.has_edge("msnas_graph.data.readers", "msnas_graph.data.volumes")  # in a function
    assert graph.has_edge(f"{torch}.cost_model", f"{torch}.cost")  # relative
    assert graph.has_edge(f"{torch}.training.train", f"{torch}.training.loop")  # from pkg import
    assert graph.has_edge("msnas_graph.cli.main", "msnas_graph.limits")
    assert graph.has_edge(f"{torch}.cost", f"{torch}.training")  # the package of training.runtime
    assert not graph.has_edge(f"{torch}.training.runtime", f"{torch}.training")  # its own
    assert not graph.has_edge(f"{torch}.training", f"{torch}.training.search")  # TYPE_CHECKING
    read = _library_graph(True)
    assert read.has_edge("msnas_graph.data.readers", "msnas_graph.data.case")
    assert read.has_edge(f"{torch}.training", f"{torch}.training.search")


def test_a_cycle_through_a_function_or_a_package_is_found(tmp_path: Path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "__init__.py").write_text("")
    (tmp_path / "a" / "one.py").write_text("def f():\n    from a.sub import two\n")
    (tmp_path / "a" / "sub" / "__init__.py").write_text("from . import three\n")
    (tmp_path / "a" / "sub" / "two.py").write_text("")
    (tmp_path / "a" / "sub" / "three.py").write_text("from ..one import f\n")
    graph = import_graph({"a": tmp_path / "a"})
    assert _cycles(graph) == [frozenset({"a.one", "a.sub", "a.sub.three"})]


def test_the_library_has_no_import_cycles() -> None:
    graph = _library_graph(False)
    new = _cycles(graph)
    assert not new, "import cycles: " + "; ".join(_describe(graph, c) for c in new)


def test_the_core_has_no_import_cycles_even_for_a_reader() -> None:
    """The core's graph with the imports under ``TYPE_CHECKING``."""
    graph = _library_graph(True)
    core = graph.subgraph(n for n in graph if not n.startswith(PACKAGES[1:]))
    new = _cycles(core)
    assert not new, "import cycles: " + "; ".join(_describe(core, c) for c in new)


def test_the_torch_model_modules_import_only_lower_layers_at_the_top() -> None:
    torch = "msnas_graph.backends.torch"
    files = _modules(_roots())
    for rank, module in enumerate(LAYERS):
        name = f"{torch}.{module}"
        for target, node, top in _imports(name, files[name], files, type_checking=False):
            where = f"{name} line {node.lineno}: imports {target}"
            if not top:
                assert target.split(".")[0] in OPTIONAL, f"{where} inside a function"
            layer = target.removeprefix(f"{torch}.")
            assert layer not in LAYERS[rank:] or layer == module, f"{where}, not a lower layer"

"""Each core module imports first, from a clean slate of ``msnas_graph`` modules, which is
what fails when an import cycle bites at run time. The import graph itself, and the cycles
it must not hold, are ``tests/test_layers.py``'s.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import msnas_graph

CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(msnas_graph.__path__, "msnas_graph.")
    if not m.name.startswith(("msnas_graph.backends", "msnas_graph.cli"))
)


def test_each_core_module_imports_first() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {['msnas_graph', *CORE_MODULES]!r}:\n"
        "    for m in [m for m in sys.modules if m.startswith('msnas_graph')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1]
    assert len(CORE_MODULES) >= 10

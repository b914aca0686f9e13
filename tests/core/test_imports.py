"""The core never imports torch, and every module imports on its own."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import msnas_graph

CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(msnas_graph.__path__, "msnas_graph.")
    if not m.name.startswith(("msnas_graph.backends", "msnas_graph.cli"))
)


def test_core_does_not_import_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {CORE_MODULES!r}: importlib.import_module(m)\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported {out.stdout.strip()}"
    assert len(CORE_MODULES) >= 10


def test_every_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(msnas_graph.__path__, "msnas_graph.")]
    for name in [*CORE_MODULES, *names]:
        importlib.import_module(name)


def test_backend_dispatch() -> None:
    from msnas_graph.backend import available_backends, get_backend
    from msnas_graph.null_backend import NullBackend

    assert {"null", "torch"} <= set(available_backends())
    assert isinstance(get_backend("null"), NullBackend)

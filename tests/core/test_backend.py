"""The backend registry, plugins and operation entry points (no torch)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

import msnas_graph.operations as ops_mod
from msnas_graph.backend import (
    Backend,
    PluginError,
    get_backend,
    load_plugins,
    register_backend,
)
from msnas_graph.errors import BackendError, SpecError
from msnas_graph.null_backend import NullBackend


def test_null_backend_implements_the_whole_protocol() -> None:
    members = {m for m in Backend.__dict__ if not m.startswith("_")}
    assert {"search", "train", "evaluate", "predict", "export", "cost", "quickstart"} <= members
    assert all(callable(getattr(NullBackend, m)) for m in members)
    assert get_backend("null") is get_backend("null")  # one instance: its calls are shared


def test_a_backend_missing_methods_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class Partial:
        name = "partial"

        def build_supernet(self, space: object) -> None: ...

    name = f"partial_{uuid.uuid4().hex[:6]}"
    register_backend(name, Partial)
    with pytest.raises(
        BackendError, match=r"does not implement.*missing: build_network, built_cost, compare, cost"
    ):
        get_backend(name)
    with pytest.raises(BackendError, match="must be letters"):
        register_backend("no spaces", Partial)


def test_plugins_import_or_fail_in_one_line() -> None:
    assert [m.__name__ for m in load_plugins(["json", " ", "json "])] == ["json", "json"]
    with pytest.raises(PluginError, match="plugin 'nope_nope' failed to import: No module"):
        load_plugins(["nope_nope"])


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, target: object) -> None:
    ep = SimpleNamespace(name="fake", value="fake_pkg:register", load=lambda: target)
    monkeypatch.setattr(ops_mod, "entry_points", lambda group: [ep] if group else [])
    monkeypatch.setattr(ops_mod, "_plugins_loaded", False)


def test_operation_entry_points_load_on_the_first_unknown_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = f"ep_op_{uuid.uuid4().hex[:8]}"
    _fake_entry_points(monkeypatch, lambda: ops_mod.register_operation_name(op, "from an ep"))
    ops_mod.check_operation(op)  # unknown until the entry point has been loaded
    assert ops_mod.known_operations()[op] == "from an ep"
    assert ops_mod.load_operation_plugins() == []  # once per process
    with pytest.raises(SpecError, match="unknown operation 'ep_op_missing'"):
        ops_mod.check_operation("ep_op_missing")


def test_a_broken_operation_entry_point_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("needs jax")

    _fake_entry_points(monkeypatch, broken)
    with pytest.raises(BackendError, match=r"operation plugin 'fake' \(fake_pkg:register\)"):
        ops_mod.check_operation("not_registered_anywhere")

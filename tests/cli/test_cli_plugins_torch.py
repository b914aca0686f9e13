"""Plugins and the backend protocol through the CLI with the torch backend."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from msnas_graph.cli.main import main

pytest.importorskip("torch")

SMOKE = ["--device", "cpu", "--no-progress", "--max-steps", "1", "--batch-size", "2"]


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_search_a_space_with_a_plugin_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    op, module = f"conv1_{uuid.uuid4().hex[:8]}", f"my_ops_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\n"
        "from msnas_graph.backends.torch import register_op\n\n"
        f"@register_op({op!r}, 'ReLU -> 1x1 conv')\n"
        "def conv(channels, spatial_dims=2, affine=True):\n"
        "    return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "my_space.yaml"
    spec.write_text(
        f"layers: 2\nscales: 2\nchannels: 8\nblocks: 1\npartial_k: 2\ninput_size: 32\n"
        f"ops: [{op}, skip_connect, none]\n"
    )
    args = ["search", tmp_path / "s", "--space", spec, "--data", "phantom:6", "--epochs", "1,1"]
    code, _, err = run(*args, *SMOKE)
    assert code == 1 and f"unknown operation '{op}'" in err and err.count("\n") == 1
    code, _, err = run("--plugin", module, *args, *SMOKE)
    assert code == 0, err
    state = json.loads((tmp_path / "s" / "state.json").read_text())
    assert op in json.dumps(state["space"]["ops"])
    code, out, _ = run("ops")
    assert op in out


def test_cli_defaults_are_the_config_defaults() -> None:
    """A resumed run without a stored config is built from the given options only, so every
    option's default must be the config's own."""
    from msnas_graph.backends.torch import SearchConfig, TrainConfig
    from msnas_graph.cli.backend_commands import search, train

    checked = 0
    for command, config in ((search, SearchConfig), (train, TrainConfig)):
        fields = {f.name: f.default for f in dataclasses.fields(config)}
        ctx = click.Context(command)
        for param in command.params:
            default = param.get_default(ctx)
            if param.name in fields and isinstance(default, int | float | str | tuple):
                assert default == fields[param.name], (command.name, param.name)
                checked += 1
    assert checked >= 20


def test_torch_backend_refuses_unknown_options_and_resume_changes(tmp_path: Path) -> None:
    from msnas_graph.backend import ResumeConflictError, get_backend
    from msnas_graph.errors import BackendError, RunError

    backend = get_backend("torch")
    with pytest.raises(BackendError, match="export: unknown option 'verfy'.*did you mean 'verify'"):
        backend.export("a.json", tmp_path / "m.onnx", {"verfy": False})
    with pytest.raises(RunError, match="unknown config field 'epochz'"):
        backend.train({"epochz": 1}, tmp_path / "t")
    (tmp_path / "t").mkdir()
    from msnas_graph.backends.torch import TrainConfig

    TrainConfig(epochs=1).save(tmp_path / "t" / "config.json")
    with pytest.raises(ResumeConflictError) as info:
        backend.train({"epochs": 2, "device": "cpu"}, tmp_path / "t", resume=True)
    assert info.value.fields == ("epochs",)

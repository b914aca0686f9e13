"""The backend dispatch and plugins through the CLI, without torch (the ``null`` backend)."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from msnas_graph.backend import get_backend
from msnas_graph.cli.main import main
from msnas_graph.null_backend import NullBackend


def run(*args: object, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def null() -> NullBackend:
    backend = get_backend("null")
    assert isinstance(backend, NullBackend)
    backend.calls.clear()
    return backend


def test_every_backend_command_dispatches_through_the_protocol(
    null: NullBackend, tmp_path: Path
) -> None:
    r = tmp_path / "r"
    r.mkdir()
    commands = [
        ["search", "runs/s", "--space", "tiny", "--epochs", "1,2", "--max-steps", "3"],
        ["train", "runs/t", "--model", "unet", "--unet-base", "8", "--compile"],
        ["evaluate", r, "--split", "val"],
        ["evaluate", r, r, "-o", tmp_path / "cv"],
        ["predict", r, "phantom:2", "-o", tmp_path / "m", "--overlay"],
        ["cost", "--model", "unet", "--input-size", "64", "--no-memory"],
        ["export", "a.json", "--onnx", "m.onnx", "--no-verify"],
        ["quickstart", "runs/q", "--search-epochs", "1,1", "--paths", "2"],
        ["compare", "runs/a", "runs/b", "-o", "t.md", "--plot", "f.png", "--threads", "2"],
    ]
    for args in commands:
        code, _, err = run("--backend", "null", *args)
        assert code == 0, (args, err)
    calls = {(name, str(target)): options for name, target, options in null.calls}
    search = calls[("search", "runs/s")]
    assert search["epochs"] == (1, 2) and search["max_steps_per_epoch"] == 3
    assert search["space"] == "tiny" and "memory" not in search and "checkpoint" not in search
    assert "input_size" not in search  # options without a value are the backend's default
    train = calls[("train", "runs/t")]
    assert train["unet_base_channels"] == 8 and train["compile"] is True
    assert calls[("evaluate", str([str(r)]))]["split"] == "val"
    assert calls[("evaluate", str([str(r), str(r)]))]["out_dir"] == str(tmp_path / "cv")
    assert calls[("predict", str(r))]["overlay"] is True
    assert calls[("cost", "unet")] == {
        "input_size": 64, "activation": False, "latency": False, "device": "auto"
    }  # fmt: skip
    assert calls[("export", "a.json")] == {
        "path": "m.onnx", "input_size": 256, "verify": False, "exporter": "dynamo"
    }  # fmt: skip
    assert calls[("quickstart", "runs/q")]["search_epochs"] == (1, 1)
    assert calls[("quickstart", "runs/q")]["target_macs_unet"] == 0.8  # the default target
    assert calls[("compare", str(["runs/a", "runs/b"]))] == {
        "table": "t.md", "plot": "f.png", "runtime": "auto", "threads": 2, "rounds": 5,
        "device": "auto",
    }  # fmt: skip


def test_backend_output_is_formatted_by_the_cli(null: NullBackend, tmp_path: Path) -> None:
    code, out, _ = run("--backend", "null", "search", "runs/s", "--space", "tiny")
    assert code == 0 and out.startswith("search finished: runs/s")
    # issue 18 item 12: no "next:" for a run the backend did not write
    assert "next:" not in out and "no state was written to runs/s" in out
    code, out, _ = run("--backend", "null", "train", "runs/t")
    assert code == 0 and "next:" not in out
    assert "no trained model was written to runs/t, so there is nothing to evaluate" in out
    r = tmp_path / "r"
    r.mkdir()
    code, out, _ = run("--backend", "null", "evaluate", r, r)
    assert code == 0 and out.startswith("2 folds") and "mean dice over folds: n/a" in out
    code, out, _ = run("--backend", "null", "cost", "a.json", "--json")
    assert code == 0 and '"macs": 0' in out


def test_backend_from_the_environment(null: NullBackend) -> None:
    code, _, err = run("train", "runs/t", env={"MSNAS_BACKEND": "null"})
    assert code == 0, err
    assert null.calls[-1][0] == "train"


def test_unknown_backend_is_one_line_with_the_known_names() -> None:
    code, _, err = run("--backend", "torhc", "search", "runs/x")
    assert code == 1 and err.count("\n") == 1
    assert "unknown backend 'torhc' (known: null, torch" in err and "did you mean 'torch'" in err
    code, _, err = run("count", env={"MSNAS_BACKEND": "nul"})
    assert code == 1 and "did you mean 'null'" in err


def test_resumed_options_are_passed_only_when_given(null: NullBackend) -> None:
    code, _, err = run("--backend", "null", "search", "runs/s", "--resume", "--device", "cpu")
    assert code == 0, err
    assert null.calls[-1][2] == {"device": "cpu"}


@pytest.mark.parametrize("resume", [False, True])
def test_memory_mode_and_the_deprecated_checkpoint_flag(null: NullBackend, resume: bool) -> None:
    extra = ["--resume"] if resume else []
    code, _, err = run("--backend", "null", "search", "runs/s", "--memory", "low", *extra)
    assert code == 0 and "warning" not in err, err
    assert null.calls[-1][2]["memory"] == "low"
    code, _, err = run("--backend", "null", "search", "runs/s", "--checkpoint", *extra)
    assert code == 0, err
    assert "--checkpoint is deprecated; use --memory low" in err
    assert null.calls[-1][2]["memory"] == "low" and "checkpoint" not in null.calls[-1][2]
    code, _, err = run("--backend", "null", "search", "runs/s", "--checkpoint", "--memory", "fast")
    assert code == 2 and "not both" in err


def _plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    name = f"plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_plugin_makes_an_operation_usable_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, null: NullBackend
) -> None:
    op = f"my_op_{uuid.uuid4().hex[:8]}"
    module = _plugin(
        tmp_path,
        monkeypatch,
        "from msnas_graph.operations import register_operation_name\n"
        f"register_operation_name({op!r}, 'a user operation')\n",
    )
    spec = tmp_path / "my_space.yaml"
    spec.write_text(f"layers: 3\nscales: 2\nchannels: 8\nblocks: 2\nops: [{op}, skip_connect]\n")
    code, _, err = run("count", "--space", spec)
    assert code == 1 and f"unknown operation '{op}'" in err
    code, out, err = run("--plugin", module, "count", "--space", spec)
    assert code == 0 and "cells" in out, err
    code, _, err = run("--backend", "null", "search", "runs/p", "--space", spec)
    assert code == 0, err  # imported once, the operation stays known in this process
    assert null.calls[-1][2]["space"] == str(spec)


def test_plugins_from_the_environment_and_backends_from_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = f"mine_{uuid.uuid4().hex[:6]}"
    module = _plugin(
        tmp_path,
        monkeypatch,
        "from msnas_graph.backend import register_backend\n"
        "from msnas_graph.null_backend import NullBackend\n"
        f"register_backend({backend!r}, NullBackend)\n",
    )
    code, _, err = run(
        "--backend", backend, "train", "runs/t", env={"MSNAS_PLUGINS": f" ,{module}"}
    )
    assert code == 0, err
    assert get_backend(backend).calls[-1][:2] == ("train", "runs/t")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "No module named"),
        ("raise RuntimeError('boom\\nsecond line')\n", "RuntimeError: boom"),
        ("def broken(:\n", "SyntaxError"),
        ("import absent_dependency_of_a_plugin\n", "named 'absent_dependency_of_a_plugin'"),
        ("import sys\nsys.exit(5)\n", "it called sys.exit(5) while being imported"),  # issue 18
    ],
    ids=["missing", "raises", "syntax", "dependency", "sys.exit"],
)
def test_plugin_that_fails_to_import_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str | None, message: str
) -> None:
    module = (
        f"absent_{uuid.uuid4().hex[:8]}" if body is None else _plugin(tmp_path, monkeypatch, body)
    )
    code, _, err = run("--plugin", module, "count")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"plugin '{module}' failed to import" in err and message in err


def test_a_missing_plugin_says_where_it_was_looked_for_and_how_to_point_at_it() -> None:
    module = f"absent_{uuid.uuid4().hex[:8]}"
    code, _, err = run("--plugin", module, "count")
    assert code == 1 and err.count("\n") == 1
    assert "current folder" in err and "PYTHONPATH" in err
    assert f"--plugin path/to/{module}.py" in err
    code, _, err = run("--plugin", f"nowhere/{module}.py", "count")
    assert code == 1 and err.count("\n") == 1 and "no such file" in err


def test_a_plugin_file_named_like_an_imported_module_is_refused(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("raise RuntimeError('must not run')\n")
    code, _, err = run("--plugin", tmp_path / "json.py", "count")
    assert code == 1 and err.count("\n") == 1 and "already imported" in err
    assert sys.modules["json"].__file__ != str(tmp_path / "json.py")


def test_a_plugin_given_as_a_file_path_or_lying_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console script does not put the current folder on the path: ``--plugin my_ops`` finds
    ``./my_ops.py`` anyway, and ``--plugin sub/my_ops.py`` imports that file."""
    ops = [f"my_op_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    modules = [f"plugin_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    (tmp_path / "sub").mkdir()
    for folder, module, op in zip((tmp_path, tmp_path / "sub"), modules, ops, strict=True):
        (folder / f"{module}.py").write_text(
            "from msnas_graph.operations import register_operation_name\n"
            f"register_operation_name({op!r}, 'a user operation')\n"
        )
    monkeypatch.chdir(tmp_path)
    try:
        for op, plugin in zip(ops, (modules[0], f"sub/{modules[1]}.py"), strict=True):
            spec = tmp_path / f"{op}.yaml"
            spec.write_text(f"layers: 2\nscales: 2\nchannels: 8\nops: [{op}, skip_connect]\n")
            code, _, err = run("count", "--space", spec)
            assert code == 1 and f"unknown operation '{op}'" in err
            code, out, err = run("--plugin", plugin, "count", "--space", spec)
            assert code == 0 and "cells" in out, err
    finally:
        for module in modules:
            sys.modules.pop(module, None)


def test_the_cli_reaches_backends_only_through_get_backend() -> None:
    cli = Path(__file__).parents[2] / "cli"
    offenders = [
        p.name
        for p in cli.glob("*.py")
        if re.search(r"backends[./]torch|import torch", p.read_text())
    ]
    assert offenders == []


def test_set_changes_fields_of_the_space_for_every_space_command(null: NullBackend) -> None:
    from msnas_graph.spec import SearchSpace

    ops = "ops=conv_3x3,conv_3x3_dil2,skip_connect,none"
    for args in (
        ["search", "runs/s", "--space", "tiny", "--set", ops, "--set", "channels=6"],
        ["quickstart", "runs/q", "--space", "tiny", "--set", ops, "--set", "channels=6"],
    ):
        code, _, err = run("--backend", "null", *args)
        assert code == 0, err
        space = null.calls[-1][2]["space"]
        assert isinstance(space, SearchSpace) and space.name == "tiny"
        assert space.ops == ("conv_3x3", "conv_3x3_dil2", "skip_connect", "none")
        assert space.channels == 6 and space.layers == SearchSpace.preset("tiny").layers
    code, out, _ = run("count", "--space", "tiny", "--set", "layers=4", "--json")
    assert code == 0 and '"space": "tiny"' in out.replace("'", '"')


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("chanels=6", "unknown space field 'chanels' (did you mean 'channels'?)"),
        ("channels", "expected FIELD=VALUE"),
        ("channels=-1", "channels: Input should be greater than or equal to 1"),
        ("ops=conv_9x9,none", "unknown operation 'conv_9x9'"),
        ("schema_version=2", "unknown space field 'schema_version'"),
    ],
)
def test_bad_set_is_one_line_and_runs_nothing(null: NullBackend, value: str, message: str) -> None:
    code, _, err = run("--backend", "null", "search", "runs/s", "--set", value)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and null.calls == []


def test_next_step_only_for_a_run_that_was_written(tmp_path: Path) -> None:
    """Issue 18 item 12: "next: evaluate" names a run folder holding a trained model."""
    from types import SimpleNamespace

    from msnas_graph.cli.formatting import train_text

    outcome = SimpleNamespace(run_dir=tmp_path, best_dice=0.5, best_epoch=1)
    assert "next:" not in train_text(outcome, "r")  # type: ignore[arg-type]
    (tmp_path / "model.json").write_text("{}")
    assert train_text(outcome, "r").endswith("next: msnas-graph evaluate r")  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", ["0", "4097", "99999999999999999999"])
def test_absurd_thread_counts_are_refused(threads: str) -> None:
    """Issue 18 item 12: --threads (and MSNAS_THREADS) is bounded; nothing runs."""
    code, out, err = run("--threads", threads, "count", "--space", "tiny")
    assert code == 2 and "--threads" in err and "1<=x<=4096" in err and out == ""
    code, _, err = run("count", "--space", "tiny", env={"MSNAS_THREADS": threads})
    assert code == 2 and "--threads" in err


def test_running_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 item 2: a MemoryError the estimates did not foresee is not "unexpected"."""
    import msnas_graph.counting

    def exhausted(*_: object, **__: object) -> None:
        raise MemoryError

    monkeypatch.setattr(msnas_graph.counting, "count_space", exhausted)
    code, _, err = run("count", "--space", "tiny")
    assert code == 1 and err.count("\n") == 1 and "unexpected" not in err
    assert err.startswith("msnas-graph: error: out of memory") and "ulimit" in err


@pytest.mark.parametrize(
    ("given", "unet", "count"),
    [(["--target-macs", "off"], None, None), (["--target-macs", "50M"], None, 50_000_000),
     (["--target-macs", "0.6x"], 0.6, None)],
)  # fmt: skip
def test_quickstart_target_macs(
    null: NullBackend, given: list[str], unet: float | None, count: int | None
) -> None:
    code, _, err = run("--backend", "null", "quickstart", "runs/q", *given)
    assert code == 0, err
    options = {str(t): o for name, t, o in null.calls if name == "quickstart"}["runs/q"]
    assert options["target_macs_unet"] == unet and options.get("target_macs") == count

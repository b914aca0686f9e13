"""The limits on graphviz's ``dot`` from the command line: ``--dot-timeout`` and
``--max-dot-elements`` on ``render``, ``decode --render`` and ``diff --render`` (issue 9)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from msnas_graph.cli.main import main
from msnas_graph.render import DOT_MAX_ELEMENTS, DOT_TIMEOUT_S, dot_elements, render_supergraph
from msnas_graph.spec import SearchSpace


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _fake_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """Put a ``dot`` running the shell ``body`` first on PATH."""
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, list[str]]:
    """For each command that draws through dot, its arguments up to the picture's path."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, seed in ((a, "1"), (b, "2")):
        assert run("sample", "--space", "tiny", "--seed", seed, "-o", str(path))[0] == 0
    return {
        "render": ["render", "tiny", "-o"],
        "decode": ["decode", str(a), "--render"],
        "consensus": ["decode", str(a), str(b), "--render"],
        "diff": ["diff", str(a), str(b), "--render"],
    }


@pytest.mark.parametrize("command", ["render", "decode", "consensus", "diff"])
def test_max_dot_elements_reaches_dot(
    command: str, sources: dict[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dot(tmp_path, monkeypatch, "cat > /dev/null\necho '<svg/>'")
    pic = tmp_path / "pic.svg"
    code, _, err = run(*sources[command], str(pic), "--max-dot-elements", "5")
    assert code == 1 and err.count("\n") == 1, err
    assert "(limit 5)" in err and "--max-dot-elements N" in err
    assert not pic.exists()
    # a limit above the picture's size lets dot draw it
    code, _, err = run(*sources[command], str(pic), "--max-dot-elements", "100000")
    assert code == 0, err
    assert pic.read_text().strip() == "<svg/>"


def test_max_dot_elements_is_compared_with_the_rendering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dot(tmp_path, monkeypatch, "cat > /dev/null\necho '<svg/>'")
    size = dot_elements(render_supergraph(SearchSpace.preset("tiny")).source)
    pic = tmp_path / "t.svg"
    code, _, err = run("render", "tiny", "-o", str(pic), "--max-dot-elements", str(size - 1))
    assert code == 1 and f"has {size} nodes and edges" in err
    code, _, err = run("render", "tiny", "-o", str(pic), "--max-dot-elements", str(size))
    assert code == 0, err


@pytest.mark.parametrize("command", ["render", "diff"])
def test_dot_timeout_stops_a_slow_dot(
    command: str, sources: dict[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dot(tmp_path, monkeypatch, "sleep 60 &\nwait")
    pic = tmp_path / "pic.svg"
    start = time.monotonic()
    code, _, err = run(*sources[command], str(pic), "--dot-timeout", "0.5")
    assert time.monotonic() - start < 30
    assert code == 1 and err.count("\n") == 1, err
    assert "within 0.5 s" in err and "--dot-timeout SECONDS" in err
    assert not pic.exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--dot-timeout", "0", "must be a positive number of seconds"),
        ("--dot-timeout", "-3", "must be a positive number of seconds"),
        ("--dot-timeout", "nan", "must be a positive number of seconds"),
        ("--dot-timeout", "inf", "must be a positive number of seconds"),
        ("--dot-timeout", "soon", "is not a valid float"),
        ("--max-dot-elements", "0", "is not in the range x>=1"),
        ("--max-dot-elements", "-1", "is not in the range x>=1"),
    ],
)
def test_bad_dot_limits_are_usage_errors(
    option: str, value: str, message: str, sources: dict[str, list[str]], tmp_path: Path
) -> None:
    for command in ("render", "decode", "diff"):
        pic = tmp_path / "pic.svg"
        code, _, err = run(*sources[command], str(pic), option, value)
        assert code == 2, (command, err)
        assert f"Invalid value for '{option}'" in err and message in err
        assert not pic.exists()


def test_dot_limit_defaults_are_the_api_defaults() -> None:
    from msnas_graph.cli.decode import decode

    commands = [main.commands["render"], main.commands["diff"], decode]
    for command in commands:
        ctx = click.Context(command)
        defaults = {p.name: p.get_default(ctx) for p in command.params}
        assert defaults["dot_timeout"] == DOT_TIMEOUT_S, command.name
        assert defaults["max_dot_elements"] == DOT_MAX_ELEMENTS, command.name

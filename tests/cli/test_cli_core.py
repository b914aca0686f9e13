"""The graph-core commands: behaviour, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from msnas_graph.architecture import Architecture
from msnas_graph.cli.main import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    code, out, _ = run("sample", "--space", "quick", "--seed", "3", "-o", str(tmp_path / "s.json"))
    assert code == 0 and "wrote" in out
    return tmp_path / "s.json"


def test_count_paper_prints_the_paper_cell_count() -> None:
    code, out, _ = run("count", "--space", "paper", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["cells"] == 421_875_000 and data["cells_per_type"]["keep"] == 750


def test_decode_writes_architecture_and_picture(state_file: Path, tmp_path: Path) -> None:
    arch_path, pic = tmp_path / "arch.json", tmp_path / "arch.dot"
    code, out, _ = run(
        "decode", str(state_file), "--paths", "4", "-o", str(arch_path), "--render", str(pic)
    )
    assert code == 0, out
    arch = Architecture.load(arch_path)
    assert len(arch.paths) == 4
    assert "path 4:" in out and f"wrote architecture {arch_path}" in out
    assert "digraph" in pic.read_text()
    code, out, _ = run("decode", str(state_file), "--paths", "4", "--json")
    assert json.loads(out)["content_hash"] == arch.content_hash


def test_render_and_diff(state_file: Path, tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    run("decode", str(state_file), "-n", "1", "-o", str(a))
    run("decode", str(state_file), "-n", "5", "-o", str(b))
    code, out, _ = run("diff", str(a), str(a))
    assert code == 0 and "no differences" in out
    code, out, _ = run("diff", str(a), str(b), "--json")
    assert code == 0 and json.loads(out)["edges_added"]
    code, out, _ = run("render", "paper", "-o", str(tmp_path / "trellis.dot"))
    assert code == 0 and (tmp_path / "trellis.dot").is_file()
    if shutil.which("dot"):
        code, _, _ = run("render", str(b), "-o", str(tmp_path / "arch.svg"))
        assert code == 0 and "<svg" in (tmp_path / "arch.svg").read_text()


def test_ops_lists_the_registry() -> None:
    code, out, _ = run("ops")
    assert code == 0 and "sep_conv_3x3" in out and "none" in out


def _spec(tmp_path: Path, text: str) -> str:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda t: [
                "count",
                "--space",
                _spec(t, "layers: 4\nscales: 3\nchannels: 8\nops: [sep_conv_7x7]\n"),
            ],
            "space.yaml: ops: unknown operation 'sep_conv_7x7'",
        ),
        (
            lambda t: [
                "count",
                "--space",
                _spec(t, "layers: 4\nscales: 3\nchannels: 6\npartial_k: 4\n"),
            ],
            "partial_k=4 does not divide channels=6",
        ),
        (
            lambda t: [
                "count",
                "--space",
                _spec(t, "layers: 4\nscales: 9\nchannels: 8\ninput_size: 64\n"),
            ],
            "input_size=64 is not divisible by 2**(scales-1)=256",
        ),
        (
            lambda t: ["count", "--space", _spec(t, "layers: [4\n")],
            "not valid YAML",
        ),
        (lambda t: ["decode", str(t / "missing.json")], "no such file or folder"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(tmp_path: Path, make_args, message: str) -> None:
    code, _out, err = run(*make_args(tmp_path))
    assert code == 1
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_state_files(tmp_path: Path, state_file: Path) -> None:
    data = json.loads(state_file.read_text())
    data["schema_version"] = 99
    bad = tmp_path / "v99.json"
    bad.write_text(json.dumps(data))
    code, _, err = run("decode", str(bad))
    assert code == 1 and "schema_version 99 is not supported" in err
    broken = tmp_path / "broken.json"
    broken.write_text(state_file.read_text()[:100])
    code, _, err = run("decode", str(broken))
    assert code == 1 and "not valid JSON" in err
    code, _, err = run("decode", str(state_file), "--paths", "100000")
    assert code == 1 and "ask for at most" in err


def test_architecture_not_matching_its_space(tmp_path: Path, state_file: Path) -> None:
    arch_path = tmp_path / "a.json"
    run("decode", str(state_file), "-o", str(arch_path))
    data = json.loads(arch_path.read_text())
    data["space"]["layers"] = 2  # edges now fall outside the space
    data.pop("content_hash")
    arch_path.write_text(json.dumps(data))
    code, _, err = run("render", str(arch_path), "-o", str(tmp_path / "x.dot"))
    assert code == 1 and "not in the space" in err
    assert not (tmp_path / "x.dot").exists()


def test_missing_dot_is_one_line_and_leaves_no_file(
    tmp_path: Path, state_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out_file = tmp_path / "arch.svg"
    code, _, err = run("decode", str(state_file), "--render", str(out_file))
    assert code == 1 and "`dot` program was not found" in err
    assert not out_file.exists()


def test_usage_errors_exit_2() -> None:
    code, _, _ = run("decode")
    assert code == 2
    code, _, _ = run("decode", "x.json", "--paths", "0")
    assert code == 2


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--debug", "count", "--space", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and result.exception is not None


# ------------------------------------------------------- diagnostics and consensus (issue 8)


def _zero_state(tmp_path: Path, space: str = "quick") -> Path:
    from msnas_graph.spec import SearchSpace
    from msnas_graph.state import SearchState

    path = tmp_path / f"zero-{space}.json"
    SearchState.zeros(SearchSpace.preset(space)).save(path)
    return path


def test_decode_prints_diagnostics_after_the_architecture(state_file: Path) -> None:
    code, out, _ = run("decode", str(state_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Architecture ") and lines[-1].startswith("decisions: ")
    assert "cell decisions and" in lines[-1] and "untrained prior" in lines[-1]
    code, out, _ = run("decode", str(state_file), "--json")
    data = json.loads(out)
    assert data["meta"]["score"] == "paper"
    assert data["diagnostics"]["summary"] in lines[-1]
    assert {"cells", "nodes", "path_set", "warning"} <= set(data["diagnostics"])


def test_decode_score_option(state_file: Path) -> None:
    _, out, _ = run("decode", str(state_file), "--json", "--score", "paper")
    paper = json.loads(out)
    assert (
        paper["meta"]["score"] == "paper" and paper["diagnostics"]["path_set"]["score"] == "paper"
    )
    assert all(p["path_score"] > 0 for p in paper["paths"])  # sums of softmax weights
    code, _, _ = run("decode", str(state_file), "--score", "papr")
    assert code == 2


def test_undecided_state_warns_on_stderr(tmp_path: Path) -> None:
    code, out, err = run("decode", str(_zero_state(tmp_path)))
    assert code == 0 and "0 of 6 cell decisions and 0 of 6 node decisions decided" in out
    assert err.startswith("msnas-graph: warning: the search has not decided")
    assert "--arch-lr" in err and err.count("\n") == 1
    code, out, err = run("decode", str(_zero_state(tmp_path)), "--json")
    assert code == 0 and "has not decided" in err
    assert json.loads(out)["diagnostics"]["warning"] in err


def _flat_state(tmp_path: Path) -> Path:
    """A decided ``quick`` state whose every node prefers its identity (``skip``) edge, as a
    cost target too tight for the space leaves it: its best path never leaves scale 0."""
    import numpy as np

    from msnas_graph.state import SearchState

    state = SearchState.load(_zero_state(tmp_path))
    for node in state.beta_logits:
        kinds = state.layout.beta_kinds(node)
        state.beta_logits[node] = np.array([8.0 if k == "skip" else 0.0 for k in kinds])
    for logits in [*state.alpha_logits.values(), *state.p_logits.values()]:
        for row in logits:
            row[0] += 8.0  # decided cells, so that only the context warning is left
    state.save(tmp_path / "flat.json")
    return tmp_path / "flat.json"


def test_network_that_never_leaves_full_resolution_warns(tmp_path: Path) -> None:
    flat = _flat_state(tmp_path)
    code, out, err = run("decode", str(flat), "--paths", "1", "-o", str(tmp_path / "a.json"))
    assert code == 0, err
    assert "path 1: scales 0-0-0-0-0" in out
    assert err == (
        f"msnas-graph: warning: {Architecture.load(tmp_path / 'a.json').context_warning()}\n"
    )
    assert err.startswith("msnas-graph: warning: the network never leaves scale 0 (of 0..2)")
    assert "--target-macs" in err
    code, out, err = run("decode", str(flat), "--paths", "6")  # more paths reach deeper
    assert code == 0 and "never leaves" not in err, err
    assert "--min-scale 2" in Architecture.load(tmp_path / "a.json").context_warning()


def test_min_scale_keeps_a_path_that_deep(tmp_path: Path) -> None:
    flat = _flat_state(tmp_path)
    arch_path = tmp_path / "deep.json"
    code, out, err = run(
        "decode", str(flat), "--paths", "2", "--min-scale", "2", "-o", str(arch_path)
    )
    assert code == 0 and err == "", err
    assert "path 1: scales 0-0-0-0-0" in out and "path 2: scales 0-1-2-1-0" in out
    arch = Architecture.load(arch_path)
    assert arch.deepest_scale == 2 and arch.meta["min_scale"] == 2
    from msnas_graph.state import SearchState

    twin = tmp_path / "twin.json"
    state = SearchState.load(flat)  # another seed that decides alike
    state.alpha_logits[state.space.cell_types[0]][0][0] += 0.5
    state.save(twin)
    code, out, err = run("decode", str(flat), str(twin), "--paths", "2", "--min-scale", "1")
    assert code == 0 and "never leaves" not in err and "consensus (mean) of 2" in out, err


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--min-scale", "3"], 1, "reach scale 2 at most; give --min-scale 2 or less"),
        (["--min-scale", "-1"], 2, "--min-scale"),
        (["--min-scale", "2", "--max-macs", "1"], 1, "only path that reaches scale 2"),
    ],
)
def test_min_scale_errors(tmp_path: Path, extra: list[str], code: int, message: str) -> None:
    got, out, err = run("decode", str(_flat_state(tmp_path)), *extra)
    assert got == code and message in err, out + err
    if code == 1:
        assert err.count("\n") == 1


def test_min_scale_under_a_budget(tmp_path: Path) -> None:
    flat = _flat_state(tmp_path)
    code, out, err = run("decode", str(flat), "--paths", "2", "--max-macs", "1G", "--json")
    assert code == 0, err
    roomy = json.loads(out)["meta"]["cost"]["macs"]  # the plain top 2: identity edges, cheap
    out_file = tmp_path / "deep.json"
    code, out, err = run(
        "decode", str(flat), "--paths", "2", "--min-scale", "2", "--max-macs", "1G",
        "-o", str(out_file),
    )  # fmt: skip
    assert code == 0 and "never leaves" not in err, err
    arch = Architecture.load(out_file)
    assert arch.deepest_scale == 2 and arch.meta["min_scale"] == 2
    assert arch.meta["cost"]["macs"] > roomy and "budget: max" in out
    twin = tmp_path / "twin.json"
    flat.rename(twin)
    _flat_state(tmp_path)
    code, _, err = run(
        "decode", str(flat), str(twin), "--min-scale", "1", "--consensus", "majority"
    )
    assert code == 2 and "not a vote" in err, err


def test_consensus_of_identical_runs_agrees(state_file: Path, tmp_path: Path) -> None:
    from msnas_graph.state import SearchState

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    twin = SearchState.load(state_file)  # decides as state_file: one logit row shifted
    twin.alpha_logits[twin.space.cell_types[0]][0][0] += 0.5
    twin.save(run_dir / "state.json")  # a run folder works as a source
    arch_path, pic = tmp_path / "c.json", tmp_path / "c.dot"
    code, out, err = run(
        "decode", str(state_file), str(run_dir), "-o", str(arch_path), "--render", str(pic)
    )
    assert code == 0, err
    assert "consensus (mean) of 2 searches: the seeds agree on 100% of decisions" in out
    assert f"decisions of {run_dir}:" in out and f"wrote architecture {arch_path}" in out
    assert Architecture.load(arch_path).meta["consensus"] == "mean"
    assert "share of the 2 seeds" in pic.read_text()
    code, out, _ = run("decode", str(state_file), str(run_dir), "--consensus", "majority", "--json")
    data = json.loads(out)
    assert code == 0 and data["method"] == "majority" and data["agreement"] == 1.0
    assert set(data["diagnostics"]) == {str(state_file), str(run_dir)}


def test_consensus_refuses_the_same_source_twice(state_file: Path, tmp_path: Path) -> None:
    """Issue 18 item 5: by path (a run folder and its state.json, a symbolic or hard link,
    ``a b a``) and by content (a copy); one source with --consensus gets a note."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(state_file, run_dir / "state.json")
    (tmp_path / "sym.json").symlink_to(state_file)
    os.link(state_file, tmp_path / "hard.json")
    other = tmp_path / "other.json"
    run("sample", "--space", "quick", "--seed", "7", "-o", str(other))
    cases = [
        ([run_dir, run_dir / "state.json"], "the same file as"),
        ([state_file, tmp_path / "sym.json"], "the same file as"),
        ([state_file, tmp_path / "hard.json"], "the same file as"),
        ([state_file, other, state_file], "the same file as"),
        ([state_file, run_dir], "holds the same search state as"),
    ]
    for sources, message in cases:
        code, out, err = run("decode", *map(str, sources), "--consensus", "mean")
        assert code == 1 and message in err and err.count("\n") == 1, (sources, err)
        assert out == ""
    code, out, err = run("decode", str(state_file), "--consensus", "majority")
    assert code == 0 and err == (
        "msnas-graph: note: --consensus majority needs several sources (seeds); decoded the "
        "one given\n"
    )
    code, out, err = run("decode", str(state_file))
    assert code == 0 and "note" not in err


def test_consensus_of_different_runs_reports_disagreement(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run("sample", "--space", "quick", "--seed", "1", "-o", str(a))
    run("sample", "--space", "quick", "--seed", "2", "-o", str(b))
    code, out, _ = run("decode", str(a), str(b), "--consensus", "majority")
    assert code == 0 and "where the seeds differ" in out and "1/2" in out


def test_consensus_errors(tmp_path: Path, state_file: Path) -> None:
    tiny = _zero_state(tmp_path, "tiny")
    code, _, err = run("decode", str(state_file), str(tiny))
    assert code == 1 and err.count("\n") == 1
    assert f"{tiny} is a search of space 'tiny'" in err and "one space" in err
    code, _, _ = run("decode", str(state_file), str(state_file), "--consensus", "median")
    assert code == 2
    code, _, err = run("decode", str(state_file), str(tmp_path / "missing"))
    assert code == 1 and "no such file or folder" in err

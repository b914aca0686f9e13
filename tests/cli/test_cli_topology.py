"""``search --topology ARCH.json``: the cells of a given network searched on it, one seed or
several, decoded to that network; what would choose its paths is refused, not ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from msnas_graph.architecture import Architecture
from msnas_graph.cli.main import main

pytest.importorskip("torch")

SMOKE = ["--device", "cpu", "--no-progress", "--max-steps", "1", "--batch-size", "2"]
TINY = ["--space", "tiny", "--data", "phantom:8", *SMOKE]


def run(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def net(tmp_path: Path) -> Path:
    assert run("sample", "--space", "tiny", "--seed", "1", "-o", tmp_path / "s.json")[0] == 0
    out = tmp_path / "net.json"
    assert run("decode", tmp_path / "s.json", "--paths", "2", "-o", out)[0] == 0
    return out


def test_seeds_searched_on_a_network_decode_to_it_and_train(tmp_path: Path, net: Path) -> None:
    code, _out, err = run("search", tmp_path / "r", "--seeds", "2", "--topology", net, *TINY)
    assert code == 0, err
    given = Architecture.load(net)
    arch = Architecture.load(tmp_path / "r" / "architecture.json")
    assert arch.edges == given.edges and arch.paths == given.paths
    agreement = json.loads((tmp_path / "r" / "consensus.json").read_text())
    assert {d["group"] for d in agreement["decisions"]} == {"cell"}
    code, _out, err = run("decode", tmp_path / "r", "-o", tmp_path / "again.json")
    assert code == 0, err
    assert Architecture.load(tmp_path / "again.json") == arch
    code, _out, err = run("train", tmp_path / "t", "--model", tmp_path / "r", "--epochs", "1",
                         "--data", "phantom:8", *SMOKE)  # fmt: skip
    assert code == 0, err


def test_one_search_over_other_operations_says_what_it_kept_and_decode_refuses_path_options(
    tmp_path: Path, net: Path
) -> None:
    dense = "conv_3x3,conv_3x3_dil4,conv_5x5,none"  # the network's cells are of tiny's ops
    code, out, err = run("search", tmp_path / "one", "--topology", net, *TINY, "--set",
                         f"ops={dense}")  # fmt: skip
    assert code == 0, err
    assert "its cells on the fixed network" in out and "--paths" not in out.split("next:")[1]
    found = Architecture.load(tmp_path / "one" / "architecture.json")
    assert found.edges == Architecture.load(net).edges
    assert found.space.ops == tuple(dense.split(","))
    assert {i.op for g in found.cells.values() for b in g.blocks for i in b} <= set(
        dense.split(",")
    )
    code, out, err = run("decode", tmp_path / "one", "--cell-glue", "lean", "--channels", "12",
                         "-o", tmp_path / "lean.json")  # fmt: skip
    assert code == 0, err
    lean = Architecture.load(tmp_path / "lean.json")
    assert lean.space.cell_glue == "lean" and lean.space.channels == 12
    assert lean.edges == Architecture.load(net).edges
    for extra in (["--paths", "3"], ["--min-scale", "1"], ["--max-macs", "1M"]):
        code, out, err = run("decode", tmp_path / "one", *extra)
        assert code == 2 and "searched on a fixed network" in err, extra


def test_a_cost_aware_search_on_a_network_runs_and_logs_its_cost(tmp_path: Path, net: Path) -> None:
    # what it weighs (the network's edges alone) is tested on the term itself (test_search_cost)
    code, _out, err = run("search", tmp_path / "c", "--topology", net, *TINY, "--cost", "macs",
                          "--cost-weight", "0.5")  # fmt: skip
    assert code == 0, err
    header, *rows = (tmp_path / "c" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("expected_macs")
    assert rows and all(float(r.split(",")[column]) > 0 for r in rows)


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p.write_text("{}"), [], "not an architecture"),
        (None, [], "no such architecture file"),
        ("net", ["--epochs", "1,1"], "give epochs (or --epochs) as CELL,0"),
        ("net", ["--set", "layers=4"], "layers 3 against the search's 4"),
    ],
)
def test_a_bad_topology_is_one_line_and_leaves_no_run(
    tmp_path: Path, net: Path, make: Any, args: list[str], message: str
) -> None:
    target = net if make == "net" else tmp_path / "given.json"
    if callable(make):
        make(target)
    code, _out, err = run("search", tmp_path / "bad", "--topology", target, *TINY, *args)
    assert code != 0 and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("seeds", [[], ["--seeds", "2"]])
def test_a_topology_inside_the_run_folder_is_never_deleted(
    tmp_path: Path, net: Path, seeds: list[str]
) -> None:
    run_dir = tmp_path / "r"
    assert run("search", run_dir, *seeds, "--topology", net, *TINY)[0] == 0
    own = run_dir / "architecture.json"
    before = own.read_bytes()
    code, _out, err = run("search", run_dir, *seeds, "--topology", own, "--overwrite", *TINY)
    assert code != 0 and "an input of this command, which --overwrite deletes" in err
    assert "Traceback" not in err and own.read_bytes() == before
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "architecture.json").write_bytes(net.read_bytes())
    code, _out, err = run("search", fresh, *seeds, "--topology", fresh / "architecture.json",
                          *TINY)  # fmt: skip
    assert code != 0 and "an input of this command" in err and "writes over" in err
    # nothing written beside it (the run lock's file, harmless, may stay)
    assert sorted(p.name for p in fresh.iterdir() if p.name != ".lock") == ["architecture.json"]

"""``decode --max-macs/--max-params``: budgeted decoding through the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from msnas_graph.architecture import Architecture
from msnas_graph.cli.main import main

pytest.importorskip("torch")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    code, _, err = run("sample", "--space", "quick", "--seed", "5", "-o", tmp_path / "s.json")
    assert code == 0, err
    return tmp_path / "s.json"


def test_budget_halves_the_macs(state_file: Path, tmp_path: Path) -> None:
    code, out, err = run("decode", state_file, "--paths", "3", "--max-macs", "1T", "--json")
    assert code == 0, err
    free = json.loads(out)["meta"]
    plain = json.loads(run("decode", state_file, "--paths", "3", "--json")[1])
    assert json.loads(out)["content_hash"] == plain["content_hash"]  # unbounded: plain decode
    assert free["exact"] is True and free["cost"]["macs"] > 0
    half = free["cost"]["macs"] // 2
    arch_path = tmp_path / "a.json"
    code, out, err = run(
        "decode", state_file, "--paths", "3", "--max-macs", str(half), "--max-params", "2M",
        "-o", arch_path,
    )  # fmt: skip
    assert code == 0, err
    assert "budget: max" in out and "exact (branch and bound" in out and "score" in out
    meta = Architecture.load(arch_path).meta
    assert meta["cost"]["macs"] <= half and meta["budget"]["max_params"] == 2_000_000


def test_input_size_changes_the_counted_macs(state_file: Path) -> None:
    macs = []
    for size in ("32", "64"):
        code, out, err = run("decode", state_file, "--max-macs", "1T", "--input-size", size,
                             "--json")  # fmt: skip
        assert code == 0, err
        macs.append(json.loads(out)["meta"]["cost"]["macs"])
    assert macs[1] > 3 * macs[0]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--max-macs", "lots"], 2, "'lots' is not a count"),
        (["--max-params", "-2M"], 2, "is not a count"),
        (["--input-size", "64"], 2, "--input-size applies only with --max-macs"),
        (["--max-macs", "10k"], 1, "below the cheapest of all 42 paths ("),
        (["--max-macs", "1G", "--input-size", "30"], 1, "not divisible by 4"),
        (["--max-macs", "0.5x", "--input-size", "30"], 1, "not divisible by 4"),
        (["--max-latency-ms", "0"], 2, "--max-latency-ms"),
        (["--max-latency-ms", "nan"], 2, "--max-latency-ms"),
        (["--max-latency-ms", "1e-9", "--input-size", "32"], 1, "--max-latency-ms to at least"),
        (["--max-latency-ms", "5", "--latency-device", "tpu"], 1, "device 'tpu'"),
        (["--max-macs", "0x"], 2, "the multiple must be a positive number"),
        (["--max-params", "-1x"], 2, "the multiple must be a positive number"),
        (["--max-macs", "nanx"], 2, "the multiple must be a positive number"),
        (["--max-latency-ms", "halfx"], 2, "is not a multiple of the U-Net's cost"),
        (["--max-macs", "lotsx"], 2, "is not a multiple of the U-Net's cost"),
    ],
)
def test_budget_errors(state_file: Path, args: list[str], code: int, message: str) -> None:
    got, out, err = run("decode", state_file, *args)
    assert got == code, out + err
    assert message in err
    if code == 1:  # one line that names the fix
        assert err.count("\n") == 1
        assert any(w in err for w in ("--max-macs", "--max-latency-ms", "multiple of", "device"))


def test_latency_budget_is_measured_and_met(state_file: Path) -> None:
    code, out, err = run(
        "decode", state_file, "--paths", "3", "--max-latency-ms", "1e6", "--input-size", "32",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads(out)["meta"]
    free = meta["cost"]["latency_ms"]
    assert free > 0 and meta["budget"]["max_latency_ms"] == 1e6
    code, out, err = run(
        "decode", state_file, "--paths", "3", "--max-latency-ms", str(free * 0.6),
        "--input-size", "32", "--json",
    )  # fmt: skip
    # timings are remeasured: the budget holds against this run's own figures, whatever they are
    if code == 0:
        meta = json.loads(out)["meta"]
        assert meta["cost"]["latency_ms"] <= free * 0.6
    else:
        assert "--max-latency-ms to at least" in err


def test_the_budget_is_counted_at_the_training_width(state_file: Path, tmp_path: Path) -> None:
    """Search narrow, train wide: ``--channels`` is the width the MACs budget is about."""
    macs = {}
    for width in (None, 32):
        extra = ["--channels", str(width), "-o", tmp_path / f"w{width}.json"] if width else []
        code, out, err = run("decode", state_file, "--max-macs", "1T", "--json", *extra)
        assert code == 0, err
        macs[width] = json.loads(out)["meta"]["cost"]["macs"]
    assert macs[32] > 3 * macs[None]  # the quick space searches at width 8: 4x the width
    assert Architecture.load(tmp_path / "w32.json").space.channels == 32


def test_a_consensus_decodes_under_a_budget(tmp_path: Path) -> None:
    seeds = []
    for seed in (5, 6, 7):
        path = tmp_path / f"s{seed}.json"
        code, _, err = run("sample", "--space", "quick", "--seed", str(seed), "-o", path)
        assert code == 0, err
        seeds.append(path)
    code, out, err = run("decode", *seeds, "--paths", "3", "--json")
    full = Architecture.from_dict(json.loads(out)["architecture"])
    code, out, err = run("decode", *seeds, "--paths", "3", "--max-macs", "1T", "--json")
    assert code == 0, err
    free = json.loads(out)
    assert Architecture.from_dict(free["architecture"]).edges == full.edges  # unbounded: plain
    half = free["budget"]["cost"]["macs"] // 2
    code, out, err = run("decode", *seeds, "--paths", "3", "--max-macs", str(half), "-o",
                         tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    assert "consensus (mean) of 3 searches" in out and "budget: max" in out
    assert Architecture.load(tmp_path / "a.json").meta["cost"]["macs"] <= half
    code, out, err = run("decode", *seeds, "--paths", "3", "--max-macs", str(half), "--json")
    unconstrained = json.loads(out)["budget"]["unconstrained_cost"]
    assert unconstrained == free["budget"]["unconstrained_cost"]  # the mean's plain top 3,
    assert unconstrained["macs"] > half  # whatever the budget, not the best 3 of its votes
    code, _, err = run("decode", *seeds, "--max-macs", str(half), "--consensus", "majority")
    assert code == 2 and "drop --consensus majority" in err


def test_a_budget_relative_to_the_u_net(state_file: Path, tmp_path: Path) -> None:
    """``--max-macs 0.5x``: half of U-Net(--channels, 4)'s MACs at the input size, counted as
    ``msnas-graph cost unet`` counts it; the note says what it resolved to."""
    from msnas_graph.backends.torch.cost import model_cost

    unet = model_cost("unet", input_size=32, unet_base_channels=16, unet_depth=4)["macs"]
    code, out, err = run(
        "decode", state_file, "--paths", "3", "--max-macs", "0.5x", "--channels", "16",
        "--input-size", "32", "-o", tmp_path / "a.json",
    )  # fmt: skip
    assert code == 0, err
    assert err.splitlines()[0] == (
        f"msnas-graph: note: --max-macs 0.5x U-Net(16, 4)'s {unet:.4g} MACs = "
        f"{round(0.5 * unet):.4g} MACs"
    )
    meta = Architecture.load(tmp_path / "a.json").meta
    assert meta["budget"]["max_macs"] == round(0.5 * unet) and meta["cost"]["macs"] <= unet / 2
    code, out, err = run(
        "decode", state_file, "--paths", "2", "--max-latency-ms", "100x", "--max-params", "2x",
        "--input-size", "32", "--json",
    )  # fmt: skip
    assert code == 0, err
    budget = json.loads(out)["meta"]["budget"]
    assert budget["max_latency_ms"] > 0 and budget["max_params"] > 0
    assert "--max-latency-ms 100x U-Net(8, 4)'s" in err and "--max-params 2x" in err


def test_cell_glue_lean_is_what_the_budget_counts_and_the_file_carries(
    state_file: Path, tmp_path: Path
) -> None:
    """``decode --cell-glue lean``: a darts-searched state decoded for a lean build. The
    budget counts the lean network (the MACs of the network ``train`` builds from the file),
    and a budget between the lean and the darts cost keeps the set that fits only lean."""
    from msnas_graph.backends.torch.cost import count_macs_flops
    from msnas_graph.backends.torch.nn.network import build_network

    cost = {}
    for glue in ("darts", "lean"):
        path = tmp_path / f"{glue}.json"
        code, out, err = run(
            "decode", state_file, "--cell-glue", glue, "--max-macs", "1T", "--input-size", "32",
            "-o", path, "--json",
        )  # fmt: skip
        assert code == 0, err
        arch = Architecture.load(path)
        assert arch.space.cell_glue == glue  # the file carries it (darts: the default, unwritten)
        assert json.loads(out)["space"].get("cell_glue", "darts") == glue
        cost[glue] = arch.meta["cost"]["macs"]
        assert cost[glue] == count_macs_flops(build_network(arch), (1, 1, 32, 32))[0]
    plain = Architecture.load(tmp_path / "darts.json")
    lean = Architecture.load(tmp_path / "lean.json")
    assert lean.edges == plain.edges and cost["lean"] < cost["darts"]
    between = (cost["lean"] + cost["darts"]) // 2
    for glue, same in (("lean", True), ("darts", False)):
        code, out, err = run(
            "decode", state_file, "--cell-glue", glue, "--max-macs", str(between),
            "--input-size", "32", "--json",
        )  # fmt: skip
        assert code == 0, err
        assert (Architecture.from_dict(json.loads(out)).edges == plain.edges) is same
    code, _, err = run("decode", state_file, "--cell-glue", "thin")
    assert code == 2 and "'thin' is not one of 'darts', 'lean'" in err


def test_fit_width_keeps_the_paths_and_narrows_to_the_widest_width_that_fits(
    state_file: Path, tmp_path: Path
) -> None:
    """``decode --fit-width``: the paths of the plain decode, at the widest base width whose
    built network (counted as ``train`` builds it) fits; one width more does not."""
    from msnas_graph.backends.torch.cost import count_macs_flops
    from msnas_graph.backends.torch.nn.network import build_network

    def macs(arch: Architecture) -> int:
        return count_macs_flops(build_network(arch), (1, 1, 32, 32))[0]

    code, out, err = run("decode", state_file, "--paths", "2", "--channels", "16",
                         "-o", tmp_path / "plain.json")  # fmt: skip
    assert code == 0, err
    plain = Architecture.load(tmp_path / "plain.json")
    limit = macs(plain) // 2
    code, out, err = run(
        "decode", state_file, "--paths", "2", "--channels", "16", "--max-macs", str(limit),
        "--input-size", "32", "--fit-width", "-o", tmp_path / "fit.json",
    )  # fmt: skip
    assert code == 0, err
    fit = Architecture.load(tmp_path / "fit.json")
    width = fit.space.channels
    assert f"fitted to the budget (max {limit / 1e6:.4g}M MACs): base width {width}," in out
    assert fit.edges == plain.edges and fit.cells == plain.cells and 1 < width < 16
    assert macs(fit) == fit.meta["cost"]["macs"] <= limit < macs(fit.widen(width + 1))
    assert fit.meta["fit_width"] == width and fit.meta["budget"]["max_macs"] == limit
    code, out, err = run(
        "decode", state_file, "--paths", "2", "--channels", "16", "--max-macs", str(limit),
        "--input-size", "32", "--fit-width", "--width-multiple", "4", "-o", tmp_path / "f4.json",
    )  # fmt: skip
    assert code == 0, err
    assert Architecture.load(tmp_path / "f4.json").space.channels == width // 4 * 4
    code, _, err = run("decode", state_file, "--max-macs", "1G", "--width-multiple", "8")
    assert code == 2 and "--width-multiple applies only with --fit-width" in err
    # a latency budget times whole networks in the runtime predict uses (figures vary: no
    # timing is asserted, only that it was timed and what was written holds it)
    code, out, err = run(
        "decode", state_file, "--paths", "2", "--channels", "16", "--max-latency-ms", "100x",
        "--input-size", "32", "--fit-width", "-o", tmp_path / "lat.json",
    )  # fmt: skip
    assert code == 0, err
    assert "(whole, auto runtime)" in err and "(timed whole, auto runtime)" in out
    lat = Architecture.load(tmp_path / "lat.json").meta
    assert 0 < lat["cost"]["latency_ms"] <= lat["budget"]["max_latency_ms"]
    assert lat["fit_width"] == 16 and "as it is" in out
    # a budget it cannot meet even at width 1; no budget at all: one line each, nothing written
    code, _, err = run("decode", state_file, "--max-macs", "10", "--fit-width", "-o",
                       tmp_path / "no.json")  # fmt: skip
    assert code == 1 and "below the network's cost at base width 1" in err
    assert err.count("\n") == 1 and not (tmp_path / "no.json").exists()
    code, _, err = run("decode", state_file, "--fit-width")
    assert code == 2 and "--fit-width needs a budget" in err

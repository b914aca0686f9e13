"""The cost term of a search (``search --cost``): the expectation, its weight and its target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from msnas_graph.backends.torch import build_network
from msnas_graph.backends.torch.cost import count_macs_flops
from msnas_graph.backends.torch.nn.arch_weights import ArchWeights
from msnas_graph.backends.torch.search_cost import (
    CostTerm,
    SearchCostTable,
    expected_cost,
    measure_search_costs,
)
from msnas_graph.backends.torch.training import SearchConfig, search
from msnas_graph.backends.torch.training.run_dir import load_checkpoint
from msnas_graph.cli.main import main
from msnas_graph.decode import decode
from msnas_graph.errors import RunError
from msnas_graph.graph import Supergraph
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

MIXED = ["conv_3x3", "avg_pool_3x3", "skip_connect", "none"]
SPACES = {
    "tiny": SearchSpace.preset("tiny"),
    "quick": SearchSpace.preset("quick"),
    "quick, lean": SearchSpace.preset("quick", cell_glue="lean"),
    "quick, 2 inputs": SearchSpace.preset("quick", inputs_per_block=2),
    "quick, 2 inputs, lean": SearchSpace.preset("quick", inputs_per_block=2, cell_glue="lean"),
    # lean cells that keep a preprocess (pooling reads the input) or a projection
    "quick, lean, mixed": SearchSpace.preset("quick", ops=MIXED, cell_glue="lean"),
    "lean, 3 blocks, mixed": SearchSpace.preset("quick", ops=MIXED, blocks=3, cell_glue="lean"),
    "lean, 3 blocks, 2 inputs": SearchSpace.preset(
        "quick", blocks=3, inputs_per_block=2, cell_glue="lean"
    ),
}


@pytest.mark.parametrize("name", list(SPACES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_hot_weights_give_the_decoded_networks_own_macs(name: str, seed: int) -> None:
    space = SPACES[name]
    table = measure_search_costs(space, space.input_size)
    arch = decode(SearchState.random(space, seed=seed), paths=1)
    shape = (1, space.in_channels, space.input_size, space.input_size)
    macs = count_macs_flops(build_network(arch), shape)[0]
    weights = ArchWeights.from_architecture(arch)
    for paths in (1, 3):  # one drawn path, every draw the same: the union is that path
        assert float(expected_cost(weights, table, Supergraph(space), paths)) == macs


def _fusion_macs(model: Any, shape: tuple[int, ...]) -> int:
    """The MACs of the built network's fusions (what the expectation leaves out)."""
    macs: list[int] = []

    def hook(conv: torch.nn.Conv2d, _inp: object, out: torch.Tensor) -> None:
        k = conv.kernel_size[0] * conv.kernel_size[1]
        macs.append(out.numel() * conv.in_channels // conv.groups * k)

    fusions = getattr(model, "fusions")  # noqa: B009
    hooks = [
        m.register_forward_hook(hook) for m in fusions.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(shape))
    for h in hooks:
        h.remove()
    return sum(macs)


@pytest.mark.parametrize("seed", [2, 5])
def test_a_fixed_topology_costs_its_own_network_whatever_the_paths(seed: int) -> None:
    # search --topology --cost: the supernet's fixed beta (one on every kept input) puts each of
    # the network's edges in the expectation once and no other edge
    from msnas_graph.backends.torch import build_supernet

    space = SPACES["quick, lean"]
    table, graph = measure_search_costs(space, space.input_size), Supergraph(space)
    arch = decode(SearchState.random(space, seed=seed), paths=3)  # nodes of 2-3 inputs
    net = build_supernet(space)
    net.fix_topology(arch)
    mine = ArchWeights.from_architecture(arch)
    fixed = ArchWeights(mine.alpha, mine.p, net.arch_weights().beta)
    model, shape = build_network(arch), (1, 1, 64, 64)
    macs = count_macs_flops(model, shape)[0] - _fusion_macs(model, shape)
    for paths in (1, 3):
        assert float(expected_cost(fixed, table, graph, paths)) == macs
    # W stays unitless: on the untrained supernet of that network the term is W
    term = CostTerm(table, graph, paths=3, weight=0.5, beta=net.arch_weights().beta)
    penalty, expected = term(net.arch_weights())
    assert float(penalty) == pytest.approx(0.5) and expected < CostTerm(table, graph, 3).reference


def test_expectation_lies_between_the_cheapest_and_dearest_choices() -> None:
    space = SPACES["quick"]
    graph, table = Supergraph(space), measure_search_costs(space, 64)
    costs = []
    for seed in range(6):
        arch = decode(SearchState.random(space, seed=seed), paths=1)
        costs.append(float(expected_cost(ArchWeights.from_architecture(arch), table, graph, 1)))
    term = CostTerm(table, graph, paths=1)
    # the mean over uniformly drawn single-path networks is the expectation at uniform weights
    assert min(costs) < term.reference < 4 * max(costs)
    more = CostTerm(table, graph, paths=3).reference
    assert term.reference < more < 3 * term.reference  # shared edges count once


def test_gradient_prefers_cheap_operations_and_edges() -> None:
    space = SPACES["tiny"]  # ops: sep_conv_3x3, avg_pool_3x3, skip_connect, none
    graph, table = Supergraph(space), measure_search_costs(space, 32)
    state = SearchState.zeros(space)
    weights = ArchWeights.from_state(state)
    for t in (*[a for v in weights.alpha.values() for a in v], *weights.beta.values()):
        t.requires_grad_(True)
    expected_cost(weights, table, graph, 2).backward()
    conv, pool = space.ops.index("sep_conv_3x3"), space.ops.index("avg_pool_3x3")
    for blocks in weights.alpha.values():
        for a in blocks:
            assert a.grad is not None and bool((a.grad[:, conv] > a.grad[:, pool]).all())
    for node, beta in weights.beta.items():
        kinds = graph.node_kinds(node)
        if "skip" in kinds and "keep" in kinds:
            assert beta.grad[kinds.index("keep")] > beta.grad[kinds.index("skip")]


def test_table_round_trips_through_its_dict() -> None:
    table = measure_search_costs(SPACES["tiny"], 32)
    assert SearchCostTable.from_dict(table.to_dict()) == table
    timed = measure_search_costs(SPACES["tiny"], 32, "latency", repeats=2)
    assert timed.unit == "ms" and timed.base > 0 and set(timed.cells) == set(table.cells)


def _config(**cost: object) -> SearchConfig:
    return SearchConfig(
        space=SPACES["tiny"], data="phantom:8", batch_size=2, device="cpu", input_size=32,
        arch_steps=(3, 3), warmup_steps=0, max_steps_per_epoch=2, **cost,  # type: ignore[arg-type]
    )  # fmt: skip


def _logits(state: SearchState) -> np.ndarray:
    parts = [a for v in state.alpha_logits.values() for a in v]
    parts += [a for v in state.p_logits.values() for a in v]
    return np.concatenate([np.ravel(a) for a in (*parts, *state.beta_logits.values())])


def test_weight_zero_is_the_papers_search_bit_for_bit(tmp_path: Path) -> None:
    plain = search(_config(), tmp_path / "plain", progress=False)
    zero = search(_config(cost="macs", cost_weight=0.0), tmp_path / "zero", progress=False)
    assert np.array_equal(_logits(plain.state), _logits(zero.state))
    assert "expected_macs" in zero.history[-1] and "expected_macs" not in plain.history[-1]


def test_a_large_weight_makes_the_cheapest_choices_win(tmp_path: Path) -> None:
    heavy = _config(cost="macs", cost_weight=1000.0, arch_lr=0.05)
    result = search(heavy, tmp_path / "heavy", progress=False)
    arch = result.architecture
    assert arch is not None
    assert all(i.op != "sep_conv_3x3" for c in arch.cells.values() for b in c.blocks for i in b)
    first, last = result.history[0]["expected_macs"], result.history[-1]["expected_macs"]
    assert last < first
    # the table is kept in the checkpoint, so a resumed run weighs the same numbers
    saved = load_checkpoint(tmp_path / "heavy" / "checkpoint.pt")["cost_table"]
    assert SearchCostTable.from_dict(saved).metric == "macs"


def test_a_target_only_penalises_above_it() -> None:
    space = SPACES["tiny"]
    graph, table = Supergraph(space), measure_search_costs(space, 32)
    weights = ArchWeights.from_state(SearchState.zeros(space))
    above = CostTerm(table, graph, 1, weight=2.0, target=table.base)
    below = CostTerm(table, graph, 1, weight=2.0, target=10 * above.reference)
    assert float(above(weights)[0]) > 0 and float(below(weights)[0]) == 0
    expected = above(weights)[1]
    want = 2.0 * np.log(expected / table.base)
    assert float(above(weights)[0]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cost": "flops"}, "unknown cost 'flops'"),
        ({"cost_weight": 1.0}, "without a cost"),
        ({"cost": "macs", "cost_weight": -1.0}, "must be a number >= 0"),
        ({"cost": "latency", "cost_target": float("nan")}, "must be a number > 0"),
        ({"cost": "macs", "cost_target_unet": 0.0}, "cost_target_unet=0.0 must be a number > 0"),
        ({"cost": "macs", "cost_target": 1e6, "cost_target_unet": 0.8}, "not both"),
        ({"cost_target_unet": 0.8}, "without a cost"),
    ],
)
def test_bad_cost_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(RunError, match=message):
        _config(**fields)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-macs", "1M", "--target-latency", "2"], "not both"),
        (["--cost", "latency", "--target-macs", "1M"], "--target-macs weighs macs"),
        (["--target-macs", "lots"], "is not a count"),
        (["--target-latency", "0"], "positive number of milliseconds"),
        (["--target-macs", "0x"], "the multiple must be a positive number"),
        (["--target-latency", "halfx"], "is not a multiple of the U-Net's cost"),
        (["--target-latency", "-0.5x"], "the multiple must be a positive number"),
        (["--cost-weight", "nan"], "finite number >= 0"),
    ],
)
def test_cost_options_refuse_contradictions(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["search", str(tmp_path / "r"), "--space", "tiny", *args])
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "r").exists()


def test_search_command_with_a_target(tmp_path: Path) -> None:
    run = tmp_path / "r"
    args = ["--threads", "1", "search", str(run), "--space", "tiny", "--data", "phantom:8"]
    args += ["--arch-steps", "2,2", "--warmup-steps", "0", "--max-steps", "2", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--target-macs", "100k", "--input-size", "32"])
    assert result.exit_code == 0, result.output
    config = SearchConfig.load(run / "config.json")
    assert (config.cost, config.cost_target, config.cost_weight) == ("macs", 100_000, 1.0)
    assert "expected_macs" in (run / "metrics.csv").read_text().splitlines()[0]
    assert torch.get_num_threads() >= 1


def test_cost_is_measured_at_the_training_width(tmp_path: Path) -> None:
    narrow = search(_config(cost="macs", cost_weight=0.0), tmp_path / "a", progress=False)
    wide = _config(cost="macs", cost_weight=0.0, cost_channels=8)
    wider = search(wide, tmp_path / "b", progress=False)
    assert np.array_equal(_logits(narrow.state), _logits(wider.state))  # W = 0: same search
    ratio = wider.history[-1]["expected_macs"] / narrow.history[-1]["expected_macs"]
    assert 2 < ratio < 4.5  # width 4 -> 8: 1x1 and dense convolutions 4x, depth-wise 2x


def test_the_table_holds_the_unet_a_relative_target_refers_to() -> None:
    from msnas_graph.backends.torch.nn.unet import UNet

    space = SPACES["quick"].replace(channels=16)
    table = measure_search_costs(space, 64)
    unet = UNet(space.in_channels, space.num_classes, base_channels=16, depth=4).eval()
    assert table.unet == count_macs_flops(unet, (1, space.in_channels, 64, 64))[0]
    assert SearchCostTable.from_dict(table.to_dict()).unet == table.unet
    old = {k: v for k, v in table.to_dict().items() if k != "unet"}  # a table from before
    assert SearchCostTable.from_dict(old).unet is None


def test_a_target_relative_to_the_unet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "r"
    args = ["--threads", "1", "search", str(run), "--space", "tiny", "--data", "phantom:8"]
    args += ["--arch-steps", "2,2", "--warmup-steps", "0", "--max-steps", "2", "--no-progress"]
    args += ["--input-size", "32"]
    with caplog.at_level("INFO", logger="msnas_graph"):
        result = CliRunner().invoke(main, [*args, "--target-macs", "0.5x"])
    assert result.exit_code == 0, result.output
    config = SearchConfig.load(run / "config.json")
    assert (config.cost, config.cost_target, config.cost_target_unet) == ("macs", None, 0.5)
    space = SearchState.load(run / "state.json").space  # adapted to the data's classes
    unet = measure_search_costs(space, 32).unet
    assert unet is not None
    assert f"= {0.5 * unet:.4g} MACs" in caplog.text  # the target the search weighed
    # the metrics row: the expected cost as a multiple of the U-Net's
    rows = (run / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    macs, vs = (float(last[header.index(k)]) for k in ("expected_macs", "expected_vs_unet"))
    assert vs == pytest.approx(macs / unet, rel=1e-5)
    assert "the U-Net's at the cost width" in result.output
    # the same command again with --resume is not a change; another target is
    again = CliRunner().invoke(main, [*args, "--target-macs", "0.5x", "--resume"])
    assert again.exit_code == 0, again.output
    other = CliRunner().invoke(main, [*args, "--target-macs", "1M", "--resume"])
    assert other.exit_code == 2
    assert "--target-macs/--target-latency cannot change when resuming" in other.stderr


def test_a_relative_target_resumes_exactly(tmp_path: Path, resumed_search) -> None:
    cfg = _config(cost="macs", cost_target_unet=0.1)  # below the tiny space's ~0.2x: active
    whole = search(cfg, tmp_path / "whole", progress=False)
    free = search(_config(), tmp_path / "free", progress=False)
    assert whole.state.content_hash != free.state.content_hash  # the target moved the search

    resumed = resumed_search(cfg, tmp_path / "parts")
    assert resumed.state.content_hash == whole.state.content_hash
    assert [r["expected_vs_unet"] for r in resumed.history] == [
        r["expected_vs_unet"] for r in whole.history
    ]

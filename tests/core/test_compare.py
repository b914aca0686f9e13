"""The frontier classification and the comparison's table and JSON, on hand-made numbers
(issue 19 item 6; no torch, no timing)."""

from __future__ import annotations

import dataclasses
import json

from msnas_graph.compare import (
    ComparedRun,
    Comparison,
    FrontierPoint,
    dominators,
    frontier_status,
    pareto_front,
)


def _p(name: str, dice: float | None, cost: float | None, unet: bool = False) -> FrontierPoint:
    return FrontierPoint(name, dice, cost, unet)


def test_a_run_is_dominated_only_by_a_u_net_no_slower_and_at_least_as_accurate() -> None:
    points = [
        _p("U-Net(8, 4)", 0.90, 1.0, True),
        _p("U-Net(16, 4)", 0.95, 2.0, True),
        _p("faster, worse", 0.89, 0.5),  # faster than every U-Net: on the frontier
        _p("slower, better", 0.96, 9.0),  # more accurate than every U-Net
        _p("between", 0.92, 1.5),  # U-Net(8) faster but worse, U-Net(16) better but slower
        _p("tie in Dice", 0.95, 2.5),  # U-Net(16) as accurate and faster
        _p("tie in cost", 0.94, 2.0),  # U-Net(16) as fast and more accurate
        _p("exact tie", 0.95, 2.0),  # equal in both: nobody is better in one
    ]
    assert frontier_status(points) == [
        "U-Net frontier",
        "U-Net frontier",
        "on the frontier",
        "on the frontier",
        "on the frontier",
        "dominated by U-Net(16, 4)",
        "dominated by U-Net(16, 4)",
        "on the frontier",
    ]


def test_the_named_dominator_is_the_most_accurate_then_the_fastest() -> None:
    points = [
        _p("U-Net(8, 4)", 0.93, 1.0, True),
        _p("U-Net(12, 4)", 0.95, 1.2, True),
        _p("U-Net(12, 5)", 0.95, 1.4, True),
        _p("MS-NAS", 0.92, 3.0),
    ]
    assert dominators(points) == [None, None, 1, 1]
    assert frontier_status(points)[3] == "dominated by U-Net(12, 4)"


def test_only_u_nets_make_the_frontier() -> None:
    """A non-U-Net that beats another non-U-Net does not dominate it, nor does it push a
    U-Net off the U-Net front."""
    points = [_p("U-Net(8, 4)", 0.80, 2.0, True), _p("a", 0.95, 1.0), _p("b", 0.90, 1.5)]
    assert frontier_status(points) == ["U-Net frontier", "on the frontier", "on the frontier"]
    assert pareto_front(points) == [0]


def test_the_u_net_front_is_sorted_by_cost_and_missing_figures_are_not_compared() -> None:
    points = [
        _p("U-Net(32, 4)", 0.97, 4.0, True),
        _p("U-Net(8, 4)", 0.90, 1.0, True),
        _p("U-Net(12, 4)", None, 1.5, True),
        _p("U-Net(24, 4)", 0.96, None, True),
        _p("MS-NAS", 0.95, float("nan")),
    ]
    assert pareto_front(points) == [1, 0]
    assert frontier_status(points)[2:] == ["n/a", "n/a", "n/a"]


def _run(name: str, kind: str, dice: float, ms1: float, macs: int) -> ComparedRun:
    model = "U-Net(8, 4)" if kind == "unet" else "MS-NAS(3, C8)"
    return ComparedRun(
        run=name,
        model=model,
        kind=kind,
        dice=dice,
        iou=dice - 0.1,
        hd95=4.25,
        hd95_unit="mm",
        params=1_234_567,
        macs=macs,
        input_size=64,
        ms_per_image={1: ms1, 8: ms1 / 2},
        runtime="onnxruntime",
    )


def _comparison() -> Comparison:
    runs = [
        _run("runs/u8", "unet", 0.90, 1.0, 2_000_000_000),
        _run("runs/u8b", "unet", 0.92, 1.1, 2_000_000_000),
        _run("runs/m", "architecture", 0.91, 2.0, 1_000_000_000),
    ]
    return Comparison(runs, {"runtime": "auto", "threads": 1, "rounds": 5, "device": "cpu"})


def test_table_rows_name_the_figures_and_the_frontier() -> None:
    rows = _comparison().rows()
    assert list(rows[0]) == [
        "run", "model", "Dice", "IoU", "HD95 (mm)", "params", "MACs", "input", "ms/image b1",
        "ms/image b8", "runtime", "vs U-Nets (latency)", "vs U-Nets (MACs)",
    ]  # fmt: skip
    assert rows[2]["Dice"] == "0.9100" and rows[2]["params"] == "1.23 M"
    assert rows[2]["MACs"] == "1.00 G" and rows[2]["ms/image b8"] == "1.000"
    # two runs share a label: the frontier names the run too
    assert rows[0]["vs U-Nets (latency)"] == "U-Net frontier"
    assert rows[2]["vs U-Nets (latency)"] == "dominated by U-Net(8, 4) [runs/u8b]"
    assert rows[2]["vs U-Nets (MACs)"] == "on the frontier"  # half the MACs
    text = _comparison().markdown()
    assert text.startswith("| run | model |") and "5 interleaved rounds" in text


def test_json_round_trip_and_derived_fields() -> None:
    c = _comparison()
    data = json.loads(json.dumps(c.to_dict()))
    assert data["format"] == "msnas-graph/comparison"
    assert [r["frontier"] for r in data["runs"]][2].startswith("dominated by U-Net(8, 4)")
    assert data["runs"][0]["ms_per_image"] == {"1": 1.0, "8": 0.5}
    assert data["u_net_front"] == [0, 1] and data["u_net_front_macs"] == [1]
    assert Comparison.from_dict(data) == c


def test_the_note_says_when_the_runs_take_different_input_sizes() -> None:
    c = _comparison()
    assert "different input sizes" not in c.note()
    runs = [*c.runs[:2], dataclasses.replace(c.runs[2], input_size=256)]
    assert "different input sizes (64, 256)" in Comparison(runs, c.settings).note()


def test_the_dice_window_keeps_the_references_and_drops_a_collapsed_run() -> None:
    from msnas_graph.compare import dice_window

    refs = [FrontierPoint(f"U-Net({w}, 4)", 0.95 + w / 1000, w / 8, True) for w in (8, 16)]
    low, high = dice_window([*refs, FrontierPoint("collapsed", 0.6, 0.5, False)]) or (0, 0)
    assert low < 0.958 and low > 0.6 and high > 0.966
    assert dice_window([FrontierPoint("MS-NAS", 0.9, 1.0, False)]) is None  # no U-Net: default
    nan = FrontierPoint("U-Net(4, 4)", float("nan"), 1.0, True)
    assert dice_window([nan, *refs]) == dice_window(refs)  # a missing figure is skipped

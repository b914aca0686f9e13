"""How deep a decoded network goes, against the Dice it trains to: the frontier's networks.

``frontier.py`` keeps every architecture it trained (``arch_*.json``) and every training run
(``train_<model>_s<seed>_<steps>/eval_test/summary.json``) in its ``--out`` folder. This script
reads them back, without training anything, and sets each network's deepest scale (the
coarsest resolution any of its paths reaches: 0 = it never leaves full resolution) beside its
test Dice (mean +- std over its training seeds, at the main width and step budget), then
groups the networks by that depth. It is the evidence behind the warning ``decode`` and
``search`` give for a network that never leaves its finest output scale
(:meth:`~msnas_graph.architecture.Architecture.context_warning`).

    python benchmarks/depth_vs_dice.py --runs runs/bench_frontier/hc18 [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from _common import RESULTS_DIR, markdown_table, write_results
from frontier import network_key

from msnas_graph.architecture import Architecture

ROOT = Path(__file__).resolve().parent.parent


def dice_of(runs: Path, tag: str, steps: int) -> list[float]:
    """Test Dice of every training seed of model ``tag`` (main width: no ``_w`` suffix)."""
    pattern = re.compile(rf"train_{re.escape(tag)}_s(\d+)_{steps}")
    found = []
    for run in sorted(runs.iterdir()):
        summary = run / "eval_test" / "summary.json"
        if pattern.fullmatch(run.name) and summary.is_file():
            found.append(float(json.loads(summary.read_text())["mean_dice"]))
    return found


@dataclass(frozen=True)
class Network:
    """A trained architecture: its name, deepest scale (of ``0..coarsest``), cells, Dice."""

    name: str
    deepest: int
    coarsest: int
    cells: int
    dice: list[float]


def networks(runs: Path, steps: int) -> list[Network]:
    """Every architecture in ``runs`` with at least one finished training run (a network two
    files hold, as two search groups may decode it, counted once), and the U-Nets, whose
    ``depth`` levels reach scale ``depth - 1``."""
    found, seen = [], set()
    for path in sorted(runs.glob("arch_*.json")):
        tag = path.stem.removeprefix("arch_")
        arch = Architecture.load(path)
        net = network_key(arch, arch.space.channels)
        if net not in seen and (dice := dice_of(runs, tag, steps)):
            seen.add(net)
            cells = sum(1 for e in arch.edges if e.kind != "skip")
            found.append(Network(tag, arch.deepest_scale, arch.space.scales - 1, cells, dice))
    for width in (8, 12, 16, 24, 32):
        for depth, tag in ((4, f"U-Net{width}"), (5, f"U-Net{width}_d5")):
            if dice := dice_of(runs, tag, steps):
                found.append(Network(f"U-Net({width}, {depth})", depth - 1, depth - 1, 0, dice))
    return found


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} +- {std:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_frontier" / "hc18")
    parser.add_argument("--steps", type=int, default=400, help="the step budget to read")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "depth_vs_dice.md")
    args = parser.parse_args()
    rows = networks(args.runs, args.steps)
    if not rows:
        raise SystemExit(f"no trained architectures in {args.runs}: run benchmarks/frontier.py")
    per_net = [
        {"network": n.name, "deepest scale": f"{n.deepest} of 0..{n.coarsest}",
         "cells": n.cells, "Dice": _spread(n.dice), "seeds": len(n.dice)}
        for n in sorted(rows, key=lambda n: (n.deepest, n.name))
    ]  # fmt: skip
    grouped = []
    for d in sorted({n.deepest for n in rows}):
        means = [statistics.fmean(n.dice) for n in rows if n.deepest == d]
        grouped.append(
            {
                "deepest scale": f"{d} (1/{2**d} of the side)",
                "networks": len(means),
                "lowest Dice": f"{min(means):.4f}",
                "highest Dice": f"{max(means):.4f}",
                "mean Dice": f"{statistics.fmean(means):.4f}",
            }
        )
    table_net = markdown_table(per_net)
    table_depth = markdown_table(grouped)
    print(table_depth)
    setup = (
        f"Read from `{args.runs}` (no training here): every `arch_*.json` that `frontier.py` "
        f"trained at its main width for {args.steps} steps, each network's test Dice the mean "
        "over its training seeds. Deepest scale: the coarsest scale any kept path reaches "
        "(`Architecture.deepest_scale`); cells: kept edges that carry a cell (none counted for the "
        "U-Nets, which reach scale depth - 1)."
    )
    sections = [
        "## Networks grouped by the deepest scale they reach\n\n" + table_depth,
        "## Every network\n\n" + table_net,
    ]
    lines = []
    best_above = None
    for d in sorted({n.deepest for n in rows}):
        means = {n.name: statistics.fmean(n.dice) for n in rows if n.deepest == d}
        low = min(means, key=means.__getitem__)
        line = (
            f"Deepest scale {d}: {len(means)} networks, Dice {means[low]:.4f} ({low}) .. "
            f"{max(means.values()):.4f}"
        )
        if best_above is not None:
            beat = sum(v > best_above for v in means.values())
            line += f"; {beat} of them above the best of scale {d - 1} ({best_above:.4f})"
        lines.append(line + ".")
        best_above = max(means.values())
    reading = (
        " ".join(lines)
        + " A network that never leaves full resolution does not segment: those are the ones "
        "a cost target too tight for the space decodes (identity edges are its only free "
        "choice). The deepest scale is not the only thing that counts (a network may go deep "
        "through cells that decoded to parameter-free operations), but a deeper one is the "
        "better bet."
    )
    write_results("depth_vs_dice", "Deepest scale against Dice", setup, sections, reading,
                  path=args.results)  # fmt: skip
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

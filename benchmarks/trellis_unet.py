"""Can the trellis hold a network the U-Net family does not beat? The U-Net's topology, built
as an MS-NAS architecture, trained with the frontier's recipe beside the U-Nets.

The architecture lives in a 6-layer x 4-scale trellis (what ``--set layers=6 --set scales=4``
searches): one chain of cells down to 1/8 of the input's side and back
(``0-1-2-3-2-1-0``: contracting cells down, expanding cells up), and identity (``skip``) edges
along scales 0, 1 and 2 from the way down to the way up, fused (concat, 1x1) where they meet:
the U-Net's skip connections. Every cell is two 3x3 convolutions, built lean. It is no search
result: it says whether the space can hold a network that sits on or above the U-Net family's
frontier, and so whether the search or the space is what limits the searched ones
(``frontier_128.md``: the ``quick`` space's networks, which reach 1/4 at most, lose 0.009-0.010
Dice to U-Net(16) at 128x128).

It trains into ``--out`` (the folder of a ``frontier.py`` run with the same ``--train-size``,
whose U-Net runs it compares with; finished runs are kept) and times every model with
``msnas-graph compare`` (one thread, interleaved rounds).

    python benchmarks/trellis_unet.py --out runs/bench_frontier/hc18 --train-size 64
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from _common import RESULTS_DIR, markdown_table, write_results
from frontier import HC18, Budget, _batches_per_epoch, _compared, run_train
from search_vs_random import bootstrap_diff

from msnas_graph.architecture import Architecture
from msnas_graph.genotype import BlockInput, CellGenotype
from msnas_graph.graph import Edge
from msnas_graph.spec import SearchSpace

NAME = "trellis U-Net"


def trellis_unet(width: int = 16) -> Architecture:
    """The U-Net's topology in the 6 x 4 trellis (module doc), at base width ``width``.

    >>> arch = trellis_unet()
    >>> arch.deepest_scale, len(arch.fusion_nodes), len(arch.edges)
    (3, 3, 18)
    """
    space = SearchSpace.preset(
        "quick", layers=6, scales=4, channels=width, cell_glue="lean",
        ops=("conv_3x3", "conv_3x3_dil2", "none"),
    )  # fmt: skip
    down = ["L0.s0>L1.s1:contract", "L1.s1>L2.s2:contract", "L2.s2>L3.s3:contract"]
    up = ["L3.s3>L4.s2:expand", "L4.s2>L5.s1:expand", "L5.s1>L6.s0:expand"]
    skips = [f"L{i}.s{s}>L{i + 1}.s{s}:skip" for s in range(3) for i in range(s, 6 - s)]
    two_convs = ((BlockInput(0, "conv_3x3", 1.0),), (BlockInput(1, "conv_3x3", 1.0),))
    cells = {c: CellGenotype(c, two_convs) for c in ("contract", "expand")}
    arch = Architecture(space, [Edge.parse(e) for e in down + up + skips], cells)
    arch.validate()
    return arch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a frontier.py run's folder")
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--train-seeds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    b = Budget(train_size=args.train_size)
    data = {"data": str(HC18), "test_fold": 0, "folds": str(HC18 / "folds.json")}
    data["batches_per_epoch"] = _batches_per_epoch(dict(data), b)
    arch_path = args.out / "arch_trellis_unet.json"
    trellis_unet(b.train_width).save(arch_path)
    seeds = range(args.train_seeds)
    dirs = {NAME: [args.out / f"train_trellis_unet_s{s}_{b.train_steps}" for s in seeds]}
    for w in (8, 12, 16):
        dirs[f"U-Net({w})"] = [args.out / f"train_U-Net{w}_s{s}_{b.train_steps}" for s in seeds]
    tasks = [(m, s) for m in dirs for s in seeds]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(
            run_train, [str(arch_path) if m == NAME else "unet" for m, _ in tasks],
            [b.train_width if m == NAME else int(m[6:-1]) for m, _ in tasks],
            [s for _, s in tasks], [b.train_steps] * len(tasks),
            [dict(data) for _ in tasks], [b] * len(tasks), [str(dirs[m][s]) for m, s in tasks],
        ))  # fmt: skip
    per_case = {
        m: [r["dice"] for (mm, _), r in zip(tasks, done, strict=True) if mm == m] for m in dirs
    }
    means = {m: [statistics.fmean(d) for d in per_case[m]] for m in dirs}
    comparison = _compared(dirs, args)
    rows = {r.model: r for r in comparison.runs}
    u16 = rows["U-Net(16)"]
    spread = {
        m: f"{statistics.fmean(v):.4f} +- {statistics.stdev(v):.4f}" for m, v in means.items()
    }
    table = [
        {"model": m, "Dice": spread[m], "MACs": f"{rows[m].macs / 1e6:.1f} M",
         "ms/image b1": f"{rows[m].cost('latency'):.3f}",
         "latency vs U-Net(16)": f"{rows[m].cost('latency') / u16.cost('latency'):.2f}x"}
        for m in dirs
    ]  # fmt: skip
    d = bootstrap_diff(per_case[NAME], per_case["U-Net(16)"])
    line = (
        f"{NAME} minus U-Net(16), Dice: {d[0]:+.4f} (95 % bootstrap {d[1]:+.4f} .. {d[2]:+.4f}; "
        "test cases and training seeds resampled)"
    )
    print(markdown_table(table), "\n" + line)
    setup = (
        f"HC18, test fold 0; every model trained as `frontier.py` trains it: {b.train_steps} "
        f"steps, batch {b.batch_size}, {b.train_size}x{b.train_size}, {args.train_seeds} "
        f"training seeds; the trellis U-Net at base width {b.train_width}, the U-Nets at depth "
        f"4. Latency: `msnas-graph compare`, one thread, median of {args.rounds} interleaved "
        "rounds, the runtime `predict --runtime auto` resolves."
    )
    results = args.results or RESULTS_DIR / f"trellis_unet_{b.train_size}.md"
    write_results(
        results.stem, "The U-Net's topology in the MS-NAS trellis", setup,
        ["## Models (mean +- std over training seeds)\n\n" + markdown_table(table)
         + f"\n\n{comparison.note()}\n\n- {line}"],
        "See the tables.", path=results,
    )  # fmt: skip
    print(f"wrote {results}")


if __name__ == "__main__":
    main()

"""Cells searched on the network that will be trained, against cells searched over the trellis.

The README's recipe searches cells and network edges together over the whole trellis; the cells
it decodes are the ones that served the average of all its paths. This benchmark keeps the
network fixed (a decoded architecture's edges, :meth:`Supernet.fix_topology`), searches only the
cells on it (warm-up, then the cell phase; the network phase has nothing left to decide), and
trains the result beside the trellis-searched cells and MACs-matched random cell sets on the same
edges, with one recipe and several training seeds.

    python benchmarks/cells_on_topology.py --arch runs/gumbel64_b09.json \
        --like runs/gumbel64/seed_0 --seeds 4 --jobs 2 --out runs/topo64 --width 8 \
        --randoms 4 --train-seeds 3 --results benchmarks/results/cells_on_topology.md

``--like`` names a search run whose configuration (space, data, folds, search size, learning
rates) the cell searches copy; ``--warmup-steps`` and ``--cell-steps`` replace its schedule, and
``--set FIELD=VALUE`` its space's fields (e.g. ``--set ops=conv_3x3,conv_5x5,none``: the cells
searched over another operation set; the random cell sets are drawn from the same space);
``--target-macs-unet F`` adds the cost term of ``search --target-macs Fx`` to the cell searches.
Finished runs are reused (their ``DONE`` marker). Training: 400 steps (epochs of at most 40),
batch 8, at ``--train-size``, the frontier's recipe; Dice on the test fold.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, write_results
from frontier import Budget, _arch_macs, _batches_per_epoch, _one_thread, run_train
from search_vs_random import _ms, bootstrap_diff

from msnas_graph.architecture import Architecture
from msnas_graph.consensus import consensus
from msnas_graph.decode import decode_cells
from msnas_graph.spec import load_space, parse_overrides
from msnas_graph.state import SearchState
from msnas_graph.topology import on_topology


def cell_search(
    like: str,
    arch_path: str,
    seed: int,
    warmup: int,
    cells: int,
    out: str,
    sets: list[str],
    target_unet: float | None = None,
) -> str:
    """One ``search --topology`` of ``arch_path``'s cells (in a worker process); its folder."""
    _one_thread()
    from msnas_graph.backends.torch.training import SearchConfig, search

    run = Path(out)
    if (run / "DONE").is_file():
        return out
    base = SearchConfig.load(Path(like) / "config.json")
    space = load_space(base.space, parse_overrides(sets))
    config = dataclasses.replace(
        base, seed=seed, arch_steps=(cells, 0), warmup_steps=warmup, path_sampling="softmax",
        topology=Architecture.load(arch_path), space=space,
    )  # fmt: skip
    if target_unet is not None:  # search --target-macs Fx
        config = dataclasses.replace(config, cost="macs", cost_target_unet=target_unet)
    search(config, run, overwrite=True, progress=False)
    return out


def _arch_macs_at(arch: Architecture, width: int, size: int) -> int:
    return _arch_macs(arch, Budget(train_width=width, train_size=size))


def _search_seconds(run: Path) -> float:
    """The wall time a search run's epochs took (``metrics.csv``)."""
    with open(run / "metrics.csv", encoding="utf-8") as fh:
        return sum(float(r["time_s"]) for r in csv.DictReader(fh))


def _cell_agreement(states: list[SearchState], used: set[str]) -> float:
    """Mean agreement of the seeds on the blocks of the cell types the network uses."""
    res = consensus(states, paths=1)
    xs = [d.agreement for d in res.decisions if d.group == "cell" and d.where.split(".")[0] in used]
    return statistics.mean(xs)


def _cells_text(arch: Architecture, used: set[str]) -> str:
    return "; ".join(
        f"{c}: " + " -> ".join(f"{i.op}({i.source})" for b in g.blocks for i in b)
        for c, g in arch.cells.items()
        if c in used
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, help="the decoded network whose edges are kept")
    ap.add_argument("--like", required=True, help="a search run whose config the searches copy")
    ap.add_argument("--trellis", help="trellis search seeds (a --seeds run) for their agreement")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--warmup-steps", type=int, default=60)
    ap.add_argument("--cell-steps", type=int, default=300)
    ap.add_argument("--width", type=int, default=8, help="training width")
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--train-seeds", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--randoms", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a field of the copied search space (repeatable)")  # fmt: skip
    ap.add_argument("--target-macs-unet", type=float, metavar="F",
                    help="a MACs target: F x U-Net(search width)'s")  # fmt: skip
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", default="benchmarks/results/cells_on_topology.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arch = Architecture.load(args.arch)
    used = {e.kind for e in arch.edges if e.kind != "skip"}
    ctx = get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        runs = list(pool.map(
            cell_search, *zip(*[(args.like, args.arch, s, args.warmup_steps, args.cell_steps,
                                 str(out / f"seed_{s}"), args.set, args.target_macs_unet)
                                for s in range(args.first_seed, args.first_seed + args.seeds)],
                              strict=True),
        ))  # fmt: skip
    search_s = sum(_search_seconds(Path(r)) for r in runs)  # a reused run's own time too
    states = [SearchState.load(Path(r) / "state.json") for r in runs]
    models = {"trellis cells (the recipe)": arch, "topology cells": consensus(states).architecture}
    target = _arch_macs_at(models["topology cells"], args.width, args.train_size)
    space = states[0].space
    for seed in range(1000, 1000 + 50 * args.randoms):
        if sum(m.startswith("random") for m in models) == args.randoms:
            break
        rand = on_topology(arch, decode_cells(SearchState.random(space, seed=seed)), space)
        if any(rand.content_hash == m.content_hash for m in models.values()):
            continue  # a cell set already drawn (or searched) counts once
        if abs(_arch_macs_at(rand, args.width, args.train_size) / target - 1) <= 0.15:
            models[f"random r{seed}"] = rand
    paths = {}  # named by content: a finished training is reused only for the same network
    for name, a in models.items():
        paths[name] = out / f"arch_{a.content_hash[:16]}.json"
        a.save(paths[name])
    cfg = json.loads((Path(args.like) / "config.json").read_text())
    data = {"data": cfg["data"], "folds": cfg["folds"], "test_fold": cfg.get("test_fold", 0)}
    b = Budget(train_size=args.train_size)  # the frontier's recipe: epochs of at most 40 steps
    data["batches_per_epoch"] = _batches_per_epoch(data, b)
    jobs = [(name, s) for name in models for s in range(args.train_seeds)]
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        done = list(pool.map(run_train, *zip(*[
            (str(paths[n]), args.width, s, args.train_steps, dict(data), b,
             str(out / "train" / f"{paths[n].stem}_w{args.width}_s{s}")) for n, s in jobs
        ], strict=True)))  # fmt: skip
    per: dict[str, list[list[float]]] = {}
    for (name, _), d in zip(jobs, done, strict=True):
        per.setdefault(name, []).append(d["dice"])
    means = {n: [statistics.mean(d) for d in v] for n, v in per.items()}
    rows = [
        {"model": n, "Dice": _ms(means[n]),
         "MACs": f"{_arch_macs_at(models[n], args.width, args.train_size) / 1e6:.1f} M",
         "cells": _cells_text(models[n], used)}
        for n in models
    ]  # fmt: skip
    randoms = [n for n in models if n.startswith("random")]
    random_means = [statistics.mean(means[n]) for n in randoms]
    setup = (
        f"Topology: `{args.arch}` ({len(arch.edges)} edges). Cell searches: `{args.like}`'s "
        f"configuration, {args.warmup_steps} warm-up + {args.cell_steps} cell steps on the "
        f"topology (`search --topology`{''.join(f' --set {x}' for x in args.set)}"
        f"{'' if args.target_macs_unet is None else f' --target-macs {args.target_macs_unet}x'}"
        f"), seeds "
        f"{args.first_seed}-"
        f"{args.first_seed + args.seeds - 1}, {search_s:.0f} s of search (one thread each). "
        f"Training: {args.train_steps} steps (epochs of at most 40), batch 8, "
        f"{args.train_size}x{args.train_size}, "
        f"width {args.width}, {args.train_seeds} seeds; Dice on the test fold. Random cell sets: "
        f"random states' cells on the same edges, MACs within 15 % of the topology cells'."
    )
    agreement = f"topology searches {_cell_agreement(states, used):.0%}"
    if args.trellis:
        trellis = sorted(Path(args.trellis).glob("seed_*/state.json"))
        agree = _cell_agreement([SearchState.load(p) for p in trellis], used)
        agreement += f", trellis searches (`{args.trellis}`) {agree:.0%}"
    table = markdown_table(rows) + (
        f"\n\nSeeds' agreement on the blocks of the cells the network uses "
        f"({', '.join(sorted(used))}): {agreement}."
    )
    reading = []
    sd = statistics.stdev(random_means) if len(random_means) > 1 else math.nan
    for ref in ("topology cells", "trellis cells (the recipe)"):
        d, lo, hi = bootstrap_diff(per[ref], [c for n in randoms for c in per[n]])
        reading.append(
            f"- {ref} minus the random cell sets: {d:+.4f} (95 % bootstrap {lo:+.4f} .. "
            f"{hi:+.4f}); the random sets' Dice {statistics.mean(random_means):.4f} +- {sd:.4f} "
            f"(std over sets): {'more' if d > sd else 'less'} than one random std above"
        )
    d, lo, hi = bootstrap_diff(per["topology cells"], per["trellis cells (the recipe)"])
    reading.append(
        f"- topology cells minus trellis cells: {d:+.4f} (95 % bootstrap {lo:+.4f} .. {hi:+.4f})"
        f"\n\nWhole run {time.perf_counter() - t0:.0f} s."
    )
    path = write_results(
        "cells_on_topology", "Cells searched on the trained network's edges", setup, [table],
        "\n".join(reading), path=Path(args.results),
    )  # fmt: skip
    print(path.read_text())


if __name__ == "__main__":
    main()

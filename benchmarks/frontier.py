"""The accuracy-latency frontier: searched MS-NAS networks against the U-Net family.

A user picks a network by accuracy *and* speed, and would otherwise scale a U-Net up or down.
This benchmark trains, with one identical recipe and budget (given in steps, whatever the
dataset's size), over ``--train-seeds`` training seeds each:

* the U-Net family: base widths ``--unet-widths`` (default 8, 12, 16, 24, 32) at depth 4;
* MS-NAS: the mean consensus of ``--search-seeds`` searches per search group, decoded at
  ``N_l = 3`` with the ``relative`` and the ``paper`` path score, trained at ``--train-width``.
  Groups (``--groups``): ``dense`` (the dense operation set, accuracy alone), ``dense-lat@F``
  (the same with ``--cost latency --target-latency`` at ``F`` times U-Net(16)'s measured
  batch-1 latency, default 0.5, the cost measured at the training width), ``dense-w@W``
  (``--cost latency --cost-weight W``), ``convs-macs@F`` (convolutions and ``none`` only, a
  MACs target of ``F`` times U-Net(16)'s), ``paper-ops`` (the paper's operations);
  a network that two groups or scores share is trained and counted once.

Per model: Dice, IoU and HD95 on the test fold (HD95 in the unit the evaluation reports: mm
where the data has a pixel size), params, MACs at the training size, and latency in the
runtime ``predict --runtime auto`` resolves (ONNX Runtime where installed), one thread, batch 1
and 8, the median of interleaved rounds. For each MS-NAS model: "on the frontier" or
"dominated by U-Net(w)" (a U-Net at most as slow and at least as accurate, by the mean over
training seeds). Writes a results file (``--results``) and a picture of Dice against latency
and against MACs (``--plot``).

    python benchmarks/frontier.py --data hc18 --jobs 2            # ~1.5 h on two cores
    python benchmarks/frontier.py --data hc18 --jobs 2 --reuse    # keep finished runs

Runs go to ``--out``; finished searches and trainings are kept with ``--reuse``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HC18 = ROOT.parent / "shared" / "data" / "hc18"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, markdown_table, write_results  # noqa: E402
from search_vs_random import bootstrap_diff  # noqa: E402

from msnas_graph.consensus import consensus  # noqa: E402
from msnas_graph.diagnostics import diagnose  # noqa: E402
from msnas_graph.spec import SearchSpace  # noqa: E402
from msnas_graph.state import SearchState  # noqa: E402

DENSE_OPS = ["conv_3x3", "conv_3x3_dil2", "avg_pool_3x3", "skip_connect", "none"]
CONV_OPS = ["conv_3x3", "conv_3x3_dil2", "none"]  # no free operation for the cost to choose
SCORES = ("relative", "paper")


@dataclass(frozen=True)
class Budget:
    """The CPU budget, in one place so that the results file says what was cut."""

    search_size: int = 64
    warmup_steps: int = 60
    arch_steps: tuple[int, int] = (100, 100)
    search_steps_per_epoch: int = 50
    train_size: int = 64
    train_steps: int = 400
    steps_per_epoch: int = 40
    batch_size: int = 8
    train_width: int = 16
    unet_depth: int = 4


# ------------------------------------------------------------------------------- workers


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def group_cost(group: str, unet16: dict[str, float], width: int) -> dict[str, Any]:
    """The cost settings of a search group: ``dense`` (none), ``dense-lat[@F]`` (a latency
    target of ``F`` times U-Net(16)'s, default 0.5), ``dense-w@W`` (latency by weight ``W``),
    ``convs-macs@F`` (a MACs target of ``F`` times U-Net(16)'s, convolutions only).

    >>> group_cost("dense-lat@0.9", {"ms": 2.0}, 16)["cost_target"], group_cost("dense", {}, 16)
    (1.8, {})
    """
    name, _, value = group.partition("@")
    if name == "dense-lat":
        target = round(float(value or 0.5) * unet16["ms"], 6)
        return {"cost": "latency", "cost_target": target, "cost_channels": width}
    if name == "dense-w":
        return {"cost": "latency", "cost_weight": float(value), "cost_channels": width}
    if name == "convs-macs":
        target = round(float(value) * unet16["macs"])
        return {"cost": "macs", "cost_target": target, "cost_channels": width}
    return {}


def group_ops(group: str) -> dict[str, Any]:
    """The space fields a group changes: the operation set."""
    if group == "paper-ops":
        return {}
    return {"ops": CONV_OPS if group.startswith("convs") else DENSE_OPS}


def run_search(
    group: str, data: dict[str, Any], b: Budget, seed: int, out: str, unet16: dict[str, float]
) -> str:
    """One search (in a worker process); returns its run folder."""
    _one_thread()
    from msnas_graph.backends.torch.training import SearchConfig, search

    run = Path(out)
    if (run / "DONE").is_file():
        return str(run)
    space = SearchSpace.preset("quick", **group_ops(group))
    cost = group_cost(group, unet16, b.train_width)
    cfg = SearchConfig(
        space=space, input_size=b.search_size, epochs=(1, 1), warmup_steps=b.warmup_steps,
        arch_steps=b.arch_steps, max_steps_per_epoch=b.search_steps_per_epoch,
        batch_size=b.batch_size, seed=seed, device="cpu", paths=3, **data, **cost,
    )  # fmt: skip
    search(cfg, run, overwrite=True, progress=False)
    return str(run)


def run_train(
    model: str, width: int, seed: int, steps: int, data: dict[str, Any], b: Budget, out: str
) -> dict[str, Any]:
    """Train ``steps`` steps and evaluate one model (in a worker process)."""
    _one_thread()
    from msnas_graph.backends.torch.inference import evaluate
    from msnas_graph.backends.torch.training import TrainConfig, train

    run = Path(out)
    per_epoch = min(b.steps_per_epoch, data.pop("batches_per_epoch"), steps)
    epochs = math.ceil(steps / per_epoch)
    t0 = time.perf_counter()
    if not (run / "DONE").is_file():
        width_of = {"unet_base_channels": width} if model == "unet" else {"channels": width}
        cfg = TrainConfig(
            model=model, unet_depth=b.unet_depth, **width_of,
            input_size=b.train_size, epochs=epochs, max_steps_per_epoch=per_epoch,
            batch_size=b.batch_size, seed=seed, device="cpu", **data,
        )  # fmt: skip
        train(cfg, run, overwrite=True, progress=False)
    train_s = time.perf_counter() - t0
    summary = evaluate(run, device="cpu", out_dir=run / "eval_test")
    with open(run / "eval_test" / "per_case.csv", encoding="utf-8") as fh:
        dice = [float(r["mean_dice"]) for r in csv.DictReader(fh)]
    return {"summary": summary, "dice": dice, "train_s": train_s, "steps": epochs * per_epoch}


# ------------------------------------------------------------------------ measurements


def _batches_per_epoch(data: dict[str, Any], b: Budget) -> int:
    """Batches in one pass over the training split (what an epoch of training has)."""
    from msnas_graph.backends.torch.data import load_cases, split_cases
    from msnas_graph.backends.torch.training import TrainConfig

    cfg = TrainConfig(model="unet", input_size=b.train_size, batch_size=b.batch_size, **data)
    train_idx, _, _ = split_cases(load_cases(cfg.data, labelled=True), cfg)
    return max(1, math.ceil(len(train_idx) / b.batch_size))


def _unet_macs(width: int, b: Budget, in_ch: int, classes: int) -> int:
    """MACs of a U-Net at the training size (deterministic: a MACs target needs no timing)."""
    from msnas_graph.backends.torch.cost import count_macs_flops
    from msnas_graph.backends.torch.nn.unet import UNet

    net = UNet(in_ch, classes, base_channels=width, depth=b.unet_depth).eval()
    return count_macs_flops(net, (1, in_ch, b.train_size, b.train_size))[0]


def _unet_ms(width: int, b: Budget, in_ch: int, classes: int) -> float:
    """Batch-1 latency of an untrained U-Net in the eager runtime (the fastest of 30 passes):
    the measure the cost-aware search's table uses, for its target."""
    import torch

    from msnas_graph.backends.torch.cost_model import fastest_ns
    from msnas_graph.backends.torch.nn.unet import UNet

    net = UNet(in_ch, classes, base_channels=width, depth=b.unet_depth).eval()
    return fastest_ns(net, (1, in_ch, b.train_size, b.train_size), torch.device("cpu"), 30) / 1e6


def _compared(runs: dict[str, list[Path]], args: Any) -> Any:
    """``msnas-graph compare``'s measurement of every model (its first training seed: latency
    does not depend on the seed), then each model's figures replaced by the mean over its
    training seeds: a :class:`~msnas_graph.compare.Comparison` of models."""
    from dataclasses import replace

    from msnas_graph.backends.torch.compare import compare_runs
    from msnas_graph.compare import Comparison

    names = list(runs)
    measured = compare_runs([runs[n][0] for n in names], rounds=args.rounds, threads=1)
    rows = []
    for name, row in zip(names, measured.runs, strict=True):
        summaries = [json.loads((r / "eval_test" / "summary.json").read_text()) for r in runs[name]]
        means = {}
        for k in ("dice", "iou", "hd95"):  # HD95 is None where a model found nothing
            values = [float(s[f"mean_{k}"]) for s in summaries if s.get(f"mean_{k}") is not None]
            means[k] = statistics.mean(values) if values else None
        rows.append(replace(row, model=name, **means))
    return Comparison(rows, measured.settings, measured.frontier_batch)


# ------------------------------------------------------------------------- the benchmark


def bench(
    name: str, data: dict[str, Any], in_ch: int, classes: int, b: Budget, args: Any
) -> dict[str, Any]:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    ctx = get_context("spawn")
    t_start = time.perf_counter()
    kept = out / "unet16_ms.json"  # measured once: reused searches keep their targets
    if not kept.is_file():
        kept.write_text(json.dumps(_unet_ms(16, b, in_ch, classes)))
    unet16 = {"ms": float(json.loads(kept.read_text())), "macs": _unet_macs(16, b, in_ch, classes)}
    print(f"[{name}] U-Net(16): {unet16} (eager ms at batch 1, MACs)", flush=True)
    groups = [g for g in args.groups.split(",") if g]
    jobs = [(g, s) for g in groups for s in range(args.search_seeds)]
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        runs = list(pool.map(
            run_search, [g for g, _ in jobs], [data] * len(jobs), [b] * len(jobs),
            [s for _, s in jobs], [str(out / f"search_{g}_s{s}") for g, s in jobs],
            [unet16] * len(jobs),
        ))  # fmt: skip
    search_s = time.perf_counter() - t_start
    # --- models: consensus per group and score, counted once
    models: dict[str, tuple[str, int]] = {}  # name -> (model source, width)
    shared: dict[str, str] = {}  # the network (edges and cells, not paths or scores) -> name
    notes: list[str] = []
    decisions: list[dict[str, Any]] = []
    for g in groups:
        states = [
            SearchState.load(Path(r) / "state.json")
            for (gg, _), r in zip(jobs, runs, strict=True)
            if gg == g
        ]
        for s, st in enumerate(states):
            decisions.append({"search": f"{g} s{s}", "decisions": diagnose(st, paths=3).summary()})
        for score in SCORES:
            agree = consensus(states, paths=3, method="mean", score=score)
            arch = agree.architecture
            key = f"{g} {score}"
            net = json.dumps(
                [sorted(e.key for e in arch.edges), {c: str(g) for c, g in arch.cells.items()}]
            )
            if net in shared:
                notes.append(f"{key} decodes the same network as {shared[net]}")
                continue
            shared[net] = key
            path = out / f"arch_{g}_{score}.json"
            arch.save(path)
            models[key] = (str(path), b.train_width)
            if score == "relative":
                notes.append(f"{g}: {agree.summary()}")
    for w in args.unet_widths:
        models[f"U-Net({w})"] = ("unet", w)
    # --- training
    data_t = {**data, "batches_per_epoch": _batches_per_epoch(data, b)}
    tasks = [(m, s, b.train_steps) for m in models for s in range(args.train_seeds)]
    if args.long:
        tasks += [(m, 0, 4 * b.train_steps) for m in args.long.split(",") if m in models]
    print(f"[{name}] training {len(tasks)} runs ...", flush=True)

    def run_dir(m: str, s: int, steps: int) -> str:
        tag = m.replace(" ", "_").replace("(", "").replace(")", "")
        return str(out / f"train_{tag}_s{s}_{steps}")

    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        results = list(pool.map(
            run_train, [models[m][0] for m, _, _ in tasks], [models[m][1] for m, _, _ in tasks],
            [s for _, s, _ in tasks], [st for _, _, st in tasks], [dict(data_t) for _ in tasks],
            [b] * len(tasks), [run_dir(*t) for t in tasks],
        ))  # fmt: skip
    by_task = dict(zip(tasks, results, strict=True))
    comparison = _compared(
        {
            m: [Path(run_dir(m, sd, b.train_steps)) for sd in range(args.train_seeds)]
            for m in models
        },
        args,
    )
    per_case = {
        m: [by_task[(m, sd, b.train_steps)]["dice"] for sd in range(args.train_seeds)]
        for m in models
    }
    spread = {
        m: statistics.stdev(float(by_task[(m, sd, b.train_steps)]["summary"]["mean_dice"]) for sd in range(args.train_seeds))  # noqa: E501
        if args.train_seeds > 1 else 0.0
        for m in models
    }  # fmt: skip

    def dice_of(m: str, sd: int, st: int) -> str:
        return f"{float(by_task[(m, sd, st)]['summary']['mean_dice']):.4f}"

    long_rows = [
        {"model": m, "steps": st, "Dice": dice_of(m, sd, st),
         "Dice at the base budget (seed 0)": dice_of(m, 0, b.train_steps)}
        for (m, sd, st) in tasks
        if st != b.train_steps
    ]  # fmt: skip
    steps = {m: by_task[(m, 0, b.train_steps)]["steps"] for m in models}
    return {
        "name": name, "comparison": comparison, "per_case": per_case, "spread": spread,
        "steps": steps, "notes": notes, "decisions": decisions, "unet16": unet16,
        "groups": groups, "search_s": search_s, "long": long_rows,
        "total_s": time.perf_counter() - t_start,
    }  # fmt: skip


def _sections(res: dict[str, Any], plot: Path | None) -> list[str]:
    comparison = res["comparison"]
    runs = list(comparison.runs)
    table = []
    for row, run in zip(comparison.rows(), runs, strict=True):
        row = {k: v for k, v in row.items() if k != "run"}
        table.append({**row, "Dice": f"{run.dice:.4f} +- {res['spread'][run.model]:.4f}",
                      "steps": res["steps"][run.model]})  # fmt: skip
    by_name = {r.model: r for r in runs}
    u16 = by_name.get("U-Net(16)")
    lines = []
    for r in runs:
        if r.is_reference or u16 is None:
            continue
        d = bootstrap_diff(res["per_case"][r.model], res["per_case"]["U-Net(16)"])
        lat = r.cost("latency") / u16.cost("latency")
        lines.append(
            f"- {r.model} minus U-Net(16), Dice: {d[0]:+.4f} (95 % bootstrap {d[1]:+.4f} .. "
            f"{d[2]:+.4f}; test cases and training seeds resampled) at {lat:.2f}x its batch-1 "
            f"latency and {r.macs / u16.macs:.2f}x its MACs"
        )
    text = [
        f"## {res['name']}: models (mean over training seeds)\n\n" + markdown_table(table)
        + f"\n\n{comparison.note()}",
        f"## {res['name']}: against U-Net(16)\n\n" + "\n".join(lines)
        + f"\n\nU-Net(16)'s batch-1 latency in the eager runtime (the measure of the search's "
        f"cost table): {res['unet16']['ms']:.3f} ms; its MACs {res['unet16']['macs']:.4g}. "
        "Cost settings per search group: "
        + "; ".join(f"`{g}` {group_cost(g, res['unet16'], 16) or 'none'}" for g in res["groups"])
        + ".",
        f"## {res['name']}: searches\n\n" + markdown_table(res["decisions"]) + "\n\n"
        + "\n".join(f"- {n}" for n in res["notes"])
        + f"\n\nSearch wall time {res['search_s']:.0f} s; whole dataset {res['total_s']:.0f} s.",
    ]  # fmt: skip
    if res["long"]:
        text.append(f"## {res['name']}: 4x the training steps\n\n" + markdown_table(res["long"]))
    if plot is not None:
        text.append(f"Picture: `{plot.name}`.")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="hc18", help="hc18, phantom, or a dataset folder")
    parser.add_argument("--folds", type=Path, help="folds JSON (default: the folder's folds.json)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_frontier")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "frontier.md")
    parser.add_argument("--plot", type=Path, help="picture (default: next to --results)")
    parser.add_argument("--groups", default="dense,dense-lat")
    parser.add_argument("--search-seeds", type=int, default=2)
    parser.add_argument("--train-seeds", type=int, default=2)
    parser.add_argument("--unet-widths", default="8,12,16,24,32")
    parser.add_argument("--reading", type=Path, help="a file with the reading of the figures")
    parser.add_argument("--search-size", type=int, default=Budget.search_size)
    parser.add_argument("--train-size", type=int, default=Budget.train_size)
    parser.add_argument("--train-steps", type=int, default=Budget.train_steps)
    parser.add_argument("--train-width", type=int, default=Budget.train_width)
    parser.add_argument("--warmup-steps", type=int, default=Budget.warmup_steps)
    parser.add_argument("--arch-steps", default="100,100")
    parser.add_argument("--long", default="", help="models trained again for 4x the steps")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out")
    args = parser.parse_args()
    args.unet_widths = [int(w) for w in args.unet_widths.split(",")]
    cell, net = (int(x) for x in args.arch_steps.split(","))
    b = Budget(
        search_size=args.search_size, warmup_steps=args.warmup_steps, arch_steps=(cell, net),
        train_size=args.train_size, train_steps=args.train_steps, train_width=args.train_width,
    )  # fmt: skip
    if not args.reuse and args.out.exists():
        import shutil

        shutil.rmtree(args.out)
    from msnas_graph.data import load_dataset

    folder = HC18 if args.data == "hc18" else Path(args.data)
    if args.data == "phantom":
        data: dict[str, Any] = {"data": "phantom", "test_fold": 0}
        name = "phantom"
    else:
        folds = args.folds or folder / "folds.json"
        data = {
            "data": str(folder),
            "test_fold": 0,
            **({"folds": str(folds)} if folds.is_file() else {}),
        }
        name = folder.name
    ds = load_dataset(data["data"])
    res = bench(name, data, ds.in_channels, ds.num_classes, b, args)
    plot = args.plot or args.results.with_suffix(".png")
    from msnas_graph.backends.torch.plots import plot_frontier

    plot_frontier(plot, res["comparison"])
    setup = (
        f"Budget (CPU): every model trained {b.train_steps} steps (whatever the dataset's size: "
        f"epochs of at most {b.steps_per_epoch} steps), batch {b.batch_size}, "
        f"{b.train_size}x{b.train_size}, SGD, augmentation on, {args.train_seeds} training "
        f"seeds; MS-NAS at base width {b.train_width}, U-Net depth {b.unet_depth}. Searches: "
        f"space `quick` (4 layers x 3 scales, width 8, 2 blocks) at {b.search_size}x"
        f"{b.search_size}, {b.warmup_steps} warm-up + {b.arch_steps[0]} + {b.arch_steps[1]} "
        f"architecture steps, batch {b.batch_size}, {args.search_seeds} seeds per group "
        f"({args.groups}); consensus (mean) decoded at N_l = 3. Latency: one thread, the "
        f"runtime `predict --runtime auto` resolves, median of {args.rounds} interleaved rounds "
        f"on a shared 2-core machine. {args.jobs} runs in parallel, one thread each."
    )
    path = write_results(
        "frontier", "The accuracy-latency frontier: MS-NAS against the U-Net family", setup,
        _sections(res, plot), args.reading.read_text() if args.reading else "See the tables.",
        path=args.results,
    )  # fmt: skip
    (Path(args.out) / name / "results.json").write_text(
        json.dumps(
            {**res, "comparison": res["comparison"].to_dict(), "budget": asdict(b)},
            indent=1,
            default=str,
        )
    )
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()

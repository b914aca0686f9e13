"""Does the search beat random? Searched MS-NAS against random architectures and the U-Net.

One identical training budget for every model, on the shared HC18 data (test = fold 0 of its
``folds.json``) and on the built-in phantom:

* ``--seeds`` searches (default 3), each decoded at N_l = 1, 3 and 5 (``MS-NAS(N)``), plus the
  mean-weight consensus of the seeds decoded at N_l = 3 (``consensus(3)``);
* ``--randoms`` random architectures (default 5): random search states decoded at N_l = 3
  (what ``msnas-graph sample`` + ``decode`` gives), kept only if their MACs lie within 15 % of
  the searched MS-NAS(3) mean;
* the U-Net baseline.

Every architecture is trained at the same base width (``--train-width``, DARTS-style: search
narrow, train wide), for the same steps, batch, optimizer, augmentation and seed, then
evaluated on the test fold at the cases' original resolution. Reported per model: params, MACs,
Dice, IoU, HD95, CPU images/s (one thread, batch 8, measured side by side in interleaved
rounds); per group mean +- std; the searched-minus-random Dice difference of MS-NAS(3) with a
bootstrap 95 % interval (resampling test cases and models); the decision diagnostics at the end
of each search; the agreement of the seeds. Prints the tables and writes
``benchmarks/results/search_vs_random.md``.

    python benchmarks/search_vs_random.py              # CPU budget, both datasets (~1 h, 2 cores)
    python benchmarks/search_vs_random.py --data hc18 --jobs 2
    python benchmarks/search_vs_random.py --reuse      # keep finished runs in --out

Runs go to ``--out`` (default ``runs/bench_search_vs_random``); finished searches and trainings
are reused with ``--reuse``, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HC18 = ROOT.parent / "shared" / "data" / "hc18"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, write_results  # noqa: E402

from msnas_graph.architecture import Architecture  # noqa: E402
from msnas_graph.consensus import consensus  # noqa: E402
from msnas_graph.decode import decode  # noqa: E402
from msnas_graph.diagnostics import diagnose  # noqa: E402
from msnas_graph.spec import SearchSpace  # noqa: E402
from msnas_graph.state import SearchState  # noqa: E402

PATHS = (1, 3, 5)
MACS_TOLERANCE = 0.15


@dataclass(frozen=True)
class Budget:
    """The CPU budget (one place, so the results file can say what was cut)."""

    search_size: int = 64
    train_size: int = 64
    warmup_steps: int = 100
    arch_steps: tuple[int, int] = (150, 150)
    search_steps_per_epoch: int = 50
    train_epochs: int = 10
    train_steps_per_epoch: int = 40
    batch_size: int = 8
    train_width: int = 16
    unet_base: int = 16
    unet_depth: int = 4


# ------------------------------------------------------------------------------- workers


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def run_search(space: dict[str, Any], data: dict[str, Any], b: Budget, seed: int, out: str) -> str:
    """One search (in a worker process); returns its run folder."""
    _threads()
    from msnas_graph.backends.torch.training import SearchConfig, search

    run = Path(out)
    if (run / "DONE").is_file():
        return str(run)
    cfg = SearchConfig(
        space=SearchSpace.from_dict(space, "space"),
        input_size=b.search_size,
        epochs=(1, 1),
        warmup_steps=b.warmup_steps,
        arch_steps=b.arch_steps,
        max_steps_per_epoch=b.search_steps_per_epoch,
        batch_size=b.batch_size,
        seed=seed,
        device="cpu",
        paths=3,
        **data,
    )
    search(cfg, run, overwrite=True, progress=False)
    return str(run)


def run_train(model: str, data: dict[str, Any], b: Budget, out: str) -> dict[str, Any]:
    """Train and evaluate one model (in a worker process): summary and per-case Dice."""
    _threads()
    from msnas_graph.backends.torch.inference import evaluate
    from msnas_graph.backends.torch.training import TrainConfig, train

    run = Path(out)
    t0 = time.perf_counter()
    if not (run / "DONE").is_file():
        cfg = TrainConfig(
            model=model,
            unet_base_channels=b.unet_base,
            unet_depth=b.unet_depth,
            input_size=b.train_size,
            epochs=b.train_epochs,
            max_steps_per_epoch=b.train_steps_per_epoch,
            batch_size=b.batch_size,
            seed=0,
            device="cpu",
            **data,
        )
        train(cfg, run, overwrite=True, progress=False)
    train_s = time.perf_counter() - t0
    summary = evaluate(run, device="cpu", out_dir=run / "eval_test")
    with open(run / "eval_test" / "per_case.csv", encoding="utf-8") as fh:
        dice = [float(r["mean_dice"]) for r in csv.DictReader(fh)]
    return {"summary": summary, "dice": dice, "train_s": train_s}


# ------------------------------------------------------------------------------ helpers


def _mean(summary: dict[str, Any], key: str) -> float:
    val = summary.get(key)
    if isinstance(val, dict):
        val = val.get("mean")
    return float(val) if isinstance(val, int | float) else float("nan")


def _cost(arch_path: str | None, b: Budget, in_channels: int, classes: int) -> tuple[int, int]:
    """(params, MACs) of a model at the training input size."""
    from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
    from msnas_graph.backends.torch.nn.network import build_network
    from msnas_graph.backends.torch.nn.unet import UNet

    if arch_path is None:
        net: Any = UNet(in_channels, classes, base_channels=b.unet_base, depth=b.unet_depth)
    else:
        net = build_network(Architecture.load(arch_path))
    net.eval()
    macs, _ = count_macs_flops(net, (1, in_channels, b.train_size, b.train_size))
    return count_parameters(net), macs


def _images_per_s(
    models: dict[str, Path], b: Budget, in_ch: int, rounds: int = 3
) -> dict[str, float]:
    """Images/s of each trained model, one thread, batch 8, interleaved rounds (median)."""
    import torch

    from msnas_graph.backends.torch.inference import load_model

    torch.set_num_threads(1)
    nets = {name: load_model(run, "cpu")[0] for name, run in models.items()}
    x = torch.randn(b.batch_size, in_ch, b.train_size, b.train_size)
    times: dict[str, list[float]] = {n: [] for n in nets}
    with torch.inference_mode():
        for r in range(rounds + 1):
            names = list(nets)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                net = nets[name]
                t0 = time.perf_counter()
                for _ in range(3):
                    net(x)
                dt = (time.perf_counter() - t0) / 3
                if r > 0:
                    times[name].append(b.batch_size / dt)
    return {n: statistics.median(v) for n, v in times.items()}


def bootstrap_diff(
    searched: list[list[float]], random: list[list[float]], n: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean Dice of the searched models minus that of the random ones, with a 95 % bootstrap
    interval resampling test cases and, independently, models of each group."""
    rng = np.random.default_rng(seed)
    s, r = np.asarray(searched), np.asarray(random)  # (models, cases)
    point = float(s.mean() - r.mean())
    cases = s.shape[1]
    diffs = np.empty(n)
    for i in range(n):
        c = rng.integers(0, cases, cases)
        sm = rng.integers(0, len(s), len(s))
        rm = rng.integers(0, len(r), len(r))
        diffs[i] = s[np.ix_(sm, c)].mean() - r[np.ix_(rm, c)].mean()
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return point, float(lo), float(hi)


def _ms(values: list[float], digits: int = 4) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} +- {statistics.stdev(vals):.{digits}f}"


# ------------------------------------------------------------------------ one dataset


def bench_dataset(
    name: str, data: dict[str, Any], space: SearchSpace, b: Budget, args: Any
) -> dict[str, Any]:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    ctx = get_context("spawn")
    t_start = time.perf_counter()
    seeds = list(range(args.seeds))
    print(f"[{name}] {len(seeds)} searches ...", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        runs = list(
            pool.map(
                run_search,
                [space.to_dict()] * len(seeds),
                [data] * len(seeds),
                [b] * len(seeds),
                seeds,
                [str(out / f"search_s{s}") for s in seeds],
            )
        )
    search_s = time.perf_counter() - t0
    states = [SearchState.load(Path(r) / "state.json") for r in runs]
    diags = [diagnose(st, paths=3) for st in states]
    agree = consensus(states, paths=3, method="mean")

    # --- the models
    models: dict[str, str] = {}
    groups: dict[str, list[str]] = {f"MS-NAS({n})": [] for n in PATHS}
    for seed, st in zip(seeds, states, strict=True):
        for n in PATHS:
            key = f"MS-NAS({n}) s{seed}"
            path = out / f"arch_msnas{n}_s{seed}.json"
            decode(st, paths=n).widen(b.train_width).save(path)
            models[key] = str(path)
            groups[f"MS-NAS({n})"].append(key)
    cpath = out / "arch_consensus3.json"
    agree.architecture.widen(b.train_width).save(cpath)
    models["consensus(3)"] = str(cpath)
    groups["consensus(3)"] = ["consensus(3)"]

    in_ch, classes = space.in_channels, space.num_classes
    costs = {k: _cost(v, b, in_ch, classes) for k, v in models.items()}
    target = statistics.mean(costs[k][1] for k in groups["MS-NAS(3)"])
    groups["random(3)"] = []
    tried = 0
    for rseed in range(1000, 1000 + args.max_random_tries):
        if len(groups["random(3)"]) >= args.randoms:
            break
        tried += 1
        arch = decode(SearchState.random(space, seed=rseed), paths=3).widen(b.train_width)
        path = out / f"arch_random_r{rseed}.json"
        arch.save(path)
        cost = _cost(str(path), b, in_ch, classes)
        if abs(cost[1] / target - 1) <= MACS_TOLERANCE:
            key = f"random r{rseed}"
            models[key], costs[key] = str(path), cost
            groups["random(3)"].append(key)
        else:
            path.unlink()
    models["U-Net"] = "unet"
    costs["U-Net"] = _cost(None, b, in_ch, classes)
    groups["U-Net"] = ["U-Net"]

    print(f"[{name}] training {len(models)} models ...", flush=True)
    keys = list(models)
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        results = dict(
            zip(
                keys,
                pool.map(
                    run_train,
                    [models[k] for k in keys],
                    [data] * len(keys),
                    [b] * len(keys),
                    [str(out / ("train_" + k.replace(" ", "_").replace("(", "").replace(")", "")))
                     for k in keys],
                ),
                strict=True,
            )
        )  # fmt: skip
    speed = _images_per_s(
        {k: out / ("train_" + k.replace(" ", "_").replace("(", "").replace(")", "")) for k in keys},
        b,
        in_ch,
    )
    unet_macs = costs["U-Net"][1]
    rows = []
    for k in keys:
        s = results[k]["summary"]
        rows.append(
            {
                "model": k,
                "params (M)": f"{costs[k][0] / 1e6:.3f}",
                "MACs (G)": f"{costs[k][1] / 1e9:.3f}",
                "MACs / U-Net": f"{costs[k][1] / unet_macs:.2f}x",
                "Dice": f"{_mean(s, 'mean_dice'):.4f}",
                "IoU": f"{_mean(s, 'mean_iou'):.4f}",
                "HD95 (mm)": f"{_mean(s, 'mean_hd95'):.2f}",
                "images/s": f"{speed[k]:.0f}",
                "train s": f"{results[k]['train_s']:.0f}",
            }
        )
    group_rows = []
    for g, members in groups.items():
        group_rows.append(
            {
                "group": g,
                "n": len(members),
                "Dice": _ms([_mean(results[k]["summary"], "mean_dice") for k in members]),
                "IoU": _ms([_mean(results[k]["summary"], "mean_iou") for k in members]),
                "HD95 (mm)": _ms([_mean(results[k]["summary"], "mean_hd95") for k in members], 2),
                "MACs (G)": _ms([costs[k][1] / 1e9 for k in members], 3),
                "MACs / U-Net": _ms([costs[k][1] / unet_macs for k in members], 2),
            }
        )
    searched = [results[k]["dice"] for k in groups["MS-NAS(3)"]]
    rand = [results[k]["dice"] for k in groups["random(3)"]]
    diff = bootstrap_diff(searched, rand) if rand else (float("nan"),) * 3
    diag_rows = [
        {"search": f"seed {s}", "decisions": d.summary(), "undecided warning": bool(d.warning())}
        for s, d in zip(seeds, diags, strict=True)
    ]
    return {
        "name": name,
        "rows": rows,
        "groups": group_rows,
        "diff": diff,
        "diags": diag_rows,
        "agreement": agree.agreement,
        "agreement_text": agree.summary(),
        "random_tried": tried,
        "search_s": search_s,
        "total_s": time.perf_counter() - t_start,
        "group_dice": {
            g: [_mean(results[k]["summary"], "mean_dice") for k in m] for g, m in groups.items()
        },
        "group_macs": {g: [costs[k][1] / unet_macs for k in m] for g, m in groups.items()},
    }


def _targets(res: dict[str, Any]) -> str:
    gd, gm = res["group_dice"], res["group_macs"]
    s3, rnd, unet = gd["MS-NAS(3)"], gd["random(3)"], gd["U-Net"][0]
    lines = []
    if len(rnd) >= 2:
        margin = statistics.mean(s3) - statistics.mean(rnd)
        sd = statistics.stdev(rnd)
        ok = margin > sd
        lines.append(
            f"- searched MS-NAS(3) above random by more than one random std: "
            f"{margin:+.4f} vs std {sd:.4f} -> {'met' if ok else 'missed'}"
        )
    ratio = statistics.mean(gm["MS-NAS(3)"])
    ok = statistics.mean(s3) >= unet and ratio <= 0.7
    lines.append(
        f"- at least the U-Net's Dice at <= 0.7x its MACs: MS-NAS(3) {statistics.mean(s3):.4f} "
        f"at {ratio:.2f}x vs U-Net {unet:.4f} -> {'met' if ok else 'missed'}"
    )
    means = [statistics.mean(gd[f"MS-NAS({n})"]) for n in PATHS]
    mono = all(a <= b + 1e-9 for a, b in itertools.pairwise(means))
    lines.append(
        "- Dice non-decreasing from N_l = 1 to 5: "
        + " -> ".join(f"{m:.4f}" for m in means)
        + f" -> {'met' if mono else 'missed'}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["hc18", "phantom", "both"], default="both")
    parser.add_argument("--hc18", type=Path, default=HC18)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_search_vs_random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--randoms", type=int, default=5)
    parser.add_argument("--max-random-tries", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--train-epochs", type=int, default=Budget.train_epochs)
    parser.add_argument("--train-steps", type=int, default=Budget.train_steps_per_epoch)
    parser.add_argument("--warmup-steps", type=int, default=Budget.warmup_steps)
    parser.add_argument("--arch-steps", default="150,150")
    parser.add_argument("--train-size", type=int, default=Budget.train_size)
    parser.add_argument("--train-width", type=int, default=Budget.train_width)
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out")
    args = parser.parse_args()
    cell, net = (int(x) for x in args.arch_steps.split(","))
    b = Budget(
        train_epochs=args.train_epochs,
        train_steps_per_epoch=args.train_steps,
        warmup_steps=args.warmup_steps,
        arch_steps=(cell, net),
        train_size=args.train_size,
        train_width=args.train_width,
    )
    if not args.reuse and args.out.exists():
        import shutil

        shutil.rmtree(args.out)
    datasets: list[tuple[str, dict[str, Any], SearchSpace]] = []
    if args.data in ("hc18", "both"):
        if not (args.hc18 / "images").is_dir():
            raise SystemExit(f"HC18 not found at {args.hc18}")
        datasets.append(
            (
                "hc18",
                {"data": str(args.hc18), "folds": str(args.hc18 / "folds.json"), "test_fold": 0},
                SearchSpace.preset("quick", num_classes=2, in_channels=1),
            )
        )
    if args.data in ("phantom", "both"):
        from msnas_graph.data import load_dataset

        ph = load_dataset("phantom")
        datasets.append(
            (
                "phantom",
                {"data": "phantom", "test_fold": 0},
                SearchSpace.preset("quick", num_classes=ph.num_classes, in_channels=ph.in_channels),
            )
        )
    results: list[dict[str, Any]] = []
    for n, d, s in datasets:  # results are written after each dataset: a cut run keeps them
        results.append(bench_dataset(n, d, s, b, args))
        print(_sections(results[-1])[-1], flush=True)
        _write(results, b, args, pending=[x[0] for x in datasets[len(results) :]])


def _sections(res: dict[str, Any]) -> list[str]:
    lo_hi = res["diff"]
    return [
        f"## {res['name']}: per model\n\n" + markdown_table(res["rows"]),
        f"## {res['name']}: per group (mean +- std over models)\n\n"
        + markdown_table(res["groups"]),
        f"## {res['name']}: searched minus random, decisions, agreement\n\n"
        f"MS-NAS(3) minus random(3), mean Dice over the test cases: **{lo_hi[0]:+.4f}** "
        f"(95 % bootstrap interval {lo_hi[1]:+.4f} .. {lo_hi[2]:+.4f}; cases and models "
        f"resampled; {res['random_tried']} random states drawn to find the random models "
        f"within {MACS_TOLERANCE:.0%} of the searched MACs).\n\n"
        + markdown_table(res["diags"])
        + f"\n\nAgreement of the seeds (mean-weight consensus at N_l = 3): "
        f"{res['agreement']:.2f}. {res['agreement_text']}\n\n"
        f"Targets:\n{_targets(res)}\n\nSearch wall time {res['search_s']:.0f} s; whole "
        f"dataset {res['total_s']:.0f} s.",
    ]


def _write(results: list[dict[str, Any]], b: Budget, args: Any, pending: list[str]) -> None:
    setup = (
        f"Budget (CPU, cut to fit about an hour on two cores): space `quick` (4 layers x 3 "
        f"scales, base width 8, 2 blocks); search at {b.search_size}x{b.search_size}, "
        f"{b.warmup_steps} weight-only warm-up steps then {b.arch_steps[0]} + "
        f"{b.arch_steps[1]} architecture steps (cell, network; automatic architecture "
        f"learning rate), batch {b.batch_size}, {args.seeds} seeds; every model trained "
        f"{b.train_epochs} epochs x {b.train_steps_per_epoch} steps, batch {b.batch_size}, "
        f"{b.train_size}x{b.train_size}, SGD, augmentation on, training seed 0; MS-NAS and "
        f"random architectures at base width {b.train_width}; U-Net base {b.unet_base}, depth "
        f"{b.unet_depth}. Metrics at the original image size on test fold 0. images/s: one "
        f"thread, batch {b.batch_size}, median of interleaved rounds, measured on a shared "
        f"machine. {args.jobs} runs in parallel, one thread each."
        + (f" Not run (cut for time): {', '.join(pending)}." if pending else "")
    )
    path = write_results(
        "search_vs_random",
        "Search against random architectures and the U-Net (same training budget)",
        setup,
        [s for res in results for s in _sections(res)],
        "See the targets under each dataset; one training seed per architecture, so the spread "
        "within a group mixes architecture and training noise.",
    )
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

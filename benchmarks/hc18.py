"""HC18 benchmark: searched MS-NAS(3) and MS-NAS(5) against the U-Net baseline, same budget.

On the shared HC18 fetal-head ultrasound data (read in place from ``../shared/data/hc18``), with
its examination folds (fold 0 = test): one MS-NAS search on the training folds, the top-3 and
top-5 path architectures decoded from it, and the U-Net baseline, each trained from scratch with
the same epochs, steps, batch size, augmentation and optimizer, then evaluated on the test fold
at the original image resolution (Dice, IoU, HD95 in mm). Parameters and MACs are counted at
1x1xSxS. Prints a table and writes it to ``benchmarks/results/hc18.md``.

    python benchmarks/hc18.py                 # CPU budget (about half an hour on two cores)
    python benchmarks/hc18.py --full          # the paper's widths at 256x256 (for a GPU)

The CPU budget narrows both sides (U-Net base width 16, MS-NAS base width 8) and caps the
steps per epoch: a documented subset of the training data is seen each epoch, identical for
both sides.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from _common import markdown_table

from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
from msnas_graph.backends.torch.inference import evaluate, load_model
from msnas_graph.backends.torch.training import SearchConfig, TrainConfig, search, train
from msnas_graph.decode import decode
from msnas_graph.spec import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
HC18 = ROOT.parent / "shared" / "data" / "hc18"
RESULTS = Path(__file__).parent / "results" / "hc18.md"


def _mean(summary: dict[str, Any], key: str) -> float | None:
    val = summary.get(key)
    if isinstance(val, dict):
        val = val.get("mean")
    return float(val) if isinstance(val, int | float) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HC18)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_hc18")
    parser.add_argument("--full", action="store_true", help="paper widths, 256x256 (GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--search-epochs", default="3,3")
    parser.add_argument("--train-epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="training steps per epoch cap")
    parser.add_argument("--search-steps", type=int, default=12, help="search steps per epoch cap")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--train-channels",
        type=int,
        default=24,
        help="base width the searched architectures are trained at (search width: 8)",
    )
    parser.add_argument(
        "--reuse-search", action="store_true", help="reuse a finished search in --out"
    )
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        raise SystemExit(f"HC18 not found at {args.data}")

    if args.full:
        space = SearchSpace.preset("paper", num_classes=2)
        size, unet_base, steps, search_steps = 256, 56, None, None
    else:
        space = SearchSpace(
            name="hc18-cpu", layers=6, scales=4, channels=8, blocks=2, partial_k=4,
            input_size=128, num_classes=2,
        )  # fmt: skip
        size, unet_base, steps, search_steps = 128, 16, args.steps, args.search_steps
    cell_e, net_e = (int(x) for x in args.search_epochs.split(","))
    folds = str(args.data / "folds.json")
    common: dict[str, Any] = {
        "data": str(args.data),
        "input_size": size,
        "batch_size": args.batch_size,
        "device": args.device,
        "folds": folds,
        "test_fold": 0,
        "max_steps_per_epoch": steps,
        "seed": 0,
    }
    out = args.out
    rows = []

    t0 = time.perf_counter()
    reuse = args.reuse_search and (out / "search" / "DONE").is_file()
    res = search(
        None
        if reuse
        else SearchConfig(
            space=space,
            epochs=(cell_e, net_e),
            paths=3,
            **{**common, "max_steps_per_epoch": search_steps},
        ),
        out / "search",
        overwrite=not reuse,
        resume=reuse,
    )
    search_s = time.perf_counter() - t0
    print(f"search: {search_s:.0f}s", flush=True)

    width = space.channels if args.full else args.train_channels
    models: dict[str, Any] = {
        "MS-NAS(3)": decode(res.state, paths=3).widen(width),
        "MS-NAS(5)": decode(res.state, paths=5).widen(width),
        "U-Net": "unet",
    }
    for name, model in models.items():
        arch_path = out / f"{name}.json"
        if model != "unet":
            model.save(arch_path)
        cfg = TrainConfig(
            model=str(arch_path) if model != "unet" else "unet",
            unet_base_channels=unet_base,
            epochs=args.train_epochs,
            **common,
        )
        t0 = time.perf_counter()
        run_dir = out / name.replace("(", "").replace(")", "")
        train(cfg, run_dir, overwrite=True)
        train_s = time.perf_counter() - t0
        summary = evaluate(run_dir, device=args.device, out_dir=run_dir / "eval_test")
        net, _ = load_model(run_dir, "cpu")
        macs, _ = count_macs_flops(net, (1, 1, size, size))
        row = {
            "model": name,
            "params (M)": f"{count_parameters(net) / 1e6:.3f}",
            "MACs (G)": f"{macs / 1e9:.3f}",
            "Dice": _mean(summary, "mean_dice"),
            "IoU": _mean(summary, "mean_iou"),
            "HD95 (mm)": _mean(summary, "mean_hd95"),
            "train s": f"{train_s:.0f}",
            "_macs": macs,
        }
        rows.append(row)
        print(row, flush=True)

    unet = rows[-1]
    for r in rows:
        r["MACs / U-Net"] = f"{r['_macs'] / unet['_macs']:.2f}x"
        for k in ("Dice", "IoU", "HD95 (mm)"):
            r[k] = "n/a" if r[k] is None else f"{r[k]:.4f}"
    cols = [c for c in rows[0] if not c.startswith("_")]
    lines = [
        "# HC18 benchmark: searched MS-NAS against U-Net (same training budget)",
        "",
        f"`python benchmarks/hc18.py{' --full' if args.full else ''}` on "
        f"{platform.machine()}, {time.strftime('%Y-%m-%d')}. Test fold 0 of folds.json; "
        f"input {size}x{size}; search {cell_e}+{net_e} epochs of at most "
        f"{search_steps or 'all'} steps ({'reused' if reuse else f'{search_s:.0f}s'}, shared "
        "by both MS-NAS rows); "
        f"training {args.train_epochs} epochs, batch {args.batch_size}, "
        f"{'all' if steps is None else steps} steps per epoch for every model; "
        f"U-Net base width {unet_base}; MS-NAS searched at base width {space.channels} and "
        f"trained at {width}. Metrics at the "
        "original image size, mean over test cases.",
        "",
        markdown_table(rows, cols),
    ]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    (out / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

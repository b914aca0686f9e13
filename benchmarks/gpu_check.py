"""GPU check: one prepared script for a lent H100/H200, about five minutes in all.

(a) **Supernet step** of the ``paper`` space (L=10, S=5, N=3, C=32, k=4) at 256x256, batch 8:
    fp32, bf16 autocast, channels_last + bf16 (and channels_last fp32); step time (weight step and
    architecture step, CUDA-synchronised, warm-up then the median of ``--repeats``) and memory
    (``torch.cuda.max_memory_allocated``: the whole configuration's peak, and one step's peak
    above the allocation before it). Then k=1 (full channels) at the same setting for the
    memory ratio. A configuration that runs out of memory is reported and retried at half the
    batch (down to 1); the k=4 run is repeated at the batch k=1 needed, so the ratio is always
    taken at one setting. With ``--compile``, also the step through ``torch.compile`` (fp32,
    bf16) against eager at one batch, compilation time reported (opt-in: compiling the paper
    supernet took more than 5 minutes on the CPU).
(b) **Final network inference**: MS-NAS(3) decoded from ``SearchState.random(paper, 0)`` and
    the U-Net (base 16, depth 4) at 256x256, batch 16, in each inference mode (eager fp32,
    eager bf16 autocast, jit, compile, onnxruntime where installed; ``predict --runtime``):
    images per second and the time-per-MAC ratio of MS-NAS(3) to the U-Net.
(c) **One search epoch** of the ``paper`` preset on HC18 at 256x256 with the search loop's
    ``search()`` (``epochs=(1, 0)``, folds from ``folds.json``, test fold 0, capped at
    ``--search-steps`` steps): epoch time (training and validation) and the CUDA peak. Skipped
    with a message where the data folder is missing (``--hc18 PATH``; default
    ``../shared/data/hc18`` beside the repository). Tries fp32 batch 8 first, then bf16, then
    smaller batches on out-of-memory.
(d) **Fused mixed ops against one by one** (``gpu_fused.py``): the supernet's fused path and
    its one-by-one reference, equal outputs, gradients and running statistics within tolerance
    (fp32, TF32 off), and their step times and memory side by side, so that the first run on a
    GPU settles which is the default there.

Prints each row as soon as it is measured and rewrites the table after every row, to
``$OUT/gpu_check.md`` when ``OUT`` is set, else ``benchmarks/results/gpu_check.md``, so a timeout
keeps what was measured. ``--smoke`` runs everything at tiny sizes on the CPU (to check the
script here); ``--only a d`` runs some sections.

    python benchmarks/gpu_check.py                     # on the GPU machine
    python benchmarks/gpu_check.py --only a --compile  # the compiled supernet step, apart
    python benchmarks/gpu_check.py --smoke             # here, on the CPU
    python benchmarks/gpu_check.py --only d --smoke    # (d) alone, here
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _common import fmt_bytes, fmt_ratio, machine, markdown_table, write_results
from gpu_fused import section_d
from search_step import K1, K4, Stepper, build_case, paper_space

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HC18 = ROOT.parent / "shared" / "data" / "hc18"


def _log(msg: str) -> None:
    print(msg, flush=True)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


class Report:
    """Accumulates section tables and rewrites the results file after every row."""

    def __init__(self, path: Path, setup: str, device: str) -> None:
        self.path = path
        self.setup = setup
        self.device = device
        self.sections: dict[str, list[dict[str, Any]]] = {}
        self.notes: list[str] = []

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.sections.setdefault(section, []).append(row)
        _log(f"[{section}] " + ", ".join(f"{k}: {v}" for k, v in row.items()))
        self.write()

    def note(self, text: str) -> None:
        self.notes.append(text)
        _log(f"note: {text}")
        self.write()

    def write(self) -> None:
        sections = []
        for name, rows in self.sections.items():
            cols = list(dict.fromkeys(c for r in rows for c in r))
            cols = [c for c in cols if c != "result"] + (["result"] if "result" in cols else [])
            sections.append(f"## {name}\n\n{markdown_table(rows, cols)}")
        reading = " ".join(self.notes) or "(no notes)"
        write_results(
            "gpu_check",
            "GPU check: supernet step, final-network throughput, one search epoch, fused mixed ops",
            self.setup,
            sections,
            reading,
            device=self.device,
            path=self.path,
        )


# --------------------------------------------------------------------- (a) supernet step


def supernet_config(
    name: str,
    k: int,
    amp: str,
    channels_last: bool,
    batch: int,
    args: argparse.Namespace,
    compile: bool = False,
) -> dict[str, Any]:
    """Time and memory of one configuration; raises on out-of-memory. With ``compile`` the
    supernet's forward runs through ``torch.compile``; the warm-up (compilation) is timed."""
    device = torch.device(args.device)
    _free(device)
    stepper: Stepper | None = None
    try:
        case = build_case(K4 if k == 4 else K1, args.channels, args.size,
                          space=paper_space(args.channels, k, args.size),
                          compile=compile)  # fmt: skip
        stepper = Stepper(case, batch, args.size, args.device, amp, channels_last)
        del case
        t0 = time.perf_counter()
        for _ in range(max(args.warmup, 2 if compile else 0)):
            stepper.weight_step()
            stepper.arch_step()
        _sync(device)
        warm_s = time.perf_counter() - t0
        w_times, a_times = [], []
        for _ in range(args.repeats):
            w_times.append(stepper.timed(stepper.weight_step))
            a_times.append(stepper.timed(stepper.arch_step))
        total_peak = _peak(device)
        w_peak = a_peak = None
        if device.type == "cuda":
            w_peak = stepper.cuda_peak(stepper.weight_step)
            a_peak = stepper.cuda_peak(stepper.arch_step)
        w_s, a_s = statistics.median(w_times), statistics.median(a_times)
        return {
            "config": name,
            "k": k,
            "batch": batch,
            "weight step ms": f"{1e3 * w_s:.1f}",
            "arch step ms": f"{1e3 * a_s:.1f}",
            "search steps/s (arch + weight)": f"{1 / (w_s + a_s):.2f}",
            "warm-up s": f"{warm_s:.1f}",
            "peak allocated (config)": fmt_bytes(total_peak),
            "weight-step peak above start": fmt_bytes(w_peak),
            "arch-step peak above start": fmt_bytes(a_peak),
            "_w_s": w_s,
            "_w_peak": w_peak,
            "_total_peak": total_peak,
        }
    finally:
        del stepper
        _free(device)


def run_with_fallback(
    run: Callable[[int], dict[str, Any]], batch: int, label: str, report: Report, section: str
) -> dict[str, Any] | None:
    """``run(batch)``, halving the batch on out-of-memory (each OOM reported)."""
    while batch >= 1:
        try:
            return run(batch)
        except Exception as exc:
            if not _is_oom(exc):
                report.add(section, {"config": label, "batch": batch, "result": f"error: {exc}"})
                traceback.print_exc()
                return None
            report.add(section, {"config": label, "batch": batch, "result": "out of memory"})
        _free(torch.device(report.device))
        batch //= 2
    return None


def section_a(args: argparse.Namespace, report: Report) -> None:
    sec = "(a) supernet step, paper space"
    configs = [
        ("fp32", "none", False),
        ("bf16 autocast", "bf16", False),
        ("channels_last + bf16", "bf16", True),
        ("channels_last fp32", "none", True),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, amp, cl in configs:
        res = run_with_fallback(
            partial(supernet_config, name, 4, amp, cl, args=args),
            args.batch,
            f"{name} k=4",
            report,
            sec,
        )
        if res is not None:
            results[name] = res
            report.add(sec, {k: v for k, v in res.items() if not k.startswith("_")})
    if args.compile:
        _compiled_configs(args, report, sec, results)
    # k=1 against k=4 at one setting (fp32, and bf16 for a second point)
    for name, amp in (("fp32", "none"), ("bf16 autocast", "bf16")):
        r1 = run_with_fallback(
            partial(supernet_config, f"{name} k=1", 1, amp, False, args=args),
            args.batch,
            f"{name} k=1",
            report,
            sec,
        )
        if r1 is None:
            continue
        report.add(sec, {k: v for k, v in r1.items() if not k.startswith("_")})
        r4 = results.get(name)
        if r4 is None or r4["batch"] != r1["batch"]:
            try:
                r4 = supernet_config(f"{name} k=4", 4, amp, False, r1["batch"], args)
                report.add(sec, {k: v for k, v in r4.items() if not k.startswith("_")})
            except Exception as exc:
                report.note(f"k=4 {name} at batch {r1['batch']} failed: {exc}")
                continue
        if r1["_w_peak"] and r4["_w_peak"]:
            report.note(
                f"k=4/k=1 at {name}, batch {r1['batch']}: weight-step peak "
                f"{fmt_ratio(r4['_w_peak'] / r1['_w_peak'])}, config peak "
                f"{fmt_ratio(r4['_total_peak'] / r1['_total_peak'])}, weight-step time "
                f"{fmt_ratio(r4['_w_s'] / r1['_w_s'])}."
            )
    base = results.get("fp32")
    for name, amp, cl in configs[1:]:
        r = results.get(name)
        if base and r and r["batch"] != base["batch"]:  # compare at one batch
            try:
                r = supernet_config(name, 4, amp, cl, base["batch"], args)
                report.add(sec, {k: v for k, v in r.items() if not k.startswith("_")})
            except Exception as exc:
                report.note(f"{name} at batch {base['batch']} failed: {str(exc)[:120]}")
                continue
        if base and r:
            report.note(
                f"{name} vs fp32 (k=4, batch {r['batch']}): weight-step time "
                f"{fmt_ratio(r['_w_s'] / base['_w_s'])}"
                + (
                    f", config peak {fmt_ratio(r['_total_peak'] / base['_total_peak'])}."
                    if r["_total_peak"] and base["_total_peak"]
                    else "."
                )
            )


def _compiled_configs(
    args: argparse.Namespace, report: Report, sec: str, results: dict[str, dict[str, Any]]
) -> None:
    """The supernet step through ``torch.compile`` (fp32 and bf16), against eager at one batch:
    the issue's target is a step at least 3x faster than 1.6 s at batch 8 and half of 88.8 GiB."""
    for name, amp in (("fp32", "none"), ("bf16 autocast", "bf16")):
        eager = results.get(name)
        batch = eager["batch"] if eager else args.batch
        res = run_with_fallback(
            partial(supernet_config, f"{name} compiled", 4, amp, False, args=args, compile=True),
            batch,
            f"{name} compiled k=4",
            report,
            sec,
        )
        if res is None:
            continue
        report.add(sec, {k: v for k, v in res.items() if not k.startswith("_")})
        if eager and res["batch"] == eager["batch"]:
            report.note(
                f"compiled vs eager ({name}, k=4, batch {res['batch']}): weight-step time "
                f"{fmt_ratio(res['_w_s'] / eager['_w_s'])}"
                + (
                    f", config peak {fmt_ratio(res['_total_peak'] / eager['_total_peak'])}."
                    if res["_total_peak"] and eager["_total_peak"]
                    else "."
                )
            )


# -------------------------------------------------------------- (b) final-network inference


def section_b(args: argparse.Namespace, report: Report) -> None:
    """Images/s of MS-NAS(3) and the U-Net (base 16, depth 4) in each inference mode, and the
    time-per-MAC ratio (issue 10: >= 0.8 means MS-NAS runs its MACs about as fast)."""
    from msnas_graph.backends.torch.cost import count_macs_flops
    from msnas_graph.backends.torch.nn.network import build_network
    from msnas_graph.backends.torch.nn.unet import UNet
    from msnas_graph.backends.torch.runtimes import onnxruntime_available
    from msnas_graph.decode import decode
    from msnas_graph.state import SearchState

    sec = "(b) final network inference, MS-NAS(3) of a random paper state and the U-Net"
    device = torch.device(args.device)
    space = paper_space(args.channels, 4, args.size)
    arch = decode(SearchState.random(space, seed=0), paths=3)
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "MS-NAS(3)": lambda: build_network(arch),
        "U-Net": lambda: UNet(1, 2, base_channels=16, depth=4),
    }
    shape = (1, 1, args.size, args.size)
    macs = {name: count_macs_flops(build(), shape)[0] for name, build in builders.items()}
    modes = [("eager fp32", "eager", None), ("eager bf16 autocast", "eager", torch.bfloat16),
             ("jit", "jit", None), ("compile", "compile", None)]  # fmt: skip
    if onnxruntime_available():
        modes.append(("onnxruntime", "onnxruntime", None))
    speed: dict[tuple[str, str], float] = {}
    for mode, runtime, dtype in modes:
        for name, build in builders.items():
            res = _inference_row(args, device, build, runtime, dtype)
            report.add(sec, {"network": name, "mode": mode, "batch": args.infer_batch, **res})
            if "images/s" in res:
                speed[(name, mode)] = float(res["images/s"])
        ms, un = speed.get(("MS-NAS(3)", mode)), speed.get(("U-Net", mode))
        if ms and un:
            ratio = (ms / un) / (macs["U-Net"] / macs["MS-NAS(3)"])
            report.note(
                f"{mode}: MS-NAS(3) {ms:.0f} images/s, U-Net {un:.0f}; MACs "
                f"{macs['MS-NAS(3)'] / 1e9:.2f} G vs {macs['U-Net'] / 1e9:.2f} G; time-per-MAC "
                f"ratio {fmt_ratio(ratio)} (target >= 0.8)."
            )


def _inference_row(
    args: argparse.Namespace,
    device: torch.device,
    build: Callable[[], torch.nn.Module],
    runtime: str,
    dtype: Any,
) -> dict[str, Any]:
    """ms per batch, images/s and the peak of one network in one mode (or the error)."""
    from msnas_graph.backends.torch.runtimes import InferenceRuntime

    _free(device)
    net = InferenceRuntime(build().to(device).eval(), runtime, device)
    x = torch.randn(args.infer_batch, 1, args.size, args.size, device=device)

    def forward() -> None:
        with torch.inference_mode():
            if dtype is None:
                net(x)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    net(x)

    try:
        t0 = time.perf_counter()
        for _ in range(max(args.warmup, 1)):
            forward()
        _sync(device)
        warm = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            _sync(device)
            t0 = time.perf_counter()
            forward()
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = _peak(device)
    except Exception as exc:
        return {"result": "out of memory" if _is_oom(exc) else f"error: {str(exc)[:120]}"}
    finally:
        _free(device)
    t = statistics.median(times)
    return {
        "resolved": net.resolved,
        "warm-up s": f"{warm:.1f}",
        "ms per batch": f"{1e3 * t:.1f}",
        "images/s": f"{args.infer_batch / t:.0f}",
        "peak allocated": fmt_bytes(peak),
    }


# ------------------------------------------------------------------- (c) one search epoch


def section_c(args: argparse.Namespace, report: Report) -> None:
    from msnas_graph.backends.torch.training import SearchConfig, search

    sec = "(c) one search epoch, paper preset on HC18"
    data = Path(args.hc18)
    if not (data / "images").is_dir():
        report.note(
            f"(c) skipped: HC18 not found at {data} (give --hc18 PATH to the folder with "
            "images/, masks/ and folds.json)."
        )
        return
    device = torch.device(args.device)
    folds = data / "folds.json"
    attempts = [("none", args.search_batch), ("bf16", args.search_batch)]
    b = args.search_batch // 2
    while b >= 1:
        attempts.append(("bf16", b))
        b //= 2
    for amp, batch in attempts:
        _free(device)
        space = paper_space(args.channels, 4, args.size)
        config = SearchConfig(
            space=space,
            data=str(data),
            input_size=args.size,
            epochs=(1, 0),
            batch_size=batch,
            device=args.device,
            amp=amp,
            max_steps_per_epoch=args.search_steps or None,
            folds=str(folds) if folds.is_file() else None,
            test_fold=0,
            seed=0,
        )
        run_dir = Path(tempfile.mkdtemp(prefix="gpu_check_search_"))
        t0 = time.perf_counter()
        try:
            res = search(config, run_dir, overwrite=True, progress=False)
            wall = time.perf_counter() - t0
            peak = _peak(device)
        except Exception as exc:
            oom = _is_oom(exc)
            report.add(
                sec,
                {
                    "amp": amp,
                    "batch": batch,
                    "result": "out of memory" if oom else f"error: {str(exc)[:160]}",
                },
            )
            if not oom:
                traceback.print_exc()
                return
            continue
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        row = res.history[0] if res.history else {}
        report.add(
            sec,
            {
                "amp": amp,
                "batch": batch,
                "steps (cap)": args.search_steps or "full epoch",
                "epoch time s (train + val)": row.get("time_s", "-"),
                "search() wall s (incl. data loading)": f"{wall:.1f}",
                "peak allocated": fmt_bytes(peak),
                "train loss": f"{row.get('train_loss', float('nan')):.4f}",
                "val dice": row.get("val_dice", "-"),
            },
        )
        return


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--device", default=None, help="default cuda (cpu with --smoke)")
    sections = ["a", "b", "c", "d"]
    parser.add_argument("--only", nargs="+", choices=sections, default=sections)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="(a) also time the supernet step through torch.compile, fp32 and bf16 (compiling "
        "the paper supernet took over 5 minutes on the CPU: run it last, with time to spare)",
    )
    parser.add_argument("--hc18", default=str(DEFAULT_HC18), help="HC18 folder for (c)")
    parser.add_argument("--channels", type=int, default=None, help="base width (default 32)")
    parser.add_argument("--size", type=int, default=None, help="input side (default 256)")
    parser.add_argument("--batch", type=int, default=None, help="(a) batch (default 8)")
    parser.add_argument("--infer-batch", type=int, default=None, help="(b) batch (default 16)")
    parser.add_argument("--search-batch", type=int, default=None, help="(c) batch (default 8)")
    parser.add_argument(
        "--search-steps", type=int, default=None, help="(c) step cap, 0 = full (default 25)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2)")
    args = parser.parse_args()
    tiny = {"channels": 4, "size": 32, "batch": 2, "infer_batch": 2, "search_batch": 2,
            "search_steps": 2, "repeats": 1, "warmup": 1}  # fmt: skip
    full = {"channels": 32, "size": 256, "batch": 8, "infer_batch": 16, "search_batch": 8,
            "search_steps": 25, "repeats": 5, "warmup": 2}  # fmt: skip
    for key, value in (tiny if args.smoke else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device is None:
        args.device = "cpu" if args.smoke else "cuda"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available here; use --smoke to test on the CPU")

    out = os.environ.get("OUT")
    path = Path(out) / "gpu_check.md" if out else Path(__file__).parent / "results" / "gpu_check.md"
    if args.smoke and not out:  # smoke figures mean nothing: keep them out of results/
        path = Path(tempfile.gettempdir()) / "gpu_check_smoke.md"
    setup = (
        f"{'SMOKE TEST (tiny sizes, CPU): figures mean nothing. ' if args.smoke else ''}"
        f"Paper space (L=10, S=5, N=3, six ops) at C={args.channels}, input "
        f"{args.size}x{args.size}. (a): batch {args.batch}, {args.warmup} warm-up then the median "
        f"of {args.repeats} synchronised steps; weight step = forward, Dice+CE, backward, SGD; "
        "arch step = forward, Dice+CE, autograd.grad of the architecture parameters, Adam; "
        "configurations run one after the other (each alone on the GPU for its memory peak). "
        f"(b): batch {args.infer_batch}, inference_mode. (c): search() with epochs=(1, 0), "
        f"batch {args.search_batch}, at most {args.search_steps or 'all'} steps per epoch "
        "(the validation is capped alike), folds.json fold 0 as test. (d): fused mixed ops "
        f"against one by one at batch {args.batch}, {args.warmup} warm-up rounds then "
        f"{args.repeats} interleaved rounds (gpu_fused.py)."
    )
    report = Report(path, setup, args.device)
    _log(f"gpu_check on {machine(args.device)}; writing {path}")
    t0 = time.perf_counter()
    sections = {"a": section_a, "b": section_b, "c": section_c, "d": section_d}
    for key in args.only:
        ts = time.perf_counter()
        try:
            sections[key](args, report)
        except Exception as exc:  # keep going: the other sections are still worth having
            traceback.print_exc()
            report.note(f"section ({key}) failed: {exc}")
        _log(f"section ({key}) took {time.perf_counter() - ts:.1f} s")
    report.note(f"Whole check: {time.perf_counter() - t0:.0f} s.")
    _log(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Final-network inference benchmark: MS-NAS(3) against the U-Net, images/s and time per MAC.

Two networks, as ``benchmarks/hc18.py`` trains them on CPU:

* ``MS-NAS(3)``: the top-3-path architecture decoded from a random search state (``--seed``) of
  the ``hc18-cpu`` space (L=6, S=4, N=2, partial k=4, the paper's five operations + none),
  widened to the training width 24 (``--width``). A random state stands in for a searched one:
  the decoded graph and cells have the paper's shape, and speed depends on the shape only.
* ``U-Net``: the baseline at base width 16 (``--unet-base``), depth 4.

Each in several modes (``--modes``): ``eager`` (``model.eval()``), ``fused`` (BatchNorm folded
into the convolutions, :func:`~msnas_graph.backends.torch.fuse.fuse_for_inference`),
``fused+CL`` (also channels-last: the ``eager`` inference runtime on CPU), and the runtimes
of :mod:`~msnas_graph.backends.torch.runtimes` as ``predict`` runs them: ``jit`` (trace +
freeze + ``optimize_for_inference``), ``compile`` (``torch.compile``, inductor) and
``onnxruntime`` (dynamo export, ONNX Runtime CPU provider, ``--threads`` intra-op threads)
where onnx/onnxruntime are installed. CPU, one thread (``torch.set_num_threads(1)``,
``--threads``), inputs 128x128 and 256x256, batch 1 and 8, under ``torch.inference_mode``.
Tracing, export and compilation happen in the warm-up round, outside the timing.

A last table (``--no-sep-probe`` skips it) times one separable convolution (ReLU, depth-wise
``k x k``, point-wise 1x1 with the folded BatchNorm's bias) against the one dense ``k x k``
convolution with the composed weights ``W[o, i] = pw[o, i] * dw[i]`` (same function), at the
MS-NAS widths and resolutions of a 128x128 input, eager and jit: whether fusing the pair pays.

All (network, mode) cases of one input shape run in interleaved rounds (order rotating); a
round times ``--calls`` forward passes of a case (fewer for the largest inputs) and reports
ms per image; figures are medians over the rounds after one warm-up round, ratios the median
of per-round ratios. MACs: ``cost.count_macs_flops`` at batch 1.

**Time-per-MAC ratio** = (MS-NAS images/s / U-Net images/s) / (U-Net MACs / MS-NAS MACs):
1.0 when both networks run their MACs equally fast; the target is >= 0.8.

    python benchmarks/final_network.py [--sizes 128 256] [--batches 1 8] [--repeats 3]
        [--modes eager fused fused+CL jit compile onnxruntime] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import fmt_ratio, interleaved, markdown_table, median, paired_ratio, write_results
from torch import nn

from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
from msnas_graph.backends.torch.fuse import fuse_for_inference
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.backends.torch.runtimes import (
    InferenceRuntime,
    onnxruntime_available,
)
from msnas_graph.decode import decode
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

MSNAS, UNET = "MS-NAS(3)", "U-Net"


def _log(msg: str) -> None:
    print(msg, flush=True)


def msnas_arch(seed: int, width: int) -> Architecture:
    """Top-3 paths of a random ``hc18-cpu`` state, at base width ``width``."""
    space = SearchSpace(
        name="hc18-cpu", layers=6, scales=4, channels=8, blocks=2, partial_k=4,
        input_size=128, num_classes=2,
    )  # fmt: skip
    arch = decode(SearchState.random(space, seed=seed), paths=3)
    wide = space.widen(width)
    return Architecture(wide, arch.edges, arch.cells, arch.paths, meta=arch.meta)


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Trained-looking BatchNorm statistics (folding is exact whatever they are)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def networks(seed: int, width: int, unet_base: int) -> tuple[Architecture, dict[str, nn.Module]]:
    """MS-NAS(3) (top-3 paths of random state ``seed`` at base width ``width``) and the U-Net
    (base ``unet_base``, depth 4) with trained-looking BatchNorm statistics, and MS-NAS's
    architecture."""
    torch.manual_seed(0)
    arch = msnas_arch(seed, width)
    nets: dict[str, nn.Module] = {
        MSNAS: build_network(arch),
        UNET: UNet(1, 2, base_channels=unet_base, depth=4),
    }
    for net in nets.values():
        _randomise_bn(net)
    return arch, nets


MODES = ("eager", "fused", "fused+CL", "jit", "compile", "onnxruntime")


def build_modes(model: nn.Module, modes: list[str]) -> dict[str, Any]:
    """Callables ``f(x)`` for each of ``modes`` of ``model`` (``onnxruntime`` only where
    installed); the runtimes build themselves on their first call (the warm-up round)."""
    model = model.eval()
    out: dict[str, Any] = {}
    for mode in modes:
        if mode == "eager":
            out[mode] = model
        elif mode == "fused":
            out[mode] = fuse_for_inference(model)
        elif mode == "fused+CL":  # the eager runtime on the CPU
            fused_cl = fuse_for_inference(model, channels_last=True)
            out[mode] = lambda x, m=fused_cl: m(x.contiguous(memory_format=torch.channels_last))
        elif mode != "onnxruntime" or onnxruntime_available():
            out[mode] = InferenceRuntime(model, mode)
        else:
            _log("  onnx/onnxruntime not installed: no onnxruntime mode")
    return out


def _quiet(fn: Any) -> Any:
    """``fn`` with warnings and library log records below ERROR silenced (export noise)."""

    def call(x: torch.Tensor) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            try:
                return fn(x)
            finally:
                logging.disable(logging.NOTSET)

    return call


def timer(fn: Any, x: torch.Tensor, calls: int) -> Callable[[], dict[str, float]]:
    def run() -> dict[str, float]:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(x)
            dt = time.perf_counter() - t0
        return {"ms_per_image": 1000.0 * dt / (calls * x.shape[0])}

    return run


def _sep_pair(c: int, k: int, d: int) -> tuple[nn.Module, nn.Module]:
    """A folded separable conv (ReLU, dw k x k dilation d, pw 1x1 with bias) and the dense
    k x k conv computing the same function."""
    dw = nn.Conv2d(c, c, k, padding=d * (k // 2), dilation=d, groups=c, bias=False)
    pw = nn.Conv2d(c, c, 1, bias=True)
    dense = nn.Conv2d(c, c, k, padding=d * (k // 2), dilation=d, bias=True)
    with torch.no_grad():
        dense.weight.copy_(pw.weight[:, :, 0, 0, None, None] * dw.weight[:, 0][None])
        dense.bias.copy_(pw.bias)
    return nn.Sequential(nn.ReLU(), dw, pw).eval(), nn.Sequential(nn.ReLU(), dense).eval()


def _jit(model: nn.Module, x: torch.Tensor) -> Any:
    """Traced, frozen and optimised as the jit runtime does, without its wrapper (whose
    finite-input check costs as much as one small convolution)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
        return torch.jit.optimize_for_inference(frozen)


def sep_probe(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Separable pair against the composed dense conv, eager and jit (see the docstring)."""
    rows = []
    base = 128 if 128 in args.sizes else min(args.sizes)
    for scale in range(4):
        c, side = args.width * 2**scale, base // 2**scale
        for k, d in ((3, 1), (5, 1), (3, 2)):
            for batch in args.batches:
                x = torch.randn(batch, c, side, side)
                sep, dense = _sep_pair(c, k, d)
                with torch.no_grad():
                    err = float((sep(x) - dense(x)).abs().max())
                cases = {}
                for name, m in (("sep", sep), ("dense", dense)):
                    cases[f"{name} eager"] = timer(m, x, args.calls * 5)
                    cases[f"{name} jit"] = timer(_jit(m, x), x, args.calls * 5)
                res = interleaved(cases, args.repeats, args.warmup, lambda _: None)
                row: dict[str, Any] = {
                    "channels": c, "side": side, "op": f"{k}x{k} d{d}", "batch": batch,
                    "max |diff|": f"{err:.1e}",
                }  # fmt: skip
                for mode in ("eager", "jit"):
                    ms = median(res[f"sep {mode}"]["ms_per_image"])
                    row[f"sep {mode} ms/image"] = f"{ms:.3f}"
                    dense_over_sep = paired_ratio(
                        res[f"dense {mode}"]["ms_per_image"], res[f"sep {mode}"]["ms_per_image"]
                    )
                    row[f"dense/sep time, {mode}"] = fmt_ratio(dense_over_sep)
                rows.append(row)
        _log(f"  separable probe: {c} channels at {side}x{side} done")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3, help="forward passes per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=24, help="MS-NAS base width (default 24)")
    parser.add_argument("--unet-base", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--no-sep-probe", dest="sep_probe", action="store_false")
    parser.add_argument(
        "--quick", action="store_true", help="128x128 only, 2 rounds (a smoke run, noisy)"
    )
    parser.add_argument("--out", type=Path, help="results file (default results/final_network.md)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [128], 2
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    arch, nets = networks(args.seed, args.width, args.unet_base)
    params = {n: count_parameters(m) for n, m in nets.items()}

    rows: list[dict[str, Any]] = []
    ratio_rows: list[dict[str, Any]] = []
    per_mac: dict[str, list[float]] = {}  # time/MAC ratios of each mode, over the shapes
    for size in args.sizes:
        shape1 = (1, 1, size, size)
        macs = {n: count_macs_flops(m, shape1)[0] for n, m in nets.items()}
        modes = {n: build_modes(m, args.modes) for n, m in nets.items()}
        mode_names = [m for m in modes[MSNAS] if m in modes[UNET]]
        for batch in args.batches:
            _log(f"== {size}x{size}, batch {batch}: {', '.join(mode_names)}")
            x = torch.randn(batch, 1, size, size)
            calls = max(1, args.calls if size * size * batch <= 128 * 128 * 8 else args.calls // 3)
            cases = {
                f"{n} {mode}": timer(_quiet(modes[n][mode]), x, calls)
                for n in nets
                for mode in mode_names
            }
            res = interleaved(cases, args.repeats, args.warmup, _log)
            for n in nets:
                for mode in mode_names:
                    ms = median(res[f"{n} {mode}"]["ms_per_image"])
                    rows.append(
                        {
                            "input": f"{size}x{size}", "batch": batch, "network": n,
                            "mode": mode, "ms/image": f"{ms:.2f}",
                            "images/s": f"{1000 / ms:.1f}", "GMACs/image": f"{macs[n] / 1e9:.3f}",
                            "GMAC/s": f"{macs[n] / 1e6 / ms:.2f}",
                        }
                    )  # fmt: skip
            mac_ratio = macs[UNET] / macs[MSNAS]
            row: dict[str, Any] = {"input": f"{size}x{size}", "batch": batch}
            row["U-Net MACs / MS-NAS MACs"] = f"{mac_ratio:.2f}"
            for mode in mode_names:
                # images/s ratio = U-Net ms per image / MS-NAS ms per image, round by round
                speed = paired_ratio(
                    res[f"{UNET} {mode}"]["ms_per_image"], res[f"{MSNAS} {mode}"]["ms_per_image"]
                )
                row[f"{mode}: speed ratio"] = fmt_ratio(speed)
                row[f"{mode}: time/MAC ratio"] = fmt_ratio(speed / mac_ratio)
                per_mac.setdefault(mode, []).append(speed / mac_ratio)
            for mode in mode_names[1:] if mode_names[0] == "eager" else []:
                gain = paired_ratio(
                    res[f"{MSNAS} eager"]["ms_per_image"], res[f"{MSNAS} {mode}"]["ms_per_image"]
                )
                row[f"MS-NAS {mode}/eager speed-up"] = fmt_ratio(gain)
            ratio_rows.append(row)
    probe = sep_probe(args) if args.sep_probe else []
    elapsed = (time.perf_counter() - t_start) / 60
    table = markdown_table(rows)
    ratios = markdown_table(ratio_rows)
    _log("\n" + table + "\n\n" + ratios)
    sections = ["## Per network and mode\n\n" + table, "## Ratios (same run)\n\n" + ratios]
    if probe:
        _log("\n" + markdown_table(probe))
        sections.append(
            "## Separable convolution against the composed dense convolution\n\n"
            + markdown_table(probe)
        )

    edges = sum(1 for e in arch.edges if e.kind != "skip")
    setup = (
        f"CPU, {args.threads} thread(s), `torch.inference_mode`. {MSNAS}: top-3 paths decoded "
        f"from `SearchState.random(hc18-cpu, seed={args.seed})` (L=6, S=4, N=2), base width "
        f"{args.width}: {len(arch.nodes)} nodes, {edges} cells, fusion `{arch.space.fusion}`, "
        f"{params[MSNAS] / 1e6:.2f} M params. {UNET}: base {args.unet_base}, depth 4, "
        f"{params[UNET] / 1e6:.2f} M params. Modes: eager; fused (BatchNorm folded); "
        "fused+CL (and channels-last: the eager runtime on CPU); the runtimes jit (trace, "
        "freeze, optimize_for_inference), compile (torch.compile, inductor) and onnxruntime "
        "(dynamo export, CPU provider, same threads) as `predict --runtime` runs them; tracing, "
        f"export and compilation in the warm-up round. {args.warmup} warm-up + {args.repeats} "
        "measured interleaved "
        f"rounds per shape, {args.calls} forward passes per round ({max(1, args.calls // 3)} "
        "above 128x128 at batch 8): few rounds to keep the run short on a shared 2-core "
        f"machine, so single figures are noisy; ratios are paired per round. Whole run: "
        f"{elapsed:.1f} min."
    )
    reading = (
        "Time-per-MAC ratio = (MS-NAS images/s / U-Net images/s) / (U-Net MACs / MS-NAS "
        "MACs); target >= 0.8 (1.0: MS-NAS runs its MACs as fast as the U-Net). See the "
        "ratio table for each mode; the X/eager columns are what each mode buys MS-NAS. "
        "The last table: dense/sep time > 1 means the composed dense convolution is slower "
        "than the separable pair it replaces."
    )
    spans = [f"{m} {fmt_ratio(min(v))}-{fmt_ratio(max(v))}" for m, v in per_mac.items()]
    best = max(per_mac, key=lambda m: median(per_mac[m]))
    reading += (
        f" This run, time-per-MAC ratio by mode (lowest-highest over the shapes): "
        f"{', '.join(spans)}; best: {best} (median {fmt_ratio(median(per_mac[best]))})."
    )
    if probe:
        slower = [
            float(r[f"dense/sep time, {m}"].rstrip("x")) for r in probe for m in ("eager", "jit")
        ]
        reading += (
            f" Composed dense convolution / separable pair time: {min(slower):.2f}x-"
            f"{max(slower):.2f}x over {len(slower)} cases ({sum(v < 1 for v in slower)} faster)."
        )
    path = write_results(
        "final_network",
        "Final-network inference: MS-NAS(3) against the U-Net",
        setup,
        sections,
        reading,
        path=args.out,
    )
    _log(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Keep or remove (issue 17 item 2): what ``Pointwise``, ``SplitConv`` and the channels-last
layout pay in the ``eager`` inference runtime, at a realistic size.

Networks: the top-3 paths decoded (``score="paper"``) from ``SearchState.random(space, seed)``
of the ``paper`` space (the paper's separable operations) and of the ``quick`` space with the
dense operation set ``conv_3x3, conv_3x3_dil2, avg_pool_3x3, skip_connect, none``, at base
widths 32 and 64 (``--widths``), 128x128 inputs (``--size``), batches 1 and 8 (``--batches``),
BatchNorm statistics randomised (folding is exact whatever they are), then folded
(:func:`~msnas_graph.backends.torch.fuse.fuse_for_inference`, as every runtime does).

Variants of the folded model, each switching one piece off (or on) alone:

* ``all three``: channels-last parameters and inputs, concatenations split into sums
  (``fuse.split_concat_convs``, ``SplitConv``), ``1x1`` convolutions as matrix products
  (``fuse.pointwise_as_matmul``, ``Pointwise``): the ``eager`` runtime on the CPU before
  issue 17;
* ``no Pointwise`` / ``no SplitConv`` / ``contiguous``: the same with that one piece off;
* ``channels-last only``: neither ``SplitConv`` nor ``Pointwise`` (the runtime after issue 17);
* ``plain``: the folded model on contiguous inputs;
* ``ort concat`` / ``ort split``: the folded model exported to ONNX (``export_onnx``) and run by
  ONNX Runtime (one thread), with its concatenations kept or split (``--no-ort`` skips them);
* ``jit concat`` / ``jit split``: the same through the ``jit`` runtime's trace, freeze and
  ``optimize_for_inference`` (``--jit`` adds them).

``--only NAME...`` measures those variants alone (ratios then to the first of them).

A variant whose piece is no longer in the library is skipped (and the table says so).
CPU, one thread, ``torch.inference_mode``; all variants of one network and batch run in
interleaved rounds (order rotating), one warm-up round, ``--rounds`` measured; a round times
one forward pass (``--calls`` at batch 1); ratios are medians of per-round ratios to ``all
three`` (time of the variant / time of ``all three``: above 1 means switching that piece off
costs time).

    python benchmarks/eager_layers.py [--widths 32 64] [--batches 1 8] [--rounds 3]
        [--spaces paper quick-dense] [--out results/eager_layers.md]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import fmt_ratio, interleaved, markdown_table, median, paired_ratio, write_results
from torch import nn

from msnas_graph.backends.torch import fuse
from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.runtimes import onnxruntime_available
from msnas_graph.decode import decode
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

DENSE_OPS = ["conv_3x3", "conv_3x3_dil2", "avg_pool_3x3", "skip_connect", "none"]
SPACES = ("paper", "quick-dense")
BASE = "all three"
CL = torch.channels_last


def space_of(name: str, width: int, size: int) -> SearchSpace:
    if name == "paper":
        return SearchSpace.preset("paper", channels=width, input_size=size)
    return SearchSpace.preset("quick", ops=DENSE_OPS, channels=width, input_size=size)


def network(space: SearchSpace, seed: int) -> nn.Module:
    """MS-NAS(3) of a random state, trained-looking BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    net = build_network(decode(SearchState.random(space, seed=seed), paths=3, score="paper"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.running_mean.normal_(0, 0.1, generator=g)
    return net.eval()


def _variant(folded: nn.Module, split: bool, pointwise: bool, last: bool) -> Any:
    """A callable ``f(x)`` of a copy of ``folded`` with the pieces asked for; ``None`` where a
    piece asked for is gone from the library."""
    if (split and not hasattr(fuse, "split_concat_convs")) or (
        pointwise and not hasattr(fuse, "pointwise_as_matmul")
    ):
        return None
    model = copy.deepcopy(folded)
    if split:
        fuse.split_concat_convs(model)
    if pointwise:
        fuse.pointwise_as_matmul(model)
    if not last:
        return lambda x: model(x.contiguous())
    model = model.to(memory_format=CL)  # type: ignore[call-overload]
    return lambda x: model(x.contiguous(memory_format=CL)).contiguous()


def _split_copy(folded: nn.Module, split: bool) -> nn.Module | None:
    model = copy.deepcopy(folded)
    if split and hasattr(fuse, "split_concat_convs"):
        fuse.split_concat_convs(model)
    elif split:
        return None
    return model


def _jit(folded: nn.Module, split: bool, x: torch.Tensor) -> Any:
    model = _split_copy(folded, split)
    if model is None:
        return None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


def _ort(folded: nn.Module, split: bool, x: torch.Tensor) -> Any:
    """The ``onnxruntime`` runtime's session (one thread: this process runs one) on the folded
    model, its concatenations split or not."""
    from msnas_graph.backends.torch.runtimes import _OnnxRuntime

    model = _split_copy(folded, split)
    return None if model is None else _OnnxRuntime(model, x, torch.device("cpu"))


VARIANTS: dict[str, tuple[bool, bool, bool]] = {  # (split, pointwise, channels-last)
    BASE: (True, True, True),
    "no Pointwise": (True, False, True),
    "no SplitConv": (False, True, True),
    "contiguous": (True, True, False),
    "channels-last only": (False, False, True),
    "plain": (False, False, False),
}


def measure(net: nn.Module, batch: int, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Times per variant (ms per image) and ratios to ``all three``; skipped variants noted."""
    folded = fuse.fuse_for_inference(net)
    x = torch.randn(batch, 1, size, size)
    runners: dict[str, Callable[[torch.Tensor], Any]] = {}
    skipped = []
    builders: dict[str, Callable[[], Any]] = {
        name: lambda flags=flags: _variant(folded, *flags) for name, flags in VARIANTS.items()
    }
    if args.ort and onnxruntime_available():
        builders["ort concat"] = lambda: _ort(folded, False, x)
        builders["ort split"] = lambda: _ort(folded, True, x)
    if args.jit:
        builders["jit concat"] = lambda: _jit(folded, False, x)
        builders["jit split"] = lambda: _jit(folded, True, x)
    for name, build in builders.items():
        if args.only and name not in args.only:
            continue
        run = build()
        if run is None:
            skipped.append(name)
        else:
            runners[name] = run
    with torch.inference_mode():
        ref = folded(x)
        for name, run in runners.items():  # every variant computes the same function
            got = torch.as_tensor(run(x))
            if not torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max())):
                raise SystemExit(f"eager_layers: {name} differs from the folded model")
    calls = args.calls if batch == 1 else 1

    def case(run: Callable[[torch.Tensor], Any]) -> Callable[[], dict[str, float]]:
        def timed() -> dict[str, float]:
            with torch.inference_mode():
                t0 = time.perf_counter()
                for _ in range(calls):
                    run(x)
                return {"ms": 1e3 * (time.perf_counter() - t0) / (calls * batch)}

        return timed

    times = interleaved({n: case(r) for n, r in runners.items()}, args.rounds, log=print)
    base = next(n for n in (*(args.only or ()), BASE, "channels-last only", *times) if n in times)
    return {
        "ms": {n: median(t["ms"]) for n, t in times.items()},
        "ratio": {n: paired_ratio(t["ms"], times[base]["ms"]) for n, t in times.items()},
        "base": base,
        "skipped": skipped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", nargs="+", choices=SPACES, default=list(SPACES))
    parser.add_argument("--widths", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="forward passes per round, batch 1")
    parser.add_argument("--no-ort", dest="ort", action="store_false")
    parser.add_argument("--jit", action="store_true", help="also the jit runtime, split or not")
    parser.add_argument("--only", nargs="+", default=None, help="measure these variants alone")
    parser.add_argument("--out", default=None, help="results file (default: print only)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # this benchmark's own process: one thread, as the others
    t0 = time.perf_counter()
    rows, skipped = [], set()
    for space_name in args.spaces:
        for width in args.widths:
            space = space_of(space_name, width, args.size)
            net = network(space, args.seed)
            macs = count_macs_flops(net, (1, 1, args.size, args.size))[0]
            for batch in args.batches:
                print(f"{space_name}, width {width}, batch {batch}", flush=True)
                got = measure(net, batch, args.size, args)
                skipped.update(got["skipped"])
                for name, ms in got["ms"].items():
                    rows.append({
                        "space": space_name, "width": width,
                        "params (M)": f"{count_parameters(net) / 1e6:.2f}",
                        "GMACs/image": f"{macs / 1e9:.2f}", "batch": batch, "variant": name,
                        "ms/image": f"{ms:.1f}",
                        "time / baseline": fmt_ratio(got["ratio"][name]),
                        "baseline": got["base"],
                    })  # fmt: skip
    table = markdown_table(rows)
    print("\n" + table)
    if args.out:
        setup = (
            f"MS-NAS(3) decoded with the paper's score from `SearchState.random(space, "
            f"{args.seed})`, {args.size}x{args.size}, CPU, one thread, inference mode; "
            f"1 warm-up + {args.rounds} interleaved rounds per network and batch; ratios are "
            "medians of per-round ratios. Whole run: "
            f"{time.perf_counter() - t0:.0f} s. Variants: see the script's docstring."
            + (f" Skipped (gone from the library): {', '.join(sorted(skipped))}." * bool(skipped))
        )
        write_results(
            "eager_layers",
            "Keep or remove: Pointwise, SplitConv and channels-last in the eager runtime",
            setup,
            ["## Time per image\n\n" + table],
            "Decisions in `keep_or_remove.md`.",
            path=Path(args.out),
        )


if __name__ == "__main__":
    main()

"""Time per MAC of a dense convolution against its channel count, in the runtimes ``predict``
uses, one CPU thread, in one run.

Why: on the frontier (``frontier.md``), U-Net(12) ran nearly as slowly as U-Net(16) and
MS-NAS at width 12 more slowly than at width 16. This isolates the cause: two 3x3
convolution + ReLU layers (``C -> C -> C``, batch 1, a square input) at each channel count of
``--channels``, BatchNorm-free, run by :class:`InferenceRuntime` (``onnxruntime`` and ``eager``)
in interleaved rounds. Each row gives the median ms per pass and the time per MAC relative to
``C = 16`` in the same runtime (the median of the per-round ratios).

    python benchmarks/channel_alignment.py [--size 64] [--channels 8,12,16,20,24,32,48,64]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _common import interleaved, markdown_table, median, paired_ratio, write_results

from msnas_graph.backends.torch.runtimes import InferenceRuntime, onnxruntime_available


def _layers(c: int) -> torch.nn.Module:
    conv = [torch.nn.Conv2d(c, c, 3, padding=1) for _ in range(2)]
    return torch.nn.Sequential(conv[0], torch.nn.ReLU(), conv[1], torch.nn.ReLU()).eval()


Case = Callable[[], dict[str, float]]


def _timer(runner: InferenceRuntime, x: torch.Tensor, passes: int) -> Case:
    """A case for :func:`interleaved`: ``passes`` calls, ms per call."""

    def once() -> dict[str, float]:
        t0 = time.perf_counter()
        for _ in range(passes):
            runner(x)
        return {"ms": (time.perf_counter() - t0) / passes * 1e3}

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", default="8,12,16,20,24,32,48,64")
    parser.add_argument("--passes", type=int, default=50, help="passes per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    channels = [int(c) for c in args.channels.split(",")]
    if 16 not in channels:
        channels.append(16)
    runtimes = ["onnxruntime", "eager"] if onnxruntime_available() else ["eager"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cases: dict[str, Case] = {}
        for rt in runtimes:
            for c in channels:
                x = torch.randn(1, c, args.size, args.size)
                runner = InferenceRuntime(_layers(c), runtime=rt)
                runner(x)
                cases[f"{rt} {c}"] = _timer(runner, x, args.passes)
        got = interleaved(cases, args.rounds, warmup=1, log=print)
    finally:
        torch.set_num_threads(threads)
    rows = []
    for rt in runtimes:
        base = got[f"{rt} 16"]["ms"]
        for c in channels:
            ms = got[f"{rt} {c}"]["ms"]
            per_mac = paired_ratio(ms, base) * 16**2 / c**2
            rows.append({"runtime": rt, "channels": c, "ms per pass": f"{median(ms):.3f}",
                         "time per MAC vs C = 16": f"{per_mac:.2f}x"})  # fmt: skip
    table = markdown_table(rows)
    print(table)
    setup = (
        f"Two 3x3 convolution + ReLU layers, C -> C -> C, batch 1, {args.size}x{args.size}, one "
        f"thread; {args.rounds} interleaved rounds of {args.passes} passes after one warm-up "
        "round; `InferenceRuntime` with each runtime named."
    )
    write_results("channel_alignment", "Time per MAC against the channel count", setup,
                  [table], READING)  # fmt: skip


READING = """
See the figures above; the frontier's reading (`frontier.md`) draws the consequences.
"""

if __name__ == "__main__":
    main()

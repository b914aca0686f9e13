"""Why the CPU search step is slow: depth-wise convolutions at the widths a partial-channel
supernet gives them, against the dense 3x3 convolution DiNTS's cells use, in one run.

For each input shape (batch 2, channels C/k of the ``paper`` space at base width 8 and k=4,
resolution of that scale at 64x64): the time of one forward and one backward pass of

* the three separable candidates' depth-wise convolutions apart (3x3, 5x5, 3x3 at rate 2),
* the same three merged into one depth-wise 5x5 convolution with three outputs per channel
  (what a fused mixed op would run),
* a dense 3x3 convolution at the same width,

with oneDNN (MKL-DNN) on and off, the fastest of ``--repeats`` passes, one thread. GMAC/s shows
how far from the CPU's dense throughput each runs.

    python benchmarks/depthwise_probe.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.nn.functional as F
from _common import markdown_table, write_results

SHAPES = [(2, 2, 64, 64), (2, 4, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8)]


def fastest(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float]:
    """(forward s, backward s): the fastest of ``repeats`` passes after 3 warm-up passes."""
    best = (float("inf"), float("inf"))
    for i in range(3 + repeats):
        t0 = time.perf_counter()
        y = fn()
        t1 = time.perf_counter()
        y.sum().backward()
        t2 = time.perf_counter()
        if i >= 3 and (t1 - t0) + (t2 - t1) < sum(best):
            best = (t1 - t0, t2 - t1)
    return best


def probe(shape: tuple[int, ...], mkldnn: bool, repeats: int) -> list[dict[str, Any]]:
    n, c, h, w = shape
    x = torch.randn(*shape, requires_grad=True)
    kernels = {k: torch.randn(c, 1, k, k, requires_grad=True) for k in (3, 5)}
    merged = torch.randn(3 * c, 1, 5, 5, requires_grad=True)
    dense = torch.randn(c, c, 3, 3, requires_grad=True)
    pixels = n * h * w

    def apart() -> torch.Tensor:
        a = F.conv2d(x, kernels[3], padding=1, groups=c)
        b = F.conv2d(x, kernels[5], padding=2, groups=c)
        d = F.conv2d(x, kernels[3], padding=2, dilation=2, groups=c)
        return a + b + d

    cases = {
        "3 depth-wise apart": (apart, pixels * c * (9 + 25 + 9)),
        "merged depth-wise 5x5 x3": (
            lambda: F.conv2d(x, merged, padding=2, groups=c),
            pixels * 3 * c * 25,
        ),
        "dense 3x3": (lambda: F.conv2d(x, dense, padding=1), pixels * c * c * 9),
    }
    rows = []
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        for name, (fn, macs) in cases.items():
            f, b = fastest(fn, repeats)
            rows.append(
                {
                    "input": "x".join(map(str, shape)),
                    "oneDNN": "on" if mkldnn else "off",
                    "convolution": name,
                    "forward us": f"{1e6 * f:.0f}",
                    "backward us": f"{1e6 * b:.0f}",
                    "GMAC/s (forward)": f"{macs / f / 1e9:.2f}",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = [r for s in SHAPES for mk in (True, False) for r in probe(s, mk, args.repeats)]
    table = markdown_table(rows)
    print(table)

    def total(name: str, key: str, mk: str = "on") -> float:
        return sum(float(r[key]) for r in rows if r["convolution"] == name and r["oneDNN"] == mk)

    def pair(mk: str) -> float:
        """Merged / apart time (forward + backward, summed over the shapes)."""
        apart = total("3 depth-wise apart", "forward us", mk) + total(
            "3 depth-wise apart", "backward us", mk
        )
        merged = total("merged depth-wise 5x5 x3", "forward us", mk) + total(
            "merged depth-wise 5x5 x3", "backward us", mk
        )
        return merged / apart

    depthwise = [float(r["GMAC/s (forward)"]) for r in rows if r["convolution"] != "dense 3x3"]
    dense = [float(r["GMAC/s (forward)"]) for r in rows if r["convolution"] == "dense 3x3"]
    reading = (
        f"Depth-wise convolutions at these widths run at {min(depthwise):.2f}-"
        f"{max(depthwise):.2f} GMAC/s forward, the dense 3x3 at {min(dense):.2f}-"
        f"{max(dense):.2f}. Merging the three separable candidates' depth-wise convolutions "
        f"into one takes {pair('on'):.2f}x their time apart with oneDNN and {pair('off'):.2f}x "
        "without (forward + backward, summed over the shapes): the depth-wise kernels' "
        "per-element cost, more than the number of calls, sets the CPU step time."
    )
    setup = (
        "One CPU thread; batch 2; the widths C/k = 2, 4, 8, 16 that the k=4 supernet's "
        "candidates see at base width 8 (scales 0-3 at 64x64). Fastest of the passes."
    )
    path = write_results("depthwise_probe", "Depth-wise convolution probe", setup, [table], reading)
    print(reading)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""CPU inference under other memory allocators: glibc's ``malloc`` against tcmalloc and jemalloc
preloaded (``LD_PRELOAD``), for the networks of ``benchmarks/final_network.py``.

glibc maps every allocation above its mmap threshold (at most 32 MiB) afresh and returns it on
``free``, so each large activation tensor costs page faults again; a caching allocator keeps
the pages. The allocator is chosen when a process starts, so each (allocator, round) runs in a
fresh subprocess (``--worker``), in interleaved rounds with the order rotating; within a round
all allocators time the same shapes back to back. Each worker times MS-NAS(3) and the U-Net
(as ``final_network.py`` builds them) in the ``eager`` inference runtime's CPU form
(BatchNorm folded, channels-last) on one thread, after three
warm-up passes per shape; figures are medians over the rounds, ratios the median of per-round
ratios against glibc. Allocators whose library is not installed are left out (Debian:
``apt-get install libtcmalloc-minimal4 libjemalloc2``).

    python benchmarks/allocator.py [--sizes 128 256] [--batches 1 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import fmt_ratio, markdown_table, median, paired_ratio, write_results

#: Allocators to preload, by name: candidate library paths (the first that exists is used).
LIBRARIES = {
    "tcmalloc": (
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    ),
    "jemalloc": (
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    ),
}


#: Untimed passes per shape first (glibc's thresholds adapt to the sizes it has freed).
WARMUP = 3


def _log(msg: str) -> None:
    print(msg, flush=True)


def worker(shapes: list[tuple[int, int]], calls: int, width: int, unet_base: int) -> None:
    """Time both networks at each ``(size, batch)``; print one JSON line of ms per image."""
    from final_network import networks

    from msnas_graph.backends.torch.fuse import fuse_for_inference

    torch.set_num_threads(1)
    _, nets = networks(0, width, unet_base)
    out: dict[str, float] = {}
    for name, net in nets.items():
        model = fuse_for_inference(net.eval(), channels_last=True)
        for size, batch in shapes:
            x = torch.randn(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                for _ in range(WARMUP):
                    model(x)
                t0 = time.perf_counter()
                for _ in range(calls):
                    model(x)
                dt = time.perf_counter() - t0
            out[f"{name} {size} {batch}"] = 1000.0 * dt / (calls * batch)
    print(json.dumps(out), flush=True)


def _installed() -> dict[str, str | None]:
    found: dict[str, str | None] = {"glibc": None}
    for name, paths in LIBRARIES.items():
        path = next((p for p in paths if Path(p).exists()), None)
        if path is not None:
            found[name] = path
        else:
            _log(f"  {name}: not installed, left out")
    return found


def _run_worker(args: argparse.Namespace, library: str | None) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if library is not None:
        env["LD_PRELOAD"] = library
    cmd = [sys.executable, __file__, "--worker", "--calls", str(args.calls)]
    cmd += ["--sizes", *map(str, args.sizes), "--batches", *map(str, args.batches)]
    cmd += ["--width", str(args.width), "--unet-base", str(args.unet_base)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"allocator worker failed ({library or 'glibc'}):\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--calls", type=int, default=10, help="timed passes per shape")
    parser.add_argument("--width", type=int, default=24, help="MS-NAS base width (default 24)")
    parser.add_argument("--unet-base", type=int, default=16)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="results file (default results/allocator.md)")
    args = parser.parse_args()
    shapes = [(s, b) for s in args.sizes for b in args.batches]
    torch.set_num_threads(1)
    if args.worker:
        worker(shapes, args.calls, args.width, args.unet_base)
        return
    t_start = time.perf_counter()
    libraries = _installed()
    names = list(libraries)
    times: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(_run_worker(args, libraries[name]))
            _log(f"  round {r + 1}/{args.rounds} {name} done")
    keys = list(times["glibc"][0])
    rows: list[dict[str, Any]] = []
    for key in keys:
        network, size, batch = key.rsplit(" ", 2)
        base = [t[key] for t in times["glibc"]]
        for name in names:
            ms = [t[key] for t in times[name]]
            rows.append(
                {
                    "input": f"{size}x{size}", "batch": batch, "network": network,
                    "allocator": name, "ms/image": f"{median(ms):.2f}",
                    "time vs glibc": fmt_ratio(paired_ratio(ms, base)),
                }
            )  # fmt: skip
    table = markdown_table(rows)
    _log("\n" + table)
    elapsed = (time.perf_counter() - t_start) / 60
    setup = (
        f"CPU, one thread, `torch.inference_mode`, the `eager` runtime's CPU model "
        f"(BatchNorm folded, channels-last). Networks as in `final_network.py`: MS-NAS(3) at "
        f"base width {args.width}, U-Net at base {args.unet_base}. Allocators: "
        + ", ".join(f"{n} ({p or 'the default malloc'})" for n, p in libraries.items())
        + f". {args.rounds} interleaved rounds, one fresh process per allocator and round, "
        f"{args.calls} timed passes per shape after {WARMUP} untimed ones. "
        f"Whole run: {elapsed:.1f} min."
    )
    ratios = {
        name: [float(r["time vs glibc"].rstrip("x")) for r in rows if r["allocator"] == name]
        for name in names
        if name != "glibc"
    }
    spans = [f"{n} {min(v):.2f}x-{max(v):.2f}x" for n, v in ratios.items() if v]
    reading = (
        "Time per image against glibc's malloc in the same round (lower is faster), lowest and "
        f"highest over networks and shapes: {'; '.join(spans) or 'no other allocator installed'}."
        " Large activations (big inputs, big batches) gain most: glibc maps each tensor above "
        "its threshold afresh, and every first touch of a page is a fault."
    )
    path = write_results(
        "allocator",
        "CPU inference under other allocators",
        setup,
        ["## Per network, shape and allocator\n\n" + table],
        reading,
        path=args.out,
    )
    _log(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Where ONNX Runtime spends the final network's time: per operator type, MS-NAS(3) against the
U-Net, one CPU thread, in one run.

Both networks as ``final_network.py`` builds them (MS-NAS(3) of a random ``hc18-cpu`` state at
width 24, the U-Net at base 16, depth 4; BatchNorm folded, statistics randomised), MS-NAS also
with its concatenations kept (``split_concat=False``), exported with ``export_onnx`` and run
by an ``InferenceSession`` with profiling on; the kernel times of
``--runs`` passes are summed per operator type. The last line splits the time-per-MAC ratio
into the convolutions' and the rest's.

    python benchmarks/ort_profile.py [--size 128] [--runs 30]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from _common import markdown_table, write_results
from final_network import MSNAS, UNET, _randomise_bn, msnas_arch

from msnas_graph.backends.torch.cost import count_macs_flops
from msnas_graph.backends.torch.export import export_onnx
from msnas_graph.backends.torch.fuse import fuse_for_inference
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.nn.unet import UNet

CONCAT = "MS-NAS(3), concat kept"


def profile(
    net: torch.nn.Module, size: int, runs: int, tmp: Path, split: bool
) -> dict[str, tuple[float, int]]:
    """Operator type -> (microseconds per pass, nodes)."""
    import onnxruntime as ort

    path = tmp / "model.onnx"
    fused = fuse_for_inference(net, split_concat=split)
    export_onnx(fused, path, (1, 1, size, size), verify=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / "profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: np.random.randn(1, 1, size, size).astype(np.float32)}
    for _ in range(5):
        session.run(None, x)
    session.end_profiling()  # drop the warm-up passes
    options.profile_file_prefix = str(tmp / "measured")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, x)
    events = json.loads(Path(session.end_profiling()).read_text())
    time: collections.Counter[str] = collections.Counter()
    nodes: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            time[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    return {op: (t / runs, nodes[op] // runs) for op, t in time.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    msnas = build_network(msnas_arch(0, 24))
    nets = {MSNAS: msnas, CONCAT: msnas, UNET: UNet(1, 2, base_channels=16, depth=4)}
    for net in (msnas, nets[UNET]):
        _randomise_bn(net)
    shape = (1, 1, args.size, args.size)
    macs = {n: count_macs_flops(m, shape)[0] for n, m in nets.items() if n != CONCAT}
    prof = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (n, m) in enumerate(nets.items()):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            prof[n] = profile(m, args.size, args.runs, folder, split=n == MSNAS)
    rows = []
    totals = {n: sum(t for t, _ in p.values()) for n, p in prof.items()}
    for n, p in prof.items():
        for op, (t, k) in sorted(p.items(), key=lambda kv: -kv[1][0]):
            rows.append({"network": n, "operator": op, "nodes": k, "us per pass": f"{t:.0f}",
                         "share": f"{100 * t / totals[n]:.1f} %"})  # fmt: skip
    table = markdown_table(rows)
    print(table)
    mac_ratio = macs[UNET] / macs[MSNAS]
    conv = {n: prof[n].get("Conv", (0.0, 0))[0] for n in nets}
    whole = (totals[UNET] / totals[MSNAS]) / mac_ratio
    conv_only = (conv[UNET] / conv[MSNAS]) / mac_ratio
    reading = (
        f"At {args.size}x{args.size}, batch 1: MS-NAS(3) as exported (concatenations feeding "
        f"a convolution split into sums) {totals[MSNAS] / 1e3:.1f} ms, "
        f"{totals[MSNAS] / totals[CONCAT]:.2f}x the time with the concatenations kept; the U-Net "
        f"{totals[UNET] / 1e3:.1f} ms at {mac_ratio:.2f}x its MACs: a time-per-MAC ratio of "
        f"{whole:.2f}x (target 0.8). The convolutions alone give {conv_only:.2f}x; the other "
        f"operators take {100 * (1 - conv[MSNAS] / totals[MSNAS]):.0f} % of MS-NAS's time "
        f"against {100 * (1 - conv[UNET] / totals[UNET]):.0f} % of the U-Net's."
    )
    print(reading)
    setup = (
        "ONNX Runtime CPU provider, one thread, profiling on; kernel times summed per "
        f"operator type over {args.runs} passes after 5 warm-up passes in another session."
    )
    path = write_results("ort_profile", "ONNX Runtime profile", setup, [table], reading)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

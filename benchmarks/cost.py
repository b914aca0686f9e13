"""Cost benchmark: parameters, MACs and FLOPs of decoded MS-NAS networks against U-Nets.

For MS-NAS(3), (4) and (5) (``N_l`` = 3, 4, 5 decoded paths) of the ``paper`` space it builds the
final network and counts, at one ``1 x in_channels x 256 x 256`` input:

* trainable parameters (``cost.count_parameters``),
* MACs and FLOPs of one forward pass (``cost.count_macs_flops``: ``torch.utils.flop_counter``
  on a ``meta``-device copy; convolutions and matmuls only; MACs = FLOPs / 2, and the paper's
  "FLOPs" are MACs),

next to our U-Net baseline (``UNet()``, 13.2 M parameters / 30.6 G MACs) and, where MONAI is
installed (the ``bench`` extra), MONAI's ``UNet`` in its tutorial configuration and at our U-Net's
widths. The architectures come from ``--state PATH`` (a searched ``state.json``) or, by default,
from ``SearchState.random(paper, seed)`` for several seeds: then the figures describe *random*
architectures of the space (median and range over the seeds), not a searched result.

    python benchmarks/cost.py [--state runs/search/state.json] [--seeds 8] [--size 256]
        [--channels 64] [--score relative|paper] [--out results/cost_c64.md]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

from _common import fmt_ratio, markdown_table, median, write_results
from torch import nn

from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.decode import decode
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

#: The paper's Table (256x256): params (M) and "GFLOPs" (= G MACs).
PAPER = {
    "MS-NAS(3)": (10.52, 21.33),
    "MS-NAS(4)": (10.52, 21.33),
    "MS-NAS(5)": (11.51, 23.31),
    "U-Net": (13.39, 31.01),
}
TARGET_MS3 = 0.69  # paper: 21.33 / 31.01 = 0.688


def _monai_unets() -> dict[str, nn.Module]:
    try:
        from monai.networks.nets import UNet as MonaiUNet
    except ImportError:
        return {}

    def unet(base: int, res_units: int) -> nn.Module:
        """A 2D, 1 -> 2 channel, five-level MONAI UNet of widths ``base * 2**i``."""
        channels = tuple(base * 2**i for i in range(5))
        return MonaiUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            channels=channels,
            strides=(2, 2, 2, 2),
            num_res_units=res_units,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "MONAI UNet (tutorial: 16-256, 2 res units)": unet(16, 2),
            "MONAI UNet (56-896 like ours, no res units)": unet(56, 0),
        }


def _range(xs: list[float], fmt: str = "{:.2f}") -> str:
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(median(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, help="a searched state.json (default: random states)")
    parser.add_argument("--seeds", type=int, default=8, help="random states 0..N-1 (default 8)")
    parser.add_argument("--paths", type=int, nargs="+", default=[3, 4, 5], help="N_l values")
    parser.add_argument("--size", type=int, default=256, help="input side (default 256)")
    parser.add_argument(
        "--channels", type=int, help="build the decoded networks at this base width (widen)"
    )
    parser.add_argument(
        "--score",
        choices=("relative", "paper"),
        default="relative",
        help="path score used to decode (default relative, as `decode`)",
    )
    parser.add_argument("--out", type=Path, help="results file (default results/cost.md)")
    args = parser.parse_args()

    t_start = time.perf_counter()
    if args.state is not None:
        states = {f"state {args.state.name}": SearchState.load(args.state)}
    else:
        paper = SearchSpace.preset("paper")
        states = {f"seed {s}": SearchState.random(paper, seed=s) for s in range(args.seeds)}
    space = next(iter(states.values())).space
    shape = (1, space.in_channels, args.size, args.size)

    unet = UNet(in_channels=space.in_channels, num_classes=space.num_classes)
    u_params = count_parameters(unet)
    u_macs, u_flops = count_macs_flops(unet, shape)
    print(f"U-Net: {u_params / 1e6:.2f} M params, {u_macs / 1e9:.2f} G MACs", flush=True)

    per_arch: list[dict[str, Any]] = []
    figures: dict[int, dict[str, list[float]]] = {n: {} for n in args.paths}
    for label, state in states.items():
        for n in args.paths:
            arch = decode(state, paths=n, score=args.score)
            if args.channels is not None:
                arch = arch.widen(args.channels)
            net = build_network(arch)
            params = count_parameters(net)
            macs, flops = count_macs_flops(net, shape)
            fig = figures[n]
            for key, value in (
                ("params", params / 1e6),
                ("macs", macs / 1e9),
                ("flops", flops / 1e9),
                ("ratio", macs / u_macs),
                ("edges", len(arch.edges)),
                ("nodes", len(arch.nodes)),
            ):
                fig.setdefault(key, []).append(value)
            row = {
                "state": label,
                "N_l": n,
                "nodes": len(arch.nodes),
                "edges": len(arch.edges),
                "cell edges": sum(e.kind != "skip" for e in arch.edges),
                "cell edges into scale 3-4": sum(
                    e.kind != "skip" and e.dst.scale >= 3 for e in arch.edges
                ),
                "deepest scale": max(n.scale for n in arch.nodes),
                "fusion nodes": len(arch.fusion_nodes),
                "params (M)": f"{params / 1e6:.2f}",
                "MACs (G)": f"{macs / 1e9:.2f}",
                "MACs / U-Net": fmt_ratio(macs / u_macs),
            }
            per_arch.append(row)
            print(row, flush=True)

    searched = args.state is not None
    rows: list[dict[str, Any]] = []
    for n in args.paths:
        f = figures[n]
        name = f"MS-NAS({n})"
        ref = PAPER.get(name)
        rows.append(
            {
                "model": name + ("" if searched else f", random x{len(states)}"),
                "params (M)": _range(f["params"]),
                "MACs (G)": _range(f["macs"]),
                "FLOPs (G)": _range(f["flops"]),
                "MACs / U-Net MACs": _range(f["ratio"], "{:.2f}x"),
                "paper (M / G MACs)": f"{ref[0]} / {ref[1]}" if ref else "-",
            }
        )
    rows.append(
        {
            "model": "U-Net (ours, `UNet()`: 56-896, bilinear)",
            "params (M)": f"{u_params / 1e6:.2f}",
            "MACs (G)": f"{u_macs / 1e9:.2f}",
            "FLOPs (G)": f"{u_flops / 1e9:.2f}",
            "MACs / U-Net MACs": "1.00x",
            "paper (M / G MACs)": "13.39 / 31.01",
        }
    )
    monai_figures: dict[str, tuple[float, float]] = {}
    for name, model in _monai_unets().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                macs, flops = count_macs_flops(model, shape)
            except Exception as exc:  # report and go on: MONAI is an optional comparison
                print(f"{name}: counting failed ({exc})", flush=True)
                continue
        params = count_parameters(model)
        monai_figures[name] = (params / 1e6, macs / 1e9)
        rows.append(
            {
                "model": name,
                "params (M)": f"{params / 1e6:.2f}",
                "MACs (G)": f"{macs / 1e9:.2f}",
                "FLOPs (G)": f"{flops / 1e9:.2f}",
                "MACs / U-Net MACs": fmt_ratio(macs / u_macs),
                "paper (M / G MACs)": "-",
            }
        )
    elapsed = time.perf_counter() - t_start

    summary = markdown_table(rows)
    details = markdown_table(per_arch)
    print("\n" + summary + "\n")

    ms3 = figures.get(3, {}).get("ratio")
    if searched:
        source = (
            f"The architectures are decoded from the searched state `{args.state}` (space "
            f"`{space.name}`)."
        )
    else:
        source = (
            f"**These are random-architecture figures**: no searched state was given, so the "
            f"architectures are decoded from `SearchState.random(paper, seed)` for seeds "
            f"0..{args.seeds - 1} (median [min-max] over the seeds). They describe what the space "
            f"yields by chance, not what a search finds; rerun with `--state` on a searched "
            f"`state.json` for the figures to compare with the paper."
        )
    setup = (
        f"{source} Each MS-NAS(N_l) network keeps the union of the N_l best input->output paths "
        f"(two-step decoding), built by `build_network` with the space's `{space.fusion}` fusion "
        f"(base width {args.channels or space.channels}, L={space.layers}, S={space.scales}, "
        f"N={space.blocks}; path score `{args.score}`). "
        f"Counted at one {'x'.join(map(str, shape))} input with `cost.count_macs_flops` "
        "(`torch.utils.flop_counter` on a meta-device copy: convolutions and matmuls; "
        "element-wise ops, BN, pooling and interpolation are not counted; MACs = FLOPs/2; the "
        "paper's 'GFLOPs' are G MACs). The paper column is the paper's own table at 256x256. "
        f"Whole run: {elapsed:.1f} s."
    )
    if ms3:
        m = median(ms3)
        verdict = "below" if m <= TARGET_MS3 else "above"
        reading = (
            f"MS-NAS(3) costs {fmt_ratio(m)} the U-Net's MACs (median; range "
            f"{fmt_ratio(min(ms3))}-{fmt_ratio(max(ms3))}), {verdict} the {TARGET_MS3:.2f}x "
            "target that the paper's searched MS-NAS(3) reaches (21.33 / 31.01 = 0.69x). "
        )
    else:
        reading = ""
    if not searched:
        reading += (
            "Random states are no evidence for or against that target: they say what the space "
            "yields by chance. How to read the spread (per-state table): a cell's MACs hardly "
            "depend on its scale (channels double and the side halves at each scale, so "
            "C^2 * H * W stays put) while its parameters grow 4x per scale, so MACs follow the "
            "number of cell edges and parameters follow how many of them sit at the coarse, "
            "wide scales 3-4. "
        )
    p_ref, m_ref = PAPER["U-Net"]
    reading += (
        f"Our U-Net baseline gives {u_params / 1e6:.2f} M / {u_macs / 1e9:.2f} G MACs against the "
        f"paper's {p_ref} M / {m_ref} G ({100 * (u_params / 1e6 / p_ref - 1):+.1f} % / "
        f"{100 * (u_macs / 1e9 / m_ref - 1):+.1f} %). "
    )
    if monai_figures:
        reading += (
            "MONAI's UNet: "
            + "; ".join(f"{n}: {p:.2f} M / {m:.2f} G" for n, (p, m) in monai_figures.items())
            + ". MONAI's UNet is another design: its first convolution already has stride 2 (no "
            "convolution runs at full resolution until the last transposed convolution) and, "
            "without residual units, each level has one convolution instead of two; so even "
            "at our widths it costs a fraction of the classic U-Net's MACs and is no "
            "like-for-like baseline for the paper's figures (our `UNet()` is)."
        )
    else:
        reading += "MONAI is not installed here: no MONAI UNet rows."
    path = write_results(
        "cost",
        "Cost benchmark: decoded MS-NAS networks against U-Net (params, MACs, FLOPs)",
        setup,
        [
            "## Summary\n\n" + summary,
            "## Per state and N_l\n\n" + details,
        ],
        reading,
        path=args.out,
    )
    print(reading)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Section (d) of ``gpu_check.py``: the fused mixed ops against the one-by-one reference.

The supernet computes a cell's mixed ops as one fused computation
(``msnas_graph.backends.torch.nn.fused``; ``Supernet.fuse_candidates``, the default) or one
candidate operation at a time (``fuse_candidates=False``, the reference). On the CPU the fused
path is measured by ``search_step.py``; this section settles which one the GPU should default
to:

* **equal**: two copies of one ``paper`` supernet (same weights), one fused, one one-by-one, run
  a forward and backward pass on one batch in float64 and in float32 with TF32 off (restored
  afterwards); the
  table gives the output's and every gradient's largest relative error
  (``||fused - reference|| / ||reference||`` per tensor, the reference norm at least
  :data:`FLOOR` of its group's largest; weights, architecture parameters and BatchNorm running
  statistics apart) against the tolerance :data:`TOLERANCE`;
* **time and memory**: weight and architecture steps of both (``search_step.Stepper``), in
  interleaved rounds, the median of the per-round ratios fused / one-by-one, and each step's
  CUDA peak above its start. A batch that runs out of memory for either is halved for both, so
  the ratio is taken at one setting.

    python benchmarks/gpu_check.py --only d           # on the GPU machine
    python benchmarks/gpu_check.py --only d --smoke   # here, on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from _common import fmt_bytes, fmt_ratio
from search_step import K4, K4_PLAIN, NUM_CLASSES, Case, Stepper, paper_space

from msnas_graph.backends.torch.losses import DiceCELoss
from msnas_graph.backends.torch.nn.supernet import build_supernet

#: Largest relative error (per tensor, in norm) for "equal", per dtype: float64 shows the
#: two paths compute the same function; float32 adds rounding that BatchNorm amplifies where a
#: coarse scale has few pixels (a whole supernet, not one op as the unit tests check).
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-2}
#: A tensor's error is taken relative to at least this share of its group's largest norm.
FLOOR = 1e-3

SECTION = "(d) fused mixed ops against one by one"


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """TF32 off for the comparison (this benchmark's own process), restored on exit."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _worst(pairs: list[tuple[str, torch.Tensor, torch.Tensor]]) -> tuple[float, str]:
    """The largest ``||a - b|| / max(||b||, FLOOR * largest ||b||)`` over named pairs, and whose.

    Tensors that are zero up to rounding (the gradient of a convolution followed by a
    non-affine BatchNorm is 0 in exact arithmetic, ~1e-11 in float) are measured against the
    group's scale instead of their own norm."""
    norms = [(name, float((a.double() - b.double()).norm()), float(b.double().norm()))
             for name, a, b in pairs]  # fmt: skip
    scale = max((ref for _, _, ref in norms), default=0.0)
    worst = (0.0, "-")
    for name, diff, ref in norms:
        err = diff / max(ref, FLOOR * scale, 1e-30)
        if err >= worst[0]:
            worst = (err, name)
    return worst


def _forward_backward(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = net(x)
    DiceCELoss(NUM_CLASSES)(logits, y).backward()
    return logits.detach()


def compare(args: argparse.Namespace, batch: int, dtype: torch.dtype) -> dict[str, Any]:
    """The largest relative errors of the fused path against one by one, one batch."""
    device = torch.device(args.device)
    space = paper_space(args.channels, 4, args.size)
    fused = build_supernet(space).to(device, dtype).train()
    plain = copy.deepcopy(fused)
    fused.fuse_candidates, plain.fuse_candidates = True, False
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, args.size, args.size, generator=gen).to(device, dtype)
    y = torch.randint(0, NUM_CLASSES, (batch, args.size, args.size), generator=gen).to(device)
    with _no_tf32():
        out_f = _forward_backward(fused, x, y)
        out_p = _forward_backward(plain, x, y)
    arch = {id(p) for p in plain.arch_parameters()}
    grads: dict[bool, list[tuple[str, torch.Tensor, torch.Tensor]]] = {True: [], False: []}
    for (name, pf), (_, pp) in zip(fused.named_parameters(), plain.named_parameters(), strict=True):
        if pp.grad is not None and pf.grad is not None:
            grads[id(pp) in arch].append((name, pf.grad, pp.grad))
    buffers = zip(fused.named_buffers(), plain.named_buffers(), strict=True)
    stats = [(name, bf, bp) for (name, bf), (_, bp) in buffers if bf.is_floating_point()]
    worst = {
        "output": _worst([("logits", out_f, out_p)]),
        "weights": _worst(grads[False]),
        "architecture": _worst(grads[True]),
        "stats": _worst(stats),
    }
    errors = [err for err, _ in worst.values()]
    tolerance = TOLERANCE[dtype]
    return {
        "batch": batch,
        "dtype": str(dtype).replace("torch.", ""),
        "output rel. error": f"{errors[0]:.1e}",
        "weight grads, worst rel. error": f"{errors[1]:.1e} ({worst['weights'][1]})",
        "arch grads, worst rel. error": f"{errors[2]:.1e} ({worst['architecture'][1]})",
        "running stats, worst rel. error": f"{errors[3]:.1e} ({worst['stats'][1]})",
        "result": f"equal within {tolerance:g}"
        if max(errors) <= tolerance
        else f"DIFFERENT (above {tolerance:g})",
    }


def time_both(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """Interleaved weight and architecture steps of the fused and one-by-one supernets."""
    space = paper_space(args.channels, 4, args.size)
    net = build_supernet(space)
    steppers = {}
    for name, fuse in ((K4, True), (K4_PLAIN, False)):
        model = copy.deepcopy(net)
        model.fuse_candidates = fuse
        case = Case(name, model, model.weight_parameters(), model.arch_parameters())
        steppers[name] = Stepper(case, batch, args.size, args.device)
    del net
    for _ in range(args.warmup):
        for s in steppers.values():
            s.round()
    ratios: dict[str, list[float]] = {"weight_s": [], "arch_s": []}
    times: dict[str, dict[str, list[float]]] = {n: {"weight_s": [], "arch_s": []} for n in steppers}
    for r in range(args.repeats):
        order = list(steppers) if r % 2 == 0 else list(reversed(steppers))
        got = {name: steppers[name].round() for name in order}
        for key in ratios:
            ratios[key].append(got[K4][key] / got[K4_PLAIN][key])
            for name in steppers:
                times[name][key].append(got[name][key])
    row: dict[str, Any] = {"batch": batch}
    for name, s in steppers.items():
        label = "fused" if name == K4 else "one by one"
        row[f"{label} weight step ms"] = f"{1e3 * statistics.median(times[name]['weight_s']):.1f}"
        row[f"{label} arch step ms"] = f"{1e3 * statistics.median(times[name]['arch_s']):.1f}"
        if s.device.type == "cuda":
            row[f"{label} arch-step peak"] = fmt_bytes(s.cuda_peak(s.arch_step))
    row["fused / one by one, weight step"] = fmt_ratio(statistics.median(ratios["weight_s"]))
    row["fused / one by one, arch step"] = fmt_ratio(statistics.median(ratios["arch_s"]))
    return row


def section_d(args: argparse.Namespace, report: Any) -> None:
    """Run (d) into ``report`` (``gpu_check.Report``), halving the batch on out-of-memory."""
    from gpu_check import run_with_fallback

    checks = [
        ("equal, float64", partial(compare, dtype=torch.float64)),
        ("equal, float32", partial(compare, dtype=torch.float32)),
        ("time and memory", time_both),
    ]
    for label, run in checks:
        row = run_with_fallback(partial(run, args), args.batch, label, report, SECTION)
        if row is not None:
            report.add(SECTION, {"check": label, **row})
            if label == "time and memory":
                report.note(
                    f"(d) fused / one by one at batch {row['batch']}: weight step "
                    f"{row['fused / one by one, weight step']}, architecture step "
                    f"{row['fused / one by one, arch step']} (below 1x: the fused path is "
                    "faster; it is the default unless this says otherwise)."
                )

"""Keep or remove (issue 17 item 2): what the optimisations of the search path are worth.

One ``paper`` supernet (k=4) runs weight and architecture steps (``search_step.Stepper``) under
each variant below, in interleaved rounds in one process (the order rotates every round), on
one CPU thread; each variant's time is the median over rounds of its ratio to the baseline's
time in the same round. The rule: an optimisation stays only if it pays at least 1.2x.

* ``baseline``: the code as it is;
* ``no oneDNN switch``: the fused depth-wise convolution without ``_depthwise_kernel``, the
  context that turned ``torch.backends.mkldnn.enabled`` off around it (a global flag a user's
  code would see). Only meaningful on a tree that still has the switch: once it is removed,
  this variant is the baseline (the script says so);
* ``plan cached``: the fused plan (``plan_candidates`` and its signature) built once per list
  of mixed ops and reused, without any check that the modules changed: an upper bound for any
  cache "per module structure", which would also have to detect changes;
* ``3x3 kernels unpadded (bound)``: the fused depth-wise kernels cut to their central 3x3, so
  every convolution costs 9 taps instead of 25 (27 tap-MACs per channel-pixel for the three
  convolutions instead of 75; an exact split by footprint would need 9 + 25 + 9 = 43): the
  results are wrong, the time is a lower bound of what running the 3x3 kernels unpadded could
  reach;
* ``no recomputation``: the supernet storing every activation (``recompute=False`` before the
  memory modes; ``memory="fast"``, the baseline, after them);
* ``pieces recomputed``: the cells' cheap pieces (resample and preprocess, concatenation,
  projection, the ``beta`` product, the fused candidates' ReLU, depth-wise convolution and
  pooling) recomputed in the backward pass (the default ``recompute=True`` before the memory
  modes, the baseline there; a mode that was removed after them, ``keep_or_remove.md``);
* ``pieces on torch.utils.checkpoint``: the cheap pieces that ``recompute`` recomputes (resample
  and preprocess, concatenation, projection and the ``beta`` product) under non-reentrant
  :func:`torch.utils.checkpoint.checkpoint` instead of the custom ``_RecomputePiece`` Function
  (only meaningful on a tree that still has it; elsewhere it changes nothing);
* ``whole cells on torch.utils.checkpoint``: every cell recomputed whole in the backward pass
  (the supernet's ``checkpoint`` option; ``memory="low"`` after the memory modes).

With ``--memory`` each variant also runs in a fresh subprocess (glibc's mmap threshold pinned
to 64 KiB so that RSS follows live memory, as ``search_step.py`` does): the peak RSS above the
RSS before the step (``VmHWM`` reset), for a weight step and an architecture step after one
warm-up of each.

    python benchmarks/keep_or_remove.py [--channels 32] [--size 64] [--batch 2] [--rounds 5]
        [--only VARIANT ...] [--memory]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import fmt_bytes, fmt_ratio, markdown_table, run_child, write_results
from search_step import K4, Stepper, build_case, paper_space, step_peak_rss

from msnas_graph.backends.torch.nn import cells, fused, supernet


@contextlib.contextmanager
def _set(target: Any, **attributes: Any) -> Iterator[None]:
    """Set attributes of ``target`` (a module of this process, the benchmark's own supernet)
    for the duration."""
    saved = {name: getattr(target, name) for name in attributes}
    for name, value in attributes.items():
        setattr(target, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


def _patched(**attributes: Any) -> contextlib.AbstractContextManager[None]:
    return _set(fused, **attributes)


Variant = Callable[[Any], contextlib.AbstractContextManager[None]]


def _baseline(_model: Any = None) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _cells_recompute(model: Any, value: bool) -> contextlib.AbstractContextManager[None]:
    """The cells' cheap pieces recomputed (``value``) or stored, whatever the tree's default."""
    if hasattr(model, "recompute"):  # the tree before the memory modes
        return _set(model, recompute=value)
    forward_cells = cells.forward_cells

    def forced(*args: Any, **kwargs: Any) -> list[torch.Tensor]:
        kwargs["recompute"] = value
        return forward_cells(*args[:5], memo=args[6] if len(args) > 6 else None, **kwargs)

    stack = contextlib.ExitStack()
    stack.enter_context(_set(cells, forward_cells=forced))
    stack.enter_context(_set(supernet, forward_cells=forced))
    return stack


def _no_recompute(model: Any) -> contextlib.AbstractContextManager[None]:
    return _cells_recompute(model, False)


def _pieces_recomputed(model: Any) -> contextlib.AbstractContextManager[None]:
    return _cells_recompute(model, True)


def _pieces_checkpointed(_model: Any) -> contextlib.AbstractContextManager[None]:
    if not hasattr(cells, "_RecomputePiece"):
        return contextlib.nullcontext()  # the pieces run on torch.utils.checkpoint already

    def on_checkpoint(fn: Callable[..., torch.Tensor], module: Any, *args: Any) -> torch.Tensor:
        return cells.recompute_pieces(fn, module, *args)

    return _set(cells, recompute_piece=on_checkpoint)


def _whole_cells(model: Any) -> contextlib.AbstractContextManager[None]:
    if hasattr(model, "checkpoint"):  # the tree before the memory modes
        return _set(model, checkpoint=True)
    return _set(model, memory="low")


def _no_switch(_model: Any = None) -> contextlib.AbstractContextManager[None]:
    if not hasattr(fused, "_depthwise_kernel"):
        return contextlib.nullcontext()
    return _patched(_depthwise_kernel=lambda _x: contextlib.nullcontext())


def _plan_cached(_model: Any = None) -> contextlib.AbstractContextManager[None]:
    plans: dict[tuple[int, ...], Any] = {}
    signatures: dict[int, Any] = {}
    plan, signature = fused.plan_candidates, fused._signature

    def cached_plan(mixed: Sequence[torch.nn.Module]) -> Any:
        key = tuple(id(m) for m in mixed)
        if key not in plans:
            plans[key] = plan(mixed)
        return plans[key]

    def cached_signature(p: Any) -> Any:
        if id(p) not in signatures:
            signatures[id(p)] = signature(p)
        return signatures[id(p)]

    return _patched(plan_candidates=cached_plan, _signature=cached_signature)


def _unpadded_bound(_model: Any = None) -> contextlib.AbstractContextManager[None]:
    kernels = fused._fused_kernels

    def central(plans: Any, footprint: int, dims: int) -> torch.Tensor:
        k = kernels(plans, footprint, dims)
        if footprint <= 3:
            return k
        lo = (footprint - 3) // 2
        return k[(..., *(slice(lo, lo + 3) for _ in range(dims)))]

    return _patched(_fused_kernels=central)


def planning_share(stepper: Stepper, rounds: int = 2) -> dict[str, str]:
    """Time spent building fused plans (``plan_candidates`` and ``_signature``) per step, and
    its share of the step: the most that caching the plan could save."""
    spent = [0.0]

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[0] += time.perf_counter() - t0

        return wrapper

    total = 0.0
    with _patched(plan_candidates=timed(fused.plan_candidates), _signature=timed(fused._signature)):
        for _ in range(rounds):
            got = stepper.round()
            total += got["weight_s"] + got["arch_s"]
    return {
        "planning s per step": f"{spent[0] / (2 * rounds):.4f}",
        "step s": f"{total / (2 * rounds):.3f}",
        "share": f"{100 * spent[0] / total:.2f} %",
        "most a cache could pay": fmt_ratio(total / (total - spent[0])),
    }


VARIANTS: dict[str, Variant] = {
    "baseline": _baseline,
    "no oneDNN switch": _no_switch,
    "plan cached": _plan_cached,
    "3x3 kernels unpadded (bound)": _unpadded_bound,
    "no recomputation": _no_recompute,
    "pieces recomputed": _pieces_recomputed,
    "pieces on torch.utils.checkpoint": _pieces_checkpointed,
    "whole cells on torch.utils.checkpoint": _whole_cells,
}


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside a fresh process: the peak RSS above the pre-step RSS of a weight step and of an
    architecture step of one variant, after one warm-up of each."""
    torch.set_num_threads(1)
    space = paper_space(spec["channels"], 4, spec["size"])
    stepper = Stepper(build_case(K4, spec["channels"], spec["size"], space=space),
                      spec["batch"], spec["size"])  # fmt: skip
    out: dict[str, Any] = {}
    with VARIANTS[spec["variant"]](stepper.model):
        stepper.weight_step()
        stepper.arch_step()
        for key, step in (("weight", stepper.weight_step), ("arch", stepper.arch_step)):
            out[key] = step_peak_rss(step)
    return out


def measure_memory(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`memory_child` of ``variant`` in a fresh interpreter."""
    spec = {"variant": variant, "channels": args.channels, "size": args.size, "batch": args.batch}
    return run_child(__file__, spec, variant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS)[1:], default=None)
    parser.add_argument("--memory", action="store_true", help="peak RSS per variant too")
    parser.add_argument("--no-share", action="store_true", help="skip the plan-building share")
    parser.add_argument("--out", default=None, help="results file (default: none, print only)")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # this benchmark's own process: one thread, as the others
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))), flush=True)
        return
    names = ["baseline", *(args.only or list(VARIANTS)[1:])]
    space = paper_space(args.channels, 4, args.size)
    stepper = Stepper(build_case(K4, args.channels, args.size, space=space), args.batch, args.size)
    t0 = time.perf_counter()
    memory = {name: measure_memory(name, args) for name in names} if args.memory else {}
    for name in names:  # warm-up: every variant once
        with VARIANTS[name](stepper.model):
            stepper.round()
    times: dict[str, dict[str, list[float]]] = {n: {"weight_s": [], "arch_s": []} for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            with VARIANTS[name](stepper.model):
                got = stepper.round()
            for key, value in got.items():
                times[name][key].append(value)
        print(f"round {r + 1}: " + ", ".join(f"{n} {sum(times[n][k][-1] for k in times[n]):.2f} s"
                                            for n in names), flush=True)  # fmt: skip
    rows = []
    for name in names:
        row: dict[str, Any] = {"variant": name}
        for key, label in (("weight_s", "weight step"), ("arch_s", "arch step")):
            mine, base = times[name][key], times["baseline"][key]
            row[f"{label} s"] = f"{statistics.median(mine):.3f}"
            row[f"{label} / baseline"] = fmt_ratio(
                statistics.median(a / b for a, b in zip(mine, base, strict=True))
            )
        for key, label in (("weight", "weight step"), ("arch", "arch step")):
            if name in memory:
                row[f"{label} peak RSS"] = fmt_bytes(memory[name][key])
                row[f"{label} RSS / baseline"] = fmt_ratio(
                    memory[name][key] / memory["baseline"][key]
                )
        rows.append(row)
    table = markdown_table(rows)
    share = "" if args.no_share else markdown_table([planning_share(stepper)])
    print("\n" + table + "\n\n" + share)
    if args.out:
        setup = (
            f"`paper` supernet, k=4, base width {args.channels}, {args.size}x{args.size}, batch "
            f"{args.batch}, one thread; warm-up then {args.rounds} interleaved rounds (the order "
            "rotates); ratios are medians of per-round ratios to the baseline. Whole run: "
            f"{time.perf_counter() - t0:.0f} s. Variants: see the script's docstring."
        )
        write_results(
            "keep_or_remove_run",
            "Keep or remove: search-step A/B of the fused path's pieces",
            setup,
            [
                "## Step time" + (" and peak RSS" if memory else "") + "\n\n" + table,
                *(
                    []
                    if args.no_share
                    else [
                        "## Time building the fused plans (baseline, after the rounds)\n\n" + share
                    ]
                ),
            ],
            "Decisions in `keep_or_remove.md`.",
            path=Path(args.out),
        )


if __name__ == "__main__":
    main()

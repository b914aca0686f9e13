"""Search-step benchmark: time and memory of one supernet step, k=4 against k=1 (and DiNTS).

One *weight step* (forward, Dice+CE loss, backward, SGD step on the operation weights; the
architecture parameters frozen, as in the search step) and one *architecture step* (forward, loss,
first-order gradients of the architecture parameters only via ``torch.autograd.grad``, Adam
step; the weights keep ``requires_grad`` so the graph saves what a real search saves) of:

* ``ours k=4``: the supernet of the ``paper`` space (L=10, S=5, N=3, all six operations) at a
  small base width (default ``--channels 8``) with partial channels ``partial_k=4``;
* ``ours k=1``: the same with full channels (the DARTS mixed op), the baseline;
* ``ours k=4 one by one``: ``ours k=4`` with its fused mixed ops switched off
  (``--no-one-by-one`` leaves it out);
* ``ours k=4, DiNTS's ops, N=1``: ``ours k=4`` over DiNTS's cell content, one block per cell of
  one mixed op over {skip, ReLU-conv 3x3-BN} (the operation registered by this script), to
  tell the operation set's share of the gap to DiNTS from the supernet's
  (``--no-dints-cell`` leaves it out);
* ``DiNTS``: MONAI's DiNTS supernet (``TopologySearch`` + ``DiNTS``, 2D) where MONAI is installed
  (the ``bench`` extra), matched as closely as its design allows: ``num_blocks=10`` (= L),
  ``num_depths=5`` (= S), ``use_downsample=False`` so its scales are 1..1/16 like ours,
  ``channel_mul=channels/32`` so its widths are ``channels * 2**i`` like ours, the same loss,
  optimizers, batch and input. It keeps its own cell (a preprocess op and one mixed op over
  {skip, conv 3x3} per path, InstanceNorm) and its full, non-diamond trellis.

All configurations run in the same process in interleaved rounds (order rotating); times are
medians of the rounds after one warm-up, ratios the median of per-round ratios.

Memory, two ways:

* **activation memory**: bytes of the distinct tensor storages autograd saves for backward in
  one training forward + loss (``cost.activation_memory``), deterministic, the memory partial
  channels are meant to cut; once with the architecture parameters frozen (what a weight step
  saves) and once trainable (what an architecture step saves: the mixed ops then also keep
  every candidate's output for the gradient of its weight). For ours a breakdown of the latter
  by where each saved tensor was created explains the ratio.
* **peak RSS delta** (CPU): each configuration runs in a fresh subprocess with glibc's mmap
  threshold pinned to 64 KiB (``MALLOC_MMAP_THRESHOLD_``, so freed tensors go back to the OS and
  RSS follows live memory); the peak RSS high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``) of one step minus the RSS just before it, after one warm-up weight
  and architecture step (so gradients, momentum and Adam state already exist) and a
  ``malloc_trim(0)`` (so the heap's free pages left by the warm-up are not reused unseen). On CUDA
  the same column is ``torch.cuda.max_memory_allocated`` above the allocation before the step.

Every memory figure of a configuration is taken in its own fresh subprocess (the timing runs
in the main process): ``cost.activation_memory`` keeps what it measured alive after it returns
(a reference cycle through saved outputs), which would otherwise pile up gigabytes here.

    python benchmarks/search_step.py [--quick] [--sizes 64 128] [--device cuda --amp bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from _common import (
    fmt_bytes,
    fmt_ratio,
    interleaved,
    markdown_table,
    median,
    paired_ratio,
    run_child,
    write_results,
)
from torch import nn

from msnas_graph.backends.torch.cost import activation_memory
from msnas_graph.backends.torch.losses import DiceCELoss
from msnas_graph.backends.torch.nn.supernet import build_supernet
from msnas_graph.spec import SearchSpace

NUM_CLASSES = 2
K4, K1, DINTS = "ours k=4", "ours k=1", "DiNTS"
#: the k=4 supernet with its fused mixed ops switched off (``fuse_candidates=False``)
K4_PLAIN = "ours k=4 one by one"
#: the k=4 supernet with DiNTS's cell content: one block (N=1) of one mixed op over
#: {skip, ReLU-conv 3x3-BN}; what is left of the gap to DiNTS is then not the operation set
K4_DCELL = "ours k=4, DiNTS's ops, N=1"


def _register_conv_3x3() -> None:
    """``conv_3x3`` (ReLU, dense 3x3 convolution, BatchNorm: DiNTS's cell operation with our
    normalisation), registered for this benchmark only."""
    from msnas_graph.backends.torch.nn.ops import nd_layers, register_op, registered_ops

    if "conv_3x3" in registered_ops():
        return

    @register_op("conv_3x3", "ReLU, dense 3x3 convolution, BN (search_step.py)")
    def _conv_3x3(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
        layers = nd_layers(spatial_dims)
        return nn.Sequential(
            nn.ReLU(),
            layers.conv(channels, channels, 3, padding=1, bias=False),
            layers.batch_norm(channels, affine=affine),
        )


def monai_version() -> str | None:
    """MONAI's version, or ``None`` where it is not installed."""
    try:
        import monai
    except ImportError:
        return None
    return str(monai.__version__)


# ------------------------------------------------------------------------------- models


@dataclass
class Case:
    """A model and its two parameter groups."""

    name: str
    model: nn.Module
    weight_params: list[nn.Parameter]
    arch_params: list[nn.Parameter]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.weight_params)


def paper_space(channels: int, partial_k: int, size: int, **overrides: Any) -> SearchSpace:
    """The ``paper`` preset at base width ``channels``, factor ``partial_k``, input ``size``."""
    return SearchSpace.preset(
        "paper", channels=channels, partial_k=partial_k, input_size=size, **overrides
    )


def build_case(
    name: str, channels: int, size: int, space: SearchSpace | None = None, compile: bool = False
) -> Case:
    """``ours k=4``, ``ours k=1`` (paper space at ``channels``; ``compile``: the supernet
    through ``torch.compile``, its mixed ops one by one, the form the compiler traces), ``ours
    k=4 one by one``, ``ours k=4, DiNTS's ops, N=1`` or ``DiNTS`` (matched)."""
    if name == K4_DCELL:
        _register_conv_3x3()
        space = paper_space(channels, 4, size, ops=("skip_connect", "conv_3x3"), blocks=1)
    if name in (K4, K1, K4_PLAIN, K4_DCELL):
        sp = space or paper_space(channels, 1 if name == K1 else 4, size)
        net = build_supernet(sp)
        net.fuse_candidates = name != K4_PLAIN and not compile
        model = cast(nn.Module, torch.compile(net)) if compile else net
        return Case(name, model, net.weight_parameters(), net.arch_parameters())
    if name == DINTS:
        from monai.networks.nets import DiNTS, TopologySearch

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dints_space = TopologySearch(
                channel_mul=channels / 32,
                num_blocks=10,
                num_depths=5,
                spatial_dims=2,
                use_downsample=False,
            )
            model = DiNTS(
                dints_space,
                in_channels=1,
                num_classes=NUM_CLASSES,
                spatial_dims=2,
                use_downsample=False,
            )
        arch = [dints_space.log_alpha_a, dints_space.log_alpha_c]
        ids = {id(p) for p in arch}
        weights = [p for p in model.parameters() if id(p) not in ids]
        return Case(name, model, weights, arch)
    raise ValueError(f"unknown case {name!r}")


# -------------------------------------------------------------------------------- steps


class Stepper:
    """Runs weight and architecture steps of a :class:`Case` on a fixed random batch."""

    def __init__(
        self,
        case: Case,
        batch: int,
        size: int,
        device: str = "cpu",
        amp: str = "none",
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        self.case = case
        self.device = torch.device(device)
        self.model = case.model.to(self.device).train()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, 1, size, size, generator=gen)
        y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen)
        self.x = x.to(self.device)
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = y.to(self.device)
        self.loss_fn = DiceCELoss(NUM_CLASSES)
        # as the search builds it (foreach), for every configuration alike
        self.w_opt = torch.optim.SGD(
            case.weight_params, lr=0.025, momentum=0.9, weight_decay=3e-4, foreach=True
        )
        self.a_opt = torch.optim.Adam(
            case.arch_params, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def weight_step(self) -> float:
        for p in self.case.arch_params:
            p.requires_grad_(False)
        self.w_opt.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.model(self.x)
        loss = self.loss_fn(logits, self.y)
        loss.backward()
        self.w_opt.step()
        for p in self.case.arch_params:
            p.requires_grad_(True)
        return float(loss.detach())

    def arch_step(self) -> float:
        # the operation weights frozen, as the search's architecture step does
        for p in self.case.weight_params:
            p.requires_grad_(False)
        try:
            with self._autocast():
                logits = self.model(self.x)
            loss = self.loss_fn(logits, self.y)
            grads = torch.autograd.grad(loss, self.case.arch_params)
        finally:
            for p in self.case.weight_params:
                p.requires_grad_(True)
        for p, g in zip(self.case.arch_params, grads, strict=True):
            p.grad = g
        self.a_opt.step()
        self.a_opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def timed(self, step: Callable[[], float]) -> float:
        self.sync()
        t0 = time.perf_counter()
        step()
        self.sync()
        return time.perf_counter() - t0

    def round(self) -> dict[str, float]:
        """One weight step then one architecture step: their wall times in seconds."""
        return {"weight_s": self.timed(self.weight_step), "arch_s": self.timed(self.arch_step)}

    def cuda_peak(self, step: Callable[[], float]) -> int:
        """``max_memory_allocated`` during ``step`` above the allocation before it (CUDA)."""
        self.sync()
        gc.collect()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        step()
        self.sync()
        return int(torch.cuda.max_memory_allocated(self.device) - before)


# ------------------------------------------------------------------------------- memory


def _storage(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):
        return None


#: Targets of issue 10: k=4 against k=1 activation memory, k=4 against DiNTS time and memory.
K_TARGET, DINTS_TARGET = 0.30, 2.0

CATEGORIES = {
    "Stem": "stem",
    "Head": "head",
    "Preprocess": "cell preprocess (ReLU, 1x1 conv, BN; full width)",
    "Projection": "cell projection (1x1 conv, BN; full width)",
}


class _FusedCandidates:
    """Stands on the module stack while ``mix_groups`` (the fused candidate operations) runs."""


class _FusedCells:
    """Stands on the module stack while ``forward_cells`` (fused search cells) runs."""


def activation_breakdown(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """Saved-for-backward bytes of one training forward of ``model``, by where they were saved.

    Same counting as ``cost.activation_memory`` (distinct storages, parameters and buffers
    excluded; each storage counted once, where it was first saved). A tensor saved through a
    *slice* of a larger storage (the partial-channel ``x[:, :C//k]``, kept alive whole) is
    counted under "full-width inputs held by partial slices".
    """
    import copy

    work = copy.deepcopy(model).train()
    excluded = {t.untyped_storage().data_ptr() for t in (*work.parameters(), *work.buffers())}
    stack: list[Any] = [work]
    seen: dict[int, int] = {}
    where: dict[int, str] = {}

    # the cells call each mixed op's ``mix`` directly (not its forward), so the candidate
    # operations are recognised by identity, not by a PartialChannelMixedOp on the stack
    candidates = {
        id(op)
        for m in work.modules()
        if type(m).__name__ == "PartialChannelMixedOp"
        for op in m.ops  # type: ignore[union-attr]
    }

    def category(t: torch.Tensor) -> str:
        for m in reversed(stack):
            name = type(m).__name__
            if name in CATEGORIES:
                return CATEGORIES[name]
            if id(m) in candidates or isinstance(m, _FusedCandidates):
                elt = t.element_size() * t.numel()
                key = _storage(t)
                if key is not None and key[1] > 1.5 * elt:
                    return "full-width inputs held by partial slices"
                return "candidate operations (partial width)"
            if name == "SearchCell" or isinstance(m, _FusedCells):
                return "cell: weighted and block sums, resample, concat"
        return "node sums (beta) and loss"

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage(t)
        if key is not None and key[0] != 0 and key[0] not in excluded:
            if key[0] not in seen:
                where[key[0]] = category(t)
            seen[key[0]] = max(seen.get(key[0], 0), key[1])
        # detach: returning ``t`` itself would make a saved *output* reference its own grad_fn,
        # a cycle that keeps every saved tensor alive once the graph is dropped unused
        return t.detach()

    def enter(mod: nn.Module, _args: Any) -> None:
        stack.append(mod)

    def leave(_mod: nn.Module, _args: Any, _out: Any) -> None:
        stack.pop()

    # Hooks on a search cell or a candidate operation would make the supernet run it on its
    # own (a module with hooks is never fused): the fused functions mark the stack instead.
    from msnas_graph.backends.torch.nn import cells as cells_module
    from msnas_graph.backends.torch.nn import supernet as supernet_module

    def marked(fn: Callable[..., Any], mark: object) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            stack.append(mark)
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()

        return run

    skip = {id(c) for c in work.modules() if type(c).__name__ == "SearchCell"}
    for op in work.modules():
        if id(op) in candidates:
            skip |= {id(sub) for sub in op.modules()}
    handles = []
    for m in work.modules():
        if id(m) in skip:
            continue
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    saved = (cells_module.mix_groups, cells_module.forward_cells, supernet_module.forward_cells)
    cells_module.mix_groups = marked(saved[0], _FusedCandidates())
    cells_module.forward_cells = marked(saved[1], _FusedCells())
    supernet_module.forward_cells = marked(saved[2], _FusedCells())
    try:
        x = torch.randn(shape)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = work(x)
            target = torch.zeros(shape[0], *shape[2:], dtype=torch.long)
            loss = DiceCELoss(NUM_CLASSES)(out, target)
        del loss, out
    finally:
        cells_module.mix_groups, cells_module.forward_cells = saved[:2]
        supernet_module.forward_cells = saved[2]
        for h in handles:
            h.remove()
    totals: dict[str, int] = {}
    for ptr, n in seen.items():
        totals[where[ptr]] = totals.get(where[ptr], 0) + n
    return totals


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def _malloc_trim() -> None:
    """Give glibc's free heap pages back to the OS, so RSS counts live memory only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def step_peak_rss(step: Callable[[], object]) -> int | None:
    """The peak RSS of ``step()`` above the RSS just before it (after a ``gc`` and a
    ``malloc_trim``), or ``None`` where the high-water mark cannot be reset."""
    gc.collect()
    _malloc_trim()
    before = _proc_status("VmRSS")
    if not _reset_hwm():
        return None
    step()
    return _proc_status("VmHWM") - before


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside a fresh process: every memory figure of one configuration.

    First (when ``spec["rss"]``) one warm-up weight and architecture step, then the peak RSS
    above the pre-step RSS of a weight step and of an architecture step; then
    ``cost.activation_memory`` with the architecture parameters frozen (what a weight step
    saves) and trainable with the operation weights frozen (what an architecture step saves),
    then the breakdown of the latter (ours only).
    ``activation_memory`` runs here, not in the benchmark's process, because it leaks what it
    measures (see the module doc).
    """
    torch.set_num_threads(spec["threads"])
    case = build_case(spec["case"], spec["channels"], spec["size"])
    shape = (spec["batch"], 1, spec["size"], spec["size"])
    out: dict[str, Any] = {"rss_method": None, "rss_weight": None, "rss_arch": None}
    if spec["rss"]:
        stepper = Stepper(case, spec["batch"], spec["size"])
        out["rss_method"] = "VmHWM reset"
        stepper.weight_step()  # warm-up: gradients, momentum, Adam state, oneDNN workspaces
        stepper.arch_step()
        for key, step in (("rss_weight", stepper.weight_step), ("rss_arch", stepper.arch_step)):
            out[key] = step_peak_rss(step)
            if out[key] is None:
                out["rss_method"] = "unavailable (cannot reset VmHWM)"
                break
        del stepper
    for p in case.arch_params:
        p.requires_grad_(False)
    out["act_weight"] = activation_memory(case.model, shape)
    for p in case.arch_params:
        p.requires_grad_(True)
    for p in case.weight_params:  # frozen in an architecture step (``Stepper.arch_step``)
        p.requires_grad_(False)
    out["act_arch"] = activation_memory(case.model, shape)
    if spec["case"] in (K4, K1):
        out["breakdown"] = activation_breakdown(case.model, shape)
    return out


def measure_memory(case: str, channels: int, size: int, batch: int, rss: bool) -> dict[str, Any]:
    """Run :func:`memory_child` in a fresh interpreter (see the module doc for the method)."""
    spec = {
        "case": case,
        "channels": channels,
        "size": size,
        "batch": batch,
        "rss": rss,
        "threads": torch.get_num_threads(),
    }
    return run_child(__file__, spec, f"{case} at {size}x{size}")


# --------------------------------------------------------------------------------- main


def _log(msg: str) -> None:
    print(msg, flush=True)


def run_size(
    size: int, args: argparse.Namespace, with_dints: bool, time_dints: bool
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, dict[str, int]]]:
    """All measurements at one input size: rows for the main table, ratios, breakdowns."""
    names = [K4, K1] + ([K4_PLAIN] if args.one_by_one else [])
    names += ([K4_DCELL] if args.dints_cell else []) + ([DINTS] if with_dints else [])
    cuda = args.device.startswith("cuda")
    _log(f"== {size}x{size}, batch {args.batch}, channels {args.channels}: {', '.join(names)}")
    mem: dict[str, dict[str, Any]] = {}
    for n in names:
        t0 = time.perf_counter()
        mem[n] = measure_memory(n, args.channels, size, args.batch, args.rss and not cuda)
        m = mem[n]
        _log(
            f"  memory {n}: activations weight step {fmt_bytes(m['act_weight'])}, arch step "
            f"{fmt_bytes(m['act_arch'])}; peak RSS delta weight step "
            f"{fmt_bytes(m['rss_weight'])}, arch step {fmt_bytes(m['rss_arch'])} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    breakdown = {n: mem[n]["breakdown"] for n in (K4, K1)}

    torch.manual_seed(0)
    timed = [n for n in names if n != DINTS or time_dints]
    cases = {n: build_case(n, args.channels, size) for n in names}
    n_params = {n: cases[n].n_params for n in names}
    steppers = {
        n: Stepper(cases[n], args.batch, size, args.device, args.amp, args.channels_last)
        for n in timed
    }
    reps = args.repeats
    if reps is None:
        reps = 2 if args.quick else (5 if size <= 64 else 3)
    times = interleaved({n: steppers[n].round for n in timed}, reps, args.warmup, _log)
    peak: dict[str, dict[str, Any]] = {}
    for n in timed:
        if cuda:
            st = steppers[n]
            peak[n] = {"weight": st.cuda_peak(st.weight_step), "arch": st.cuda_peak(st.arch_step)}
        else:
            peak[n] = {"weight": mem[n]["rss_weight"], "arch": mem[n]["rss_arch"]}
    del steppers, cases
    gc.collect()

    kind = "alloc" if cuda else "RSS"
    rows = []
    for n in names:
        t = times.get(n, {})
        pk = peak.get(n, {})
        rows.append(
            {
                "input": f"{size}x{size}",
                "config": n,
                "weights (M)": f"{n_params[n] / 1e6:.2f}",
                "weight step s": f"{median(t['weight_s']):.3f}" if t else "not timed",
                "arch step s": f"{median(t['arch_s']):.3f}" if t else "not timed",
                "activations, weight step": fmt_bytes(mem[n]["act_weight"]),
                "activations, arch step": fmt_bytes(mem[n]["act_arch"]),
                f"peak {kind} delta, weight step": fmt_bytes(pk.get("weight")),
                f"peak {kind} delta, arch step": fmt_bytes(pk.get("arch")),
            }
        )

    def tratio(a: str, b: str, key: str) -> float | None:
        if a in times and b in times:
            return paired_ratio(times[a][key], times[b][key])
        return None

    def pratio(a: str, b: str, key: str) -> float | None:
        va, vb = peak.get(a, {}).get(key), peak.get(b, {}).get(key)
        return va / vb if va and vb else None

    def aratio(a: str, b: str, key: str) -> float:
        return float(mem[a][key] / mem[b][key])

    ratios: dict[str, Any] = {
        "input": f"{size}x{size}",
        "k4/k1 weight time": tratio(K4, K1, "weight_s"),
        "k4/k1 arch time": tratio(K4, K1, "arch_s"),
        "k4/k1 act. weight step": aratio(K4, K1, "act_weight"),
        "k4/k1 act. arch step": aratio(K4, K1, "act_arch"),
        "k4/k1 peak weight": pratio(K4, K1, "weight"),
        "k4/k1 peak arch": pratio(K4, K1, "arch"),
    }
    if K4_PLAIN in names:
        ratios.update(
            {
                "fused/one-by-one weight time": tratio(K4, K4_PLAIN, "weight_s"),
                "fused/one-by-one arch time": tratio(K4, K4_PLAIN, "arch_s"),
                "fused/one-by-one act. weight step": aratio(K4, K4_PLAIN, "act_weight"),
                "fused/one-by-one act. arch step": aratio(K4, K4_PLAIN, "act_arch"),
            }
        )
    if with_dints:
        ratios.update(
            {
                "k4/DiNTS weight time": tratio(K4, DINTS, "weight_s"),
                "k4/DiNTS arch time": tratio(K4, DINTS, "arch_s"),
                "k4/DiNTS act. weight step": aratio(K4, DINTS, "act_weight"),
                "k4/DiNTS act. arch step": aratio(K4, DINTS, "act_arch"),
                "k4/DiNTS peak weight": pratio(K4, DINTS, "weight"),
                "k4/DiNTS peak arch": pratio(K4, DINTS, "arch"),
            }
        )
    if with_dints and K4_DCELL in names:
        ratios.update(
            {
                "DiNTS's ops N=1/DiNTS weight time": tratio(K4_DCELL, DINTS, "weight_s"),
                "DiNTS's ops N=1/DiNTS arch time": tratio(K4_DCELL, DINTS, "arch_s"),
                "DiNTS's ops N=1/DiNTS act. arch step": aratio(K4_DCELL, DINTS, "act_arch"),
            }
        )
    return rows, ratios, breakdown


def _reading(ratio_rows: list[dict[str, Any]], with_dints: bool, breakdown_note: str) -> str:
    def verdict(x: float | None, target: float) -> str:
        return "-" if x is None else ("meets" if x <= target else "misses")

    parts = []
    for r in ratio_rows:
        a_arch, a_w = r["k4/k1 act. arch step"], r["k4/k1 act. weight step"]
        s = (
            f"At {r['input']} partial channels (k=4) hold {fmt_ratio(a_arch)} the activation "
            f"memory of full channels (k=1) in an architecture step, the search's peak, and "
            f"{fmt_ratio(a_w)} in a weight step (architecture parameters frozen, so the mixed "
            f"ops save less): the {K_TARGET}x target is "
            f"{'met' if max(a_arch, a_w) <= K_TARGET else 'missed'} at both"
            if verdict(a_arch, K_TARGET) == verdict(a_w, K_TARGET)
            else f"At {r['input']} partial channels (k=4) hold {fmt_ratio(a_arch)} the "
            f"activation memory of full channels (k=1) in an architecture step (the search's "
            f"peak; the {K_TARGET}x target: {verdict(a_arch, K_TARGET)}) and {fmt_ratio(a_w)} "
            f"in a weight step ({verdict(a_w, K_TARGET)})"
        )
        pw, pa = r["k4/k1 peak weight"], r["k4/k1 peak arch"]
        if pw is not None:
            s += f"; peak RSS deltas: {fmt_ratio(pw)} (weight step), {fmt_ratio(pa)} (arch step)"
        if r["k4/k1 weight time"] is not None:
            s += (
                f"; a step takes {fmt_ratio(r['k4/k1 weight time'])} (weights) and "
                f"{fmt_ratio(r['k4/k1 arch time'])} (architecture) the time of k=1"
            )
        parts.append(s + ".")
        if r.get("fused/one-by-one act. arch step") is not None:
            s = (
                f"Computing the mixed ops that share an input together (the default) takes "
                f"{fmt_ratio(r['fused/one-by-one weight time'])} (weights) and "
                f"{fmt_ratio(r['fused/one-by-one arch time'])} (architecture) the step time of "
                "running them one by one, and holds "
                f"{fmt_ratio(r['fused/one-by-one act. weight step'])} (weight step) and "
                f"{fmt_ratio(r['fused/one-by-one act. arch step'])} (architecture step) of "
                "their activation memory"
            )
            parts.append(s + ".")
        if with_dints and "k4/DiNTS act. arch step" in r:
            d = r["k4/DiNTS act. arch step"]
            t = r.get("k4/DiNTS weight time")
            ta = r.get("k4/DiNTS arch time")
            s = (
                f"Against MONAI's DiNTS at {r['input']} our k=4 supernet needs "
                f"{fmt_ratio(d)} DiNTS's activation memory in an architecture step "
                f"({fmt_ratio(r['k4/DiNTS act. weight step'])} in a weight step; the "
                f"{DINTS_TARGET}x target: {verdict(d, DINTS_TARGET)})"
            )
            if t is not None and ta is not None:
                s += (
                    f" and {fmt_ratio(t)} its weight-step time, {fmt_ratio(ta)} its "
                    f"architecture-step time (the {DINTS_TARGET}x target: "
                    f"{verdict(max(t, ta), DINTS_TARGET)})"
                )
            parts.append(s + ".")
        cell_w = r.get("DiNTS's ops N=1/DiNTS weight time")
        cell_a = r.get("DiNTS's ops N=1/DiNTS arch time")
        cell_m = r.get("DiNTS's ops N=1/DiNTS act. arch step")
        if cell_w is not None and cell_a is not None:
            parts.append(
                f"With DiNTS's cell content instead of the paper's (one block of one mixed op "
                f"over skip and a ReLU-conv 3x3-BN, `{K4_DCELL}`), the same supernet code takes "
                f"{fmt_ratio(cell_w)} DiNTS's weight-step time and {fmt_ratio(cell_a)} its "
                f"architecture-step time, and needs "
                f"{fmt_ratio(cell_m)} its activation "
                "memory in an architecture step: most of the time gap is the paper's operation "
                "set and cell (N=3 blocks of six mixed ops, depth-wise convolutions at 2-32 "
                "channels), not the supernet around them."
            )
    parts.append(breakdown_note)
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64x64 only, fewer repeats")
    parser.add_argument("--sizes", type=int, nargs="+", help="input sides (default 64 128)")
    parser.add_argument("--channels", type=int, default=8, help="base width C (default 8)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, help="measured rounds (default 5 at 64, 3 above)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads on the CPU (default 1: robust to other processes on a "
        "shared machine; 0 keeps torch's default)",
    )
    parser.add_argument("--no-dints", action="store_true", help="leave MONAI's DiNTS out")
    parser.add_argument(
        "--no-one-by-one",
        dest="one_by_one",
        action="store_false",
        help="leave out the k=4 supernet with its fused mixed ops switched off",
    )
    parser.add_argument(
        "--no-dints-cell",
        dest="dints_cell",
        action="store_false",
        help="leave out the k=4 supernet over DiNTS's operations with one block per cell",
    )
    parser.add_argument(
        "--dints-time-sizes",
        type=int,
        nargs="*",
        help="sizes at which DiNTS is also timed (default: every size; its activation memory "
        "is measured at every size)",
    )
    parser.add_argument("--no-rss", dest="rss", action="store_false", help="skip peak RSS")
    parser.add_argument("--out", type=Path, help="results file (default results/search_step.md)")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads and not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))), flush=True)
        return
    sizes = args.sizes or ([64] if args.quick else [64, 128])
    if args.dints_time_sizes is None:
        args.dints_time_sizes = sizes
    mv = monai_version()
    with_dints = mv is not None and not args.no_dints
    if mv is None and not args.no_dints:
        _log("MONAI is not installed (pip install 'msnas-graph[bench]'): DiNTS left out")

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    ratio_rows: list[dict[str, Any]] = []
    breakdowns: dict[int, dict[str, dict[str, int]]] = {}
    for size in sizes:
        r, q, b = run_size(size, args, with_dints, with_dints and size in args.dints_time_sizes)
        rows += r
        ratio_rows.append(q)
        breakdowns[size] = b
    elapsed = time.perf_counter() - t_start

    ratio_table = markdown_table(
        [{k: (v if k == "input" else fmt_ratio(v)) for k, v in q.items()} for q in ratio_rows]
    )
    big = max(sizes)
    b4, b1 = breakdowns[big][K4], breakdowns[big][K1]
    cats = sorted(set(b4) | set(b1), key=lambda c: -b1.get(c, 0))
    tot4, tot1 = sum(b4.values()), sum(b1.values())
    brows = [
        {
            "saved where": c,
            "k=4": fmt_bytes(b4.get(c, 0)),
            "k=1": fmt_bytes(b1.get(c, 0)),
            "k=4 / k=1": fmt_ratio(b4.get(c, 0) / b1[c]) if b1.get(c) else "-",
            "share of k=4": f"{100 * b4.get(c, 0) / tot4:.0f} %",
        }
        for c in cats
    ]
    brows.append(
        {
            "saved where": "**total**",
            "k=4": fmt_bytes(tot4),
            "k=1": fmt_bytes(tot1),
            "k=4 / k=1": fmt_ratio(tot4 / tot1),
            "share of k=4": "100 %",
        }
    )
    partial = sum(v for c, v in b4.items() if "(partial width)" in c)
    partial1 = sum(v for c, v in b1.items() if "(partial width)" in c)
    fixed = tot4 - partial
    breakdown_note = (
        f"The breakdown at {big}x{big} shows why the ratio is not 1/k = 0.25: only what the "
        f"candidate operations save runs on C/k channels "
        f"({fmt_bytes(partial)}, {100 * partial / tot4:.0f} % of the k=4 total, "
        f"{fmt_ratio(partial / max(partial1, 1))} of k=1's); the rest ({fmt_bytes(fixed)}, "
        f"{100 * fixed / tot4:.0f} %) is saved by the cells outside the candidates: the "
        "full-width block outputs that the recomputed projection keeps, the pass-through "
        "parts, the inputs that the recomputed preprocess and resampling keep, and the node "
        "sums."
    )
    if with_dints:
        breakdown_note += (
            " DiNTS's cell is far lighter than ours (one mixed op over skip and a 3x3 conv per "
            "path, against N=3 blocks of six mixed ops over six candidate operations), so its "
            "memory and time per path are smaller even though its trellis is full (every node "
            "at every layer, no diamond)."
        )
    setup = (
        f"Supernet of the `paper` space (L=10, S=5, N=3, six operations) at base width C="
        f"{args.channels}, batch {args.batch}, on {args.device}"
        f"{'' if args.amp == 'none' else f' with {args.amp} autocast'}"
        f"{', channels_last' if args.channels_last else ''}. Weight step: forward, Dice+CE, "
        "backward, SGD (momentum 0.9); architecture step: forward, Dice+CE, "
        "`torch.autograd.grad` w.r.t. the architecture parameters with the operation weights "
        "frozen (as the search does), Adam. Configurations run "
        "interleaved in one process; times are medians over the measured rounds (one warm-up "
        "round dropped), ratios the median of per-round ratios. Activation memory: "
        "`cost.activation_memory` (bytes saved for backward by one training forward). Peak "
        "delta: on CPU the peak RSS (VmHWM, reset via /proc/self/clear_refs) of one step minus "
        "the RSS before it, after one warm-up step of each kind and `malloc_trim(0)`, each "
        "configuration in a fresh "
        "subprocess with `MALLOC_MMAP_THRESHOLD_=65536` so freed tensors leave RSS (it "
        "includes the new weight gradients, which replace the freed ones); on CUDA "
        "`max_memory_allocated` above the allocation before the step. "
        + (
            f"DiNTS: MONAI {mv} `TopologySearch(channel_mul={args.channels}/32, num_blocks=10, "
            "num_depths=5, spatial_dims=2, use_downsample=False)` inside `DiNTS(in_channels=1, "
            "num_classes=2)` (scales 1..1/16, widths C*2^i as ours; its own cell and "
            "InstanceNorm), same loss, optimizers and batch; timed at "
            f"{', '.join(f'{s}x{s}' for s in args.dints_time_sizes if s in sizes) or 'no size'}."
            if with_dints
            else "MONAI is not installed here: no DiNTS comparison."
        )
        + (
            f" CPU runs use {torch.get_num_threads()} intra-op thread(s) (`--threads`): on a "
            "shared machine a descheduled OpenMP thread stalls every parallel region (we saw "
            "10-100x slowdowns with 2 threads while other processes ran), whereas one thread is "
            "slowed at most about 2x, alike for every interleaved configuration."
            if not args.device.startswith("cuda")
            else ""
        )
        + f" Whole run: {elapsed / 60:.1f} min."
    )
    main_table = markdown_table(rows)
    sections = [
        "## Per configuration\n\n" + main_table,
        f"## Ratios (same run)\n\nTargets (issue 10): k=4/k=1 activation memory <= {K_TARGET}x; "
        f"k=4/DiNTS step time and activation memory <= {DINTS_TARGET}x. Time ratios: median "
        "of per-round ratios; memory ratios: of the figures above.\n\n" + ratio_table,
        f"## Activation memory of an architecture step by where it is saved ({big}x{big})\n\n"
        + markdown_table(brows),
    ]
    reading = _reading(ratio_rows, with_dints, breakdown_note)
    print("\n" + main_table + "\n\n" + ratio_table + "\n\n" + markdown_table(brows) + "\n")
    print(reading)
    path = write_results(
        "search_step",
        "Search-step benchmark: partial channels (k=4) vs full (k=1) vs DiNTS",
        setup,
        sections,
        reading,
        device=args.device,
        path=args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

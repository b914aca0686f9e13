"""Cost of a network: parameters, multiply-accumulates, FLOPs and activation memory.

* **FLOPs** are as counted by :class:`torch.utils.flop_counter.FlopCounterMode`: convolutions,
  matrix multiplications and the like (a multiply-add counts 2); element-wise operations
  (ReLU, BatchNorm, pooling, interpolation, additions) are *not* counted. **MACs** are
  ``FLOPs // 2``. The paper's "FLOPs" (and most segmentation papers') are MACs: the paper's
  U-Net at 256x256 reads "31.01 GFLOPs", which :func:`count_macs_flops` gives as about
  30.6 G MACs.
* **Activation memory** (:func:`activation_memory`) is the bytes of the distinct tensor storages
  that autograd saves for the backward pass during one training forward pass plus the loss
  (parameters and buffers excluded): the memory that a training step holds at its peak besides
  weights, gradients and optimizer state, and what partial channels (``k > 1``) reduce. It is
  measured on any device, the CPU included. :func:`cuda_peak_memory` gives the CUDA allocator's
  peak instead, which also counts gradients and workspaces.

The user's module is never modified: counts run on a copy (on the ``meta`` device where
possible, so counting a 13 M parameter U-Net at 256x256 takes well under a second).
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from msnas_graph.errors import BackendError

from .limits import check_model, saved_bytes
from .models import resolve_source
from .runtimes import InferenceRuntime, check_runtime
from .training.runtime import resolve_device

__all__ = [
    "CostReport",
    "LatencyReport",
    "activation_memory",
    "cost_report",
    "count_macs_flops",
    "count_parameters",
    "cuda_peak_memory",
    "latency_runner",
    "measure_latency",
    "model_cost",
    "saved_bytes",
    "timed_passes",
]

logger = logging.getLogger(__name__)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (shared parameters counted once).

    >>> count_parameters(nn.Conv2d(1, 4, 3, bias=False))
    36
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise BackendError(
            f"input_shape must be a tuple of positive ints such as (1, 1, 256, 256), got {shape!r}"
        )
    return shape


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers live on ``meta`` (no data copied)."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(
            torch.empty_like(p, device="meta"), requires_grad=p.requires_grad
        )
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _count_flops(module: nn.Module, x: torch.Tensor) -> int:
    module.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops())


def count_macs_flops(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """``(macs, flops)`` of one forward pass (eval mode) on an input of ``input_shape``.

    FLOPs as counted by ``torch.utils.flop_counter`` (conv, matmul, etc.; element-wise ops not
    counted); MACs = FLOPs / 2; the paper's "FLOPs" are MACs. The count runs on a ``meta``
    device copy (falls back to a CPU copy if the module cannot run on ``meta``); ``module`` is
    not modified.

    >>> count_macs_flops(nn.Conv2d(1, 4, 3, padding=1, bias=False), (1, 1, 8, 8))
    (2304, 4608)
    """
    shape = _check_shape(input_shape)
    flops: int | None = None
    try:
        meta = _meta_copy(module)
        flops = _count_flops(meta, torch.empty(shape, device="meta"))
    except Exception as exc:  # an op without a meta kernel, data-dependent control flow, ...
        logger.debug("meta-device FLOP count failed (%s); counting on a real copy", exc)
    if flops is None:
        real = copy.deepcopy(module)
        device = _module_device(real)
        try:
            flops = _count_flops(real, torch.randn(shape, device=device))
        except Exception as exc:
            raise BackendError(
                f"count_macs_flops: forward pass on an input of shape {shape} failed: {exc}"
            ) from exc
    return flops // 2, flops


def _default_loss(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.float().mean()
    if isinstance(output, (list, tuple)):
        return torch.stack([_default_loss(o) for o in output]).sum()
    if isinstance(output, dict):
        return torch.stack([_default_loss(o) for o in output.values()]).sum()
    raise BackendError(
        f"activation_memory: cannot build a loss from a forward output of type "
        f"{type(output).__name__}; return a tensor, a tuple/list or a dict of tensors"
    )


def activation_memory(
    module: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu"
) -> int:
    """Bytes saved for backward by one training forward pass plus loss (activation memory).

    Runs a copy of ``module`` in training mode on ``device`` with a random input of
    ``input_shape`` and a mean loss, and sums the sizes of the distinct storages (deduplicated
    by data pointer) that autograd saves for the backward pass, parameters and buffers
    excluded. This is the memory partial channels reduce; it does not include weights,
    gradients, optimizer state or temporary workspaces (see :func:`cuda_peak_memory`).

    The conv saves its input (256 B), the ReLU its output (1024 B):

    >>> activation_memory(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), (1, 1, 8, 8))
    1280
    """
    shape = _check_shape(input_shape)
    dev = torch.device(device)
    try:
        work = copy.deepcopy(module).to(dev)
    except Exception as exc:
        raise BackendError(
            f"activation_memory: cannot copy the module to device '{dev}': {exc}"
        ) from exc
    work.train()
    x = torch.randn(shape, device=dev)

    def run() -> None:
        _default_loss(work(x))

    try:
        return saved_bytes(run, (*work.parameters(), *work.buffers()))
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(
            f"activation_memory: forward pass on an input of shape {shape} failed: {exc}"
        ) from exc


def cuda_peak_memory(
    module: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cuda"
) -> int:
    """Peak CUDA memory (bytes) of one training step above what was allocated before it.

    Copies ``module`` to ``device``, then runs forward, a mean loss and backward in training
    mode and returns ``torch.cuda.max_memory_allocated`` minus the allocation before the step
    (so the copy's weights are excluded; the input batch, activations, gradients and
    workspaces included).
    Raises :class:`BackendError` when CUDA is not available.
    """
    if not torch.cuda.is_available():
        raise BackendError(
            "cuda_peak_memory: CUDA is not available; use activation_memory() on the CPU instead"
        )
    shape = _check_shape(input_shape)
    dev = torch.device(device)
    if dev.type != "cuda":
        raise BackendError(f"cuda_peak_memory: device must be a CUDA device, got '{dev}'")
    work = copy.deepcopy(module).to(dev).train()
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    x = torch.randn(shape, device=dev)
    loss = _default_loss(work(x))
    loss.backward()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) - before
    del loss, work, x
    return int(peak)


@dataclass(frozen=True)
class CostReport:
    """Parameters, MACs, FLOPs and activation bytes of a network at one input shape."""

    params: int
    macs: int
    flops: int
    activation_bytes: int
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with keys ``params``, ``macs``, ``flops``, ``activation_bytes``,
        ``input_shape``."""
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "input_shape": list(self.input_shape),
        }


def cost_report(
    module: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu"
) -> CostReport:
    """All costs of ``module`` at ``input_shape`` (activation memory measured on ``device``).

    >>> cost_report(nn.Conv2d(1, 4, 3, padding=1, bias=False), (1, 1, 8, 8)).to_dict()["macs"]
    2304
    """
    shape = _check_shape(input_shape)
    macs, flops = count_macs_flops(module, shape)
    return CostReport(
        params=count_parameters(module),
        macs=macs,
        flops=flops,
        activation_bytes=activation_memory(module, shape, device),
        input_shape=shape,
    )


def model_cost(
    source: Any,
    *,
    input_size: int = 256,
    batch: int = 1,
    activation: bool = True,
    latency: bool = False,
    device: str | torch.device = "cpu",
    runtime: str = "auto",
    unet_base_channels: int | None = None,
    unet_depth: int | None = None,
) -> dict[str, Any]:
    """Parameters, MACs, FLOPs (and a training step's activation bytes) of a model source
    (:func:`~msnas_graph.backends.torch.models.resolve_source`: ``"unet"``, an architecture
    file, a run folder or a checkpoint), on an input of side ``input_size`` with the model's
    own channels and spatial dimensions. ``latency`` adds measured inference speed on
    ``device`` at batch 1 and 8 (:func:`measure_latency`) under ``"latency"``, run by the
    inference ``runtime`` (:mod:`~msnas_graph.backends.torch.runtimes`; default ``"auto"``,
    as ``predict``).
    ``unet_base_channels`` and ``unet_depth`` shape the U-Net of ``"unet"`` (defaults 56, 5).

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> from msnas_graph.decode import decode
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
    >>> _ = arch.save(os.path.join(d, "arch.json"))
    >>> report = model_cost(os.path.join(d, "arch.json"), input_size=32)
    >>> sorted(report)[:4], report["macs"] * 2 == report["flops"]
    (['activation_bytes', 'flops', 'input_shape', 'macs'], True)
    """
    if latency:
        check_runtime(runtime)
    unet = {"unet_base_channels": unet_base_channels, "unet_depth": unet_depth}
    resolved = resolve_source(source, **{k: v for k, v in unet.items() if v is not None})
    shape = resolved.input_shape(input_size, batch)
    resolved.check_size(input_size)
    what = f"cost: the {resolved.kind} model at input {shape}"
    check_model(resolved.spec, shape if activation else None, what, training=activation)
    model = resolved.build()
    macs, flops = count_macs_flops(model, shape)
    out: dict[str, Any] = {
        "model": resolved.info(),
        "input_shape": list(shape),
        "params": count_parameters(model),
        "macs": macs,
        "flops": flops,
    }
    if activation:
        out["activation_bytes"] = activation_memory(model, shape)
    if latency:  # measured at batch 1 and 8 by the runtime (see measure_latency)
        dev = resolve_device(device) if isinstance(device, str) else device
        reports = measure_latency(model, shape, device=dev, runtime=runtime)
        out["latency"] = [r.to_dict() for r in reports]
    return out


@dataclass(frozen=True)
class LatencyReport:
    """Measured inference speed at one batch size: median wall time of a forward pass."""

    batch: int
    ms_per_batch: float
    repeats: int
    device: str
    runtime: str = "eager"

    @property
    def ms_per_image(self) -> float:
        return self.ms_per_batch / self.batch

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.ms_per_batch if self.ms_per_batch > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``batch``, ``ms_per_batch``, ``ms_per_image``, ``images_per_s``, ..."""
        return {
            "batch": self.batch,
            "ms_per_batch": self.ms_per_batch,
            "ms_per_image": self.ms_per_image,
            "images_per_s": self.images_per_s,
            "repeats": self.repeats,
            "device": self.device,
            "runtime": self.runtime,
        }


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    fuse: bool = True,
    channels_last: bool | None = None,
    runtime: str = "eager",
) -> list[LatencyReport]:
    """Measured inference latency and throughput of ``model`` at each batch size.

    ``input_shape`` is one input's shape with any batch size (``(1, 1, 256, 256)``); the
    batch dimension is replaced by each of ``batch_sizes``. The model runs on a copy, in eval
    mode under :func:`torch.inference_mode`, BatchNorm folded (``fuse``, as ``predict`` and
    ``export`` run it; :func:`~msnas_graph.backends.torch.fuse.fuse_for_inference`) and
    channels-last as the ``eager`` runtime chooses (``channels_last=None``: on the CPU for 2D
    inputs; ``True``/``False`` force it); ``warmup`` passes are dropped, then the median of
    ``repeats`` timed passes (synchronised on CUDA) is reported. On CPU the figure depends on
    ``torch.get_num_threads()``, which is left as it is.

    The model runs through
    :class:`~msnas_graph.backends.torch.runtimes.InferenceRuntime` ``runtime`` (``fuse=False``:
    the plain model, ``"eager"`` only; ``channels_last`` applies to ``"eager"``), built before
    the timing (tracing, export or compilation are not timed); each report names the runtime
    actually used (``auto`` resolved).

    >>> r = measure_latency(nn.Conv2d(1, 2, 3), (1, 1, 16, 16), batch_sizes=(1, 2), repeats=2)
    >>> [x.batch for x in r], r[0].images_per_s > 0
    ([1, 2], True)
    """
    shape = _check_shape(input_shape)
    if not batch_sizes or any(isinstance(b, bool) or int(b) != b or b < 1 for b in batch_sizes):
        raise BackendError(f"batch_sizes must be positive ints, got {tuple(batch_sizes)!r}")
    if repeats < 1 or warmup < 0:
        raise BackendError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    dev = torch.device(device)
    work = latency_runner(model, dev, runtime, fuse, channels_last)
    reports = []
    for batch in batch_sizes:
        x = torch.randn(int(batch), *shape[1:], device=dev)
        if channels_last and not fuse and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            work(x)  # build the runtime (trace, export, compile) outside the timing
        times = timed_passes(work, x, dev, warmup, repeats)
        used = getattr(work, "resolved", None) or "eager"
        ms = statistics.median(times) / 1e6
        reports.append(LatencyReport(int(batch), ms, repeats, str(dev), used))
    return reports


def timed_passes(
    work: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> list[int]:
    """Nanoseconds of each of ``repeats`` passes ``work(x)`` under
    :func:`torch.inference_mode`, after ``warmup`` untimed passes (synchronised on CUDA)."""
    cuda = device.type == "cuda"
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter_ns()
            work(x)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter_ns() - t0)
    return times


def latency_runner(
    model: nn.Module,
    dev: torch.device,
    runtime: str = "eager",
    fuse: bool = True,
    channels_last: bool | None = None,
) -> nn.Module:
    """The copy of ``model`` that :func:`measure_latency` times (and ``compare``, through
    :func:`timed_passes`): the inference ``runtime`` on ``dev``; it is built on its first call,
    so call it once before timing."""
    if fuse or check_runtime(runtime) != "eager":
        work = copy.deepcopy(model).to(dev).eval()
        return InferenceRuntime(work, runtime, dev, channels_last=channels_last)
    work = copy.deepcopy(model).to(dev).eval()
    if channels_last:
        work = work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return work

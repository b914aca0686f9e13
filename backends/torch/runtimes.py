"""Inference runtimes: how a trained network runs in ``predict``, ``evaluate`` and
``cost --latency``, chosen by name in one place.

============== =================================================================================
``eager``      the model in eval mode with BatchNorm folded into the convolutions
               (:func:`~msnas_graph.backends.torch.fuse.fuse_for_inference`); on the CPU, 2D
               inputs and parameters in the channels-last layout (MS-NAS networks of width
               32-64 at 128x128 in 0.65-0.81x the time of the contiguous layout, one thread:
               ``benchmarks/results/keep_or_remove.md``); the reference.
``jit``        that model, with each convolution of a concatenation split into a sum of
               convolutions (:func:`~msnas_graph.backends.torch.fuse.split_concat_convs`),
               traced (``torch.jit.trace``), frozen (``torch.jit.freeze``) and optimised
               (``torch.jit.optimize_for_inference``: on CPU, MKL-DNN convolutions with fused
               activations); one trace per input shape.
``compile``    ``torch.compile`` (inductor; needs a C compiler on CPU). When compilation
               fails, one warning is logged and the model runs eagerly.
``onnxruntime`` the folded, split model exported to ONNX (dynamo exporter, dynamic batch
               and spatial axes; :func:`~msnas_graph.backends.torch.export.export_onnx`) and
               run by an ONNX
               Runtime ``InferenceSession``: the CUDA provider on a CUDA device where
               installed, else the CPU provider with ``torch.get_num_threads()`` threads.
``auto``       ``onnxruntime`` where onnx and onnxruntime are installed (and, on a CUDA
               device, its CUDA provider), the model exports and its output on the first batch
               matches ``eager``'s; else ``jit`` if that matches; else ``eager``.
============== =================================================================================

Why ``auto`` prefers ONNX Runtime: the MS-NAS final network is many small depth-wise and
element-wise operations, whose per-op overhead ONNX Runtime cuts most (see
``benchmarks/results/final_network.md``: 7-10x eager's speed on one CPU thread, the U-Net
1.5-2.1x). ``auto`` does not time the candidates (that would cost seconds and be noisy); it
checks that they compute the same function.

Every runtime computes eager's outputs up to float rounding (``auto`` checks this with
:func:`outputs_match`). NaN handling is eager's: a batch whose input holds NaN or infinite
values runs eagerly (``jit``'s MKL-DNN convolutions with a fused ReLU would turn NaN into 0),
so NaN reaches the logits, and hence ``argmax``, exactly as without a runtime.

>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)).eval()
>>> run = InferenceRuntime(net, "jit")
>>> x = torch.randn(2, 1, 8, 8)
>>> bool(torch.allclose(run(x), net(x), atol=1e-5)), run.resolved
(True, 'jit')
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msnas_graph._util import unknown_name
from msnas_graph.errors import BackendError

from .export import export_onnx
from .fuse import fuse_for_inference, split_concat_convs

__all__ = [
    "RUNTIMES",
    "InferenceRuntime",
    "check_runtime",
    "onnxruntime_available",
]

logger = logging.getLogger(__name__)

#: The runtime names :class:`InferenceRuntime` accepts.
RUNTIMES = ("auto", "eager", "jit", "compile", "onnxruntime")

_ORT_HINT = "pip install 'msnas-graph[onnx]' (onnx and onnxruntime), or use runtime 'auto'"

Runner = Callable[[torch.Tensor], Any]


def onnxruntime_available() -> bool:
    """Whether onnx and onnxruntime can be imported (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def check_runtime(runtime: str) -> str:
    """``runtime`` if known (and, for ``onnxruntime``, installed); else a one-line
    :class:`BackendError` naming the fix.

    >>> check_runtime("jit")
    'jit'
    >>> check_runtime("jti")
    Traceback (most recent call last):
    ...
    msnas_graph.errors.BackendError: unknown runtime 'jti' (known: auto, compile, eager, jit, onnxruntime) (did you mean 'jit'?)
    """  # noqa: E501
    if runtime not in RUNTIMES:
        raise BackendError(unknown_name("runtime", runtime, RUNTIMES))
    if runtime == "onnxruntime" and not onnxruntime_available():
        raise BackendError(f"runtime 'onnxruntime' needs onnx and onnxruntime: {_ORT_HINT}")
    return runtime


def outputs_match(reference: Any, got: Any, rtol: float = 1e-3, atol: float = 1e-4) -> bool:
    """Whether ``got`` equals ``reference`` (a tensor or a tuple of them) within float
    tolerance: ``|got - ref| <= atol * max(1, max|ref|) + rtol * |ref|``, NaN where NaN.

    >>> t = torch.tensor([1.0, float("nan")])
    >>> outputs_match(t, t + 1e-6), outputs_match(t, t + 1e-2)
    (True, False)
    """
    refs = reference if isinstance(reference, tuple | list) else (reference,)
    gots = got if isinstance(got, tuple | list) else (got,)
    if len(refs) != len(gots):
        return False
    for r, g in zip(refs, gots, strict=True):
        if not isinstance(g, torch.Tensor) or r.shape != g.shape:
            return False
        r, g = r.float(), g.float().to(r.device)
        finite = r[torch.isfinite(r)]
        scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        if not torch.allclose(g, r, rtol=rtol, atol=atol * scale, equal_nan=True):
            return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Jit:
    """One frozen, optimised TorchScript trace of ``model`` per input shape."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.traces: dict[tuple[int, ...], Any] = {}

    def __call__(self, x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key not in self.traces:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(self.model, x, check_trace=False)
                frozen = torch.jit.freeze(traced.eval())
                self.traces[key] = torch.jit.optimize_for_inference(frozen)
        return self.traces[key](x)


class _Compiled:
    """``torch.compile(model)``, falling back to ``model`` with one warning if it fails."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.compiled: Runner | None = None
        try:
            self.compiled = torch.compile(model)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        self.compiled = None
        logger.warning(
            "runtime 'compile': torch.compile failed (%s); running eagerly instead "
            "(use runtime 'jit' or 'onnxruntime' for a faster path)",
            _first_line(exc),
        )

    def __call__(self, x: torch.Tensor) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as exc:  # inductor/dynamo failures; eager says if the input is bad
                self._give_up(exc)
        return self.model(x)


def _ort_providers(ort: Any, device: torch.device) -> list[str]:
    available = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class _OnnxRuntime:
    """``model`` exported to ONNX (dynamic axes) and run by an ONNX Runtime session."""

    def __init__(self, model: nn.Module, x: torch.Tensor, device: torch.device) -> None:
        import onnxruntime as ort  # optional: the onnx extra

        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "model.onnx"
            export_onnx(model, path, tuple(x.shape), verify=False)
            data = path.read_bytes()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if device.type == "cpu":
            options.intra_op_num_threads = torch.get_num_threads()
        self.providers = _ort_providers(ort, device)
        self.session = ort.InferenceSession(data, options, providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> Any:
        outs = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})
        tensors = tuple(torch.from_numpy(o).to(x.device) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors


class InferenceRuntime(nn.Module):
    """``model`` (any network mapping a batch to logits) run by the inference runtime named
    ``runtime`` (one of :data:`RUNTIMES`; see the module docstring) on ``device``.

    Call it like the model. The runtime is built on the first call, from that batch (the
    example that ``jit`` traces and ``onnxruntime`` exports; the batch on which ``auto``
    compares each candidate with ``eager``; NaN and infinite values replaced by 0 there).
    :attr:`resolved` then names the runtime in use. ``channels_last`` (``eager`` only):
    ``None`` for channels-last 2D inputs on the CPU, ``True``/``False`` to force it on or off
    (4-D inputs only). The given model is not modified
    (BatchNorm is folded on a copy). Calls run under :func:`torch.no_grad` (an enclosing
    :func:`torch.inference_mode` works too).
    """

    def __init__(
        self,
        model: nn.Module,
        runtime: str = "auto",
        device: str | torch.device | None = None,
        *,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        self.requested = check_runtime(runtime)
        self.channels_last = channels_last
        self.model = fuse_for_inference(model)
        if device is None:
            device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        self.device = torch.device(device)
        self._resolved: str | None = None if runtime in ("auto", "onnxruntime") else runtime
        self._runner: dict[str, Runner] = {}  # a dict: not registered as a submodule
        self._split: list[nn.Module] = []  # see _split_model

    @property
    def resolved(self) -> str | None:
        """The runtime in use (``None`` before the first call where not yet known);
        ``"eager"`` after ``compile`` fell back."""
        runner = self._runner.get("run")
        if isinstance(runner, _Compiled) and runner.compiled is None:
            return "eager"
        return self._resolved

    def forward(self, x: torch.Tensor) -> Any:
        with torch.no_grad():
            finite = bool(torch.isfinite(x).all())
            if "run" not in self._runner:
                clean = x if finite else torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
                out = self._prepare(clean)
                if finite:
                    return out
            if not finite:  # NaN/inf propagate as in eager (MKL-DNN's fused ReLU maps NaN to 0)
                return self.model(x)
            return self._runner["run"](x)

    def _prepare(self, x: torch.Tensor) -> Any:
        """Build the runtime from the first batch ``x``; its output on ``x``."""
        requested = self.requested
        if requested == "eager":
            return self._use("eager", self._eager(x), x)
        if requested == "jit":
            return self._use("jit", self._build("jit", x, strict=True), x)
        if requested == "compile":
            return self._use("compile", _Compiled(self.model), x)
        if requested == "onnxruntime":
            if self.device.type == "cuda" and "CUDA" not in self._ort_kind():
                logger.warning(
                    "runtime 'onnxruntime': no CUDA provider installed, running on the CPU "
                    "(pip install onnxruntime-gpu, or use runtime 'jit' on CUDA)"
                )
            return self._use("onnxruntime", self._build("onnxruntime", x, strict=True), x)
        return self._auto(x)

    def _ort_kind(self) -> str:
        import onnxruntime as ort

        return " ".join(ort.get_available_providers())

    def _auto(self, x: torch.Tensor) -> Any:
        reference = self.model(x)
        candidates = ["jit"]
        if onnxruntime_available() and (self.device.type == "cpu" or "CUDA" in self._ort_kind()):
            candidates.insert(0, "onnxruntime")
        for name in candidates:
            runner = self._build(name, x, strict=False)
            if runner is None:
                continue
            try:
                out = runner(x)
            except Exception as exc:
                logger.info("runtime auto: %s failed on the first batch (%s)", name, exc)
                continue
            if outputs_match(reference, out):
                self._use(name, runner, None)
                return out
            logger.info("runtime auto: %s differs from eager on the first batch; skipped", name)
        self._use("eager", self._eager(x), None)
        return reference

    def _eager(self, x: torch.Tensor) -> Runner:
        """The eager runner: the folded model, channels-last (parameters converted in place,
        inputs on the fly) where it pays (see the module docstring) or where
        ``channels_last`` asks."""
        wanted = self.channels_last
        if wanted is None:
            wanted = self.device.type == "cpu"
        if not (wanted and x.dim() == 4):
            return self.model
        model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return lambda t: model(t.contiguous(memory_format=torch.channels_last)).contiguous()

    def _build(self, name: str, x: torch.Tensor, strict: bool) -> Any:
        """The runner ``name`` built on example ``x``; on failure ``None`` (or, with
        ``strict``, a one-line :class:`BackendError`)."""
        try:
            split = self._split_model()
            if name == "onnxruntime":
                return _OnnxRuntime(split, x, self.device)
            runner = _Jit(split)
            runner(x)  # trace now, so failures show here
            return runner
        except Exception as exc:
            if strict:
                raise BackendError(
                    f"runtime '{name}': building the model failed ({_first_line(exc)}); "
                    f"use runtime 'eager'"
                ) from exc
            logger.info("runtime auto: %s unavailable (%s)", name, _first_line(exc))
            return None

    def _split_model(self) -> nn.Module:
        """The folded model with its concatenations split into sums of convolutions (measured
        faster under jit and onnxruntime), made once and shared by both."""
        if not self._split:  # a list: not registered as a submodule
            model = copy.deepcopy(self.model)
            split_concat_convs(model)
            self._split.append(model)
        return self._split[0]

    def _use(self, name: str, runner: Runner, x: torch.Tensor | None) -> Any:
        self._runner["run"] = runner
        self._resolved = name
        logger.debug("inference runtime: %s (asked: %s)", name, self.requested)
        return runner(x) if x is not None else None

    def extra_repr(self) -> str:
        return f"runtime={self.requested!r}, resolved={self.resolved!r}, device={self.device}"

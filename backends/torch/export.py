"""ONNX export, checked with ``onnx.checker`` and compared numerically with onnxruntime.

Exporter choice. torch >= 2.9 offers two exporters through ``torch.onnx.export``:

* ``"dynamo"`` (the default here and in torch): ``torch.export`` traces the module with
  *symbolic* shapes, so a dynamic batch or spatial axis is reasoned about rather than
  replayed: shape-dependent Python code either generalises or fails loudly at export, instead of
  silently freezing the example's sizes into the graph. It is the maintained path. It is slower
  (about 1 s for a single op, 6 s for a small U-Net with dynamic spatial axes, on a laptop-class
  CPU) and warns about some torch internals.
* ``"torchscript"``: the legacy tracer (``dynamo=False``), about 50 times faster, but
  deprecated since torch 2.9 ("the feature will be removed"); a trace records the example's
  shapes wherever Python code looked at them.

Both gave the same graphs numerically (max difference ~1e-7) on the backend's operations, the
U-Net with bilinear up-sampling and BatchNorm, at the traced shape, at batch 2 with another
spatial size, and at odd sizes. We default to ``"dynamo"`` for its future and its sound dynamic
axes; ``exporter="torchscript"`` remains available where export speed matters or the dynamo
exporter cannot handle a user's operation. Whatever the exporter, :func:`export_onnx` verifies
the exported model with onnxruntime at the traced shape and, when axes are dynamic, at a second
shape (batch 2 and a spatial size 32 larger, rounded to a multiple of 32), so a frozen shape
cannot pass unnoticed.

The file is written atomically (serialised in memory, then a temporary file and a rename);
models above protobuf's 2 GB limit are not supported.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from msnas_graph._util import atomic_write, unknown_name
from msnas_graph.errors import BackendError

from .fuse import fuse_for_inference
from .limits import check_model
from .models import check_finite_weights, note_source, resolve_source

__all__ = ["EXPORTERS", "ExportReport", "export_model", "export_onnx"]

logger = logging.getLogger(__name__)

#: The exporters :func:`export_onnx` accepts.
EXPORTERS = ("dynamo", "torchscript")

_INSTALL_HINT = "pip install 'msnas-graph[onnx]'"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how well onnxruntime reproduces PyTorch."""

    path: Path
    max_abs_diff: float | None
    opset: int
    dynamic_axes: dict[str, dict[int, str]]
    exporter: str
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the report."""
        return {
            "path": str(self.path),
            "max_abs_diff": self.max_abs_diff,
            "opset": self.opset,
            "dynamic_axes": {
                name: {str(k): v for k, v in axes.items()}
                for name, axes in self.dynamic_axes.items()
            },
            "exporter": self.exporter,
            "checked_shapes": [list(s) for s in self.checked_shapes],
        }


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): {_INSTALL_HINT}"
        ) from exc
    return onnx, onnxruntime


def _second_shape(
    shape: tuple[int, ...], dynamic_batch: bool, dynamic_spatial: bool
) -> tuple[int, ...]:
    batch = (3 if shape[0] == 2 else 2) if dynamic_batch else shape[0]
    spatial = shape[2:]
    if dynamic_spatial:
        spatial = tuple((math.ceil(s / 32) + 1) * 32 for s in spatial)
    return (batch, shape[1], *spatial)


def _flatten_outputs(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in output):
        return list(output)
    raise BackendError(
        f"export_onnx: the module returned {type(output).__name__}; only a tensor or a "
        "tuple/list of tensors can be exported"
    )


def _export_bytes(
    module: nn.Module,
    example: torch.Tensor,
    exporter: str,
    output_names: list[str],
    axes: dict[int, str],
    opset: int | None,
) -> bytes:
    """The ONNX bytes of ``module``; an exporter failure as a one-line :class:`BackendError`."""
    try:
        dynamic_axes = {name: dict(axes) for name in ["input", *output_names]} if axes else None
        with warnings.catch_warnings():
            # Known noise from torch internals, not actionable by the user.
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=r".*feature will be removed.*")
            registration_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
            old_level = registration_logger.level
            registration_logger.setLevel(logging.ERROR)  # "torchvision is not installed" notes
            try:
                if exporter == "dynamo":
                    program = torch.onnx.export(
                        module,
                        (example,),
                        dynamo=True,
                        verbose=False,
                        input_names=["input"],
                        output_names=output_names,
                        opset_version=opset,
                        dynamic_shapes=(dict(axes),) if axes else None,
                    )
                    if program is None:  # pragma: no cover - only when f= is given
                        raise BackendError("export_onnx: the dynamo exporter returned no program")
                    return bytes(program.model_proto.SerializeToString())
                buffer = io.BytesIO()
                torch.onnx.export(
                    module,
                    (example,),
                    buffer,  # type: ignore[arg-type]  # the legacy exporter writes to file objects
                    dynamo=False,
                    input_names=["input"],
                    output_names=output_names,
                    opset_version=opset,
                    dynamic_axes=dynamic_axes,
                )
                return buffer.getvalue()
            finally:
                registration_logger.setLevel(old_level)
    except BackendError:
        raise
    except Exception as exc:
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(
            f"export_onnx: the {exporter} exporter failed ({first_line}); "
            f"try exporter='{other}' or dynamic_spatial=False"
        ) from exc


def _dynamic_axes(
    shape: tuple[int, ...], dynamic_batch: bool, dynamic_spatial: bool
) -> dict[int, str]:
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_spatial:
        names = {1: ["length"], 2: ["height", "width"], 3: ["depth", "height", "width"]}
        spatial_names = names.get(len(shape) - 2, [f"dim{i}" for i in range(2, len(shape))])
        axes.update({i + 2: n for i, n in enumerate(spatial_names)})
    return axes


def _max_difference(
    module: nn.Module,
    session: Any,
    shapes: list[tuple[int, ...]],
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """The largest |PyTorch - onnxruntime| over random inputs of ``shapes``."""
    max_diff = 0.0
    for test_shape in shapes:
        x = torch.randn(test_shape, generator=generator)
        with torch.no_grad():
            expected = _flatten_outputs(module(x.to(device)))
        try:
            got = session.run(None, {"input": x.numpy()})
        except Exception as exc:
            raise BackendError(
                f"export_onnx: onnxruntime failed on an input of shape {test_shape}: {exc}"
            ) from exc
        for e, g in zip(expected, got, strict=True):
            e_np = e.detach().float().cpu().numpy()
            if e_np.shape != g.shape:
                raise BackendError(
                    f"export_onnx: onnxruntime output shape {g.shape} != PyTorch "
                    f"{e_np.shape} at input shape {test_shape}; the export froze a "
                    "shape, try dynamic_spatial=False or the other exporter"
                )
            if not (np.all(np.isfinite(e_np)) and np.all(np.isfinite(g))):
                raise BackendError(
                    f"export_onnx: the model's output is not finite (NaN or infinite) on an "
                    f"input of shape {test_shape}; check the weights (re-train or resume from a "
                    f"good checkpoint)"
                )
            diff = float(np.max(np.abs(e_np - g))) if e_np.size else 0.0
            max_diff = diff if not diff <= max_diff else max_diff  # NaN wins, never ignored
    return max_diff


def _check_tolerance(
    max_diff: float, atol: float, checked: list[tuple[int, ...]], path: Path
) -> None:
    if not max_diff <= atol:
        raise BackendError(
            f"export_onnx: onnxruntime differs from PyTorch by {max_diff:.3g} "
            f"(> atol={atol:g}) on shapes {checked}; not written to {path}"
        )


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode; every submodule's train/eval flag restored afterwards."""
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in flags.items():
            m.train(training)


def _check_args(input_shape: Sequence[int], exporter: str) -> tuple[int, ...]:
    if exporter not in EXPORTERS:
        raise BackendError(f"export_onnx: {unknown_name('exporter', exporter, EXPORTERS)}")
    shape = tuple(input_shape)
    if len(shape) < 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise BackendError(
            f"export_onnx: input_shape must be (N, C, *spatial) positive ints, got {shape!r}"
        )
    return shape


def export_onnx(
    module: nn.Module,
    path: str | Path,
    input_shape: Sequence[int],
    *,
    dynamic_batch: bool = True,
    dynamic_spatial: bool = True,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    exporter: str = "dynamo",
) -> ExportReport:
    """Export ``module`` (in eval mode) to ONNX at ``path`` and verify it with onnxruntime.

    Args:
        module: the network; its train/eval flags are restored afterwards.
        path: the ``.onnx`` file to write (atomically; parent folders are created).
        input_shape: example input shape ``(N, C, *spatial)``; the input is named ``input``,
            the output ``output`` (``output_0, output_1, ...`` for several outputs).
        dynamic_batch: make axis 0 dynamic (named ``batch``).
        dynamic_spatial: make the spatial axes dynamic (``height``, ``width``; ``depth`` first
            for 3D).
        opset: ONNX opset; ``None`` takes the exporter's default.
        verify: check the model with ``onnx.checker`` and compare onnxruntime (CPU) with
            PyTorch on random inputs of ``input_shape`` and, if any axis is dynamic, of a second
            shape (batch 2 (3 if the example's is 2), spatial sizes 32 larger rounded to a multiple
            of 32).
        atol: largest accepted absolute difference; above it :class:`BackendError` is raised
            and no file is left at ``path``.
        exporter: ``"dynamo"`` (default) or ``"torchscript"``; see the module docstring.

    Returns:
        An :class:`ExportReport` (``max_abs_diff`` is ``None`` when ``verify=False``).
    """
    onnx, ort = _import_onnx()
    shape = _check_args(input_shape, exporter)
    axes = _dynamic_axes(shape, dynamic_batch, dynamic_spatial)
    path = Path(path)
    with _eval_mode(module):
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(shape, generator=generator).to(device)
        with torch.no_grad():
            n_outputs = len(_flatten_outputs(module(example)))
        output_names = ["output"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)]
        data = _export_bytes(module, example, exporter, output_names, axes, opset)
        model = onnx.load_from_string(data)
        opset_used = next(
            (int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), -1
        )
        max_diff: float | None = None
        checked: list[tuple[int, ...]] = []
        if verify:
            try:
                onnx.checker.check_model(model)
            except Exception as exc:
                raise BackendError(f"export_onnx: onnx.checker rejected the model: {exc}") from exc
            checked = [shape]
            if axes:
                checked.append(_second_shape(shape, dynamic_batch, dynamic_spatial))
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            max_diff = _max_difference(module, session, checked, generator, device)
            _check_tolerance(max_diff, atol, checked, path)

    atomic_write(path, data)
    logger.info(
        "exported %s (%s exporter, opset %d, %s)", path, exporter, opset_used,
        "not verified" if max_diff is None else f"max |diff| {max_diff:.3g}",
    )  # fmt: skip
    return ExportReport(
        path=path,
        max_abs_diff=max_diff,
        opset=opset_used,
        dynamic_axes={name: dict(axes) for name in ["input", *output_names]},
        exporter=exporter,
        checked_shapes=checked,
    )


def export_model(
    source: Any,
    onnx_path: str | Path,
    *,
    input_size: int = 256,
    verify: bool = True,
    exporter: str = "dynamo",
) -> ExportReport:
    """Export a model source (:func:`~msnas_graph.backends.torch.models.resolve_source`) to
    ONNX with dynamic batch and spatial axes, on an example input of side ``input_size`` with
    the model's own channels and spatial dimensions, verified with onnxruntime."""
    resolved = resolve_source(source)
    note_source(resolved)
    resolved.check_size(input_size)
    shape = resolved.input_shape(input_size, 1)
    check_model(resolved.spec, shape, f"export: the {resolved.kind} model at input {shape}")
    model = resolved.build()
    check_finite_weights(model, resolved.weights)
    # BatchNorm folded (no BN nodes) and concatenations feeding a convolution split into sums
    # of convolutions (no Concat nodes; ONNX Runtime fuses the additions into the convolutions)
    model = fuse_for_inference(model, split_concat=True)
    shape = resolved.input_shape(input_size, 1)
    return export_onnx(model, onnx_path, shape, verify=verify, exporter=exporter)

"""One-call tools over a model given by name or file: cost and ONNX export (what the CLI wraps).

A *model source* is one of:

- ``"unet"``: the U-Net baseline (paper-sized by default: 13.2 M parameters);
- an architecture JSON file, or a search run folder (its ``architecture.json``): the final
  network with freshly initialised weights;
- a training run folder, or one of its ``.pt`` files: the trained model (``model.json`` +
  ``best.pt``).

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

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from msnas_graph.architecture import FORMAT as ARCH_FORMAT
from msnas_graph.architecture import Architecture
from msnas_graph.errors import MsnasError

__all__ = ["export_model", "model_cost", "resolve_model"]


def resolve_model(
    source: str | Path,
    *,
    in_channels: int = 1,
    num_classes: int = 2,
    unet_base_channels: int = 56,
    unet_depth: int = 5,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a source names (see the module doc) and describe it."""
    if str(source).lower() == "unet":
        from msnas_graph.backends.torch.unet import UNet

        net = UNet(in_channels, num_classes, base_channels=unet_base_channels, depth=unet_depth)
        info = {"kind": "unet", "base_channels": unet_base_channels, "depth": unet_depth}
        return net, {**info, "in_channels": in_channels}
    path = Path(source)
    if (path.is_dir() and (path / "model.json").is_file()) or path.suffix == ".pt":
        from msnas_graph.backends.torch.engine import load_model

        model, info = load_model(path)
        keep = ("kind", "weights", "in_channels", "num_classes")
        return model, {k: info[k] for k in keep if k in info}
    if path.is_dir():
        if not (path / "architecture.json").is_file():
            raise MsnasError(
                f"{path}: neither a training run (model.json) nor a search run "
                f"(architecture.json); give an architecture file, a run folder or 'unet'"
            )
        path = path / "architecture.json"
    if not path.is_file():
        raise MsnasError(f"{path}: no such architecture file, run folder or checkpoint")
    try:
        fmt = json.loads(path.read_text()).get("format")
    except (json.JSONDecodeError, AttributeError):
        fmt = None
    if fmt != ARCH_FORMAT:
        raise MsnasError(
            f"{path}: not an architecture (decode one with `msnas-graph decode STATE -o "
            f"ARCH.json`), a run folder, or 'unet'"
        )
    arch = Architecture.load(path)
    from msnas_graph.backends.torch.network import build_network

    info = {"kind": "architecture", "content_hash": arch.content_hash}
    return build_network(arch), {**info, "in_channels": arch.space.in_channels}


def _input_shape(info: dict[str, Any], input_size: int, batch: int) -> tuple[int, ...]:
    return (batch, int(info.get("in_channels", 1)), input_size, input_size)


def model_cost(
    source: str | Path, *, input_size: int = 256, batch: int = 1, activation: bool = True
) -> dict[str, Any]:
    """Parameters, MACs, FLOPs (and a training step's activation bytes) of a model source.

    FLOPs are counted by ``torch.utils.flop_counter`` (convolutions and matrix products);
    MACs = FLOPs / 2, which is what the paper's "FLOPs" column reports.
    """
    from msnas_graph.backends.torch.cost import (
        activation_memory,
        count_macs_flops,
        count_parameters,
    )

    model, info = resolve_model(source)
    shape = _input_shape(info, input_size, batch)
    _check_size(model, input_size)
    macs, flops = count_macs_flops(model, shape)
    out: dict[str, Any] = {
        "model": info,
        "input_shape": list(shape),
        "params": count_parameters(model),
        "macs": macs,
        "flops": flops,
    }
    if activation:
        out["activation_bytes"] = activation_memory(model, shape)
    return out


def _check_size(model: nn.Module, input_size: int) -> None:
    arch = getattr(model, "arch", None)
    if arch is not None:
        factor = 2 ** max(n.scale for n in arch.nodes)
        if input_size % factor:
            raise MsnasError(
                f"input size {input_size} is not divisible by {factor} (the architecture's "
                f"deepest scale); use a multiple of {factor}"
            )


def export_model(
    source: str | Path,
    onnx_path: str | Path,
    *,
    input_size: int = 256,
    verify: bool = True,
    exporter: str = "dynamo",
) -> Any:
    """Export a model source to ONNX (dynamic batch and spatial size) and verify it with
    onnxruntime; returns the :class:`~msnas_graph.backends.torch.export.ExportReport`."""
    from msnas_graph.backends.torch.export import export_onnx

    model, info = resolve_model(source)
    _check_size(model, input_size)
    shape = _input_shape(info, input_size, 1)
    return export_onnx(model, onnx_path, shape, verify=verify, exporter=exporter)

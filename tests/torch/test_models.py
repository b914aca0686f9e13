"""The model registry and the one model-source resolution used by train, cost, export and
inference: every kind of source, 3D architectures, and the errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from msnas_graph.backends.torch import MODELS, create_model, resolve_source
from msnas_graph.backends.torch.cost import model_cost
from msnas_graph.backends.torch.export import export_model
from msnas_graph.backends.torch.models import MODEL_FORMAT
from msnas_graph.backends.torch.nn.network import FinalNetwork
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.decode import decode
from msnas_graph.errors import RunError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

TINY_3D = SearchSpace.preset("tiny", spatial_dims=3, input_size=16)


def _arch_file(tmp_path: Path, space: SearchSpace) -> Path:
    # the paper score's best path for this seed leaves scale 0 (the size checks need that)
    arch = decode(SearchState.random(space, seed=0), paths=1, score="paper")
    return arch.save(tmp_path / "arch.json")


def test_registry_builds_every_model_kind() -> None:
    assert sorted(MODELS) == ["msnas", "unet"]
    unet = create_model(
        {"format": MODEL_FORMAT, "kind": "unet", "unet": {"base_channels": 4, "depth": 2},
         "in_channels": 1, "num_classes": 3}
    )  # fmt: skip
    assert isinstance(unet, UNet) and unet(torch.zeros(1, 1, 16, 16)).shape == (1, 3, 16, 16)
    with pytest.raises(RunError, match="unknown model kind 'unett'"):
        create_model({"format": MODEL_FORMAT, "kind": "unett"})
    with pytest.raises(RunError, match="not a model description"):
        create_model({"kind": "unet"})


def test_three_dimensional_architecture_cost_and_export_shape(tmp_path: Path) -> None:
    """cost and export build a 3D input for a 3D architecture (they used to build a 2D one)."""
    path = _arch_file(tmp_path, TINY_3D)
    source = resolve_source(path)
    assert source.spatial_dims == 3 and source.input_shape(16, 2) == (2, 1, 16, 16, 16)
    model = source.build()
    assert isinstance(model, FinalNetwork)
    assert model(torch.zeros(source.input_shape(16))).shape == (1, 2, 16, 16, 16)
    report = model_cost(path, input_size=16, activation=False)
    assert report["input_shape"] == [1, 1, 16, 16, 16] and report["macs"] > 0
    pytest.importorskip("onnxruntime")
    out = export_model(path, tmp_path / "m.onnx", input_size=16, exporter="torchscript")
    assert out.checked_shapes[0] == (1, 1, 16, 16, 16) and out.max_abs_diff < 1e-4


def test_sources_resolve_to_the_same_kinds(tmp_path: Path) -> None:
    path = _arch_file(tmp_path, SearchSpace.preset("tiny"))
    run = tmp_path / "search_run"
    run.mkdir()
    (run / "architecture.json").write_text(path.read_text())
    a, b = resolve_source(path), resolve_source(run)
    assert (a.kind, a.origin, b.origin) == ("architecture", "architecture", "search run")
    assert a.info() == b.info() and a.info()["kind"] == "architecture"
    assert resolve_source("UNet").info() == {
        "kind": "unet", "base_channels": 56, "depth": 5, "in_channels": 1,
    }  # fmt: skip
    with pytest.raises(RunError, match="neither a training run"):
        resolve_source(tmp_path)
    with pytest.raises(RunError, match="no such architecture file"):
        resolve_source(tmp_path / "missing.json")
    with pytest.raises(RunError, match="no such run folder or checkpoint"):
        resolve_source(tmp_path / "missing.pt")
    arch = a.architecture
    assert arch is not None
    factor = 2 ** max(n.scale for n in arch.nodes)
    assert factor > 1
    with pytest.raises(RunError, match=f"not divisible by {factor}"):
        a.check_size(8 * factor + factor // 2)
    a.check_size(8 * factor)


def test_export_without_verification_logs_cleanly(tmp_path: Path, caplog, capsys) -> None:
    """--no-verify used to log a '--- Logging error ---' traceback (%.3g of None)."""
    path = _arch_file(tmp_path, SearchSpace.preset("tiny"))
    with caplog.at_level(logging.INFO, logger="msnas_graph.backends.torch.export"):
        report = export_model(
            path, tmp_path / "m.onnx", input_size=32, verify=False, exporter="torchscript"
        )
    assert report.max_abs_diff is None
    assert "not verified" in caplog.text
    assert "Logging error" not in capsys.readouterr().err

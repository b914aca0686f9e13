"""ONNX export: checker, onnxruntime parity, dynamic axes, atomic writes, errors."""

from __future__ import annotations

import sys

import onnx
import pytest
import torch
from torch import nn

from msnas_graph.backends.torch.export import EXPORTERS, ExportReport, export_onnx
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.errors import BackendError


@pytest.fixture(scope="module")
def small_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(base_channels=4, depth=3)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_unet_exports_and_matches(small_unet: UNet, exporter: str, tmp_path) -> None:
    path = tmp_path / "sub" / "unet.onnx"
    report = export_onnx(small_unet, path, (1, 1, 32, 32), exporter=exporter)
    assert isinstance(report, ExportReport)
    assert report.path == path and path.is_file()
    assert report.exporter == exporter
    assert report.max_abs_diff < 1e-4
    assert report.checked_shapes == [(1, 1, 32, 32), (2, 1, 64, 64)]
    assert report.opset >= 17
    assert report.dynamic_axes["input"] == {0: "batch", 2: "height", 3: "width"}
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"]
    assert report.to_dict()["dynamic_axes"]["output"] == {"0": "batch", "2": "height", "3": "width"}
    assert not list(tmp_path.glob("sub/.*.tmp"))


def test_static_export(tmp_path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    report = export_onnx(
        net, tmp_path / "static.onnx", (1, 1, 8, 8), dynamic_batch=False, dynamic_spatial=False
    )
    assert report.checked_shapes == [(1, 1, 8, 8)]
    assert report.dynamic_axes["input"] == {}
    dims = onnx.load(str(tmp_path / "static.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 8, 8]


def test_training_flags_restored(tmp_path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Dropout(0.5))
    net.train()
    net[1].eval()  # a mixed state must come back as it was
    export_onnx(net, tmp_path / "m.onnx", (1, 1, 8, 8), exporter="torchscript")
    assert net.training and net[0].training and not net[1].training and net[2].training


class _Noisy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x)  # onnxruntime draws other numbers than PyTorch


def test_mismatch_raises_and_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous good file")
    with pytest.raises(BackendError, match=r"differs from PyTorch by [0-9.e+-]+ \(> atol=0.0001\)"):
        export_onnx(_Noisy(), path, (1, 1, 8, 8), exporter="torchscript")
    assert path.read_bytes() == b"previous good file"


def test_verify_false_skips_the_comparison(tmp_path) -> None:
    report = export_onnx(
        _Noisy(), tmp_path / "m.onnx", (1, 1, 8, 8), verify=False, exporter="torchscript"
    )
    assert report.max_abs_diff is None  # not verified
    assert report.checked_shapes == []


def test_unknown_exporter(tmp_path) -> None:
    with pytest.raises(BackendError, match=r"unknown exporter 'dynamoo'.*did you mean 'dynamo'"):
        export_onnx(nn.Identity(), tmp_path / "m.onnx", (1, 1, 8, 8), exporter="dynamoo")


def test_bad_input_shape(tmp_path) -> None:
    with pytest.raises(BackendError, match=r"input_shape must be \(N, C, \*spatial\)"):
        export_onnx(nn.Identity(), tmp_path / "m.onnx", (1, 8))


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendError, match=r"pip install 'msnas-graph\[onnx\]'"):
        export_onnx(nn.Identity(), tmp_path / "m.onnx", (1, 1, 8, 8))
    assert not (tmp_path / "m.onnx").exists()


def test_export_failure_suggests_the_other_exporter(tmp_path) -> None:
    class Unsupported(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x[0, 0]).real.expand_as(x)

    with pytest.raises(BackendError, match=r"exporter failed.*try exporter="):
        export_onnx(Unsupported(), tmp_path / "m.onnx", (1, 1, 4, 4), exporter="torchscript")

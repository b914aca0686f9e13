"""Parameter, MAC/FLOP and activation-memory counting."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from msnas_graph.backends.torch.cost import (
    CostReport,
    activation_memory,
    cost_report,
    count_macs_flops,
    count_parameters,
    cuda_peak_memory,
)
from msnas_graph.errors import BackendError


def test_count_parameters_trainable_only() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(4, 2))
    assert count_parameters(net) == 4 * 9 + 4 + 4 * 2 + 2
    net[0].weight.requires_grad_(False)
    assert count_parameters(net) == 4 + 4 * 2 + 2


def test_conv_macs_hand_computed() -> None:
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    macs, flops = count_macs_flops(conv, (1, 1, 8, 8))
    assert macs == 4 * 1 * 9 * 64
    assert flops == 2 * macs


def test_linear_and_network_macs() -> None:
    assert count_macs_flops(nn.Linear(10, 5), (3, 10)) == (3 * 10 * 5, 2 * 3 * 10 * 5)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 8*3*9 per pixel
        nn.BatchNorm2d(8),  # element-wise: not counted
        nn.ReLU(),
        nn.Conv2d(8, 2, 1),  # 2*8 per pixel
    )
    macs, _ = count_macs_flops(net, (2, 3, 16, 16))
    assert macs == 2 * 16 * 16 * (8 * 3 * 9 + 2 * 8)


class _DataDependent(nn.Module):
    """Cannot run on the meta device (.item()), so the count falls back to a real copy."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum().item() >= 0:
            return self.conv(x)
        return x


def test_falls_back_when_meta_fails() -> None:
    assert count_macs_flops(_DataDependent(), (1, 1, 8, 8)) == (2304, 4608)


def test_counting_does_not_modify_the_module() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_macs_flops(net, (2, 1, 8, 8))
    activation_memory(net, (2, 1, 8, 8))
    cost_report(net, (2, 1, 8, 8))
    assert net.training and all(m.training for m in net.modules())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_activation_memory_hand_computed() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    # conv saves its input (1*1*8*8 floats), ReLU its output (1*4*8*8 floats); weights excluded
    assert activation_memory(net, (1, 1, 8, 8)) == 4 * (64 + 4 * 64)


def test_activation_memory_dedupes_shared_storage() -> None:
    class TwoViews(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(x * self.w)  # saves x (for grad of w) and the relu output
            return y[:, :2] * self.w + y[:, 2:] * self.w  # both views of y's storage

    assert activation_memory(TwoViews(), (1, 4, 4, 4)) == 4 * 64 * 2


def test_cost_report_to_dict() -> None:
    report = cost_report(nn.Conv2d(1, 4, 3, padding=1, bias=False), (1, 1, 8, 8))
    assert isinstance(report, CostReport)
    d = report.to_dict()
    assert set(d) == {"params", "macs", "flops", "activation_bytes", "input_shape"}
    assert d["params"] == 36 and d["macs"] == 2304 and d["flops"] == 4608
    assert d["input_shape"] == [1, 1, 8, 8]
    assert d["activation_bytes"] == 4 * 64  # the conv saves its input
    json.dumps(d)


@pytest.mark.parametrize("shape", [(), (1, 0, 8), (1, -1), (1.0, 2)])
def test_bad_input_shape(shape) -> None:
    with pytest.raises(BackendError, match="input_shape must be"):
        count_macs_flops(nn.Identity(), shape)


def test_forward_failure_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match=r"forward pass on an input of shape \(1, 3, 8, 8\)"):
        count_macs_flops(nn.Conv2d(1, 4, 3), (1, 3, 8, 8))
    with pytest.raises(BackendError, match="forward pass"):
        activation_memory(nn.Conv2d(1, 4, 3), (1, 3, 8, 8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_peak_memory_without_cuda() -> None:
    with pytest.raises(BackendError, match="CUDA is not available"):
        cuda_peak_memory(nn.Conv2d(1, 4, 3), (1, 1, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_positive() -> None:
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    saved = activation_memory(net, (2, 1, 32, 32), device="cuda")
    assert cuda_peak_memory(net, (2, 1, 32, 32)) >= saved > 0

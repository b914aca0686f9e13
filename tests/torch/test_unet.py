"""The U-Net baseline: layout, parameter and MAC counts, shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from msnas_graph.backends.torch.cost import count_macs_flops, count_parameters
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.errors import BackendError


def test_default_matches_the_issue_figures() -> None:
    net = UNet()
    params = count_parameters(net)
    assert params == pytest.approx(13.2e6, rel=0.02)
    macs, flops = count_macs_flops(net, (1, 1, 256, 256))
    assert flops == 2 * macs
    assert macs == pytest.approx(30.6e9, rel=0.03)


def test_layout_matches_milesial_unet() -> None:
    # milesial/Pytorch-UNet with width 64: 17.26 M (bilinear) and 31.04 M (transposed conv).
    assert count_parameters(UNet(base_channels=64)) == pytest.approx(17.26e6, rel=0.005)
    assert count_parameters(UNet(base_channels=64, bilinear=False)) == pytest.approx(
        31.04e6, rel=0.005
    )


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_forward_shape_and_backward(bilinear: bool, batch_norm: bool) -> None:
    net = UNet(
        in_channels=2,
        num_classes=3,
        base_channels=4,
        depth=3,
        bilinear=bilinear,
        batch_norm=batch_norm,
    )
    x = torch.randn(2, 2, 32, 32)
    y = net(x)
    assert y.shape == (2, 3, 32, 32)
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert has_bn == batch_norm


@pytest.mark.parametrize("bilinear", [True, False])
def test_odd_sizes(bilinear: bool) -> None:
    net = UNet(base_channels=4, depth=4, bilinear=bilinear).eval()
    assert net(torch.randn(1, 1, 30, 37)).shape == (1, 2, 30, 37)


def test_depth_sets_the_number_of_poolings() -> None:
    net = UNet(base_channels=4, depth=5)
    assert len(net.downs) == 4 and len(net.ups) == 4
    assert net.downs[-1].body[0].out_channels == 4 * 2**4 // 2  # bottleneck halved (bilinear)
    assert UNet(base_channels=4, depth=5, bilinear=False).downs[-1].body[0].out_channels == 64


def test_3d_shape() -> None:
    net = UNet(base_channels=2, depth=3, spatial_dims=3)
    assert net(torch.randn(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 1}, "depth must be an int >= 2"),
        ({"base_channels": 0}, "base_channels must be an int >= 1"),
        ({"num_classes": 0}, "num_classes"),
        ({"base_channels": 5}, "must be even with bilinear=True"),
        ({"spatial_dims": 4}, "spatial_dims=4"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(BackendError, match=match):
        UNet(**kwargs)

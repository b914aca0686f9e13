"""Register a custom operation and search a space that uses it.

    python examples/custom_operation.py

The operation becomes a known name for the core (so a spec may list it) as soon as the
module that registers it is imported.
"""

from __future__ import annotations

import torch
from torch import nn

from msnas_graph.backends.torch import build_network, build_supernet, register_op
from msnas_graph.decode import decode
from msnas_graph.spec import SearchSpace


@register_op("conv_1x1_relu", "ReLU -> 1x1 convolution -> BN", override=True)
def conv_1x1_relu(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    return nn.Sequential(
        nn.ReLU(), conv(channels, channels, 1, bias=False), bn(channels, affine=affine)
    )


def main() -> None:
    space = SearchSpace(
        name="custom",
        layers=3,
        scales=2,
        channels=8,
        blocks=2,
        ops=("conv_1x1_relu", "sep_conv_3x3", "skip_connect", "none"),
        partial_k=2,
        input_size=32,
    )
    supernet = build_supernet(space)
    x = torch.randn(2, 1, 32, 32)
    print("supernet output", tuple(supernet(x).shape))
    # pretend the search preferred the new operation everywhere
    state = supernet.state()
    for blocks in state.alpha_logits.values():
        for alpha in blocks:
            alpha[:, 0] = 3.0
    arch = decode(state, paths=2)
    print(arch)
    print("final network output", tuple(build_network(arch)(x).shape))


if __name__ == "__main__":
    main()

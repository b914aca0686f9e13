"""The operation registry and every registered operation (the registry drives the matrix)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from msnas_graph.backends.torch.nn.ops import (
    SepConvResidual,
    build_op,
    nd_layers,
    op_description,
    register_op,
    registered_ops,
    unregister_op,
)
from msnas_graph.errors import BackendError
from msnas_graph.operations import DEFAULT_OPERATIONS, NONE_OP, known_operations

PARAMETER_FREE = {"avg_pool_3x3", "max_pool_3x3", "skip_connect", "none"}
DENSE = ("conv_3x3", "conv_3x3_dil2", "conv_3x3_dil4", "conv_5x5")
DEFAULTS = sorted({*DEFAULT_OPERATIONS, NONE_OP, "max_pool_3x3", *DENSE})


def test_defaults_registered() -> None:
    ops = registered_ops()
    assert set(DEFAULTS) <= set(ops)
    assert ops == sorted(ops)
    assert all(name in known_operations() for name in ops)
    assert "x + BN" in op_description("sep_conv_3x3")


@pytest.mark.parametrize("name", registered_ops())
def test_op_keeps_shape_and_passes_gradients(name: str) -> None:
    torch.manual_seed(0)
    op = build_op(name, 8)
    x = torch.randn(2, 8, 32, 32, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None
    if name == NONE_OP:
        assert torch.count_nonzero(x.grad) == 0
    else:
        assert torch.count_nonzero(x.grad) > 0
    params = [p for p in op.parameters() if p.requires_grad]
    if name in PARAMETER_FREE:
        assert params == []
    elif name in DEFAULTS:
        assert params
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in params)


@pytest.mark.parametrize("name", DEFAULTS)  # the default ops' contract; user ops may differ
def test_op_accepts_affine_false(name: str) -> None:
    op = build_op(name, 4, affine=False)
    bns = [m for m in op.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not bn.affine for bn in bns)
    assert op(torch.randn(1, 4, 8, 8)).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("name", registered_ops())
def test_op_exports_to_onnx(name: str, tmp_path) -> None:
    from msnas_graph.backends.torch.export import export_onnx

    torch.manual_seed(0)
    # A conv in front so that the graph has an input-dependent node even for identity ops.
    net = nn.Sequential(nn.Conv2d(2, 8, 1), build_op(name, 8))
    report = export_onnx(net, tmp_path / f"{name}.onnx", (1, 2, 16, 16))
    assert report.max_abs_diff < 1e-4
    assert (tmp_path / f"{name}.onnx").stat().st_size > 0


def test_sep_conv_is_residual_in_documented_order() -> None:
    torch.manual_seed(0)
    op = build_op("sep_conv_3x3", 6).eval()
    assert isinstance(op, SepConvResidual)
    kinds = [type(m) for m in op.body]
    assert kinds == [nn.ReLU, nn.Conv2d, nn.Conv2d, nn.BatchNorm2d]
    depthwise, pointwise = op.body[1], op.body[2]
    assert depthwise.groups == 6 and depthwise.kernel_size == (3, 3)
    assert pointwise.kernel_size == (1, 1)
    x = torch.randn(2, 6, 8, 8)
    expected = x + op.body[3](pointwise(depthwise(torch.relu(x))))
    torch.testing.assert_close(op(x), expected)
    assert build_op("sep_conv_5x5", 6).body[1].kernel_size == (5, 5)


def test_dil_conv_has_rate_two_and_no_residual() -> None:
    op = build_op("dil_conv_3x3", 4).eval()
    depthwise = op.body[1]
    assert depthwise.dilation == (2, 2) and depthwise.padding == (2, 2)
    with torch.no_grad():
        for p in op.parameters():
            p.zero_()
    x = torch.randn(1, 4, 8, 8)
    assert torch.count_nonzero(op(x)) == 0  # no residual: zero weights give zero output


def test_avg_pool_excludes_padding() -> None:
    op = build_op("avg_pool_3x3", 1)
    y = op(torch.ones(1, 1, 5, 5))
    torch.testing.assert_close(y, torch.ones(1, 1, 5, 5))


@pytest.mark.parametrize(
    "shape", [(2, 3, 9, 7), (1, 2, 1, 5), (1, 2, 2, 2), (1, 2, 4, 3, 5), (1, 1, 3, 4, 3)]
)
def test_avg_pool_box_sums_in_training_equal_the_library_pool(shape: tuple[int, ...]) -> None:
    import torch.nn.functional as F

    dims = len(shape) - 2
    pool = build_op("avg_pool_3x3", shape[1], dims).train()
    library = getattr(F, f"avg_pool{dims}d")
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    got = pool(x)
    want = library(x, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(got, want)
    g = torch.randn(shape, dtype=torch.float64)
    (gx,) = torch.autograd.grad(got, x, g)
    (wx,) = torch.autograd.grad(library(x, 3, 1, 1, count_include_pad=False), x, g)
    torch.testing.assert_close(gx, wx)
    assert not list(pool.state_dict())  # nothing saved with a model
    with torch.no_grad():  # eval mode runs the library pool itself
        torch.testing.assert_close(pool.eval()(x), want)


@pytest.mark.parametrize("name", ["sep_conv_3x3", "dil_conv_3x3", "avg_pool_3x3", "none", *DENSE])
def test_op_3d_shape(name: str) -> None:
    op = build_op(name, 4, spatial_dims=3)
    x = torch.randn(1, 4, 6, 8, 8)
    assert op(x).shape == x.shape


def test_nd_layers_rejects_unsupported_dims() -> None:
    assert nd_layers(2).conv is nn.Conv2d
    with pytest.raises(BackendError, match="spatial_dims=4"):
        nd_layers(4)
    with pytest.raises(BackendError, match="spatial_dims"):
        build_op("sep_conv_3x3", 4, spatial_dims=5)


def test_unknown_op_lists_known_and_closest() -> None:
    with pytest.raises(
        BackendError, match=r"unknown operation 'sep_conv_3x4'.*did you mean 'sep_conv_3x3'"
    ):
        build_op("sep_conv_3x4", 8)


@pytest.mark.parametrize("channels", [0, -3, 2.5, True])
def test_bad_channels(channels) -> None:
    with pytest.raises(BackendError, match="channels must be a positive int"):
        build_op("skip_connect", channels)


@pytest.fixture
def custom_op():
    name = "test_scaled_identity"

    @register_op(name, "2 * x, registered by a test")
    def factory(channels: int, spatial_dims: int = 2) -> nn.Module:
        class Double(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return 2 * x

        return Double()

    yield name
    unregister_op(name)


def test_custom_op_is_usable(custom_op: str) -> None:
    from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp

    assert custom_op in registered_ops()
    assert custom_op in known_operations()  # the core accepts it in a space
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(build_op(custom_op, 4)(x), 2 * x)
    mixed = PartialChannelMixedOp(4, [custom_op, "skip_connect"], k=1)
    torch.testing.assert_close(mixed(x, torch.tensor([0.5, 0.5])), 1.5 * x)


def test_custom_op_rejects_unknown_option(custom_op: str) -> None:
    """A factory without ``**_`` fails naming the fix, not only the option (issue 17)."""
    with pytest.raises(BackendError, match=r"affine=False\): end its parameters with \*\*_"):
        build_op(custom_op, 4, affine=False)


def test_reregistering_needs_override(custom_op: str) -> None:
    with pytest.raises(BackendError, match=r"already registered.*override=True"):
        register_op(custom_op)(lambda channels, spatial_dims=2: nn.Identity())
    register_op(custom_op, override=True)(lambda channels, spatial_dims=2: nn.Identity())
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(build_op(custom_op, 4)(x), x)


@pytest.mark.parametrize("bad", ["", "has space", "dash-name", "x.y"])
def test_rejected_names(bad: str) -> None:
    with pytest.raises(BackendError, match="invalid"):
        register_op(bad)
    assert bad not in registered_ops()


def test_factory_must_return_module() -> None:
    register_op("test_not_a_module")(lambda channels, spatial_dims=2: 42)
    try:
        with pytest.raises(BackendError, match=r"not an nn\.Module"):
            build_op("test_not_a_module", 4)
    finally:
        unregister_op("test_not_a_module")


def test_unregister_unknown() -> None:
    with pytest.raises(BackendError, match="unknown operation"):
        unregister_op("never_registered_op")


@pytest.mark.parametrize("name", DEFAULTS)
def test_op_batch_norm_folds_into_its_convolution(name: str) -> None:
    from msnas_graph.backends.torch.fuse import fuse_for_inference

    torch.manual_seed(0)
    op = build_op(name, 6)
    for bn in (m for m in op.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    op.eval()
    x = torch.randn(2, 6, 12, 12)
    folded = fuse_for_inference(op)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), op(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "kernel", "dilation"),
    [("conv_3x3", 3, 1), ("conv_3x3_dil2", 3, 2), ("conv_3x3_dil4", 3, 4), ("conv_5x5", 5, 1)],
)
def test_dense_conv_is_relu_conv_bn_without_residual(name: str, kernel: int, dilation: int) -> None:
    torch.manual_seed(0)
    op = build_op(name, 4).eval()
    relu, conv, bn = op
    assert isinstance(relu, nn.ReLU) and isinstance(bn, nn.BatchNorm2d)
    assert conv.kernel_size == (kernel, kernel) and conv.dilation == (dilation, dilation)
    assert conv.groups == 1 and conv.bias is None
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(op(x), bn(conv(torch.relu(x))))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            lambda channels, spatial_dims=2: nn.Conv2d(channels, 2 * channels, 1),
            r"to \(1, 8, 8, 8\)",
        ),
        (lambda channels, spatial_dims=2: nn.AvgPool2d(2), r"to \(1, 4, 4, 4\)"),
        (lambda channels, spatial_dims=2: nn.Flatten(), r"to \(1, 256\)"),
        (lambda channels, spatial_dims=2: nn.Conv2d(3, 3, 1), "forward pass .* raised"),
        (lambda channels, spatial_dims=2: 1 / 0, "factory raised ZeroDivisionError"),
    ],
    ids=["channels", "stride", "flatten", "forward_fails", "factory_raises"],
)
def test_a_plugin_op_that_breaks_the_shape_rule_is_one_line(factory, message: str) -> None:
    register_op("test_broken_op")(factory)
    try:
        with pytest.raises(BackendError, match=f"operation 'test_broken_op' .*{message}") as info:
            build_op("test_broken_op", 4)
        assert "\n" not in str(info.value) and "keeps its input's shape" in str(info.value)
    finally:
        unregister_op("test_broken_op")


def test_a_plugin_op_is_probed_once_per_width_and_leaves_the_random_state() -> None:
    calls: list[int] = []

    def factory(channels: int, spatial_dims: int = 2) -> nn.Module:
        calls.append(channels)
        return nn.Identity()

    register_op("test_counted_op")(factory)
    try:
        before = torch.get_rng_state()
        build_op("test_counted_op", 4)
        assert torch.equal(torch.get_rng_state(), before)  # the probe's input is forked
        build_op("test_counted_op", 4)
        build_op("test_counted_op", 8)
        assert calls == [4, 4, 4, 8, 8]  # the first build of a width also builds the probe
        build_op("skip_connect", 4)  # built-in operations are not probed
    finally:
        unregister_op("test_counted_op")

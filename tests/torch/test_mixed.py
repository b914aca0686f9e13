"""The partial-channel mixed op (paper Eq. 2) and channel shuffling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from msnas_graph.backends.torch.cost import activation_memory
from msnas_graph.backends.torch.nn.mixed import (
    PartialChannelMixedOp,
    channel_shuffle,
    channel_unshuffle,
)
from msnas_graph.errors import BackendError
from msnas_graph.operations import DEFAULT_OPERATIONS, NONE_OP

OPS = [*DEFAULT_OPERATIONS, NONE_OP]


def _weights(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, generator=g), dim=0)


def test_k1_is_the_darts_mixed_op_exactly() -> None:
    torch.manual_seed(0)
    mixed = PartialChannelMixedOp(8, OPS, k=1).eval()
    x = torch.randn(2, 8, 16, 16)
    w = _weights(len(OPS))
    expected = w[0] * mixed.ops[0](x)
    for i in range(1, len(OPS)):
        expected = expected + w[i] * mixed.ops[i](x)
    assert torch.equal(mixed(x, w), expected)


@pytest.mark.parametrize("index", range(len(OPS)))
def test_one_hot_k1_equals_the_chosen_op(index: int) -> None:
    torch.manual_seed(0)
    mixed = PartialChannelMixedOp(8, OPS, k=1).eval()
    x = torch.randn(2, 8, 16, 16)
    one_hot = torch.zeros(len(OPS))
    one_hot[index] = 1.0
    assert torch.equal(mixed(x, one_hot), mixed.ops[index](x))


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_shape_and_partial_op_width(k: int) -> None:
    mixed = PartialChannelMixedOp(16, OPS, k=k)
    assert mixed.partial_channels == 16 // k
    x = torch.randn(2, 16, 32, 32)
    assert mixed(x, _weights(len(OPS))).shape == x.shape
    conv = mixed.ops[0].body[1]
    assert conv.in_channels == 16 // k


def test_only_the_first_slice_is_transformed() -> None:
    torch.manual_seed(0)
    channels, k = 12, 4
    part = channels // k
    mixed = PartialChannelMixedOp(channels, OPS, k=k).eval()
    x = torch.randn(2, channels, 8, 8)
    w = _weights(len(OPS), seed=1)
    y = mixed(x, w)
    # The transformed slice: what a k=1 mixed op built on the same ops computes on x[:, :part].
    x_a = x[:, :part]
    transformed = w[0] * mixed.ops[0](x_a)
    for i in range(1, len(OPS)):
        transformed = transformed + w[i] * mixed.ops[i](x_a)
    for j in range(part):
        for g in range(k):
            out = y[:, j * k + g]
            if g == 0:  # after the shuffle the slice sits at channels 0, k, 2k, ...
                assert torch.equal(out, transformed[:, j])
            else:  # untouched input channel g * part + j, passed through
                assert torch.equal(out, x[:, g * part + j])


def test_gradients_reach_input_weights_and_parameters() -> None:
    mixed = PartialChannelMixedOp(8, OPS, k=2)
    logits = torch.zeros(len(OPS), requires_grad=True)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    mixed(x, torch.softmax(logits, 0)).square().sum().backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) > 0
    assert x.grad is not None and torch.count_nonzero(x.grad[:, 4:]) > 0
    assert all(p.grad is not None for p in mixed.parameters())


def test_channels_not_divisible_by_k() -> None:
    with pytest.raises(
        BackendError, match=r"channels C=10 not divisible by k=4, choose base channels"
    ):
        PartialChannelMixedOp(10, OPS, k=4)


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_bad_k(k) -> None:
    with pytest.raises(BackendError, match="k must be a positive int"):
        PartialChannelMixedOp(8, OPS, k=k)


def test_bad_ops_and_weights() -> None:
    with pytest.raises(BackendError, match="non-empty list"):
        PartialChannelMixedOp(8, [], k=1)
    with pytest.raises(BackendError, match="non-empty list"):
        PartialChannelMixedOp(8, "skip_connect", k=1)
    with pytest.raises(BackendError, match="unknown operation 'sep_conv_7x7'"):
        PartialChannelMixedOp(8, ["sep_conv_7x7"], k=1)
    mixed = PartialChannelMixedOp(8, ["skip_connect", "none"], k=2)
    with pytest.raises(BackendError, match=r"weights must have shape \(2,\)"):
        mixed(torch.randn(1, 8, 4, 4), torch.ones(3))
    with pytest.raises(BackendError, match="input has 6 channels"):
        mixed(torch.randn(1, 6, 4, 4), torch.ones(2))


def test_op_options_reach_the_ops() -> None:
    mixed = PartialChannelMixedOp(8, OPS, k=4, op_options={"affine": False})
    bns = [m for m in mixed.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.affine for bn in bns)


def test_3d_shape() -> None:
    mixed = PartialChannelMixedOp(8, OPS, k=4, spatial_dims=3)
    x = torch.randn(1, 8, 4, 8, 8)
    assert mixed(x, _weights(len(OPS))).shape == x.shape


@settings(max_examples=40, deadline=None)
@given(groups=st.integers(1, 6), per_group=st.integers(1, 6), batch=st.integers(1, 2))
def test_channel_shuffle_is_an_invertible_permutation(
    groups: int, per_group: int, batch: int
) -> None:
    channels = groups * per_group
    x = torch.arange(batch * channels * 2, dtype=torch.float32).reshape(batch, channels, 2)
    y = channel_shuffle(x, groups)
    assert y.shape == x.shape
    assert torch.equal(y.sort(dim=1).values, x)  # a permutation of the channels
    assert torch.equal(channel_unshuffle(y, groups), x)
    assert torch.equal(channel_shuffle(y, per_group), x)
    for g in range(groups):
        for j in range(per_group):
            assert torch.equal(y[:, j * groups + g], x[:, g * per_group + j])


def test_channel_shuffle_rejects_bad_groups() -> None:
    with pytest.raises(BackendError, match="C=6 not divisible by groups=4"):
        channel_shuffle(torch.zeros(1, 6, 2, 2), 4)
    with pytest.raises(BackendError, match="not divisible"):
        channel_unshuffle(torch.zeros(1, 6, 2, 2), 0)


class _FixedWeights(nn.Module):
    def __init__(self, mixed: PartialChannelMixedOp) -> None:
        super().__init__()
        self.mixed = mixed
        self.logits = nn.Parameter(torch.zeros(len(mixed.op_names)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixed(x, torch.softmax(self.logits, 0))


def test_partial_channels_save_activation_memory() -> None:
    torch.manual_seed(0)
    shape = (2, 16, 32, 32)
    full = activation_memory(_FixedWeights(PartialChannelMixedOp(16, OPS, k=1)), shape)
    partial = activation_memory(_FixedWeights(PartialChannelMixedOp(16, OPS, k=4)), shape)
    assert partial < full
    assert partial < 0.5 * full  # the ops' activations shrink about k-fold


def test_split_copies_the_partial_slice_and_views_the_rest() -> None:
    mixed = PartialChannelMixedOp(8, OPS, k=4)
    for x in (torch.randn(2, 8, 4, 4), torch.randn(1, 8, 4, 4)):  # batch 1: the slice is dense
        x_a, x_b = mixed.split(x)
        assert torch.equal(x_a, x[:, :2]) and torch.equal(x_b, x[:, 2:])
        assert x_a.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        assert x_a.untyped_storage().nbytes() == x_a.numel() * x_a.element_size()
        assert x_b.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    x_a, _ = mixed.split(x)
    assert x_a.is_contiguous(memory_format=torch.channels_last) and torch.equal(x_a, x[:, :2])


def test_a_slice_saved_for_backward_does_not_hold_the_whole_input() -> None:
    """avg_pool and the skip weight save their input: the saved storage is C/k channels wide."""
    mixed = PartialChannelMixedOp(16, ["avg_pool_3x3", "skip_connect"], k=4)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    w = torch.tensor([0.5, 0.5], requires_grad=True)
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mixed(x, w)
    assert sizes and max(sizes) <= x[:, :4].numel() * 4  # never the full 16-channel input


def test_mix_leaves_out_the_zero_op_without_changing_values_or_gradients() -> None:
    torch.manual_seed(0)
    mixed = PartialChannelMixedOp(8, OPS, k=1).eval()
    x = torch.randn(2, 8, 6, 6)
    w = _weights(len(OPS)).requires_grad_(True)
    out = mixed(x, w)
    ref = sum(w[i] * op(x) for i, op in enumerate(mixed.ops))
    torch.testing.assert_close(out, ref)
    (g,) = torch.autograd.grad(out.square().sum(), w)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), w)
    torch.testing.assert_close(g, g_ref)
    only_none = PartialChannelMixedOp(8, [NONE_OP], k=1)
    assert torch.equal(only_none(x, torch.ones(1)), torch.zeros_like(x))

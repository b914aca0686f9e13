"""The fused evaluation of mixed ops over one input (``nn.fused.mix_together``) against the
one-by-one reference (``PartialChannelMixedOp.mix``): outputs, every gradient and the BatchNorm
running statistics agree; operations it does not know fall back; the supernet and its cells
give the same results with ``fuse`` on and off, and the fused path saves less for backward."""

from __future__ import annotations

import copy
from typing import cast

import pytest
import torch
from torch import nn

from msnas_graph.backends.torch import build_supernet
from msnas_graph.backends.torch.cost import activation_memory
from msnas_graph.backends.torch.nn.cells import SearchCell
from msnas_graph.backends.torch.nn.fused import mix_together, plan_candidates
from msnas_graph.backends.torch.nn.mixed import PartialChannelMixedOp
from msnas_graph.backends.torch.nn.ops import register_op, unregister_op
from msnas_graph.spec import SearchSpace

ALL = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "avg_pool_3x3",
    "max_pool_3x3",
    "skip_connect",
    "none",
)


def _params(mods: list[PartialChannelMixedOp]) -> list[torch.Tensor]:
    return [p for m in mods for p in m.parameters()]


def _buffers(mods: list[PartialChannelMixedOp]) -> list[torch.Tensor]:
    return [b for m in mods for b in m.buffers()]


def _compare(
    ops: tuple[str, ...],
    dims: int = 2,
    consumers: int = 3,
    channels: int = 4,
    options: dict[str, object] | None = None,
    train: bool = True,
    seed: int = 0,
    recompute: bool = False,
    size: int = 6,
) -> None:
    torch.manual_seed(seed)
    fused = [PartialChannelMixedOp(channels, ops, 1, dims, options) for _ in range(consumers)]
    for m in fused:
        m.train(train)
        if not train:  # non-trivial running statistics for eval mode
            for b in m.modules():
                if isinstance(b, nn.modules.batchnorm._BatchNorm):
                    assert b.running_mean is not None and b.running_var is not None
                    b.running_mean.normal_()
                    b.running_var.uniform_(0.5, 2.0)
    alone = copy.deepcopy(fused)
    x1 = torch.randn(2, channels, *(size,) * dims, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    w1 = torch.softmax(torch.randn(consumers, len(ops)), dim=1).requires_grad_()
    w2 = w1.detach().clone().requires_grad_()
    out1 = mix_together(x1, fused, list(w1), recompute)
    out2 = [m.mix(x2, w) for m, w in zip(alone, w2, strict=True)]
    grads = [torch.randn_like(y) for y in out2]
    sum((y * g).sum() for y, g in zip(out1, grads, strict=True)).backward()
    sum((y * g).sum() for y, g in zip(out2, grads, strict=True)).backward()
    for a, b in zip(out1, out2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-4, atol=1e-4)
    for p, q in zip(_params(fused), _params(alone), strict=True):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)
    for a, b in zip(_buffers(fused), _buffers(alone), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_all_default_ops_match_one_by_one(dims: int, affine: bool, recompute: bool) -> None:
    _compare(ALL, dims=dims, options={"affine": affine}, recompute=recompute)


@pytest.mark.parametrize(
    "ops",
    [
        ("sep_conv_3x3",),
        ("dil_conv_3x3", "none"),
        ("max_pool_3x3", "avg_pool_3x3"),
        ("skip_connect", "sep_conv_5x5"),
        ("none", "skip_connect", "dil_conv_3x3", "sep_conv_3x3"),
    ],
)
def test_op_subsets_and_orders_match(ops: tuple[str, ...]) -> None:
    _compare(ops, consumers=2, seed=1)


def test_eval_mode_uses_each_modules_running_statistics() -> None:
    _compare(ALL, train=False, seed=2)


def test_one_consumer_matches() -> None:
    _compare(ALL, consumers=1, seed=3)


@pytest.mark.parametrize("channels", [2, 8, 12])
@pytest.mark.parametrize("recompute", [False, True])
def test_widths_match(channels: int, recompute: bool) -> None:
    _compare(ALL, consumers=2, channels=channels, seed=10, recompute=recompute)


@pytest.mark.parametrize("recompute", [False, True])
def test_the_fused_path_leaves_the_global_onednn_flag_alone(
    recompute: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No global backend flag changes behind a user's back (issue 17 item 2): the fused
    depth-wise convolution runs with ``torch.backends.mkldnn.enabled`` as the user left it."""
    from msnas_graph.backends.torch.nn import fused

    seen: list[bool] = []
    conv2d = fused._CONV[2]

    def spy(x: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(bool(torch.backends.mkldnn.enabled))
        return conv2d(x, *args)  # type: ignore[arg-type]

    monkeypatch.setitem(fused._CONV, 2, spy)
    for enabled in (True, False):
        seen.clear()
        with torch.backends.mkldnn.flags(enabled=enabled):
            _compare(ALL, size=32, seed=4, recompute=recompute)  # forward, gradients, stats
            assert bool(torch.backends.mkldnn.enabled) == enabled
        assert seen and all(flag == enabled for flag in seen)


def test_plan_sorts_operations() -> None:
    mixed = [PartialChannelMixedOp(8, ALL, k=4) for _ in range(2)]
    plan = plan_candidates(mixed)
    # grouped by (kernel, dilation): sep_conv_3x3, dil_conv_3x3, sep_conv_5x5
    convs = [(p.consumer, p.op) for p in plan.convs]
    assert convs == [(0, 0), (1, 0), (0, 2), (1, 2), (0, 1), (1, 1)]
    assert [p.footprint for p in plan.convs] == [3, 3, 5, 5, 5, 5]
    keys = [k[0] for k in plan.shared]
    assert sorted(keys) == ["MaxPool2d", "avg_pool_3x3", "identity"]
    identity_users = plan.shared[("identity",)][1]
    # skip_connect and both residual convolutions feed the identity term
    assert sorted(identity_users) == [(0, 0), (0, 1), (0, 5), (1, 0), (1, 1), (1, 5)]
    assert plan.single == [] and plan.complete


def test_user_operation_runs_one_by_one_and_matches() -> None:
    @register_op("fused_test_scale", "2x, registered by a test")
    def _scale(channels: int, spatial_dims: int = 2, affine: bool = True) -> nn.Module:
        return _Double()

    try:
        ops = ("fused_test_scale", "sep_conv_3x3", "skip_connect")
        plan = plan_candidates([PartialChannelMixedOp(4, ops, k=1) for _ in range(2)])
        assert plan.single == [(0, 0), (1, 0)]
        _compare(ops, consumers=2, seed=4)
    finally:
        unregister_op("fused_test_scale")


class _Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_hooked_module_runs_one_by_one_so_its_hook_fires() -> None:
    mixed = [PartialChannelMixedOp(4, ALL, k=1) for _ in range(2)]
    seen: list[int] = []
    mixed[1].ops[0].body[1].register_forward_hook(lambda *_: seen.append(1))
    plan = plan_candidates(mixed)
    assert (1, 0) in plan.single and len(plan.convs) == 5
    mix_together(torch.randn(2, 4, 6, 6), mixed, list(torch.rand(2, len(ALL))))
    assert seen == [1]


def test_a_backward_hook_added_after_a_first_pass_fires() -> None:
    mixed = [PartialChannelMixedOp(4, ALL, k=1) for _ in range(2)]
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    w = list(torch.rand(2, len(ALL)))
    sum(y.sum() for y in mix_together(x, mixed, w)).backward()  # fused: no hook yet
    seen: list[str] = []
    bn = mixed[0].ops[1].body[3]  # sep_conv_5x5's BatchNorm, deep inside the candidate
    bn.register_full_backward_pre_hook(lambda *_: seen.append("pre"))
    assert (0, 1) in plan_candidates(mixed).single
    sum(y.sum() for y in mix_together(x, mixed, w)).backward()
    assert seen == ["pre"]


def test_switching_to_eval_after_training_passes_uses_the_running_statistics() -> None:
    torch.manual_seed(4)
    mixed = [PartialChannelMixedOp(4, ALL, k=1) for _ in range(2)]
    w = list(torch.softmax(torch.randn(2, len(ALL)), dim=1))
    for _ in range(3):
        mix_together(torch.randn(2, 4, 6, 6), mixed, w)  # fused, in training mode
    alone = copy.deepcopy(mixed)
    for m in (*mixed, *alone):
        m.eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        together = mix_together(x, mixed, w)
        one_by_one = [m.mix(x, wi) for m, wi in zip(alone, w, strict=True)]
    for a, b in zip(together, one_by_one, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_batch_norm_configured_differently_is_not_fused() -> None:
    mixed = [PartialChannelMixedOp(4, ALL, k=1) for _ in range(2)]
    mixed[1].ops[2].body[3].momentum = 0.5
    plan = plan_candidates(mixed)
    assert (1, 2) in plan.single
    before = copy.deepcopy(mixed)
    x = torch.randn(2, 4, 6, 6)
    w = list(torch.rand(2, len(ALL)))
    alone = [m.mix(x, wi) for m, wi in zip(before, w, strict=True)]
    for a, b in zip(mix_together(x, mixed, w), alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(_buffers(mixed), _buffers(before), strict=True):
        torch.testing.assert_close(a, b)


def test_only_none_falls_back_to_the_reference() -> None:
    mixed = [PartialChannelMixedOp(4, ("none",), k=1) for _ in range(2)]
    assert not plan_candidates(mixed).complete
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = mix_together(x, mixed, [torch.ones(1), torch.ones(1)])
    assert all(torch.equal(y, torch.zeros_like(x)) for y in out)


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize(("train", "recompute"), [(True, False), (True, True), (False, False)])
def test_search_cell_fused_equals_unfused(k: int, train: bool, recompute: bool) -> None:
    torch.manual_seed(5)
    cell = SearchCell("keep", 8, 8, ALL, 3, k, 2, {"affine": False}).train(train)
    plain = copy.deepcopy(cell)
    plain.fuse = False
    assert cell.fuse
    alpha = [torch.softmax(torch.randn(b + 1, len(ALL)), 1).requires_grad_() for b in range(3)]
    p = [torch.softmax(torch.randn(b + 1), 0).requires_grad_() for b in range(3)]
    alpha2 = [a.detach().clone().requires_grad_() for a in alpha]
    p2 = [q.detach().clone().requires_grad_() for q in p]
    x = torch.randn(2, 8, 8, 8)
    y1, y2 = cell(x, alpha, p, None, recompute), plain(x, alpha2, p2, None, recompute)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    for a, b in zip([*alpha, *p], [*alpha2, *p2], strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)
    for a, b in zip(cell.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)
    for a, b in zip(cell.buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b)


SPACE = SearchSpace(
    name="fused", layers=3, scales=2, channels=8, blocks=3, ops=ALL, partial_k=4, input_size=32
)


@pytest.mark.parametrize("memory", ["fast", "low"])
def test_supernet_switch_gives_the_same_loss_gradients_and_statistics(memory: str) -> None:
    torch.manual_seed(6)
    net = build_supernet(SPACE, memory=memory)
    plain = copy.deepcopy(net)
    plain.fuse_candidates = False
    assert net.fuse_candidates and not plain.fuse_candidates
    x = torch.randn(2, 1, 32, 32)
    for model in (net, plain):
        model(x).square().mean().backward()
    for (name, a), (_, b) in zip(net.named_parameters(), plain.named_parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)
    for (name, a), (_, b) in zip(net.named_buffers(), plain.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    # every running statistic was updated exactly once
    tracked = {int(b) for n, b in net.named_buffers() if n.endswith("num_batches_tracked")}
    assert tracked == {1}


def test_fused_supernet_saves_less_for_backward() -> None:
    net = build_supernet(SPACE)
    fused = activation_memory(net, (2, 1, 32, 32))
    net.fuse_candidates = False
    plain = activation_memory(net, (2, 1, 32, 32))
    assert fused < 0.6 * plain  # 0.54x measured (deterministic: bytes autograd saves)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
def test_separable_mix_gradcheck(affine: bool, recompute: bool) -> None:
    from msnas_graph.backends.torch.nn.fused import _SeparableMix

    g = torch.Generator().manual_seed(7)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.double).requires_grad_()

    # 2 groups of 2 channels, 3 convolutions each, 2 consumers; x a strided view
    x = rand(2, 4, 5, 6)[..., 1:]
    kernels = rand(12, 1, 3, 3)
    pointwise, coefficients = rand(2, 3, 2, 2), rand(2, 2, 3)
    weight, bias = (rand(12), rand(12)) if affine else (None, None)

    def fn(*args: torch.Tensor | None) -> torch.Tensor:
        return _SeparableMix.apply(*args, 1e-5, 2, recompute)[0]

    inputs = (x, kernels, pointwise, coefficients, weight, bias)
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("recompute", [False, True])
def test_shared_mix_gradcheck(spatial_dims: int, recompute: bool) -> None:
    from msnas_graph.backends.torch.nn.fused import _SharedMix
    from msnas_graph.backends.torch.nn.ops import AvgPool3x3, nd_layers

    g = torch.Generator().manual_seed(3)
    # 2 groups of 2 channels, 3 consumers; the identity, a max pool and the box-sum average pool
    x = torch.randn(2, 4, *(5,) * spatial_dims, generator=g, dtype=torch.double)
    x = x.requires_grad_()
    coefficients = torch.randn(2, 3, 3, generator=g, dtype=torch.double, requires_grad=True)
    modules = [None, nd_layers(spatial_dims).max_pool(3, 1, 1), AvgPool3x3(spatial_dims).train()]

    def fn(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, _SharedMix.apply(t, c, modules, 2, recompute))

    assert torch.autograd.gradcheck(fn, (x, coefficients))


def test_one_value_per_channel_is_refused_like_batch_norm() -> None:
    mixed = [PartialChannelMixedOp(2, ("sep_conv_3x3",), k=1)]
    x = torch.randn(1, 2, 1, 1, requires_grad=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        mixed[0].mix(x, torch.ones(1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        mix_together(x, mixed, [torch.ones(1)])


def test_bf16_autocast_matches_the_unfused_path_loosely() -> None:
    torch.manual_seed(8)
    net = build_supernet(SPACE)
    plain = copy.deepcopy(net)
    plain.fuse_candidates = False
    x = torch.randn(2, 1, 32, 32)
    losses = []
    for model in (net, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().square().mean()
        loss.backward()
        losses.append(float(loss.detach()))
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert losses[0] == pytest.approx(losses[1], rel=0.05)


@pytest.mark.parametrize("recompute", [False, True])
def test_shared_terms_under_autocast_give_gradients_of_the_inputs_dtype(recompute: bool) -> None:
    from msnas_graph.backends.torch.nn.fused import _SharedMix
    from msnas_graph.backends.torch.nn.ops import AvgPool3x3

    x = torch.randn(2, 4, 8, 8, requires_grad=True)  # float32 input, bfloat16 sums
    coefficients = torch.randn(2, 3, 3, requires_grad=True)
    modules = [None, nn.MaxPool2d(3, 1, 1), AvgPool3x3(2).train()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = cast(torch.Tensor, _SharedMix.apply(x, coefficients, modules, 2, recompute))
    y.float().square().sum().backward()
    assert x.grad is not None and coefficients.grad is not None
    assert x.grad.dtype == coefficients.grad.dtype == torch.float32
    assert torch.isfinite(x.grad).all() and coefficients.grad.abs().sum() > 0


@pytest.mark.parametrize("k", [1, 4])
def test_cells_into_one_node_run_as_one_computation(k: int) -> None:
    from msnas_graph.backends.torch.nn.cells import forward_cells

    torch.manual_seed(9)
    kinds = [("expand", 16), ("keep", 8), ("contract", 4)]
    cells = [SearchCell(kind, c_in, 8, ALL, 3, k, 2, {"affine": False}) for kind, c_in in kinds]
    alone = copy.deepcopy(cells)
    sides = {"expand": 4, "keep": 8, "contract": 16}
    xs = [torch.randn(2, c_in, sides[kind], sides[kind]) for kind, c_in in kinds]
    weights = [
        (
            [torch.softmax(torch.randn(b + 1, len(ALL)), 1).requires_grad_() for b in range(3)],
            [torch.softmax(torch.randn(b + 1), 0).requires_grad_() for b in range(3)],
        )
        for _ in kinds
    ]
    copies = [
        (
            [a.detach().clone().requires_grad_() for a in aw],
            [q.detach().clone().requires_grad_() for q in pw],
        )
        for aw, pw in weights
    ]
    scales = [torch.tensor(0.5), None, torch.tensor(2.0)]
    together = forward_cells(
        cells, xs, [a for a, _ in weights], [q for _, q in weights], scales, recompute=True
    )
    apart = [
        cell(x, aw, pw, s, True)
        for cell, x, (aw, pw), s in zip(alone, xs, copies, scales, strict=True)
    ]
    for a, b in zip(together, apart, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    sum(t.square().sum() for t in together).backward()
    sum(t.square().sum() for t in apart).backward()
    for (aw, pw), (aw2, pw2) in zip(weights, copies, strict=True):
        for a, b in zip([*aw, *pw], [*aw2, *pw2], strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4)
    for cell, other in zip(cells, alone, strict=True):
        for a, b in zip(cell.parameters(), other.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4)
        for a, b in zip(cell.buffers(), other.buffers(), strict=True):
            torch.testing.assert_close(a, b)


def test_a_hooked_cell_runs_through_its_call() -> None:
    net = build_supernet(SPACE)
    seen: list[str] = []
    for key, cell in net.cells.items():
        cell.register_forward_hook(lambda *_, key=key: seen.append(key))
    net(torch.randn(2, 1, 32, 32))
    assert sorted(seen) == sorted(net.cells.keys())


def test_a_cell_with_only_a_backward_hook_runs_through_its_call() -> None:
    net = build_supernet(SPACE)
    seen: list[str] = []
    for key, cell in net.cells.items():
        cell.register_full_backward_hook(lambda *_, key=key: seen.append(key))
    net(torch.randn(2, 1, 32, 32)).sum().backward()
    assert sorted(seen) == sorted(net.cells.keys())


def test_a_synchronised_batch_norm_is_not_fused() -> None:
    mixed = [PartialChannelMixedOp(4, ALL, k=1) for _ in range(2)]
    body = mixed[0].ops[0].body
    body[3] = nn.SyncBatchNorm.convert_sync_batchnorm(body[3])
    assert type(body[3]) is nn.SyncBatchNorm
    plan = plan_candidates(mixed)
    assert (0, 0) in plan.single and len(plan.convs) == 5


def _saved_bytes(fn: object, *args: object) -> dict[int, int]:
    """Storage -> bytes of what autograd saves for backward while ``fn(*args)`` runs."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)  # type: ignore[operator]
    return seen


@pytest.mark.parametrize("channels", [4, 12])
def test_recompute_saves_only_the_input(channels: int) -> None:
    torch.manual_seed(0)
    mixed = [PartialChannelMixedOp(channels, ALL, 1, 2, {"affine": False}) for _ in range(3)]
    for p in _params(mixed):  # as in an architecture step: the coefficients' gradient only
        p.requires_grad_(False)
    x = torch.randn(2, channels, 32, 32).requires_grad_()
    w = torch.softmax(torch.randn(3, len(ALL)), dim=1).requires_grad_()
    x_ptr, x_bytes = x.untyped_storage().data_ptr(), x.untyped_storage().nbytes()
    small = _saved_bytes(mix_together, x, mixed, list(w), True)
    large = _saved_bytes(mix_together, x, mixed, list(w), False)
    assert x_ptr in small
    # x, and nothing else of its size or more: no depth-wise output, no pooled output
    assert max(b for ptr, b in small.items() if ptr != x_ptr) < x_bytes
    # without: the depth-wise output (9 convolutions per channel) and the pooled outputs
    assert sum(large.values()) > 9 * x_bytes

"""BatchNorm folding and channels-last for inference (backends/torch/fuse.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from msnas_graph.backends.torch.fuse import fold_batch_norms, fuse_for_inference
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.nn.supernet import build_supernet
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.decode import decode
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.affine:
                    m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))


def _count_bn(module: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in module.modules())


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    quick = SearchSpace.preset("quick")
    arch = decode(SearchState.random(quick, seed=3), paths=3)
    vol = SearchSpace.preset("tiny", spatial_dims=3, input_size=16)
    return {
        "final concat": (build_network(arch, fusion="concat"), (2, 1, 32, 32)),
        "final sum": (build_network(arch, fusion="sum"), (2, 1, 32, 32)),
        "unet": (UNet(1, 2, base_channels=8, depth=3), (2, 1, 32, 32)),
        "final 3d": (
            build_network(decode(SearchState.random(vol, seed=0), paths=2)),
            (1, 1, 16, 16, 16),
        ),
        "supernet": (build_supernet(quick), (2, 1, 32, 32)),
        "final lean": (build_network(_lean_arch()), (2, 1, 32, 32)),
    }


def _lean_arch():
    """Dense convolutions and parameter-free operations under the lean cell glue: cells with
    and without a preprocess and a projection."""
    ops = ("conv_3x3", "conv_3x3_dil2", "skip_connect", "avg_pool_3x3", "none")
    space = SearchSpace.preset("quick", ops=ops, cell_glue="lean")
    return decode(SearchState.random(space, seed=1), paths=3)


def _ready(name: str) -> tuple[nn.Module, torch.Tensor]:
    """Model ``name`` in eval mode with non-trivial BatchNorm statistics, and an input."""
    torch.manual_seed(0)
    model, shape = _models()[name]
    _randomise_bn(model)
    return model.eval(), torch.randn(shape)


@pytest.mark.parametrize("name", list(_models()))
def test_folded_model_computes_the_same_function_without_batch_norms(name: str) -> None:
    torch.manual_seed(0)
    model, shape = _models()[name]
    _randomise_bn(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(shape)
    fused = fuse_for_inference(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    # every conv->BN pair folded (the supernet's BatchNorms after pooling-free ops included)
    assert _count_bn(fused) == 0
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    # the model handed in is untouched
    assert _count_bn(model) > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize(
    "name", ["final concat", "final sum", "final 3d", "supernet", "final lean"]
)
def test_split_concat_convs_compute_the_same_function(name: str) -> None:
    from msnas_graph.backends.torch.nn.blocks import ConcatFusion, Projection, SplitConv

    model, x = _ready(name)
    split = fuse_for_inference(model, split_concat=True)
    owners = [m for m in split.modules() if isinstance(m, Projection | ConcatFusion)]
    # every cell projection and concat fusion now sums one convolution per input
    assert owners and all(isinstance(m.conv, SplitConv) for m in owners)
    assert all(len(m.conv.convs) == m.parts for m in owners)
    with torch.no_grad():
        torch.testing.assert_close(split(x), model(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, SplitConv) for m in fuse_for_inference(model).modules())


def test_export_has_no_concat_feeding_a_convolution(tmp_path) -> None:
    pytest.importorskip("onnx")
    import onnx

    from msnas_graph.backends.torch.export import export_model

    arch = decode(SearchState.random(SearchSpace.preset("quick"), seed=3), paths=3)
    arch.save(tmp_path / "arch.json")
    report = export_model(tmp_path / "arch.json", tmp_path / "m.onnx", input_size=32)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4  # onnxruntime agrees
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    convs = {i for n in graph.node if n.op_type == "Conv" for i in n.input}
    concat_outputs = {o for n in graph.node if n.op_type == "Concat" for o in n.output}
    assert not convs & concat_outputs


@pytest.mark.parametrize("name", ["final concat", "final sum", "unet", "supernet", "final lean"])
def test_channels_last_gives_the_same_outputs(name: str) -> None:
    model, x = _ready(name)
    fused = fuse_for_inference(model, channels_last=True)
    conv = next(m for m in fused.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(x)
        got = fused(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused(x), want, atol=1e-5, rtol=1e-5)  # NCHW still works


def test_folding_needs_eval_mode_and_leaves_unfoldable_pairs() -> None:
    seq = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="training mode"):
        fold_batch_norms(seq)
    # BN before the conv, a transposed conv and a BN without running statistics: not folded
    seq = nn.Sequential(
        nn.BatchNorm2d(2),
        nn.Conv2d(2, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(2, 2, 2, stride=2),
        nn.BatchNorm2d(2),
        nn.Conv2d(2, 2, 1),
        nn.BatchNorm2d(2, track_running_stats=False),
    ).eval()
    assert fold_batch_norms(seq) == 0
    assert _count_bn(seq) == 3


# ----------------------------------------------------------------------- measured latency


def test_measure_latency_reports_each_batch_and_leaves_the_model_alone() -> None:
    from msnas_graph.backends.torch.cost import measure_latency
    from msnas_graph.errors import BackendError

    model, _ = _models()["final sum"]
    model.train()
    reports = measure_latency(model, (1, 1, 32, 32), batch_sizes=(1, 3), warmup=1, repeats=2)
    assert [r.batch for r in reports] == [1, 3]
    for r in reports:
        d = r.to_dict()
        assert d["ms_per_batch"] > 0 and d["device"] == "cpu"
        assert d["ms_per_image"] == pytest.approx(d["ms_per_batch"] / r.batch)
        assert d["images_per_s"] == pytest.approx(1000 / d["ms_per_image"])
    assert model.training and _count_bn(model) > 0  # measured on a fused copy
    with pytest.raises(BackendError, match="batch_sizes"):
        measure_latency(model, (1, 1, 32, 32), batch_sizes=(0,))


def test_cost_command_latency_flag(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from msnas_graph.cli.main import main

    arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
    arch.save(tmp_path / "a.json")
    args = ["cost", str(tmp_path / "a.json"), "--input-size", "32", "--no-memory", "--latency"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    latency = json.loads(result.output)["latency"]
    assert [r["batch"] for r in latency] == [1, 8] and latency[0]["images_per_s"] > 0
    result = CliRunner().invoke(main, [*args, "--device", "cpu"])
    assert result.exit_code == 0 and "ms/image" in result.output and "images/s" in result.output

"""Inference runtimes (backends/torch/runtimes.py): each equals eager, NaN stays NaN, auto's
choice, compile's fallback, and the --runtime option of predict and cost."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from msnas_graph.backends.torch import runtimes
from msnas_graph.backends.torch.cost import measure_latency
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.backends.torch.runtimes import InferenceRuntime, check_runtime, outputs_match
from msnas_graph.cli.main import main
from msnas_graph.decode import decode
from msnas_graph.errors import BackendError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

HAS_ORT = runtimes.onnxruntime_available()


def _randomise_bn(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module.eval()


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "final":
        arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
        return _randomise_bn(build_network(arch))
    return _randomise_bn(UNet(1, 2, base_channels=4, depth=3))


@pytest.mark.parametrize("name", ["final", "unet"])
@pytest.mark.parametrize(
    "runtime",
    [
        "eager",
        "jit",
        pytest.param(
            "onnxruntime", marks=pytest.mark.skipif(not HAS_ORT, reason="onnxruntime missing")
        ),
        "auto",
    ],
)
def test_every_runtime_computes_eager_outputs(name: str, runtime: str) -> None:
    model = _model(name)
    run = InferenceRuntime(model, runtime)
    g = torch.Generator().manual_seed(1)
    x2, x3 = torch.randn(2, 1, 32, 32, generator=g), torch.randn(3, 1, 32, 32, generator=g)
    nan = x2.clone()
    nan[1, 0, 5, 7] = float("nan")
    for x in (x2, x3, nan):  # another batch size after the first; a NaN pixel
        with torch.no_grad():
            ref = model(x)
        got = run(x)
        assert got.shape == ref.shape
        assert torch.equal(torch.isnan(got), torch.isnan(ref))
        assert torch.isnan(ref).any() == (x is nan)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5, equal_nan=True)
    want = {"auto": "onnxruntime" if HAS_ORT else "jit"}.get(runtime, runtime)
    assert run.resolved == want
    assert all(not m.training for m in model.modules())  # the given model untouched


def test_eager_is_channels_last_on_the_cpu_for_2d_inputs_only() -> None:
    unet = _model("unet")
    run = InferenceRuntime(unet, "eager")
    x = torch.randn(2, 1, 32, 32)
    got = run(x)
    torch.testing.assert_close(got, unet(x).detach(), rtol=1e-4, atol=1e-5)
    assert got.is_contiguous()
    assert run.model.inc.body[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not unet.inc.body[3].weight.is_contiguous(memory_format=torch.channels_last)
    plain = InferenceRuntime(unet, "eager", channels_last=False)
    plain(x)
    assert not plain.model.inc.body[3].weight.is_contiguous(memory_format=torch.channels_last)
    vol = SearchSpace.preset("tiny", spatial_dims=3, input_size=16)
    net3d = _randomise_bn(build_network(decode(SearchState.random(vol, seed=0), paths=2)))
    x3d = torch.randn(1, 1, 16, 16, 16)
    for runtime in ("eager", "jit"):
        got = InferenceRuntime(net3d, runtime)(x3d)
        torch.testing.assert_close(got, net3d(x3d).detach(), rtol=1e-4, atol=1e-5)


def test_eager_final_network_runs_under_cpu_bf16_autocast() -> None:
    # gpu_check.py --smoke section (b): the eager runtime's model under CPU autocast (the
    # former matrix-product 1x1 convolutions mixed bfloat16 and float32 and raised)
    net = _model("final")
    x = torch.randn(2, 1, 32, 32)
    want = net(x).detach()
    for channels_last in (True, False):
        run = InferenceRuntime(net, "eager", channels_last=channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = run(x)
        assert got.shape == want.shape and torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), want, rtol=0.1, atol=0.1 * float(want.abs().max()))


def test_auto_without_onnxruntime_takes_jit_and_unknown_names_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(BackendError, match=r"runtime 'onnxruntim'.*did you mean 'onnxruntime'"):
        check_runtime("onnxruntim")
    monkeypatch.setattr(runtimes, "onnxruntime_available", lambda: False)
    with pytest.raises(BackendError, match=r"needs onnx and onnxruntime: pip install") as info:
        InferenceRuntime(nn.Conv2d(1, 1, 1), "onnxruntime")
    assert "\n" not in str(info.value)
    model = _model("unet")
    run = InferenceRuntime(model, "auto")
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(run(x), model(x).detach(), rtol=1e-4, atol=1e-5)
    assert run.resolved == "jit"


def test_auto_falls_back_to_eager_when_a_candidate_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtimes, "onnxruntime_available", lambda: False)

    class OffByOne(runtimes._Jit):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return super().__call__(x) + 1.0

    monkeypatch.setattr(runtimes, "_Jit", OffByOne)
    model = _model("final")
    run = InferenceRuntime(model, "auto")
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(run(x), model(x).detach(), rtol=1e-4, atol=1e-5)
    assert run.resolved == "eager"


def test_outputs_match_scales_with_the_logits() -> None:
    big = torch.tensor([1000.0, -3.0])
    assert outputs_match(big, big + torch.tensor([0.05, 0.0]))
    assert not outputs_match(big, big + torch.tensor([0.0, 0.5]))
    assert not outputs_match(big, big[:1])
    assert not outputs_match(big, torch.tensor([1000.0, float("nan")]))


def test_compile_failure_falls_back_to_eager_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(model: nn.Module) -> object:
        def call(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("inductor: no C compiler\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    model = _model("final")
    run = InferenceRuntime(model, "compile")
    with caplog.at_level(logging.WARNING, logger="msnas_graph"):
        for batch in (2, 3):
            x = torch.randn(batch, 1, 32, 32)
            torch.testing.assert_close(run(x), model(x).detach(), rtol=1e-4, atol=1e-5)
    warned = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warned) == 1 and "no C compiler" in warned[0].getMessage()
    assert run.resolved == "eager"
    assert "more detail" not in warned[0].getMessage()


@pytest.mark.slow
def test_compile_runs_a_tiny_network() -> None:
    """torch.compile (inductor) for real, on the smallest network; ~10-30 s on one CPU."""
    model = _randomise_bn(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)))
    run = InferenceRuntime(model, "compile")
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(run(x), model(x).detach(), rtol=1e-4, atol=1e-5)
    assert run.resolved == "compile"
    assert run._runner["run"].compiled is not None  # compiled, not fallen back


def test_latency_reports_the_runtime_used() -> None:
    reports = measure_latency(_model("unet"), (1, 1, 32, 32), repeats=1, warmup=0, runtime="jit")
    assert [(r.batch, r.to_dict()["runtime"]) for r in reports] == [(1, "jit"), (8, "jit")]
    with pytest.raises(BackendError, match="unknown runtime 'fast'"):
        measure_latency(nn.Conv2d(1, 1, 1), (1, 1, 8, 8), runtime="fast")


def _cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_predict_runtime_option_end_to_end(tmp_path: Path) -> None:
    """A tiny trained U-Net: jit and eager write the same masks; a bad name is one line."""
    smoke = ["--device", "cpu", "--no-progress", "--max-steps", "1", "--batch-size", "2"]
    run_dir = tmp_path / "t"
    code, _, err = _cli(
        "train", run_dir, "--model", "unet", "--unet-base", "4", "--unet-depth", "2",
        "--data", "phantom:6", "--epochs", "1", "--input-size", "32", *smoke,
    )  # fmt: skip
    assert code == 0, err
    masks = {}
    for runtime in ("eager", "jit"):
        out = tmp_path / runtime
        code, _, err = _cli("predict", run_dir, "phantom:3", "-o", out, "--runtime", runtime)
        assert code == 0, err
        masks[runtime] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert masks["eager"] == masks["jit"] and len(masks["jit"]) == 3
    dice = {}
    for runtime in ("eager", "jit"):
        out = tmp_path / f"eval_{runtime}"
        args = ("evaluate", run_dir, "--split", "all", "-o", out, "--runtime", runtime, "--json")
        code, text, err = _cli(*args)
        assert code == 0, err
        dice[runtime] = json.loads(text)["mean_dice"]
    assert dice["eager"] == dice["jit"]
    code, _, err = _cli("predict", run_dir, "phantom:1", "-o", tmp_path / "x", "--runtime", "jt")
    assert code == 1 and "unknown runtime 'jt'" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    code, _, err = _cli("cost", "--model", "unet", "--runtime", "jit")
    assert code == 2 and "--runtime goes with --latency" in err


def test_runtime_option_defaults_are_the_functions_defaults() -> None:
    import inspect

    from msnas_graph.backends.torch.cost import model_cost
    from msnas_graph.backends.torch.inference import evaluate, predict
    from msnas_graph.cli.backend_commands import cost
    from msnas_graph.cli.backend_commands import evaluate as evaluate_cmd
    from msnas_graph.cli.backend_commands import predict as pred

    for command, function in ((pred, predict), (evaluate_cmd, evaluate), (cost, model_cost)):
        option = next(p for p in command.params if p.name == "runtime")
        default = inspect.signature(function).parameters["runtime"].default
        assert option.default == default, command.name

"""Memory limits of inference and on CUDA devices (issue 9).

``evaluate`` and ``predict`` check a model's weights *and* its activations at the run's input
size and batch before running; the CUDA branch of the estimate's available memory (the
smaller of the device's free memory and the host's) is exercised on the CPU by faking
``torch.cuda``. ``MSNAS_MEMORY_LIMIT`` caps the host memory counted as available, so the
outcomes do not depend on this machine's free memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from msnas_graph.backends.torch import inference, limits
from msnas_graph.backends.torch.models import create_model
from msnas_graph.cli.main import main
from msnas_graph.errors import ResourceError
from msnas_graph.spec import SearchSpace

SPEC = {"format": "msnas-graph/model", "schema_version": 1, "kind": "unet",
        "unet": {"base_channels": 4, "depth": 3}, "in_channels": 1, "num_classes": 2,
        "input_size": 32}  # fmt: skip
# weights of that U-Net: 4198 x 4 B = 16.4 KiB; activations on 2 x 1x32x32: ~604 KiB
BETWEEN = "200K"


@pytest.fixture(autouse=True)
def _limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "8G")
    monkeypatch.delenv("MSNAS_NO_MEMORY_CHECK", raising=False)
    monkeypatch.chdir(tmp_path)


def _run(root: Path, spec: dict[str, Any] = SPEC) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps(spec))
    torch.manual_seed(0)
    torch.save(create_model(spec).state_dict(), run / "best.pt")
    return run


def _data(root: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 2, (32, 32), np.uint8)).save(root / "masks" / f"{i}.png")
    return root


def _cli(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _refused_in_one_line(args: list[Any], what: str) -> None:
    code, out, err = _cli(*args)
    lines = err.strip().splitlines()
    assert code == 1, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("msnas-graph: error: "), err
    assert what in err and "needs about" in err and "--no-memory-check" in err, err
    assert "Traceback" not in err and "unexpected" not in err


def test_the_limit_lies_between_the_weights_and_the_activations() -> None:
    params, act = limits.model_estimate(SPEC, (2, 1, 32, 32))
    assert params * 4 < 200 * 1024 < params * 4 + act  # so the tests below test activations


def test_evaluate_refuses_activations_that_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, data = _run(tmp_path), _data(tmp_path / "d")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", BETWEEN)
    args = ["evaluate", run, "--data", data, "--split", "all", "--device", "cpu"]
    _refused_in_one_line(args, "evaluate: the unet model of")
    assert not (run / "eval_all").exists()
    code, _, err = _cli("--no-memory-check", *args)  # the override lets it through
    assert code == 0, err
    assert (run / "eval_all" / "summary.json").is_file()


def test_predict_refuses_activations_that_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, data = _run(tmp_path), _data(tmp_path / "d")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", BETWEEN)
    args = ["predict", run, data / "images", "-o", tmp_path / "masks", "--device", "cpu"]
    _refused_in_one_line(args, "predict: the unet model of")
    assert not (tmp_path / "masks").exists()
    code, _, err = _cli("--no-memory-check", *args)
    assert code == 0, err
    assert len(list((tmp_path / "masks").glob("*.png"))) == 2


def test_inference_checks_the_batch_it_will_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of 1 fits where one of 2 does not: the check uses min(batch_size, cases)."""
    run, data = _run(tmp_path), _data(tmp_path / "d")
    params, act1 = limits.model_estimate(SPEC, (1, 1, 32, 32))
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(params * 4 + act1 + act1 // 2))
    with pytest.raises(ResourceError, match="on a batch of 2 x 1x32x32"):
        inference.predict(run, data / "images", tmp_path / "m2", device="cpu", batch_size=8)
    assert not (tmp_path / "m2").exists()
    written = inference.predict(run, data / "images", tmp_path / "m1", device="cpu", batch_size=1)
    assert len(written) == 2


def test_inference_estimate_uses_the_3d_input_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dict(SPEC, unet={"base_channels": 4, "depth": 3, "spatial_dims": 3}, input_size=16)
    params, act = limits.model_estimate(spec, (2, 1, 16, 16, 16))
    need = params * 4 + act
    assert inference.check_inference_memory(spec, 2, "cpu") == need
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(need - 1))
    with pytest.raises(ResourceError, match=r"predict: .* on a batch of 2 x 1x16x16x16 needs"):
        inference.check_inference_memory(spec, 2, "cpu", "predict")
    assert inference.check_inference_memory({"input_size": 16}, 2, "cpu") == 0  # not a model


# ------------------------------------------------------------------------------ CUDA branch


class _FakeCuda:
    """``torch.cuda`` as seen by the estimate: available, with ``free`` bytes on the device."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, free: int) -> None:
        self.free = free
        self.asked: list[torch.device] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "mem_get_info", self.mem_get_info)

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        self.asked.append(torch.device(device))
        return self.free, 80 * 2**30


def test_cuda_device_free_memory_bounds_the_supernet(monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace.preset("tiny")
    need = limits.check_supernet(space, 2, 32)  # on the CPU, with 8G of host memory
    cuda = _FakeCuda(monkeypatch, free=need // 2)
    with pytest.raises(
        ResourceError,
        match=r"supernet of .* 32x32 on cuda needs about .*"
        r"is available; .*--no-memory-check",
    ):
        limits.check_supernet(space, 2, 32, device="cuda")
    assert cuda.asked and cuda.asked[0].type == "cuda"
    assert limits.check_supernet(space, 2, 32, device="cpu") == need  # the host has plenty
    cuda.free = 64 * 2**30
    assert limits.check_supernet(space, 2, 32, device="cuda:0") == need
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(need // 2))  # device large, host small
    with pytest.raises(ResourceError, match=r"32x32 needs about"):  # the host's memory
        limits.check_supernet(space, 2, 32, device="cuda")


def test_cuda_device_free_memory_bounds_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (2, 1, 32, 32)
    need = limits.check_model(SPEC, shape, "the model", device="cpu")
    cuda = _FakeCuda(monkeypatch, free=need - 1)
    with pytest.raises(ResourceError, match="the model on cuda:0 needs about"):
        limits.check_model(SPEC, shape, "the model", device=torch.device("cuda", 0))
    assert cuda.asked == [torch.device("cuda", 0)]
    cuda.free = need
    assert limits.check_model(SPEC, shape, "the model", device="cuda") == need
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(need - 1))
    with pytest.raises(ResourceError, match="the model needs about"):
        limits.check_model(SPEC, shape, "the model", device="cuda")
    monkeypatch.setenv("MSNAS_NO_MEMORY_CHECK", "1")  # the override skips the device too
    cuda.free = 0
    assert limits.check_model(SPEC, shape, "the model", device="cuda") == 0


def test_no_cuda_means_host_memory_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``device="cuda"`` on a machine without CUDA does not ask the (absent) device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def absent(device: Any = None) -> tuple[int, int]:
        raise AssertionError("mem_get_info called without CUDA")

    monkeypatch.setattr(torch.cuda, "mem_get_info", absent)
    assert limits.check_model(SPEC, (2, 1, 32, 32), "the model", device="cuda") > 0


def test_predict_refuses_data_that_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file dataset's estimate through the CLI: 2 images of 128x128 (2 KiB + 64 KiB) do
    not fit where the model's weights (16.4 KiB) do."""
    run, images = _run(tmp_path), tmp_path / "scans"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((128, 128), np.uint8)).save(images / f"{i}.png")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "40K")
    args = ["predict", run, images, "-o", tmp_path / "masks", "--device", "cpu"]
    _refused_in_one_line(args, f"data {images} (2 cases, 2 images of up to 128x128)")
    assert not (tmp_path / "masks").exists()


def test_training_cache_is_estimated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from msnas_graph.backends.torch.data import SegmentationTorchDataset
    from msnas_graph.data import load_dataset

    dataset = load_dataset(_data(tmp_path / "d", n=4))
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "100K")  # 4 cases at 128: 4 x 128^2 x 12 B = 768 KiB
    with pytest.raises(ResourceError, match=r"caching 4 cases at 128x128 .*--no-memory-check"):
        SegmentationTorchDataset(dataset, range(4), 128)
    assert len(SegmentationTorchDataset(dataset, range(4), 128, cache=False)) == 4
    assert len(SegmentationTorchDataset(dataset, range(4), 32)) == 4  # 48 KiB fits


def test_torch_estimates_follow_the_one_rule_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bytes of a weight, the training copies and the bytes of a cached case are
    ``msnas_graph.limits``'s rules: the model check and the training cache's follow them."""
    from msnas_graph import limits as rules
    from msnas_graph.backends.torch.data import SegmentationTorchDataset
    from msnas_graph.data import load_dataset

    shape = (2, 1, 32, 32)
    params, act = limits.model_estimate(SPEC, shape)
    assert limits.check_model(SPEC, shape, "m", training=True) == params * 4 * 4 + act
    monkeypatch.setattr(rules, "TRAINING_COPIES", 3)
    assert limits.check_model(SPEC, shape, "m", training=True) == params * 4 * 3 + act
    dataset = load_dataset(_data(tmp_path / "d", n=4))
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(4 * 32 * 32 * (4 + 8)))
    assert len(SegmentationTorchDataset(dataset, range(4), 32)) == 4
    monkeypatch.setattr(rules, "FLOAT32", 8)
    with pytest.raises(ResourceError, match=r"caching 4 cases at 32x32"):
        SegmentationTorchDataset(dataset, range(4), 32)


def test_loading_a_run_checks_its_weights_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_model`` (evaluate, predict, compare) checks the weights before it builds the
    model (the model layer builds; the layers above it check)."""
    run = _run(tmp_path)
    params, _ = limits.model_estimate(SPEC, None)
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(params * 4 - 1))
    with pytest.raises(ResourceError, match=r"model\.json: the model's weights needs about"):
        inference.load_model(run, "cpu")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(params * 4))
    assert inference.load_model(run, "cpu")[1]["kind"] == "unet"

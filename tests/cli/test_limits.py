"""Memory limits and messages (issue 9, items 8 and 10) through the CLI.

Absurd requests end, before anything is allocated, in one line that names the request and the
override ``--no-memory-check``. ``MSNAS_MEMORY_LIMIT`` caps the memory counted as available, so
the outcome does not depend on the machine's free memory.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from msnas_graph.cli.main import main
from msnas_graph.errors import DataError

pytest.importorskip("torch")

SMOKE = ["--device", "cpu", "--max-steps", "1", "--batch-size", "2", "--no-progress"]
UNET = ["--model", "unet", "--unet-base", "4", "--unet-depth", "3", "--input-size", "32"]


def _cli(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _data(root: Path, n: int, labels: tuple[int, ...] = (0, 1)) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 255, (32, 32), np.uint8)
        mask = rng.choice(np.array(labels, np.uint8), (32, 32))
        Image.fromarray(image).save(root / "images" / f"c{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
    return root


@pytest.fixture(autouse=True)
def _limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "8G")
    monkeypatch.delenv("MSNAS_NO_MEMORY_CHECK", raising=False)
    monkeypatch.chdir(tmp_path)


def _refused(args: list[Any], what: str) -> str:
    start = time.perf_counter()
    code, out, err = _cli(*args)
    elapsed = time.perf_counter() - start
    lines = err.strip().splitlines()
    assert code == 1, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("msnas-graph: error: "), err
    assert what in err and "--no-memory-check" in err and "needs about" in err, err
    assert "unexpected" not in err and "Traceback" not in err
    assert elapsed < 60, elapsed  # estimated, not allocated
    return err


LARGE_SPACE = "layers: 1000\nscales: 16\nchannels: 4096\ninput_size: 32768\n"


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["search", "r", "--space", "tiny", "--data", "phantom:1000000000", *SMOKE], "phantom:"),
        (["train", "r", "--model", "unet", "--unet-base", "100000", "--data", "phantom:8",
          *SMOKE], "train: the unet model"),
        (["cost", "--model", "unet", "--input-size", "100000"], "cost: the unet model"),
        (["cost", "--model", "unet", "--unet-base", "100000"], "cost: the unet model"),
        (["export", "unet", "--onnx", "x.onnx", "--input-size", "100000"], "export: the unet"),
    ],
    ids=["phantom-1e9", "train-unet-base-1e5", "cost-input-1e5", "cost-unet-base-1e5",
         "export-input-1e5"],
)  # fmt: skip
def test_absurd_request_is_refused_in_one_line(args: list[str], what: str) -> None:
    _refused(args, what)
    assert not Path("r").exists() and not Path("x.onnx").exists()


@pytest.mark.slow
def test_largest_legal_space_is_refused_before_the_supernet_is_built(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(LARGE_SPACE)
    err = _refused(
        ["search", "r", "--space", "big.yaml", "--data", "phantom:8", *SMOKE], "supernet of 1000"
    )
    assert "TiB" in err


def test_huge_in_channels_in_model_json_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    spec = {"format": "msnas-graph/model", "schema_version": 1, "kind": "unet",
            "unet": {"base_channels": 4, "depth": 3}, "in_channels": 10**8, "num_classes": 2,
            "input_size": 32}  # fmt: skip
    (run / "model.json").write_text(json.dumps(spec))
    (run / "best.pt").write_bytes(b"")
    _refused(["cost", str(run), "--input-size", "32"], "unet model")


def test_override_lets_the_request_through_and_does_not_stick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "1K")
    small = ["cost", "--model", "unet", "--unet-base", "4", "--unet-depth", "3",
             "--input-size", "32", "--json"]  # fmt: skip
    code, out, err = _cli("--no-memory-check", *small)
    assert code == 0, err
    assert json.loads(out)["params"] > 0
    assert "MSNAS_NO_MEMORY_CHECK" not in os.environ  # restored after the command
    _refused(small, "cost: the unet model")
    monkeypatch.setenv("MSNAS_NO_MEMORY_CHECK", "1")
    assert _cli(*small)[0] == 0


def test_bad_memory_limit_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "lots")
    code, _, err = _cli("search", "r", "--space", "tiny", "--data", "phantom:8", *SMOKE)
    assert code == 1 and "MSNAS_MEMORY_LIMIT='lots'" in err and len(err.splitlines()) == 1


def test_supernet_estimate_is_close_to_the_measured_activations() -> None:
    from msnas_graph.backends.torch.cost import activation_memory
    from msnas_graph.backends.torch.limits import supernet_estimate
    from msnas_graph.backends.torch.nn.supernet import Supernet
    from msnas_graph.spec import SearchSpace

    space = SearchSpace.preset("tiny")
    params, act = supernet_estimate(space, 2, 32)
    net = Supernet(space)
    real_params = sum(p.numel() for p in net.parameters())
    real_act = activation_memory(net, (2, 1, 32, 32))
    assert 0.8 * real_params <= params <= real_params  # stem and head left out
    assert 0.5 * real_act <= act <= 2 * real_act


# ------------------------------------------------------------------------------ messages


def test_inputs_per_block_beyond_the_last_block_is_refused() -> None:
    assert _cli("sample", "--space", "tiny", "-o", "s.json")[0] == 0
    code, _, err = _cli("decode", "s.json", "--inputs-per-block", "99")
    assert code == 1 and "--inputs-per-block 2 or less" in err, err
    assert _cli("decode", "s.json", "--inputs-per-block", "2")[0] == 0


def test_too_few_cases_for_the_default_folds_names_real_options(tmp_path: Path) -> None:
    _data(tmp_path / "d", 2)
    code, _, err = _cli("train", "r", *UNET, "--data", "d", "--epochs", "1", *SMOKE)
    assert code == 1 and "--folds" in err and "k <=" not in err, err


def test_sparse_labels_are_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from msnas_graph.data import load_dataset

    _data(tmp_path / "d", 2, labels=(0, 7))
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(tmp_path / "d")
    assert ds.num_classes == 8
    assert "labels 0, 7: read as 8 classes" in caplog.text and "num_classes" in caplog.text


def test_label_outside_the_classes_names_a_real_setting(tmp_path: Path) -> None:
    from msnas_graph.data import load_dataset

    _data(tmp_path / "d", 1, labels=(0, 7))
    ds = load_dataset(tmp_path / "d", num_classes=2)
    with pytest.raises(DataError, match=r"load_dataset\(\.\.\., num_classes=8\)"):
        ds[0]


@pytest.mark.slow
def test_same_run_twice_is_not_two_folds(tmp_path: Path) -> None:
    _data(tmp_path / "d", 10)
    code, _, err = _cli("train", "t", *UNET, "--data", "d", "--epochs", "1", *SMOKE)
    assert code == 0, err
    (tmp_path / "t2").symlink_to(tmp_path / "t")
    for pair in (["t", "t"], ["t", "t2"], ["t", "t/best.pt"]):
        code, _, err = _cli("evaluate", *pair, "--device", "cpu")
        assert code == 1 and "the same run" in err and len(err.splitlines()) == 1, err


def test_write_errors_name_the_path_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msnas_graph import _util

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(_util.os, "replace", full)
    with pytest.raises(OSError, match="No space") as info:
        _util.atomic_write(tmp_path / "out.json", "{}")
    assert info.value.filename == str(tmp_path / "out.json")
    assert not list(tmp_path.iterdir())  # the temporary file is gone

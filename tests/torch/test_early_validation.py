"""Validate before the first step (issue 18 item 11): a run that fails before its first
checkpointed epoch leaves nothing that blocks the retry, and ``predict`` reads every input
before it writes the first mask."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from msnas_graph.backends.torch import inference
from msnas_graph.cli.main import main
from msnas_graph.decode import decode
from msnas_graph.operations import register_operation_name
from msnas_graph.spec import load_space
from msnas_graph.state import SearchState

SMOKE = ["--device", "cpu", "--max-steps", "1", "--batch-size", "2", "--no-progress"]


def _cli(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_a_run_that_fails_in_its_first_epoch_leaves_nothing_that_blocks_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plug-in operation that passes the build-time probe (8 pixels a side) but fails on the
    real input: the epoch-0 checkpoint is removed, so the same command is not refused as
    "holds an unfinished run"."""
    op, module = f"late_{uuid.uuid4().hex[:8]}", f"late_ops_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from torch import nn\n"
        "from msnas_graph.backends.torch import register_op\n\n"
        "class Late(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if x.shape[-1] > 8:\n"
        "            raise RuntimeError('this op fails above 8 pixels')\n"
        "        return x\n\n"
        f"@register_op({op!r})\n"
        "def late(channels, spatial_dims=2, affine=True):\n"
        "    return Late()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    register_operation_name(op)
    space = tmp_path / "space.yaml"
    space.write_text(
        f"layers: 2\nscales: 2\nchannels: 4\npartial_k: 1\nnum_classes: 4\nops: [{op}]\n"
    )
    arch = tmp_path / "arch.json"
    decode(SearchState.random(load_space(space), seed=0), paths=5).save(arch)
    run = tmp_path / "runs" / "t"
    args = ["--plugin", module, "train", run, "--model", arch, "--data", "phantom:10",
            "--input-size", "32", "--epochs", "1", *SMOKE]  # fmt: skip
    for _attempt in range(2):  # the retry meets the same error, not "holds an unfinished run"
        code, _, err = _cli(*args)
        assert code == 1 and "fails above 8 pixels" in err, err
        assert not (tmp_path / "runs").exists()


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.mark.slow
def test_predict_reads_every_input_before_the_first_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "t"
    code, _, err = _cli(
        "train", run, "--model", "unet", "--unet-base", "4", "--unet-depth", "3",
        "--input-size", "32", "--data", "phantom:10", "--epochs", "1", *SMOKE,
    )  # fmt: skip
    assert code == 0, err
    noise = np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)
    for i in range(9):
        _png(tmp_path / "in" / f"c{i}.png", noise)
    cut = (tmp_path / "in" / "c0.png").read_bytes()[:400]
    (tmp_path / "in" / "c9.png").write_bytes(cut)  # the last input, after a full batch
    written: list[Path] = []
    real = inference.write_mask

    def write_mask(*args: Any, **kwargs: Any) -> Path:
        written.append(real(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(inference, "write_mask", write_mask)
    code, _, err = _cli("predict", run, tmp_path / "in", "-o", tmp_path / "out", "--device", "cpu")
    assert code == 1 and "c9.png" in err and "truncated" in err, err
    assert written == [] and not (tmp_path / "out").exists()
    assert json.loads((run / "model.json").read_text())  # the run is untouched

"""Outputs and interrupts (issue 18 items 9, 10): any legal file name can be written (the
temporary name beside it fits the name limit); an interrupt anywhere in a write leaves no
``.tmp`` file; ``SIGTERM`` ends every writing command like ``Ctrl-C`` (exit 130, one line) and a
failed or interrupted command takes back the files and folders it created."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from msnas_graph import _util
from msnas_graph.cli.main import main

LONGEST = 255  # bytes: NAME_MAX of the usual Linux file systems


def _cli(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_a_255_byte_output_name_is_written(tmp_path: Path) -> None:
    state, arch = tmp_path / "s.json", tmp_path / ("a" * (LONGEST - 5) + ".json")
    assert _cli("sample", "--space", "tiny", "-o", state)[0] == 0
    code, _, err = _cli("decode", state, "--paths", "1", "-o", arch)
    assert code == 0, err
    assert arch.is_file() and not _leftovers(tmp_path)


def test_an_interrupt_between_creating_and_using_the_temporary_file_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gap that left ``.checkpoint.pt.*.tmp``: a signal right after the temporary file
    exists (here: at the ``os.close`` that follows its creation)."""
    real_close = os.close
    calls = {"n": 0}

    def close(fd: int) -> None:
        real_close(fd)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_util.os, "close", close)
    with pytest.raises(KeyboardInterrupt):
        _util.atomic_write(tmp_path / "checkpoint.pt", b"x")
    monkeypatch.setattr(_util.os, "close", real_close)
    assert calls["n"] == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    run = tmp_path_factory.mktemp("run") / "t"
    code, _, err = _cli(
        "train", run, "--model", "unet", "--unet-base", "4", "--unet-depth", "3",
        "--input-size", "32", "--data", "phantom:8", "--epochs", "1", "--device", "cpu",
        "--max-steps", "1", "--batch-size", "2", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    return run


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)  # not "images": its parent would count as input data
    noise = np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)
    for name in names:
        Image.fromarray(noise).save(folder / name)
    return folder


@pytest.mark.slow
def test_predict_writes_the_mask_of_a_255_byte_image_name(trained: Path, tmp_path: Path) -> None:
    name = "b" * (LONGEST - 4) + ".png"
    images = _images(tmp_path / "in" / "pics", [name])
    code, _, err = _cli("predict", trained, images, "-o", tmp_path / "masks", "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "masks" / name).is_file() and not _leftovers(tmp_path)


#: A child process whose first written mask is followed by a SIGTERM to itself.
_SIGTERM_AFTER_FIRST_MASK = textwrap.dedent(
    """
    import os, signal, sys
    import msnas_graph.backends.torch.inference as inference
    real = inference.write_mask
    def write_mask(*args, **kwargs):
        path = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return path
    inference.write_mask = write_mask
    from msnas_graph.cli.main import main
    main(sys.argv[1:])
    """
)


@pytest.mark.slow
def test_sigterm_in_predict_is_an_interrupt_that_takes_back_the_masks(
    trained: Path, tmp_path: Path
) -> None:
    images = _images(tmp_path / "in" / "pics", [f"c{i:02d}.png" for i in range(12)])
    out = tmp_path / "out" / "masks"
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_AFTER_FIRST_MASK, "--threads", "1", "predict",
         str(trained), str(images), "-o", str(out), "--device", "cpu", "--runtime", "eager"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "msnas-graph: interrupted"
    assert not (tmp_path / "out").exists()  # masks and the folders made for them removed


#: A child process that sends itself SIGTERM just after a temporary output file is created.
_SIGTERM_IN_A_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from msnas_graph import _util
    real = _util._create_new
    def create_new(tmp):
        real(tmp)
        os.kill(os.getpid(), signal.SIGTERM)
    _util._create_new = create_new
    from msnas_graph.cli.main import main
    main(sys.argv[1:])
    """
)


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--space", "tiny", "-o", "new/s.json"],
        ["decode", "s.json", "--paths", "1", "-o", "new/a.json"],
        ["render", "tiny", "-o", "new/t.dot"],
    ],
    ids=["sample", "decode", "render"],
)
def test_sigterm_inside_a_write_is_an_interrupt_that_leaves_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    assert _cli("sample", "--space", "tiny", "-o", tmp_path / "s.json")[0] == 0
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_IN_A_WRITE, *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "msnas-graph: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # no new/, no .tmp


@pytest.mark.slow
def test_sigterm_inside_the_onnx_write_of_export_leaves_nothing(
    trained: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_IN_A_WRITE, "--threads", "1", "export", str(trained),
         "--onnx", str(tmp_path / "new" / "m.onnx")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "msnas-graph: interrupted"
    assert list(tmp_path.iterdir()) == []

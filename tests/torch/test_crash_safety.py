"""Crash safety with real processes (issue 9): ``kill -9`` inside a checkpoint write, then
``--resume``, ends tensor-for-tensor where an uninterrupted run ends; a second process on a
locked run folder is refused naming the holder; ``SIGTERM`` ends a run like ``Ctrl-C``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from msnas_graph.cli.main import main

TRAIN = ["--model", "unet", "--unet-base", "4", "--unet-depth", "3", "--input-size", "32",
         "--data", "phantom:8", "--epochs", "3"]  # fmt: skip
SEARCH = ["--space", "tiny", "--data", "phantom:8", "--epochs", "1,2"]
SMOKE = ["--device", "cpu", "--max-steps", "2", "--batch-size", "2", "--no-progress"]


def _start(cmd: str, run_dir: Path, *args: str, delay: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "MSNAS_TEST_CHECKPOINT_DELAY": str(delay) if delay else ""}
    argv = [sys.executable, "-m", "msnas_graph.cli.main", "--threads", "1", cmd, str(run_dir)]
    opts = ["--device", "cpu", "--no-progress"] if "--resume" in args else SMOKE
    return subprocess.Popen(
        [*argv, *args, *opts], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_for(pred, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _wait_for_write(run_dir: Path, proc: subprocess.Popen[str], n: int) -> None:
    """Until the ``n``-th checkpoint write (each its own temporary file) is under way."""
    seen: set[str] = set()

    def nth_write() -> bool:
        seen.update(p.name for p in _tmp_checkpoints(run_dir))
        return len(seen) >= n and bool(_tmp_checkpoints(run_dir))

    _wait_for(nth_write, proc)


def _tmp_checkpoints(run_dir: Path) -> list[Path]:
    return list(run_dir.glob(".checkpoint.pt.*.tmp"))


def _tensors(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}.{k}"))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}[{i}]"))
    return out


def _assert_same_files(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        ta = _tensors(torch.load(a / name, weights_only=True))
        tb = _tensors(torch.load(b / name, weights_only=True))
        assert ta.keys() == tb.keys(), name
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}{k} differs after kill + resume"


def _kill_in_checkpoint_write_then_resume(cmd: str, args: list[str], tmp: Path) -> Path:
    """Run ``cmd`` until its second checkpoint write is under way, SIGKILL it there (a
    ``.tmp`` file half done), resume to the end; return the run folder."""
    run_dir = tmp / f"{cmd}_killed"
    proc = _start(cmd, run_dir, *args, delay=1.0)
    _wait_for_write(run_dir, proc, 2)
    time.sleep(random.uniform(0.0, 0.5))  # somewhere inside the (slowed) write
    proc.kill()
    proc.wait()
    assert _tmp_checkpoints(run_dir), "the kill should land inside the write"
    resumed = _start(cmd, run_dir, "--resume")
    _out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not _tmp_checkpoints(run_dir)  # --resume removed the leftover
    return run_dir


@pytest.mark.slow
def test_training_killed_in_a_checkpoint_write_resumes_to_the_same_tensors(
    tmp_path: Path,
) -> None:
    killed = _kill_in_checkpoint_write_then_resume("train", TRAIN, tmp_path)
    ref = tmp_path / "train_ref"
    torch.set_num_threads(1)
    result = CliRunner().invoke(main, ["train", str(ref), *TRAIN, *SMOKE])
    assert result.exit_code == 0, result.stderr
    _assert_same_files(killed, ref, ["best.pt", "last.pt"])
    rows = [json.loads(json.dumps(r)) for r in torch.load(killed / "checkpoint.pt")["history"]]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.slow
def test_search_killed_in_a_checkpoint_write_resumes_to_the_same_tensors(tmp_path: Path) -> None:
    killed = _kill_in_checkpoint_write_then_resume("search", SEARCH, tmp_path)
    ref = tmp_path / "search_ref"
    torch.set_num_threads(1)
    result = CliRunner().invoke(main, ["search", str(ref), *SEARCH, *SMOKE])
    assert result.exit_code == 0, result.stderr
    _assert_same_files(killed, ref, ["supernet.pt"])
    a, b = (json.loads((d / "state.json").read_text()) for d in (killed, ref))
    for key in ("alpha_logits", "p_logits", "beta_logits"):
        assert a[key] == b[key]


@pytest.mark.slow
def test_a_locked_run_folder_refuses_a_second_process_and_sigterm_interrupts(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "busy"
    proc = _start("train", run_dir, *TRAIN, delay=1.5)
    _wait_for_write(run_dir, proc, 2)
    result = CliRunner().invoke(main, ["train", str(run_dir), *TRAIN, "--overwrite", *SMOKE])
    assert result.exit_code == 1
    assert f"in use by another msnas-graph process (pid {proc.pid})" in result.stderr
    assert result.stderr.count("\n") == 1
    proc.send_signal(signal.SIGTERM)  # inside the write of the epoch-1 checkpoint
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    # the note names the epoch whose checkpoint is on disk (0: epoch 1's write was cut)
    held = int(err.split("holds epoch ")[1].split()[0])
    assert held == 0
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == held
    assert not _tmp_checkpoints(run_dir)  # removed by the interrupted write itself

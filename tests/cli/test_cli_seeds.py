"""``search RUN --seeds 2 [--jobs 2]`` end to end on a tiny space: interrupted and resumed,
it gives the same consensus as an uninterrupted run in parallel processes; ``SIGTERM`` stops
parallel seeds at their checkpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from msnas_graph.cli.main import main

torch = pytest.importorskip("torch")

SMOKE = ["--device", "cpu", "--no-progress", "--max-steps", "1", "--batch-size", "2"]
TINY = ["--space", "tiny", "--data", "phantom:8", "--epochs", "1,1", *SMOKE]


def run(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _interrupt_seed_1_after_epoch_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """seed_1's first search stops (as Ctrl-C would) once its epoch-1 checkpoint is written."""
    from msnas_graph.backends.torch import training

    real = training.search

    def search(config: Any, run_dir: Any, **kw: Any) -> Any:
        if Path(run_dir).name == "seed_1" and not kw.get("resume"):

            def stop(row: dict[str, Any]) -> None:
                if row["epoch"] == 1:
                    raise KeyboardInterrupt

            kw["on_epoch_end"] = stop
        return real(config, run_dir, **kw)

    monkeypatch.setattr(training, "search", search)


@pytest.mark.slow
def test_seeds_interrupted_and_resumed_equal_an_uninterrupted_parallel_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = torch.get_num_threads()
    whole, run_dir = tmp_path / "whole", tmp_path / "run"
    with_progress = [a for a in TINY if a != "--no-progress"]
    code, out, err = run("search", whole, "--seeds", "2", "--jobs", "2", *with_progress)
    assert code == 0, err
    for seed in ("seed_0", "seed_1"):  # in parallel: a line per seed epoch, not bars
        assert f"{seed}: search epoch 1/2 (cell)" in err
        assert f"{seed}: search epoch 2/2 (network)" in err
    assert torch.get_num_threads() == threads  # the workers' one thread is theirs alone
    assert "consensus (mean) of 2 searches" in out and str(whole / "consensus.json") in out

    with monkeypatch.context() as m:
        _interrupt_seed_1_after_epoch_1(m)
        code, out, err = run("search", run_dir, "--seeds", "2", *TINY)
    assert code == 130 and "interrupted" in err
    assert (run_dir / "seed_0" / "DONE").is_file() and not (run_dir / "seed_1" / "DONE").is_file()
    assert not (run_dir / "consensus.json").exists()
    kept = (run_dir / "seed_0" / "state.json").read_bytes()

    code, out, err = run("search", run_dir, "--resume", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert f"{run_dir / 'seed_0'}: kept (finished before)" in out
    assert (run_dir / "seed_0" / "state.json").read_bytes() == kept
    a, b = (json.loads((d / "consensus.json").read_text()) for d in (run_dir, whole))
    assert a == b  # the same consensus, agreement and per-decision votes
    for s in ("seed_0", "seed_1"):
        assert (run_dir / s / "state.json").read_bytes() == (whole / s / "state.json").read_bytes()

    # decode RUN decodes the consensus of its seeds; train --model RUN reads its architecture
    code, out, err = run("decode", run_dir, "--json")
    assert code == 0, err
    decoded = json.loads(out)
    assert decoded["seeds"] == 2 and decoded["architecture"] == a["architecture"]


def test_seeds_options_and_refusals(tmp_path: Path) -> None:
    code, _, err = run("search", tmp_path / "r", "--jobs", "2", *TINY)
    assert code == 2 and "--jobs goes with --seeds" in err
    code, _, err = run("search", tmp_path / "r", "--seeds", "2", "--resume", *SMOKE)
    assert code == 1 and "no seeds.json to resume" in err and err.count("\n") == 1
    code, _, err = run(
        "search", tmp_path / "r", "--seeds", "2", "--space", "tiny", "--data",
        tmp_path / "missing", *SMOKE,
    )  # fmt: skip
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing half-written


@pytest.mark.slow
def test_sigterm_stops_parallel_seeds_at_their_checkpoints_and_resume_finishes(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    search = [sys.executable, "-m", "msnas_graph.cli.main", "--threads", "1", "search", run_dir]
    tiny = ["--space", "tiny", "--data", "phantom:8", "--epochs", "1,12", "--device", "cpu",
            "--max-steps", "1", "--batch-size", "2"]  # fmt: skip
    proc = subprocess.Popen(
        [str(a) for a in [*search, "--seeds", "2", "--jobs", "2", *tiny]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    started: set[str] = set()
    for line in proc.stderr:  # the workers' relayed epoch lines: both seeds are under way
        if ": search epoch 1/13" in line:
            started.add(line.split(":")[0])
        if len(started) == 2:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    seeds = [run_dir / "seed_0", run_dir / "seed_1"]
    assert all((d / "checkpoint.pt").is_file() for d in seeds)
    assert not all((d / "DONE").is_file() for d in seeds)
    assert not (run_dir / "consensus.json").exists()

    code, _, err = run("search", run_dir, "--resume", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert (run_dir / "consensus.json").is_file()
    for d in seeds:  # every epoch once: resumed from the checkpoint, none run twice
        assert len((d / "metrics.csv").read_text().splitlines()) == 1 + 13

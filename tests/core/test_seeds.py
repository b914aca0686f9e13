"""``search --seeds`` in the core: the plan, resume and refusals, through a fake backend that
writes a random state per seed (no torch)."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from msnas_graph.architecture import Architecture
from msnas_graph.backend import register_backend
from msnas_graph.consensus import consensus
from msnas_graph.errors import RunError, SpecError
from msnas_graph.null_backend import NullBackend
from msnas_graph.run_lock import RunLock
from msnas_graph.seeds import is_seeds_run, search_seeds, seed_dirs
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

QUICK = SearchSpace.preset("quick")


class FakeSearch(NullBackend):
    """A search that writes ``SearchState.random(quick, seed)``; ``interrupt`` names seed
    folders whose first (not resumed) search stops after its checkpoint, ``fail`` ones that
    raise a bad-input error."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupt: set[str] = set()
        self.fail: set[str] = set()
        self.runs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def search(self, options: Any, run_dir: Any, **flags: Any) -> Any:
        d = Path(run_dir)
        self.runs.append((d.name, dict(options), dict(flags)))
        if d.name in self.fail:
            raise SpecError(f"{d}: bad input")
        if flags.get("resume") and (d / "DONE").is_file():
            return None  # finished: kept as it is
        if not flags.get("resume"):
            d.mkdir(parents=True, exist_ok=True)
            (d / "config.json").write_text(json.dumps({"seed": options["seed"]}))
        seed = json.loads((d / "config.json").read_text())["seed"]
        (d / "checkpoint.pt").write_text("epoch 1")
        if d.name in self.interrupt and not flags.get("resume"):
            raise KeyboardInterrupt
        SearchState.random(QUICK, seed=seed).save(d / "state.json")
        (d / "DONE").write_text("{}")
        return None


@pytest.fixture
def fake() -> tuple[str, FakeSearch]:
    name = f"fake_{uuid.uuid4().hex[:8]}"
    backend = FakeSearch()
    register_backend(name, lambda: backend)
    return name, backend


OPTIONS = {"space": "quick", "seed": 0, "paths": 3}


def test_seeds_run_writes_each_seed_and_their_consensus(tmp_path: Path, fake) -> None:
    name, backend = fake
    run = tmp_path / "run"
    result = search_seeds(OPTIONS, run, 3, backend=name)
    assert [d.name for d in result.seed_dirs] == ["seed_0", "seed_1", "seed_2"]
    assert result.status == ("searched",) * 3 and is_seeds_run(run)
    assert seed_dirs(run) == list(result.seed_dirs)
    assert [opts["seed"] for _, opts, _ in backend.runs] == [0, 1, 2]
    want = consensus([SearchState.random(QUICK, seed=s) for s in range(3)], 3)
    assert result.architecture == want.architecture
    data = json.loads((run / "consensus.json").read_text())
    assert data["sources"] == ["seed_0", "seed_1", "seed_2"]
    assert data["agreement"] == want.agreement and data["method"] == "mean"
    assert Architecture.load(run / "architecture.json") == result.architecture
    RunLock(run).acquire().release()  # the command let go of RUN


def test_interrupted_and_resumed_gives_the_same_consensus(tmp_path: Path, fake) -> None:
    name, backend = fake
    whole = search_seeds(OPTIONS, tmp_path / "whole", 3, backend=name)
    run = tmp_path / "run"
    backend.interrupt = {"seed_1"}
    with pytest.raises(KeyboardInterrupt):
        search_seeds(OPTIONS, run, 3, backend=name)
    assert (run / "seed_0" / "DONE").is_file() and not (run / "seed_1" / "DONE").is_file()
    assert not (run / "seed_2").exists() and not (run / "consensus.json").exists()
    kept = (run / "seed_0" / "state.json").stat().st_mtime_ns
    with pytest.raises(RunError, match="unfinished seeds run; use --resume"):
        search_seeds(OPTIONS, run, 3, backend=name)
    backend.runs.clear()
    resumed = search_seeds({}, run, backend=name, resume=True)
    assert resumed.status == ("kept", "resumed", "searched")
    assert [(d, f["resume"]) for d, _, f in backend.runs] == [
        ("seed_0", True), ("seed_1", True), ("seed_2", False)
    ]  # fmt: skip
    assert backend.runs[2][1] == {**OPTIONS, "seed": 2}  # the never-started seed: the plan's
    assert (run / "seed_0" / "state.json").stat().st_mtime_ns == kept
    assert resumed.architecture == whole.architecture
    strip = ("sources",)
    a, b = (json.loads((p / "consensus.json").read_text()) for p in (run, tmp_path / "whole"))
    assert {k: v for k, v in a.items() if k not in strip} == {
        k: v for k, v in b.items() if k not in strip
    }


def test_the_folder_rules(tmp_path: Path, fake) -> None:
    name, _ = fake
    run = tmp_path / "run"
    with pytest.raises(RunError, match="no seeds.json to resume; start without --resume"):
        search_seeds({}, run, backend=name, resume=True)
    assert not run.exists()  # a refused start leaves no folder behind
    search_seeds(OPTIONS, run, 2, backend=name)
    with pytest.raises(RunError, match="finished seeds run; use --overwrite"):
        search_seeds(OPTIONS, run, 2, backend=name)
    with pytest.raises(RunError, match="started with 2 seeds, not 3"):
        search_seeds({}, run, 3, backend=name, resume=True)
    with pytest.raises(RunError, match="contradict"):
        search_seeds({}, run, backend=name, resume=True, overwrite=True)
    again = search_seeds({**OPTIONS, "seed": 5}, run, 2, backend=name, overwrite=True)
    assert [d.name for d in again.seed_dirs] == ["seed_5", "seed_6"]
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text("{}")
    with pytest.raises(RunError, match="holds a single search run"):
        search_seeds(OPTIONS, single, 2, backend=name)
    (run / "seeds.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="not a seeds plan"):
        seed_dirs(run)


def test_a_bad_input_leaves_nothing_half_written(tmp_path: Path, fake) -> None:
    name, backend = fake
    backend.fail = {"seed_0"}
    with pytest.raises(SpecError, match="bad input"):
        search_seeds(OPTIONS, tmp_path / "run", 2, backend=name)
    assert not (tmp_path / "run").exists()  # no plan, no lock: a fixed command starts afresh


def test_a_worker_sets_its_threads_and_reports_instead_of_raising(
    tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    import queue
    import signal

    from msnas_graph.backend import ResumeConflictError
    from msnas_graph.seeds import _error, _seed_worker

    name, backend = fake
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # restored after the test
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # the test process keeps its own
    q: queue.Queue[Any] = queue.Queue()
    d = tmp_path / "seed_3"
    _seed_worker(name, [], 1, {**OPTIONS, "seed": 3}, str(d), {"resume": False}, q)
    assert q.get_nowait() == (str(d), "ok", "", None) and (d / "DONE").is_file()
    assert os.environ["OMP_NUM_THREADS"] == "1" == os.environ["MKL_NUM_THREADS"]
    backend.fail = {"seed_4"}
    _seed_worker(name, [], 2, {**OPTIONS, "seed": 4}, str(tmp_path / "seed_4"), {}, q)
    report = q.get_nowait()
    assert report[1] == "SpecError" and "bad input" in report[2]
    assert isinstance(_error(report), SpecError) and "bad input" in str(_error(report))
    conflict = _error(("r/seed_0", "ResumeConflictError", "x", ["max_steps_per_epoch"]))
    assert isinstance(conflict, ResumeConflictError)
    assert conflict.fields == ("max_steps_per_epoch",)
    assert isinstance(_error(("r/seed_0", "interrupted", "", None)), KeyboardInterrupt)


class LoggingSearch(FakeSearch):
    """A search that logs one informational line and one warning."""

    def search(self, options: Any, run_dir: Any, **flags: Any) -> Any:
        log = logging.getLogger("msnas_graph.backends.fake")
        log.info("search epoch 1/2 (cell)")
        log.warning("search warning: undecided")
        return super().search(options, run_dir, **flags)


def test_a_worker_sends_its_log_records_to_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import queue
    import signal

    from msnas_graph.seeds import _next_report, _seed_worker

    name = f"fake_{uuid.uuid4().hex[:8]}"
    register_backend(name, LoggingSearch)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    package = logging.getLogger("msnas_graph")
    before = (package.level, package.propagate, list(package.handlers))
    q: queue.Queue[Any] = queue.Queue()
    d = str(tmp_path / "seed_0")
    _seed_worker(name, [], 1, {**OPTIONS, "seed": 0}, d, {}, q, logging.INFO)
    items = [q.get_nowait() for _ in range(3)]
    assert items == [
        (d, "log", "search epoch 1/2 (cell)", logging.INFO),
        (d, "log", "search warning: undecided", logging.WARNING),
        (d, "ok", "", None),
    ]
    assert (package.level, package.propagate, list(package.handlers)) == before  # restored
    _seed_worker(name, [], 1, {**OPTIONS, "seed": 1}, str(tmp_path / "seed_1"), {}, q)
    assert q.get_nowait()[1:3] == ("log", "search warning: undecided")  # WARNING: no info
    assert q.get_nowait()[1] == "ok"

    # the parent: informational lines printed only with progress, the warning logged always
    logged: list[tuple[int, str]] = []
    monkeypatch.setattr(
        "msnas_graph.seeds.logger.log", lambda level, fmt, text: logged.append((level, text))
    )
    monkeypatch.setattr(
        "msnas_graph.seeds.logger.isEnabledFor", lambda level: level >= logging.WARNING
    )
    for progress in (True, False):
        logged.clear()
        for item in items:
            q.put(item)
        assert _next_report(q, {}, progress) == (d, "ok", "", None)
        err = capsys.readouterr().err
        assert logged == [(logging.WARNING, "seed_0: search warning: undecided")]
        assert err == ("seed_0: search epoch 1/2 (cell)\n" if progress else "")


def test_a_worker_that_died_without_a_report_is_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import queue

    from msnas_graph.seeds import _next_report

    class Dead:  # a worker process killed (SIGKILL: the out-of-memory killer) mid-search
        exitcode = -9

        def is_alive(self) -> bool:
            return False

    q: queue.Queue[Any] = queue.Queue()
    q.put(("r/seed_1", "log", "search epoch 3/17 (cell)", logging.INFO))  # sent before it died
    report = _next_report(q, {"r/seed_1": (Dead(), "searched")}, True)
    assert report[:2] == ("r/seed_1", "RunError")
    assert "ended with exit code -9 and no report; resume with --resume" in report[2]
    assert capsys.readouterr().err == "seed_1: search epoch 3/17 (cell)\n"  # relayed first

"""Several seeds of one search in one command, and their consensus.

:func:`search_seeds` runs ``seeds`` searches of one configuration through a backend, seed
``S + k`` (``S`` = the options' ``seed``, default 0) into ``RUN/seed_{S+k}/``: each a normal,
resumable search run folder with its own lock. Then it decodes the consensus of their final
states (:func:`msnas_graph.consensus.consensus`, ``mean`` within the seeds' own choices, the
run's ``paths``) and writes into ``RUN/``:

- ``seeds.json``: the plan (backend, seeds, options), written first: what ``resume`` continues;
- ``consensus.json``: the consensus and the agreement (:meth:`ConsensusResult.to_dict`: the
  architecture, each decision's votes, each seed's Jaccard, ``identical_to``), written last:
  a seeds run is finished when it is there;
- ``architecture.json``: the consensus architecture, so that ``train --model RUN`` trains it.

``jobs > 1`` runs that many seeds at once, each in its own process (``spawn``), each with
``threads`` CPU threads (default 1, set in the child only: the calling process's thread count
is never changed). The workers' log records come to this process (the standard library's
multiprocess logging recipe: one process writes), each message led by its seed folder's name:
those the ``msnas_graph`` logger here lets through are logged here, and with ``progress`` the
informational ones (a search logs a line per epoch) are printed to stderr in place of the
progress bars a lone search draws. ``SIGTERM`` or ``Ctrl-C`` stops every running seed at its
checkpoint; with ``resume`` the finished seeds are kept as they are, the interrupted ones
continue from their checkpoints and the ones never started start. ``RUN`` itself is locked
for the command's life (:class:`msnas_graph.run_lock.RunLock`), each seed folder by its own
search.

A seed's search is the backend's plain search with ``seed`` set: it seeds the initialisation,
the data order and, without a folds file, the split, so give ``--folds`` to search every seed
on the same folds.

>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> is_seeds_run(run), seed_dirs(run)
(False, [])
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors
from ._util import atomic_write, refuse_losing_inputs
from .architecture import Architecture
from .consensus import ConsensusResult, consensus
from .errors import MsnasError, RunError
from .io import load_state
from .run_lock import RunLock, sigterm_as_interrupt
from .spec import SearchSpace

__all__ = [
    "CONSENSUS_FILE",
    "SEEDS_FILE",
    "SeedsResult",
    "is_seeds_run",
    "search_seeds",
    "seed_dirs",
]

logger = logging.getLogger(__name__)

SEEDS_FILE = "seeds.json"
CONSENSUS_FILE = "consensus.json"
_FORMAT = "msnas-graph/seeds"
#: What a seeds run writes into ``RUN/`` itself (removed by ``overwrite``).
_RUN_FILES = (SEEDS_FILE, CONSENSUS_FILE, "architecture.json")
#: Files of a single search run: a folder holding one is not a seeds run.
_SINGLE_RUN = ("config.json", "state.json", "checkpoint.pt", "DONE")


@dataclass(frozen=True)
class SeedsResult:
    """What :func:`search_seeds` returns: the seed folders, what happened to each
    (``"searched"``, ``"resumed"``, ``"kept"``), and the consensus."""

    run_dir: Path
    seed_dirs: tuple[Path, ...]
    status: tuple[str, ...]
    consensus: ConsensusResult

    @property
    def architecture(self) -> Architecture:
        """The consensus architecture (``RUN/architecture.json``)."""
        return self.consensus.architecture


def is_seeds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a seeds run (its ``seeds.json``)."""
    return (Path(run_dir) / SEEDS_FILE).is_file()


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """The seed folders of the seeds run in ``run_dir`` (``[]`` if it holds none)."""
    run_dir = Path(run_dir)
    if not is_seeds_run(run_dir):
        return []
    return [run_dir / f"seed_{s}" for s in _read_plan(run_dir)["seeds"]]


def _read_plan(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SEEDS_FILE
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        ok = plan.get("format") == _FORMAT and all(type(s) is int for s in plan["seeds"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        ok = False
    if not ok or not plan["seeds"] or not isinstance(plan.get("options"), dict):
        raise RunError(f"{path}: not a seeds plan msnas-graph wrote; start over with --overwrite")
    return dict(plan)


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if isinstance(out.get("space"), SearchSpace):
        out["space"] = out["space"].to_dict()
    return json.loads(json.dumps(out, default=list))


def _options_from_plan(stored: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(stored)
    if isinstance(out.get("space"), dict):
        out["space"] = SearchSpace.from_dict(out["space"], "seeds.json: options.space")
    return out


def _plan(
    run_dir: Path,
    options: Mapping[str, Any],
    seeds: int | None,
    backend: str,
    resume: bool,
    overwrite: bool,
) -> tuple[list[int], dict[str, Any]]:
    """Apply the folder rules to ``RUN``; the seeds and the full options of a new seed."""
    if resume and overwrite:
        raise RunError(f"{run_dir}: --resume and --overwrite contradict each other; give one")
    single = [n for n in _SINGLE_RUN if (run_dir / n).exists()]
    if single and not is_seeds_run(run_dir):
        raise RunError(
            f"{run_dir} holds a single search run ({single[0]}), not seeds; choose another "
            f"folder for --seeds"
        )
    if resume:
        if not is_seeds_run(run_dir):
            raise RunError(f"{run_dir}: no {SEEDS_FILE} to resume; start without --resume")
        plan = _read_plan(run_dir)
        if seeds is not None and seeds != len(plan["seeds"]):
            raise RunError(
                f"{run_dir} was started with {len(plan['seeds'])} seeds, not {seeds}; resume "
                f"without --seeds or start over with --overwrite"
            )
        return list(plan["seeds"]), {**_options_from_plan(plan["options"]), **options}
    if is_seeds_run(run_dir) and not overwrite:
        done = (run_dir / CONSENSUS_FILE).is_file()
        raise RunError(
            f"{run_dir} already holds a {'finished' if done else 'unfinished'} seeds run; "
            + ("use --overwrite to replace it" if done else "use --resume to continue it")
            + " or choose another folder"
        )
    action = "--overwrite deletes" if overwrite else "the seeds run writes over"
    refuse_losing_inputs([*(run_dir / n for n in _RUN_FILES), *run_dir.glob("seed_*")], action)
    for name in _RUN_FILES if overwrite else ():
        (run_dir / name).unlink(missing_ok=True)
    base = int(options.get("seed", 0))
    chosen = [base + k for k in range(3 if seeds is None else seeds)]
    plan = {"format": _FORMAT, "version": 1, "backend": backend, "seeds": chosen}
    atomic_write(run_dir / SEEDS_FILE, json.dumps({**plan, "options": _jsonable(options)}))
    return chosen, dict(options)


def _status(seed_dir: Path, resume: bool) -> str:
    if not resume:
        return "searched"
    if (seed_dir / "DONE").is_file():
        return "kept"
    return "resumed" if (seed_dir / "checkpoint.pt").is_file() else "searched"


def search_seeds(
    options: Mapping[str, Any],
    run_dir: str | Path,
    seeds: int | None = None,
    jobs: int = 1,
    *,
    backend: str = "torch",
    plugins: Sequence[str] = (),
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_seed_end: Callable[[Path, str], None] | None = None,
) -> SeedsResult:
    """Search ``seeds`` seeds (default 3) into ``run_dir/seed_S/`` and decode their consensus
    (module doc). ``options`` are the backend's search options (on ``resume``: only the ones
    to change, as for one search); ``plugins`` are imported in each worker process;
    ``on_seed_end(seed_dir, status)`` is called as each seed ends. Raises :class:`RunError`
    for a refused folder, and whatever a seed's search raises.
    """
    run_dir = Path(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        chosen, full = _plan(run_dir, options, seeds, backend, resume, overwrite)
        dirs = [run_dir / f"seed_{s}" for s in chosen]
        status = [_status(d, resume) for d in dirs]
        tasks = []
        for s, d, st in zip(chosen, dirs, status, strict=True):
            new = st == "searched"
            opts = {**full, "seed": s} if new else dict(options)
            flags = {"resume": not new, "overwrite": overwrite, "progress": progress and jobs == 1}
            tasks.append((d, opts, flags, st))
        if jobs == 1:
            from .backend import get_backend

            for d, opts, flags, st in tasks:
                get_backend(backend).search(opts, d, **flags)
                if on_seed_end is not None:
                    on_seed_end(d, st)
        else:
            workers = (backend, list(plugins), threads or 1)
            _run_parallel(tasks, jobs, workers, on_seed_end, progress)
        result = _finish(run_dir, dirs, status, int(full.get("paths", 3)))
    except BaseException:
        if not resume and not any(_status(d, True) != "searched" for d in _planned(run_dir)):
            (run_dir / SEEDS_FILE).unlink(missing_ok=True)  # nothing began: leave no plan
        lock.release(failed=True)
        raise
    lock.release()
    return result


def _planned(run_dir: Path) -> list[Path]:
    try:
        return seed_dirs(run_dir)
    except RunError:
        return []


def _finish(run_dir: Path, dirs: list[Path], status: list[str], paths: int) -> SeedsResult:
    states = [load_state(d) for d in dirs]
    names = [d.name for d in dirs]
    result = consensus(states, paths, "mean", names=names)
    result.architecture.save(run_dir / "architecture.json")
    data = {"format": "msnas-graph/consensus", "sources": names, **result.to_dict()}
    atomic_write(run_dir / CONSENSUS_FILE, json.dumps(data, indent=1, allow_nan=False) + "\n")
    return SeedsResult(run_dir, tuple(dirs), tuple(status), result)


# ------------------------------------------------------------------------ worker processes


class _LogRelay(logging.Handler):
    """Puts a worker's log records on the queue as ``(seed_dir, "log", message, level)``."""

    def __init__(self, queue: Any, seed_dir: str, level: int) -> None:
        super().__init__(level)
        self.queue, self.seed_dir = queue, seed_dir

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put((self.seed_dir, "log", record.getMessage(), record.levelno))
        except Exception:  # a record that cannot be formatted or sent is not worth a crash
            self.handleError(record)


@contextmanager
def _logs_to(queue: Any, seed_dir: str, level: int) -> Iterator[None]:
    """While inside: the ``msnas_graph`` log records at ``level`` and above go to ``queue``
    (:class:`_LogRelay`) and nowhere else; the logger is restored after."""
    log = logging.getLogger("msnas_graph")
    relay, saved = _LogRelay(queue, seed_dir, level), (log.level, log.propagate)
    log.addHandler(relay)
    log.setLevel(level)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(relay)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def _worker_log_level(progress: bool) -> int:
    """What the workers send: what this process's ``msnas_graph`` logger lets through, and the
    informational records too with ``progress``."""
    level = logging.getLogger("msnas_graph").getEffectiveLevel()
    return min(level, logging.INFO) if progress else level


def _relay(item: tuple[Any, ...], progress: bool) -> bool:
    """Whether ``item`` from the queue is a worker's log record ``(seed_dir, "log", message,
    level)`` rather than its report; a record is shown here: logged if this process's logger
    lets it through, else printed to stderr with ``progress`` if it is informational."""
    if item[1] != "log":
        return False
    seed_dir, _, message, level = item
    text = f"{Path(seed_dir).name}: {message}"
    if logger.isEnabledFor(level):
        logger.log(level, "%s", text)
    elif progress and level >= logging.INFO:
        print(text, file=sys.stderr, flush=True)
    return True


def _seed_worker(
    backend: str,
    plugins: list[str],
    threads: int,
    options: dict[str, Any],
    seed_dir: str,
    flags: dict[str, Any],
    queue: Any,
    log_level: int = logging.WARNING,
) -> None:
    """One seed's search in a fresh process: ``threads`` CPU threads (this process only),
    the plugins, ``SIGTERM`` as ``Ctrl-C``, its log records at ``log_level`` and above sent
    to the parent (:func:`_logs_to`); reports ``(seed_dir, kind, message, fields)``."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read when this process imports torch
    os.environ["MKL_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    report: tuple[str, str, str, list[str] | None] = (seed_dir, "ok", "", None)
    try:
        from .backend import get_backend, load_plugins

        load_plugins(plugins)
        with sigterm_as_interrupt(), _logs_to(queue, seed_dir, log_level):
            get_backend(backend).search(options, seed_dir, **flags)
    except KeyboardInterrupt:
        report = (seed_dir, "interrupted", "", None)
    except MsnasError as exc:
        fields = list(getattr(exc, "fields", None) or []) or None
        report = (seed_dir, type(exc).__name__, str(exc), fields)
    except Exception as exc:  # reported, never a traceback in a child
        report = (seed_dir, "RunError", f"{type(exc).__name__}: {exc}", None)
    queue.put(report)


def _error(report: tuple[str, str, str, list[str] | None]) -> BaseException:
    seed_dir, kind, message, fields = report
    if kind == "interrupted":
        return KeyboardInterrupt(f"{seed_dir} interrupted")
    if fields:
        from .backend import ResumeConflictError

        return ResumeConflictError(seed_dir, fields)
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, MsnasError):
        try:
            return cls(message)
        except TypeError:
            pass
    return RunError(message)


def _run_parallel(
    tasks: list[tuple[Path, dict[str, Any], dict[str, Any], str]],
    jobs: int,
    workers: tuple[str, list[str], int],
    on_seed_end: Callable[[Path, str], None] | None,
    progress: bool,
) -> None:
    """Run ``tasks`` (seed folder, options, flags, status) ``jobs`` at a time in spawned
    processes (``workers``: backend, plugins, threads each), relaying their log records
    (:func:`_relay`); stop them all (``SIGTERM``: each keeps its checkpoint) on the first
    failure or an interrupt of this process, then raise it."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    todo = list(tasks)
    running: dict[str, tuple[Any, str]] = {}
    failure: BaseException | None = None
    level = _worker_log_level(progress)
    with sigterm_as_interrupt():
        try:
            while (todo and failure is None) or running:
                while todo and failure is None and len(running) < jobs:
                    d, opts, flags, st = todo.pop(0)
                    args = (*workers, opts, str(d), flags, queue, level)
                    proc = ctx.Process(target=_seed_worker, args=args, name=f"msnas {d.name}")
                    proc.start()
                    running[str(d)] = (proc, st)
                report = _next_report(queue, running, progress)
                proc, st = running.pop(report[0])
                proc.join()
                if report[1] != "ok":
                    failure = failure or _error(report)
                    _stop(running)
                elif on_seed_end is not None:
                    on_seed_end(Path(report[0]), st)
        except BaseException:
            _stop(running)
            _join(queue, running, progress)
            raise
    if failure is not None:
        raise failure


def _next_report(
    queue: Any, running: Mapping[str, tuple[Any, str]], progress: bool = False
) -> tuple[Any, ...]:
    """The next worker's report, relaying the log records before it (:func:`_relay`); a
    worker that died without one (killed, or it crashed before it could report) gives an
    error report of its own."""
    import queue as queues

    grace = False  # a worker has died: its report may still be in the pipe
    while True:
        try:
            item = tuple(queue.get(timeout=2.0 if grace else 1.0))
        except queues.Empty:
            dead = [d for d, (proc, _) in running.items() if not proc.is_alive()]
            if dead and grace:
                code = running[dead[0]][0].exitcode
                return (dead[0], "RunError", f"{dead[0]}: the seed's process ended with "
                        f"exit code {code} and no report; resume with --resume", None)  # fmt: skip
            grace = bool(dead)
            continue
        if not _relay(item, progress):
            return item


def _join(queue: Any, running: Mapping[str, tuple[Any, str]], progress: bool) -> None:
    """Wait for the stopped workers, relaying what they log as they stop: a process that has
    put records on a queue does not end until they are read (multiprocessing's "joining
    processes that use queues")."""
    import queue as queues

    for proc, _ in running.values():
        while proc.is_alive():
            try:
                item = tuple(queue.get(timeout=0.1))
            except queues.Empty:
                continue
            _relay(item, progress)  # a stopped worker's report is not needed
        proc.join()


def _stop(running: Mapping[str, tuple[Any, str]]) -> None:
    for proc, _ in running.values():
        if proc.is_alive():
            proc.terminate()  # SIGTERM: the seed's search checkpoints and ends

"""``compare``: trained runs side by side, measured alike (what ``msnas-graph compare`` calls).

:func:`compare_runs` reads each training run's ``model.json``, ``config.json`` and the summary
``evaluate`` wrote (``eval_test/summary.json`` and ``per_case.csv``), refuses runs it cannot
compare fairly (never trained, not evaluated, evaluated before their last training, trained or
tested on other data or other cases, one run given twice), counts parameters and MACs
(:func:`~msnas_graph.backends.torch.cost.count_macs_flops`) and measures inference latency in
the runtime ``predict`` uses (``auto`` by default): every model is built by
:func:`~msnas_graph.backends.torch.cost.latency_runner`, as ``cost --latency`` builds it, and
timed by :func:`~msnas_graph.backends.torch.cost.timed_passes` in interleaved rounds, the
order of the models rotating each round, so that the machine's noise hits all of them alike.
The result is a :class:`~msnas_graph.compare.Comparison` (the frontier classification lives
there); the table and the frontier picture are written only after every check has passed.
"""

from __future__ import annotations

import contextlib
import csv
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msnas_graph._util import atomic_write, inside, read_text, safe_output
from msnas_graph.compare import ComparedRun, Comparison
from msnas_graph.documents import parse_json
from msnas_graph.errors import OutputError, RunError

from .cost import count_macs_flops, count_parameters, latency_runner, timed_passes
from .inference import check_inference_memory, load_model
from .models import locate_run, resolve_source
from .runtimes import check_runtime
from .training.runtime import resolve_device

__all__ = ["PLOT_FORMATS", "compare_runs", "interleaved_latency"]

#: The picture formats ``--plot`` writes (by the file's suffix).
PLOT_FORMATS = (".png", ".svg", ".pdf")


@dataclass
class _Run:
    """What one run folder says about itself (read, not yet measured)."""

    given: str
    run_dir: Path
    weights: Path
    spec: dict[str, Any]
    summary: dict[str, Any]
    cases: list[str]
    inputs: list[Path] = field(default_factory=list)

    def label(self) -> str:
        if self.spec.get("kind") == "unet":
            unet = self.spec.get("unet") or {}
            return f"U-Net({unet.get('base_channels')}, {unet.get('depth')})"
        arch = self.spec.get("architecture")
        if isinstance(arch, dict):
            width = (arch.get("space") or {}).get("channels")
            return f"MS-NAS({len(arch.get('paths') or ())}, C{width})"
        return str(self.spec.get("kind"))


def _read_json(path: Path) -> Any:
    return parse_json(read_text(path, RunError), str(path), RunError)


def _read_run(given: str | Path) -> _Run:
    """A trained and evaluated run, or one line saying what it lacks and what to run."""
    run_dir, weights = locate_run(given)  # "not a training run" / "not finished an epoch"
    evaluation = run_dir / "eval_test"
    summary_path, cases_path = evaluation / "summary.json", evaluation / "per_case.csv"
    if not summary_path.is_file() or not cases_path.is_file():
        raise RunError(
            f"{given}: trained but not evaluated on its test fold (no "
            f"{summary_path.relative_to(run_dir)}); run `msnas-graph evaluate {given}` first"
        )
    if weights.stat().st_mtime > summary_path.stat().st_mtime:
        raise RunError(
            f"{given}: evaluated before its last training ({weights.name} is newer than "
            f"{summary_path.relative_to(run_dir)}); run `msnas-graph evaluate {given}` again"
        )
    summary = _read_json(summary_path)
    spec = _read_json(run_dir / "model.json")
    if not isinstance(summary, dict) or not isinstance(spec, dict):
        raise RunError(f"{given}: malformed model.json or evaluation summary (not a mapping)")
    with open(cases_path, newline="", encoding="utf-8") as fh:
        cases = sorted(row["case_id"] for row in csv.DictReader(fh) if row.get("case_id"))
    inputs = [summary_path, cases_path, run_dir / "model.json", run_dir / "config.json", weights]
    return _Run(str(given), run_dir, weights, spec, summary, cases, inputs)


def _data_of(run: _Run) -> dict[str, Any]:
    """What a run records about the data it was trained and evaluated on."""
    return {
        "data": run.summary.get("data"),
        "split": run.summary.get("split"),
        "classes": run.spec.get("label_names") or run.spec.get("num_classes"),
        "input channels": run.spec.get("in_channels"),
        "evaluation level": run.summary.get("level"),
    }


def _check_comparable(runs: Sequence[_Run]) -> None:
    """One line for a run given twice, or runs of different data or test cases."""
    seen: dict[Path, str] = {}
    for run in runs:
        key = run.run_dir.resolve()
        if key in seen:
            raise RunError(f"{run.given}: the same run as {seen[key]}; give each run once")
        seen[key] = run.given
    first = runs[0]
    for run in runs[1:]:
        for name, value in _data_of(run).items():
            if value != _data_of(first)[name]:
                raise RunError(
                    f"{run.given}: {name} {value!r}, but {first.given} has "
                    f"{_data_of(first)[name]!r}; compare runs trained and evaluated on the "
                    f"same dataset"
                )
        if run.cases != first.cases:
            differ = len(set(run.cases) ^ set(first.cases))
            raise RunError(
                f"{run.given}: tested on other cases than {first.given} ({differ} cases in one "
                f"but not the other); train the runs with the same --folds file and "
                f"--test-fold (or, without a folds file, the same --seed) so that they hold "
                f"out the same cases"
            )


def _check_outputs(outputs: Sequence[Path | None], runs: Sequence[_Run]) -> None:
    """Refuse, before any measuring, an output that is an input or a file of a compared
    run, two outputs on one path, or a picture format matplotlib is not asked to write."""
    given = [p for p in outputs if p is not None]
    inputs = [f for r in runs for f in r.inputs]
    for path in given:
        safe_output(path, inputs)
        for run in runs:
            if path.exists() and inside(path, run.run_dir):
                raise OutputError(
                    f"{path}: would replace a file of the run {run.given}; write the output "
                    f"to a new path"
                )
    if len(given) == 2 and given[0].resolve() == given[1].resolve():
        raise OutputError(f"{given[0]}: both the table and the picture; give two paths")


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` intra-op threads inside the block (ONNX Runtime sessions built there take
    the same number), the caller's number restored after it."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved_latency(
    runners: Sequence[nn.Module],
    shapes: Sequence[Sequence[int]],
    *,
    device: torch.device,
    batch_sizes: Sequence[int] = (1, 8),
    rounds: int = 5,
    repeats: int = 3,
    warmup: int = 2,
) -> list[dict[int, float]]:
    """Median milliseconds per image of each runner at each batch size.

    Each runner is called once per batch size to build it (tracing, export) and ``warmup``
    more times, all untimed; then ``rounds`` rounds run every runner ``repeats`` times per
    batch size (:func:`~msnas_graph.backends.torch.cost.timed_passes`), the order of the
    runners rotating each round.

    >>> nets = [nn.Conv2d(1, 2, 3).eval(), nn.Conv2d(1, 8, 3).eval()]
    >>> ms = interleaved_latency(nets, [(1, 1, 16, 16)] * 2, device=torch.device("cpu"),
    ...                          batch_sizes=(1, 2), rounds=2, repeats=1, warmup=0)
    >>> [sorted(m) for m in ms], all(v > 0 for m in ms for v in m.values())
    ([[1, 2], [1, 2]], True)
    """
    if rounds < 1 or repeats < 1 or warmup < 0:
        raise RunError(f"rounds and repeats must be >= 1, warmup >= 0 ({rounds}, {repeats})")
    inputs = [
        {b: torch.randn(b, *tuple(shape)[1:], device=device) for b in batch_sizes}
        for shape in shapes
    ]
    for work, xs in zip(runners, inputs, strict=True):
        for x in xs.values():
            timed_passes(work, x, device, warmup + 1, 0)  # build and warm up, untimed
    times: list[dict[int, list[int]]] = [{b: [] for b in batch_sizes} for _ in runners]
    order = list(range(len(runners)))
    for r in range(rounds):
        shift = r % len(order)
        for i in order[shift:] + order[:shift]:
            for b in batch_sizes:
                times[i][b] += timed_passes(runners[i], inputs[i][b], device, 0, repeats)
    return [{b: statistics.median(t) / 1e6 / b for b, t in ts.items()} for ts in times]


def compare_runs(
    run_dirs: Sequence[str | Path],
    *,
    table: str | Path | None = None,
    plot: str | Path | None = None,
    input_size: int | None = None,
    runtime: str = "auto",
    threads: int | None = 1,
    device: str = "auto",
    batch_sizes: Sequence[int] = (1, 8),
    rounds: int = 5,
    repeats: int = 3,
    frontier_batch: int = 1,
) -> Comparison:
    """Trained runs side by side: Dice, IoU, HD95, parameters, MACs and measured latency,
    and each run against the U-Net runs' frontier (:class:`~msnas_graph.compare.Comparison`).

    Every run must be a finished training run (``msnas-graph train``) evaluated on its test
    fold (``msnas-graph evaluate RUN``) after its last training; all must record the same data,
    classes and test cases. Latency is measured at each run's own input size (what ``predict``
    feeds it) unless ``input_size`` is given, by ``runtime`` (default ``auto``, as ``predict``)
    on ``device`` with ``threads`` intra-op threads (``None``: as set; the caller's number is
    restored), at ``batch_sizes``, in ``rounds`` interleaved rounds of ``repeats`` passes.
    The frontier compares latency at ``frontier_batch``.

    ``table`` (markdown) and ``plot`` (the frontier picture: ``.png``, ``.svg`` or ``.pdf``)
    are checked before anything is measured and written, atomically, at the end; neither may
    be an input or replace a file of a compared run.
    """
    if not run_dirs:
        raise RunError("compare: give at least one training run folder")
    check_runtime(runtime)
    if frontier_batch not in batch_sizes:
        raise RunError(f"frontier_batch {frontier_batch} is not one of {tuple(batch_sizes)}")
    plot_path = Path(plot) if plot is not None else None
    if plot_path is not None and plot_path.suffix.lower() not in PLOT_FORMATS:
        raise OutputError(
            f"{plot_path}: the picture must end in {', '.join(PLOT_FORMATS)}; choose such a name"
        )
    runs = [_read_run(r) for r in run_dirs]
    _check_comparable(runs)
    table_path = Path(table) if table is not None else None
    _check_outputs([table_path, plot_path], runs)
    dev = resolve_device(device)
    models, shapes = [], []
    for run in runs:
        model, info = load_model(run.run_dir, dev)
        size = input_size or int(info["input_size"])
        if input_size is not None:
            resolve_source(run.run_dir).check_size(size)  # the deepest scale divides it
        check_inference_memory({**info, "input_size": size}, max(batch_sizes), dev, "compare")
        models.append(model)
        shapes.append((1, int(info["in_channels"]), *(size,) * _spatial_dims(model, info)))
    with _torch_threads(threads):
        runners = [latency_runner(m, dev, runtime) for m in models]
        ms = interleaved_latency(
            runners, shapes, device=dev, batch_sizes=batch_sizes, rounds=rounds, repeats=repeats
        )
    rows = []
    for run, model, shape, runner, latency in zip(runs, models, shapes, runners, ms, strict=True):
        rows.append(_compared(run, model, shape, latency, getattr(runner, "resolved", None)))
    settings = {
        "runtime": runtime,
        "threads": threads,
        "device": str(dev),
        "rounds": rounds,
        "repeats": repeats,
        "batch_sizes": list(batch_sizes),
        "split": "test",
        "data": runs[0].summary.get("data"),
    }
    comparison = Comparison(rows, settings, frontier_batch)
    if plot_path is not None:
        from .plots import plot_frontier

        plot_frontier(plot_path, comparison)
    if table_path is not None:
        atomic_write(table_path, comparison.markdown())
    return comparison


def _spatial_dims(model: nn.Module, info: dict[str, Any]) -> int:
    space = getattr(model, "space", None)
    if space is not None:
        return int(space.spatial_dims)
    return int((info.get("unet") or {}).get("spatial_dims", 2))


def _compared(
    run: _Run,
    model: nn.Module,
    shape: tuple[int, ...],
    latency: dict[int, float],
    runtime: str | None,
) -> ComparedRun:
    macs, _ = count_macs_flops(model, shape)
    s = run.summary
    return ComparedRun(
        run=run.given,
        model=run.label(),
        kind=str(run.spec.get("kind")),
        dice=_float(s.get("mean_dice")),
        iou=_float(s.get("mean_iou")),
        hd95=_float(s.get("mean_hd95")),
        hd95_unit=s.get("hd95_unit"),
        params=count_parameters(model),
        macs=macs,
        input_size=int(shape[-1]),
        ms_per_image=latency,
        runtime=runtime or "eager",
    )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

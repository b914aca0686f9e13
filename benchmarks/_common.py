"""Helpers shared by the benchmark scripts: machine description, timing, tables, results files.

Not part of the package: the scripts in ``benchmarks/`` import it as ``_common`` (Python puts a
script's own folder first on ``sys.path``).

Conventions every benchmark follows (DESIGN.md section 4):

* a baseline and its candidates run side by side in one process, in *interleaved* rounds
  (the order rotates each round), because these machines are noisy;
* every figure is a median over the rounds after the warm-up, and a ratio is the median of the
  per-round ratios (each pair ran back to back, under the same load);
* each script prints a markdown table and writes it, with the command, the machine, the date
  and a short reading of the figures, to ``benchmarks/results/<name>.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from msnas_graph._util import atomic_write
from msnas_graph.tables import markdown_table  # one table helper for the package and scripts

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS_DIR",
    "command_line",
    "fmt_bytes",
    "fmt_ratio",
    "interleaved",
    "load_average",
    "machine",
    "markdown_table",
    "median",
    "paired_ratio",
    "run_child",
    "write_results",
]


def command_line() -> str:
    """The command that ran this script, as typed (``python benchmarks/x.py ...``)."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path(__file__).resolve().parent.parent)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-minute load average (``"n/a"`` where the OS has none)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def machine(device: str = "cpu") -> str:
    """One line: CPU model and cores, GPU where used, torch and Python versions, threads."""
    import torch

    parts = [f"{_cpu_model()}, {os.cpu_count()} logical cores"]
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        parts.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
    parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)")
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def median(xs: Sequence[float]) -> float:
    """Median, ``nan`` for an empty sequence."""
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of the per-round ratios ``num[r] / den[r]`` (rounds ran back to back)."""
    return median([a / b for a, b in zip(num, den, strict=True) if b > 0])


def interleaved(
    cases: Mapping[str, Callable[[], Mapping[str, float]]],
    repeats: int,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Run every case once per round, ``warmup + repeats`` rounds, rotating the order.

    Each case returns named figures (e.g. ``{"weight_s": .., "arch_s": ..}``); the result maps
    ``case -> figure -> [value per measured round]`` (warm-up rounds dropped), so that round
    ``r`` of every case ran in the same stretch of time.
    """
    names = list(cases)
    out: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            figures = cases[name]()
            if log is not None:
                shown = ", ".join(f"{k}={v:.3f}" for k, v in figures.items())
                tag = "warm-up" if r < warmup else f"round {r - warmup + 1}/{repeats}"
                log(f"  {tag} {name}: {shown}")
            if r >= warmup:
                for k, v in figures.items():
                    out[name].setdefault(k, []).append(v)
    return out


def run_child(script: str | Path, spec: Mapping[str, object], what: str) -> dict[str, object]:
    """``python SCRIPT --_memory-child SPEC`` in a fresh interpreter, glibc's mmap threshold
    pinned to 64 KiB (freed tensors go back to the OS, so RSS follows live memory): the JSON
    object it prints last. A child that fails raises ``RuntimeError`` naming ``what``."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.run(
        [sys.executable, str(script), "--_memory-child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise RuntimeError(f"memory child for {what} failed: {err[0]}")
    return dict(json.loads(lines[-1]))


def fmt_bytes(n: float | None) -> str:
    """``123.4 MiB`` (``-`` for ``None``)."""
    if n is None or n != n:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(x: float | None) -> str:
    """``0.38x`` (``-`` for ``None`` or ``nan``)."""
    if x is None or x != x:
        return "-"
    return f"{x:.2f}x"


def write_results(
    name: str,
    title: str,
    setup: str,
    sections: Sequence[str],
    reading: str,
    *,
    device: str = "cpu",
    path: Path | None = None,
) -> Path:
    """Write ``results/<name>.md`` (or ``path``): title, command, machine, date, the setup
    paragraph, the sections (tables with their captions) and the reading of the figures."""
    target = path if path is not None else RESULTS_DIR / f"{name}.md"
    head = [
        f"# {title}",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine(device)}. Date: {time.strftime('%Y-%m-%d %H:%M')}. "
        f"Load average (1 min) at the end: {load_average()}.",
        "",
        setup.strip(),
        "",
    ]
    body = [s.strip() + "\n" for s in sections]
    tail = ["## Reading", "", reading.strip(), ""]
    text = "\n".join(head) + "\n" + "\n".join(body) + "\n" + "\n".join(tail)
    atomic_write(target, text)
    return target

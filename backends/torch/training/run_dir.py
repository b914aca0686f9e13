"""Run folders: refusal/overwrite/resume rules, atomic checkpoints, metrics CSV, ``DONE``.

A run folder is written by rank 0 only. Every file is replaced atomically (temporary file in the
same folder, then ``os.replace``), so an interrupted run never leaves a half-written checkpoint
where a good one was. ``DONE`` marks a finished run.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> prepare_run_dir(d, "search", resume=False, overwrite=False)
False
>>> _ = mark_done(d, {"epochs": 1})
>>> prepare_run_dir(d, "search", resume=False, overwrite=False)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
msnas_graph.errors.RunError: ... already holds a finished run; use --overwrite to replace it ...
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msnas_graph._util import (
    atomic_path,
    atomic_write,
    make_folder,
    open_input,
    refuse_losing_inputs,
)
from msnas_graph.errors import RunError
from msnas_graph.run_lock import LOCK, RunLock

__all__ = [
    "CHECKPOINT",
    "DONE",
    "LOCK",
    "RUN_FILES",
    "RunLock",
    "clear_run_files",
    "get_rng_state",
    "is_finished",
    "load_checkpoint",
    "mark_done",
    "prepare_run_dir",
    "remove_leftovers",
    "save_checkpoint",
    "save_weights",
    "set_rng_state",
    "write_metrics_csv",
]

CHECKPOINT = "checkpoint.pt"
DONE = "DONE"

#: What each kind of run writes (removed by ``overwrite``; nothing else in the folder is).
RUN_FILES: dict[str, tuple[str, ...]] = {
    "search": (
        "config.json",
        "states",
        "state.json",
        "architecture.json",
        "supernet.pt",
        CHECKPOINT,
        "metrics.csv",
        "plots",
        DONE,
    ),
    "train": (
        "config.json",
        "model.json",
        "best.pt",
        "last.pt",
        CHECKPOINT,
        "metrics.csv",
        "plots",
        DONE,
    ),
}


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files of writes a killed run left (``.NAME.XXXX.tmp`` beside
    ``checkpoint.pt``, the states and the plots); call it under the run's :class:`RunLock`."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / "states", run_dir / "plots"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    removed.append(p)
    return removed


def clear_run_files(run_dir: str | Path, kind: str) -> None:
    """Remove the files a ``kind`` run writes in ``run_dir`` (``RUN_FILES``); other files
    stay."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for name in RUN_FILES[kind]:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


#: How many per-epoch search states ``states/`` keeps: the newest; older ones are removed as
#: new ones are written, so a long run's folder stays bounded.
KEEP_STATES = 100


def epoch_files(folder: Path) -> list[Path]:
    """The ``epoch_N.json`` files of ``folder`` in epoch order (by number: ``epoch_1000``
    follows ``epoch_999``); links and other special files are left out.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for n in (999, 1000, 7):
    ...     _ = (d / f"epoch_{n:03d}.json").write_text("{}")
    >>> [p.name for p in epoch_files(d)]
    ['epoch_007.json', 'epoch_999.json', 'epoch_1000.json']
    """
    found = []
    for p in folder.glob("epoch_*.json"):
        number = p.stem.removeprefix("epoch_")
        if number.isdigit() and not p.is_symlink() and p.is_file():
            found.append((int(number), p))
    return [p for _, p in sorted(found)]


def prune_epoch_files(folder: Path, keep: int | None = None) -> list[Path]:
    """Remove all but the newest ``keep`` (default :data:`KEEP_STATES`) epoch files of
    ``folder``; the paths removed."""
    keep = KEEP_STATES if keep is None else keep
    files = epoch_files(folder)
    removed = files[: max(0, len(files) - keep)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run (a ``DONE`` marker)."""
    return (Path(run_dir) / DONE).is_file()


def prepare_run_dir(run_dir: str | Path, kind: str, *, resume: bool, overwrite: bool) -> bool:
    """Apply the run-folder rules; return whether there is a checkpoint to resume from.

    - ``resume`` and ``overwrite`` together: :class:`RunError`.
    - a finished run (``DONE``): refused unless ``overwrite`` (the run's own files are removed)
      or ``resume`` (the caller returns the finished result).
    - an unfinished run (``checkpoint.pt``): refused unless ``resume`` or ``overwrite``.
    - ``resume`` with no checkpoint: :class:`RunError`.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunError(
            f"{run_dir}: --resume and --overwrite contradict each other; give one of them"
        )
    if not resume:  # the run writes (or --overwrite deletes) its files: none may be an input
        action = "--overwrite deletes" if overwrite else "the run writes over"
        refuse_losing_inputs([run_dir / name for name in RUN_FILES[kind]], action)
    finished = is_finished(run_dir)
    has_ckpt = os.path.lexists(run_dir / CHECKPOINT)  # a special file is refused on reading
    if resume or overwrite:
        remove_leftovers(run_dir)
    if overwrite:
        clear_run_files(run_dir, kind)
        make_folder(run_dir)
        return False
    if finished and not resume:
        raise RunError(
            f"{run_dir} already holds a finished run; use --overwrite to replace it or choose "
            f"another folder"
        )
    if resume:
        if not has_ckpt and not finished:
            raise RunError(
                f"{run_dir}: no {CHECKPOINT} to resume from; start the run without --resume"
            )
        return True
    if has_ckpt:
        raise RunError(
            f"{run_dir} holds an unfinished run; use --resume to continue it or --overwrite to "
            f"start over"
        )
    make_folder(run_dir)
    return False


def mark_done(run_dir: str | Path, info: Mapping[str, Any]) -> Path:
    """Write the ``DONE`` marker (JSON with ``info`` and the finishing time)."""
    data = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    return atomic_write(Path(run_dir) / DONE, json.dumps(data, indent=1) + "\n")


# ------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(payload), tmp)
        if delay := os.environ.get("MSNAS_TEST_CHECKPOINT_DELAY"):  # crash tests: widen the
            time.sleep(float(delay))  # window in which a kill lands inside the write
    return path


def save_weights(path: str | Path, module: torch.nn.Module) -> Path:
    """Save ``module.state_dict()`` (on the CPU) atomically."""
    state = {k: v.detach().to("cpu") for k, v in module.state_dict().items()}
    return save_checkpoint(path, state)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors."""
    path = Path(path)
    try:
        with open_input(path, RunError, missing=f"{path}: no such checkpoint") as fh:
            data = torch.load(fh, map_location="cpu", weights_only=True)
    except RunError:
        raise
    except Exception as exc:  # corrupt or foreign file
        raise RunError(
            f"{path}: cannot read the checkpoint ({type(exc).__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0][:160]}); it is corrupt or not an "
            f"msnas-graph checkpoint"
        ) from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: not an msnas-graph checkpoint (a {type(data).__name__})")
    return data


def get_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy's global generator and ``random``, in a form
    that ``torch.load(weights_only=True)`` accepts (tensors, ints, lists)."""
    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- metrics.csv


def write_metrics_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write one row per epoch (columns from the first row, in order)."""
    buf = io.StringIO()
    if rows:
        fields = list(rows[0])
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in fields})
    return atomic_write(path, buf.getvalue())


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value

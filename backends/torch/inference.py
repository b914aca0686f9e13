"""Using a trained model: load it, evaluate it (one run or the folds of a cross-validation),
predict new cases.

Each function takes a training run folder (or one of its ``.pt`` files); predictions are made
at the run's input size and resampled to each case's original size
(:func:`~msnas_graph.data.restore_mask`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from msnas_graph._util import atomic_write, inside, unknown_name
from msnas_graph.backends.torch.data import load_cases, split_cases
from msnas_graph.backends.torch.limits import check_model
from msnas_graph.backends.torch.models import (
    ModelSource,
    check_finite_weights,
    locate_run,
    note_source,
    resolve_source,
)
from msnas_graph.backends.torch.runtimes import InferenceRuntime, check_runtime
from msnas_graph.backends.torch.training.config import TrainConfig
from msnas_graph.backends.torch.training.runtime import resolve_device
from msnas_graph.data import (
    SegmentationDataset,
    preprocess,
    restore_mask,
    write_mask,
    write_overlay,
)
from msnas_graph.data.case import Case
from msnas_graph.data.volumes import (
    VolumeUnit,
    stack_slices,
    volume_spacing,
    volume_units,
    write_label_volume,
)
from msnas_graph.errors import DataError, MsnasError, RunError
from msnas_graph.metrics import evaluate_case, summarize, summarize_folds, write_case_csv

__all__ = [
    "SPLITS",
    "check_finite_weights",
    "check_inference_memory",
    "evaluate",
    "evaluate_folds",
    "load_model",
    "predict",
    "unique_names",
]

SPLITS = ("train", "val", "test", "all")

logger = logging.getLogger(__name__)


def load_model(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run folder (``best.pt``, else ``last.pt``; or a given ``.pt``
    file of that folder) in eval mode on ``device``, and its ``model.json`` description (plus
    ``weights`` and ``run_dir``)."""
    locate_run(run_dir)  # a training run, or a one-line error saying what it is instead
    source = resolve_source(run_dir)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    note_source(source)
    check_model(source.spec, None, f"{source.where}: the model's weights", device=dev)
    model = source.build(dev)
    check_finite_weights(model, source.weights)
    info = dict(source.spec)
    info["weights"] = str(source.weights)
    info["run_dir"] = str(source.run_dir)
    return model, info


def check_inference_memory(
    spec: Mapping[str, Any], batch_size: int, device: Any = None, what: str = "inference"
) -> int:
    """The estimated bytes of running the model ``spec`` describes (a run's ``model.json``,
    or :func:`load_model`'s description): its weights plus its activations on a batch of
    ``batch_size`` inputs at the run's ``input_size`` (2D or 3D) on ``device``. Too many end
    in one :class:`~msnas_graph.errors.ResourceError` line naming ``--no-memory-check``;
    nothing is allocated (:func:`~msnas_graph.backends.torch.limits.check_model`). A
    description that is not a model's is not checked (0).

    >>> spec = {"format": "msnas-graph/model", "kind": "unet", "in_channels": 1,
    ...         "num_classes": 2, "unet": {"base_channels": 4, "depth": 3}, "input_size": 32}
    >>> check_inference_memory(spec, 2, "cpu") > 600_000  # 16 KiB of weights, activations
    True
    """
    try:
        source = ModelSource(dict(spec), "training run")
        shape = source.input_shape(int(spec["input_size"]), max(1, int(batch_size)))
    except (MsnasError, KeyError, TypeError, ValueError) as exc:  # not a model description
        logger.debug("inference memory estimate skipped: %r", exc)
        return 0
    where = spec.get("run_dir") or "the run"
    dims = "x".join(str(s) for s in shape[1:])
    return check_model(
        spec,
        shape,
        f"{what}: the {source.kind} model of {where} on a batch of {shape[0]} x {dims}",
        training=False,
        device=device,
    )


def _predict_cases(
    model: nn.Module,
    ds: SegmentationDataset,
    indices: Sequence[int],
    size: int,
    device: torch.device,
    batch_size: int,
) -> Iterator[tuple[int, Case, np.ndarray]]:
    """(index, case, mask at the original size) for each case, predicted at ``size``."""
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        cases = [ds[i] for i in chunk]
        images = np.stack([preprocess(c, size)[0] for c in cases])
        with torch.no_grad():
            logits = model(torch.from_numpy(images).to(device))
        preds = logits.argmax(1).cpu().numpy()
        for i, case, pred in zip(chunk, cases, preds, strict=True):
            yield i, case, restore_mask(pred, case)


def _predict_units(
    model: nn.Module,
    ds: SegmentationDataset,
    units: Sequence[VolumeUnit],
    size: int,
    device: torch.device,
    batch_size: int,
) -> Iterator[tuple[VolumeUnit, list[Case], list[np.ndarray]]]:
    """(unit, its cases, their masks) for each unit (a volume's slices in slice order, or one
    2D case), predicted at ``size``; one unit is held in memory at a time."""
    order = [i for u in units for i in u.indices]
    stream = _predict_cases(model, ds, order, size, device, batch_size)
    for unit in units:
        got = [next(stream) for _ in unit.indices]
        yield unit, [c for _, c, _ in got], [p for _, _, p in got]


@dataclass
class _Split:
    folds: str | None
    test_fold: int | None
    val_fraction: float
    seed: int


def _split_indices(
    ds: SegmentationDataset,
    split: str,
    cfg: TrainConfig | None,
    folds: str | None,
    test_fold: int | None,
) -> list[int]:
    if split == "all":
        return list(range(len(ds)))
    split_cfg = _Split(
        folds=folds if folds is not None else (cfg.folds if cfg else None),
        test_fold=test_fold if test_fold is not None else (cfg.test_fold if cfg else 0),
        val_fraction=cfg.val_fraction if cfg else 0.2,
        seed=cfg.seed if cfg else 0,
    )
    return split_cases(ds, split_cfg)[("train", "val", "test").index(split)]


def evaluate(
    run_dir_or_checkpoint: str | Path,
    data: str | None = None,
    *,
    split: str = "test",
    folds: str | None = None,
    test_fold: int | None = None,
    device: str = "auto",
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    runtime: str = "eager",
) -> dict[str, Any]:
    """Evaluate a trained model on a split of ``data`` at the cases' original resolution.

    ``data``, ``folds`` and ``test_fold`` default to the run's ``config.json``, so
    ``split="test"`` is exactly the fold the run held out (``"val"``, ``"train"`` and ``"all"``
    work too). Per-case Dice, IoU and HD95 (mm when the pixel size is known) go to
    ``out_dir/per_case.csv``, their summary to ``out_dir/summary.json`` (default ``out_dir``:
    ``<run>/eval_<split>``), which is returned.

    On NIfTI data a case is a whole volume (``"level": "volume"`` in the summary): its slices'
    predictions are stacked and Dice, IoU and HD95 computed in 3D, HD95 in mm from the header's
    voxel size, one CSV row per volume. 2D images, and splits holding only part of a volume,
    are scored per image (``"level": "image"``).

    ``runtime`` (:mod:`~msnas_graph.backends.torch.runtimes`) defaults to ``"eager"`` here
    (``predict``'s default is ``"auto"``): metrics then do not depend on which optional
    packages are installed; every runtime gives the same logits up to float rounding.
    """
    if split not in SPLITS:
        raise RunError(unknown_name("split", split, SPLITS))
    check_runtime(runtime)
    dev = resolve_device(device)
    model, info = load_model(run_dir_or_checkpoint, dev)
    model = InferenceRuntime(model, runtime, dev)  # BatchNorm folded at least
    run = Path(info["run_dir"])
    cfg = TrainConfig.load(run / "config.json") if (run / "config.json").is_file() else None
    data = data if data is not None else (cfg.data if cfg is not None else None)
    if data is None:
        raise RunError(f"{run}: no config.json to take the data from; give the data source")
    ds = load_cases(data, num_classes=info["num_classes"], in_channels=info["in_channels"])
    indices = _split_indices(ds, split, cfg, folds, test_fold)
    labelled = [i for i in indices if ds[i].mask is not None]
    if not labelled:
        raise DataError(
            f"{data}: the {split} split has no labelled cases to evaluate; choose another split "
            f"or give labelled data"
        )
    units, level = _evaluation_units(ds, labelled, data)
    check_inference_memory(info, min(batch_size, len(labelled)), dev, "evaluate")
    cases, mm = [], True
    for unit, unit_cases, preds in _predict_units(
        model, ds, units, int(info["input_size"]), dev, batch_size
    ):
        masks = [c.mask for c in unit_cases if c.mask is not None]
        spacing: Any = unit_cases[0].spacing
        pred, target, case_id = preds[0], masks[0], unit_cases[0].case_id
        if level == "volume":  # 3D: all slices together, voxel size from the header
            assert unit.volume is not None
            pred, target = stack_slices(preds), stack_slices(masks)
            spacing, case_id = volume_spacing(unit.volume), unit.name
        mm = mm and spacing is not None
        cases.append(
            evaluate_case(pred, target, int(info["num_classes"]), spacing=spacing, case_id=case_id)
        )
    out = Path(out_dir) if out_dir is not None else run / f"eval_{split}"
    names = list(info.get("label_names") or ds.label_names)
    write_case_csv(out / "per_case.csv", cases, names)
    summary = summarize(cases, names)
    summary.update(
        split=split,
        data=str(data),
        run=str(run),
        weights=info["weights"],
        input_size=int(info["input_size"]),
        level=level,
        hd95_unit="mm" if mm else "pixels",
    )
    atomic_write(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _evaluation_units(
    ds: SegmentationDataset, indices: Sequence[int], data: str
) -> tuple[list[VolumeUnit], str]:
    """The units ``evaluate`` scores and their level: whole volumes when every case is a slice
    of a NIfTI volume whose slices are all in the split, else single images (slices)."""
    units = volume_units(ds, indices)
    if all(u.volume is not None and u.complete for u in units):
        return units, "volume"
    if any(u.volume is not None for u in units):
        logger.warning(
            "%s: the split holds part of a volume or mixes volumes with 2D images; "
            "scoring every slice as an image (split by volume for per-volume metrics)",
            data,
        )
    ids = ds.case_ids()
    return [VolumeUnit(ids[i], (i,), None, 1) for i in indices], "image"


def evaluate_folds(
    run_dirs: Sequence[str | Path],
    data: str | None = None,
    *,
    out_dir: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`evaluate` each run (one per fold of a k-fold cross-validation, each on its own
    held-out fold) and combine the fold means as mean and std
    (:func:`~msnas_graph.metrics.summarize_folds`).

    With one run this is :func:`evaluate`. With several, each run's files go to a numbered
    sub-folder ``out_dir/NN_<run name>`` and the combined summary to
    ``out_dir/kfold_summary.json`` (without ``out_dir``: each run's own ``eval_<split>``, and
    the combination is only returned). ``options`` (``split``, ``folds``, ``test_fold``,
    ``device``, ``batch_size``, ``runtime``) go to :func:`evaluate`.
    """
    if not run_dirs:
        raise RunError("evaluate_folds: give at least one training run folder")
    seen: dict[Path, str | Path] = {}
    for run_dir in run_dirs:  # one run given twice would count as two folds
        path = Path(run_dir).expanduser()
        key = (path.parent if path.is_file() else path).resolve()
        if key in seen:
            raise RunError(
                f"{run_dir}: the same run as {seen[key]} (both {key}); give each fold's run once"
            )
        seen[key] = run_dir
    summaries: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        own_out = out_dir
        if out_dir is not None and len(run_dirs) > 1:  # one sub-folder per run, numbered
            own_out = Path(out_dir) / f"{len(summaries):02d}_{Path(run_dir).name}"
        summaries.append(evaluate(run_dir, data, out_dir=own_out, **options))
    if len(summaries) == 1:
        return summaries[0]
    result = summarize_folds(summaries)
    if out_dir is not None:
        atomic_write(Path(out_dir) / "kfold_summary.json", json.dumps(result, indent=2))
    return result


def predict(
    run_dir_or_checkpoint: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    overlay: bool = False,
    device: str = "auto",
    batch_size: int = 8,
    runtime: str = "auto",
) -> list[Path]:
    """Segment ``inputs`` (an image file, a folder, or a dataset source) with a trained model.

    Writes one mask per 2D image into ``out_dir`` as PNG (:func:`~msnas_graph.data.write_mask`)
    and one label volume per NIfTI input, its slices' predictions stacked back in order, with
    the input's affine, zooms and qform/sform codes
    (:func:`~msnas_graph.data.volumes.write_label_volume`), named after the input (in an
    nnU-Net ``imagesTr``/``imagesTs`` folder without the channel suffix: ``case_0000.nii.gz``
    gives ``case.nii.gz``). nnU-Net channel files ``case_0000``, ``case_0001``... are one case
    (:func:`~msnas_graph.data.files.channel_cases`) with one mask, and a case whose channel
    count differs from the model's input channels, or any input that cannot be read whole, is
    refused before any mask is written. Masks are
    at the original size; with ``overlay=True`` a PNG of each image or slice with the mask
    tinted goes to ``out_dir/overlays``. Returns the mask paths.

    ``runtime`` picks how the network runs (:mod:`~msnas_graph.backends.torch.runtimes`):
    ``"auto"`` (default) takes ONNX Runtime where installed and equal to eager on the first
    batch, else TorchScript (``"jit"``), else ``"eager"`` (BatchNorm folded).
    """
    check_runtime(runtime)
    out = Path(out_dir)
    _check_predict_output(out, _input_folders(inputs, None))
    dev = resolve_device(device)
    model, info = load_model(run_dir_or_checkpoint, dev)
    model = InferenceRuntime(model, runtime, dev)  # BatchNorm folded; jit/onnxruntime/...
    ds = load_cases(str(inputs), num_classes=info["num_classes"], in_channels=info["in_channels"])
    _check_predict_output(out, _input_folders(inputs, ds))
    check_inference_memory(info, min(batch_size, len(ds)), dev, "predict")
    ds.validate()  # every input readable before the first mask is written
    units = volume_units(ds, range(len(ds)))
    names = unique_names([u.name for u in units])
    written: list[Path] = []
    for k, (unit, cases, preds) in enumerate(
        _predict_units(model, ds, units, int(info["input_size"]), dev, batch_size)
    ):
        written += _write_unit(out, names[k], unit, cases, preds, overlay)
    if len(set(written)) != len(written):  # unique_names guarantees this; say so if not
        raise RunError(f"{out}: two predictions would share a file name; please report it")
    return written


def _write_unit(
    out: Path,
    name: str,
    unit: VolumeUnit,
    cases: Sequence[Case],
    preds: Sequence[np.ndarray],
    overlay: bool,
) -> list[Path]:
    """Write one unit's masks (a volume, or one 2D image) and overlays; the mask paths."""
    if unit.volume is not None and unit.complete:
        suffix = ".nii" if unit.volume.name.lower().endswith(".nii") else ".nii.gz"
        paths = [write_label_volume(out / f"{name}{suffix}", stack_slices(preds), unit.volume)]
    else:
        paths = [write_mask(out / name, preds[0], like=cases[0])]
    if overlay:
        for case, pred in zip(cases, preds, strict=True):
            z = case.meta.get("slice_index")
            stem = name if z is None or unit.volume is None else f"{name}_z{int(z):03d}"
            write_overlay(out / "overlays" / f"{stem}.png", case.image, pred)
    return paths


#: Folders beside an images folder that hold (or, once written, would be read as) its ground
#: truth: the mask folders ``load_dataset`` pairs with ``images/`` and nnU-Net's ``labelsTr``.
_GROUND_TRUTH_DIRS = (
    *("masks", "labels", "mask", "label", "annotations", "gt"),
    *("labelsTr", "labelsTs"),
)


def _input_folders(inputs: str | Path, ds: SegmentationDataset | None) -> list[Path]:
    """The folders ``predict`` must not write into: ``inputs`` (or an input file's folder), the
    ground-truth folders beside an images folder (``data/images`` -> ``data/masks``, existing
    or not: masks written there would be read back as ground truth), and the folder of every
    image and mask file the dataset reads. Siblings such as ``data/predictions`` stay free."""
    src = Path(inputs)
    folders = [src] if src.is_dir() else [src.parent] if src.is_file() else []
    for item in getattr(ds, "_items", None) or ():
        for f in (*getattr(item, "image_files", ()), getattr(item, "mask_file", None)):
            if f is not None:
                folders.append(Path(f).parent)
    for folder in list(folders):
        if folder.resolve().name.lower().startswith(("image", "img")):
            folders += [folder.resolve().parent / name for name in _GROUND_TRUTH_DIRS]
    return list(dict.fromkeys(folders))


def _check_predict_output(out: Path, folders: Sequence[Path]) -> None:
    """Refuse an output folder that is, contains or lies inside a folder of the input data or
    its ground truth (:func:`_input_folders`)."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: not a folder; give a new or existing folder for the masks")
    for folder in folders:
        if inside(out, folder) or inside(folder, out):
            raise RunError(
                f"{out}: the output folder is, contains or lies inside {folder}, a folder of "
                "the input data or its ground truth; write the masks to a folder beside it "
                "(e.g. data/predictions for data/images)"
            )


def unique_names(case_ids: Sequence[str]) -> list[str]:
    """File-system-safe, distinct file stems for ``case_ids``, deterministically.

    A name that had to change (characters other than letters, digits, ``-``, ``_``, ``.``;
    undecodable bytes) gets the first 8 hex digits of the original's SHA-1, so ``"a b"`` and
    ``"a_b"`` stay apart; names equal up to case get ``_2``, ``_3``, ... in order.

    >>> unique_names(["a_b", "a b", "A_B", "a_b"])
    ['a_b', 'a_b-7dbde935', 'A_B_2', 'a_b_3']
    """
    out: list[str] = []
    used: set[str] = set()
    for case_id in case_ids:
        name = _safe_name(case_id)
        if name != case_id:
            raw = case_id.encode("utf-8", "surrogateescape")
            name = f"{name}-{hashlib.sha1(raw).hexdigest()[:8]}"
        stem, n = name, 1
        while name.lower() in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name.lower())
        out.append(name)
    return out


def _safe_name(case_id: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)
    return keep.strip(".") or "case"

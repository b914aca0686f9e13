"""Segmentation metrics: per-class Dice (DSC), IoU and HD95, with per-case and fold summaries.

Conventions (numpy and scipy only):

* :func:`dice_iou` reports every class including the background. A class absent from both
  prediction and target scores 1.0 (nothing to find, nothing predicted), as in the MSD
  evaluation; a class present on one side only scores 0.0.
* :func:`hd95` reports foreground classes ``1..K-1`` only: the 95th percentile of the
  symmetric surface distances, computed as ``medpy.metric.binary.hd95`` does (surfaces are
  the pixels removed by one binary erosion with a 4-connected cross; distances by
  ``scipy.ndimage.distance_transform_edt`` with the pixel ``spacing``; the percentile of both
  directed distance sets pooled). In mm when ``spacing`` is given (a scalar, or one value per
  axis: ``(row, col)``, or ``(x, y, z)`` for a volume, where the cross is 6-connected), else in
  pixels. A class absent from both sides scores 0.0; present on one side only, NaN (undefined;
  Dice already counts the miss). Means skip NaN. Every function takes 2D images and 3D volumes.
* Mean Dice/IoU/HD95 of a case are over the foreground classes. Summaries are means over cases
  with population standard deviations (``ddof=0``); NaN is skipped, and a value with no
  finite inputs is reported as ``None`` so summaries are valid JSON.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msnas_graph._util import atomic_write
from msnas_graph.errors import DataError

__all__ = [
    "CaseMetrics",
    "dice_iou",
    "evaluate_case",
    "hd95",
    "summarize",
    "summarize_folds",
    "write_case_csv",
]


def _check(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise DataError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    if num_classes < 2:
        raise DataError(f"num_classes={num_classes}: metrics need at least 2 classes")
    for what, arr in (("prediction", pred), ("target", target)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise DataError(
                f"{what} labels {int(arr.min())}..{int(arr.max())} outside 0..{num_classes - 1}"
            )
    return pred.astype(np.int64, copy=False), target.astype(np.int64, copy=False)


def dice_iou(
    pred: np.ndarray, target: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Dice and IoU (background included) of integer label maps of one shape.

    >>> t = np.array([[0, 1], [1, 1]])
    >>> d, j = dice_iou(t, t, 3)
    >>> d.tolist(), j.tolist()
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    >>> d, j = dice_iou(np.array([[0, 1], [0, 0]]), t, 2)
    >>> np.round(d, 3).tolist(), np.round(j, 3).tolist()
    ([0.5, 0.5], [0.333, 0.333])
    """
    pred, target = _check(pred, target, num_classes)
    k = num_classes
    cm = np.bincount((target.ravel() * k + pred.ravel()), minlength=k * k).reshape(k, k)
    inter = np.diag(cm).astype(np.float64)
    p_sum = cm.sum(axis=0).astype(np.float64)
    t_sum = cm.sum(axis=1).astype(np.float64)
    union = p_sum + t_sum - inter
    empty = (p_sum + t_sum) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(empty, 1.0, 2.0 * inter / (p_sum + t_sum))
        iou = np.where(empty, 1.0, inter / union)
    return dice, iou


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, int | float | np.floating | np.integer):
        values: tuple[float, ...] = (float(spacing),) * ndim
    else:
        values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(v > 0 and math.isfinite(v) for v in values):
        raise DataError(f"spacing {spacing!r}: give one positive number or {ndim} (one per axis)")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1)


def hd95(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    """95th-percentile symmetric surface distance per foreground class (length ``K - 1``).

    >>> a = np.zeros((9, 9), dtype=int); a[3, 2] = 1
    >>> b = np.zeros((9, 9), dtype=int); b[3, 5] = 1
    >>> hd95(a, b, 2).tolist(), hd95(a, b, 2, spacing=(1.0, 0.5)).tolist()
    ([3.0], [1.5])
    >>> v = np.zeros((3, 3, 4), dtype=int); w = v.copy(); v[1, 1, 0] = w[1, 1, 2] = 1
    >>> hd95(v, w, 2, spacing=(0.8, 0.8, 2.5)).tolist()  # two slices apart in 3D
    [5.0]
    """
    from scipy import ndimage

    pred, target = _check(pred, target, num_classes)
    sampling = _spacing(spacing, pred.ndim)
    out = np.full(num_classes - 1, np.nan)
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        p_any, t_any = bool(p.any()), bool(t.any())
        if not p_any and not t_any:
            out[c - 1] = 0.0
            continue
        if p_any != t_any:
            continue
        sp, st = _surface(p), _surface(t)
        dist_to_t = ndimage.distance_transform_edt(~st, sampling=sampling)
        dist_to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
        distances = np.concatenate([dist_to_t[sp], dist_to_p[st]])
        out[c - 1] = float(np.percentile(distances, 95))
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


@dataclass
class CaseMetrics:
    """The metrics of one case: per class (``dice``, ``iou``: all classes; ``hd95``:
    foreground classes) and their foreground means."""

    case_id: str
    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray
    mean_dice: float
    mean_iou: float
    mean_hd95: float


def evaluate_case(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
    case_id: str = "",
) -> CaseMetrics:
    """Dice, IoU and HD95 of one case.

    >>> t = np.zeros((8, 8), dtype=int); t[2:6, 2:6] = 1
    >>> m = evaluate_case(t, t, 2, case_id="a")
    >>> m.mean_dice, m.mean_iou, m.mean_hd95
    (1.0, 1.0, 0.0)
    """
    dice, iou = dice_iou(pred, target, num_classes)
    hd = hd95(pred, target, num_classes, spacing)
    return CaseMetrics(
        case_id=case_id,
        dice=dice,
        iou=iou,
        hd95=hd,
        mean_dice=float(dice[1:].mean()),
        mean_iou=float(iou[1:].mean()),
        mean_hd95=_nanmean(hd),
    )


def _stat(values: Sequence[float] | np.ndarray) -> tuple[float | None, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return None, None
    return float(arr.mean()), float(arr.std())


def _label_names(label_names: Sequence[str], num_classes: int) -> list[str]:
    names = list(label_names)[:num_classes]
    return names + [f"class_{k}" for k in range(len(names), num_classes)]


def summarize(cases: Sequence[CaseMetrics], label_names: Sequence[str]) -> dict[str, Any]:
    """Mean and std over cases of every per-class and mean metric (JSON-ready).

    Keys: ``num_cases``; ``mean_dice``, ``mean_dice_std``, ``mean_iou``, ``mean_iou_std``,
    ``mean_hd95``, ``mean_hd95_std``; ``per_class`` = ``{name: {"dice", "dice_std", "iou",
    "iou_std", "hd95", "hd95_std"}}`` (``hd95`` is ``None`` for the background).

    >>> t = np.zeros((8, 8), dtype=int); t[2:6, 2:6] = 1
    >>> s = summarize([evaluate_case(t, t, 2)], ["background", "head"])
    >>> s["mean_dice"], s["per_class"]["head"]["iou"]
    (1.0, 1.0)
    """
    if not cases:
        raise DataError("no cases to summarize: evaluate at least one case")
    k = len(cases[0].dice)
    names = _label_names(label_names, k)
    out: dict[str, Any] = {"num_cases": len(cases)}
    for key in ("mean_dice", "mean_iou", "mean_hd95"):
        mean, std = _stat([getattr(c, key) for c in cases])
        out[key], out[f"{key}_std"] = mean, std
    per_class: dict[str, dict[str, float | None]] = {}
    for ci, name in enumerate(names):
        entry: dict[str, float | None] = {}
        for key in ("dice", "iou"):
            entry[key], entry[f"{key}_std"] = _stat([c.__dict__[key][ci] for c in cases])
        if ci == 0:
            entry["hd95"], entry["hd95_std"] = None, None
        else:
            entry["hd95"], entry["hd95_std"] = _stat([c.hd95[ci - 1] for c in cases])
        per_class[name] = entry
    out["per_class"] = per_class
    return out


def summarize_folds(fold_summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std across folds of the fold means from :func:`summarize`.

    Returns ``{"num_folds", "mean_dice": {"mean", "std"}, ..., "per_class": {name: {"dice":
    {"mean", "std"}, ...}}}``.

    >>> s = {"num_cases": 1, "mean_dice": 0.8, "mean_iou": 0.7, "mean_hd95": 2.0,
    ...      "per_class": {"head": {"dice": 0.8, "iou": 0.7, "hd95": 2.0}}}
    >>> t = dict(s, mean_dice=0.6)
    >>> summarize_folds([s, t])["mean_dice"]
    {'mean': 0.7, 'std': 0.1}
    """
    if not fold_summaries:
        raise DataError("no fold summaries to combine: run at least one fold")

    def stat(values: list[Any]) -> dict[str, float | None]:
        mean, std = _stat([math.nan if v is None else float(v) for v in values])
        return {
            "mean": None if mean is None else round(mean, 12),
            "std": None if std is None else round(std, 12),
        }

    out: dict[str, Any] = {"num_folds": len(fold_summaries)}
    out["num_cases"] = sum(int(s.get("num_cases", 0)) for s in fold_summaries)
    for key in ("mean_dice", "mean_iou", "mean_hd95"):
        out[key] = stat([s.get(key) for s in fold_summaries])
    names: list[str] = []
    for s in fold_summaries:
        names += [n for n in s.get("per_class", {}) if n not in names]
    out["per_class"] = {
        name: {
            key: stat([s.get("per_class", {}).get(name, {}).get(key) for s in fold_summaries])
            for key in ("dice", "iou", "hd95")
        }
        for name in names
    }
    return out


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def write_case_csv(
    path: str | Path, cases: Sequence[CaseMetrics], label_names: Sequence[str]
) -> Path:
    """Write one row per case: id, means, then Dice and IoU per class and HD95 per foreground
    class (empty cell for NaN). Returns the path written."""
    k = len(cases[0].dice) if cases else len(label_names)
    names = _label_names(label_names, k)
    header = ["case_id", "mean_dice", "mean_iou", "mean_hd95"]
    header += [f"dice_{n}" for n in names] + [f"iou_{n}" for n in names]
    header += [f"hd95_{n}" for n in names[1:]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for c in cases:
        row = [c.case_id, _fmt(c.mean_dice), _fmt(c.mean_iou), _fmt(c.mean_hd95)]
        row += [_fmt(float(v)) for v in c.dice] + [_fmt(float(v)) for v in c.iou]
        row += [_fmt(float(v)) for v in c.hd95]
        writer.writerow(row)
    return atomic_write(path, buf.getvalue())

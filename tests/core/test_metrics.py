"""Metrics against hand-computed examples and a brute-force HD95 reference."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msnas_graph.errors import DataError
from msnas_graph.metrics import (
    CaseMetrics,
    dice_iou,
    evaluate_case,
    hd95,
    summarize,
    summarize_folds,
    write_case_csv,
)


def _square(top: int, left: int, side: int = 4, size: int = 12) -> np.ndarray:
    m = np.zeros((size, size), np.int64)
    m[top : top + side, left : left + side] = 1
    return m


def test_dice_identical_disjoint_and_empty() -> None:
    a = _square(2, 2)
    d, j = dice_iou(a, a, 2)
    assert d.tolist() == [1.0, 1.0] and j.tolist() == [1.0, 1.0]
    d, j = dice_iou(a, _square(7, 7), 2)
    assert d[1] == 0.0 and j[1] == 0.0
    # class 2 absent from both -> 1.0 by convention
    d, j = dice_iou(a, a, 3)
    assert d[2] == 1.0 and j[2] == 1.0
    # class present on one side only -> 0
    d, _ = dice_iou(a, np.zeros_like(a), 2)
    assert d[1] == 0.0


def test_dice_iou_partial_overlap_by_hand() -> None:
    # squares of 16 px shifted by 2 columns overlap in 8 px
    d, j = dice_iou(_square(2, 2), _square(2, 4), 2)
    assert d[1] == pytest.approx(2 * 8 / 32) and j[1] == pytest.approx(8 / 24)


def test_hd95_square_shift() -> None:
    # a 4x4 square shifted 2 px: the 24 surface distances are eight each of 0, 1, 2
    a, b = _square(2, 2), _square(2, 4)
    assert hd95(a, b, 2).tolist() == [2.0]
    assert hd95(a, b, 2, spacing=0.5).tolist() == [1.0]
    assert hd95(a, a, 2).tolist() == [0.0]


def test_hd95_anisotropic_spacing_single_points() -> None:
    a = np.zeros((9, 9), np.int64)
    b = np.zeros((9, 9), np.int64)
    a[3, 2], b[3, 5] = 1, 1  # 3 columns apart
    assert hd95(a, b, 2, spacing=(1.0, 0.5)).tolist() == [1.5]
    assert hd95(a, b, 2, spacing=(0.5, 2.0)).tolist() == [6.0]
    a2, b2 = np.zeros_like(a), np.zeros_like(b)
    a2[1, 4], b2[5, 4] = 1, 1  # 4 rows apart
    assert hd95(a2, b2, 2, spacing=(0.5, 2.0)).tolist() == [2.0]


def test_hd95_empty_conventions() -> None:
    a = _square(2, 2)
    empty = np.zeros_like(a)
    out = hd95(a, empty, 3)
    assert math.isnan(out[0]) and out[1] == 0.0  # one side empty -> NaN; both -> 0
    assert math.isnan(hd95(empty, a, 2)[0])


def _brute_hd95(p: np.ndarray, t: np.ndarray, spacing: tuple[float, float]) -> float:
    def surface(m: np.ndarray) -> np.ndarray:
        pad = np.pad(m, 1)
        interior = m & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        return np.argwhere(m & ~interior) * np.asarray(spacing)

    sp, st_ = surface(p), surface(t)
    d = np.sqrt(((sp[:, None, :] - st_[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    spacing=st.tuples(st.sampled_from([0.5, 1.0, 1.7]), st.sampled_from([0.5, 1.0, 3.0])),
)
def test_hd95_matches_brute_force(seed: int, spacing: tuple[float, float]) -> None:
    rng = np.random.default_rng(seed)
    p = rng.random((10, 11)) < 0.3
    t = rng.random((10, 11)) < 0.3
    p[0, 0] = t[5, 5] = True  # both non-empty
    got = hd95(p.astype(np.int64), t.astype(np.int64), 2, spacing=spacing)[0]
    assert got == pytest.approx(_brute_hd95(p, t, spacing))


def test_evaluate_case_and_means() -> None:
    t = np.zeros((12, 12), np.int64)
    t[1:5, 1:5] = 1
    t[7:11, 7:11] = 2
    p = t.copy()
    p[7:11, 7:11] = 0  # class 2 missed entirely
    m = evaluate_case(p, t, 3, spacing=0.5, case_id="x")
    assert m.case_id == "x" and m.dice[1] == 1.0 and m.dice[2] == 0.0
    assert m.mean_dice == pytest.approx(0.5) and m.mean_iou == pytest.approx(0.5)
    assert m.hd95[0] == 0.0 and math.isnan(m.hd95[1]) and m.mean_hd95 == 0.0


def test_input_errors() -> None:
    with pytest.raises(DataError, match="shape"):
        dice_iou(np.zeros((2, 2), int), np.zeros((3, 2), int), 2)
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        dice_iou(np.full((2, 2), 2), np.zeros((2, 2), int), 2)
    with pytest.raises(DataError, match="spacing"):
        hd95(np.zeros((2, 2), int), np.zeros((2, 2), int), 2, spacing=(1.0, 0.0))


def _cm(case_id: str, d1: float, hd: float) -> CaseMetrics:
    return CaseMetrics(
        case_id,
        np.array([1.0, d1]),
        np.array([1.0, d1 / 2]),
        np.array([hd]),
        d1,
        d1 / 2,
        hd,
    )


def test_summarize_ignores_nan_and_is_json() -> None:
    s = summarize([_cm("a", 0.8, 2.0), _cm("b", 0.6, math.nan)], ["bg", "head"])
    assert s["num_cases"] == 2
    assert s["mean_dice"] == pytest.approx(0.7) and s["mean_dice_std"] == pytest.approx(0.1)
    assert s["mean_hd95"] == 2.0 and s["mean_hd95_std"] == 0.0
    assert s["per_class"]["head"]["iou"] == pytest.approx(0.35)
    assert s["per_class"]["bg"]["hd95"] is None
    json.dumps(s, allow_nan=False)
    s_nan = summarize([_cm("c", 0.0, math.nan)], ["bg", "head"])
    assert s_nan["mean_hd95"] is None
    with pytest.raises(DataError):
        summarize([], ["bg"])


def test_summarize_folds() -> None:
    f1 = summarize([_cm("a", 0.8, 2.0)], ["bg", "head"])
    f2 = summarize([_cm("b", 0.6, 4.0)], ["bg", "head"])
    out = summarize_folds([f1, f2])
    assert out["num_folds"] == 2 and out["num_cases"] == 2
    assert out["mean_dice"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1)}
    assert out["per_class"]["head"]["hd95"]["mean"] == pytest.approx(3.0)
    assert out["per_class"]["bg"]["hd95"] == {"mean": None, "std": None}
    json.dumps(out, allow_nan=False)


def test_write_case_csv(tmp_path: Path) -> None:
    path = write_case_csv(
        tmp_path / "cases.csv", [_cm("a", 0.8, 2.0), _cm("b", 0.6, math.nan)], ["bg", "head"]
    )
    rows = list(csv.DictReader(path.open()))
    assert [r["case_id"] for r in rows] == ["a", "b"]
    assert float(rows[0]["dice_head"]) == pytest.approx(0.8) and rows[1]["hd95_head"] == ""
    assert "hd95_bg" not in rows[0]


def test_hd95_in_3d_uses_the_z_spacing() -> None:
    a = np.zeros((5, 5, 5), dtype=int)
    b = np.zeros((5, 5, 5), dtype=int)
    a[2, 2, 1], b[2, 2, 3] = 1, 1  # two voxels two slices apart
    assert hd95(a, b, 2, spacing=(0.8, 0.8, 2.5)).tolist() == [5.0]
    assert hd95(a, b, 2).tolist() == [2.0]
    with pytest.raises(DataError, match="one per axis"):
        hd95(a, b, 2, spacing=(0.8, 0.8))
    m = evaluate_case(a, a, 2, spacing=(0.8, 0.8, 2.5))
    assert (m.mean_dice, m.mean_hd95) == (1.0, 0.0)

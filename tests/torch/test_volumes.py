"""predict / evaluate on NIfTI volumes: one label volume per input with the input's header, and
per-volume 3D metrics with the header's voxel size.

The model is a stand-in whose output we control: it labels a pixel 1 where the (z-scored) image
is above its slice mean, so each slice's prediction is that slice's bright rectangle and the
slice order of the written volume can be checked exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from msnas_graph.backends.torch import inference
from msnas_graph.metrics import dice_iou, hd95

SPACING = (0.8, 0.8, 2.5)
SHAPE = (32, 32, 6)


class Threshold(nn.Module):
    """Class 1 where the first channel is above 0 (the slice mean after z-scoring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1], x[:, :1]], dim=1)


def _affine() -> np.ndarray:
    """Spacing (0.8, 0.8, 2.5), a 90 degree in-plane rotation and a flip of the first axis."""
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0, 1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = rot @ flip @ np.diag(SPACING)
    aff[:3, 3] = (12.5, -40.0, 7.25)
    return aff


def _rectangles(shift_odd: int = 0) -> np.ndarray:
    """Slice z holds rows [2+3z, 10+3z) x cols [4, 20) (odd slices shifted by ``shift_odd``)."""
    vol = np.zeros(SHAPE, dtype=np.int64)
    for z in range(SHAPE[2]):
        r = 2 + 3 * z + (shift_odd if z % 2 else 0)
        vol[r : r + 8, 4:20, z] = 1
    return vol


def _save(path: Path, data: np.ndarray) -> None:
    img = nib.Nifti1Image(data, _affine())
    img.set_qform(_affine(), code=1)
    img.set_sform(_affine(), code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _image(seed: int) -> np.ndarray:
    """Bright rectangles (per slice) on a dark background, scaled per volume."""
    return (_rectangles() * (100.0 + 10 * seed) + 5.0).astype(np.float32)


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """inference.load_model returns the Threshold model and a 2-class, 32x32 description."""
    run = tmp_path / "run"
    run.mkdir()
    info = {
        "num_classes": 2,
        "in_channels": 1,
        "input_size": 32,
        "run_dir": str(run),
        "weights": str(run / "best.pt"),
        "label_names": ["background", "box"],
    }
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: (Threshold().eval(), info))
    return run


def _check_like_input(out: Path, ref: Path, expected: np.ndarray) -> None:
    o, r = nib.load(str(out)), nib.load(str(ref))
    assert o.shape == r.shape == SHAPE
    np.testing.assert_allclose(o.affine, r.affine, atol=1e-5)
    np.testing.assert_allclose(o.header.get_zooms(), SPACING, atol=1e-6)
    assert int(o.header["qform_code"]) == 1 and int(o.header["sform_code"]) == 2
    data = np.asanyarray(o.dataobj)
    assert np.issubdtype(data.dtype, np.integer)
    np.testing.assert_array_equal(data, expected)  # slices in the input's order and axes


def test_predict_writes_one_volume_per_input_with_its_header(fake_model, tmp_path):
    images = tmp_path / "scans"
    for k in range(2):
        _save(images / f"pat{k}.nii.gz", _image(k))
    written = inference.predict(fake_model, images, tmp_path / "pred", device="cpu")
    assert sorted(p.name for p in written) == ["pat0.nii.gz", "pat1.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["pat0.nii.gz", "pat1.nii.gz"]
    for k in range(2):
        _check_like_input(tmp_path / "pred" / f"pat{k}.nii.gz", images / f"pat{k}.nii.gz",
                          _rectangles())  # fmt: skip


def test_predict_nnunet_names_and_overlays(fake_model, tmp_path):
    images = tmp_path / "Dataset001_Box" / "imagesTs"
    for k in range(2):
        _save(images / f"box_{k:03d}_0000.nii.gz", _image(k))
    out = tmp_path / "pred"
    written = inference.predict(fake_model, images, out, overlay=True, device="cpu")
    assert [p.name for p in written] == ["box_000.nii.gz", "box_001.nii.gz"]
    _check_like_input(written[1], images / "box_001_0000.nii.gz", _rectangles())
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == [f"box_{k:03d}_z{z:03d}.png" for k in range(2) for z in range(6)]


def _msd(root: Path, shift_odd: int) -> Path:
    for k in range(2):
        _save(root / "imagesTr" / f"box_{k:03d}_0000.nii.gz", _image(k))
        _save(root / "labelsTr" / f"box_{k:03d}.nii.gz", _rectangles(shift_odd).astype(np.uint8))
    spec = {"labels": {"background": 0, "box": 1}, "channel_names": {"0": "CT"},
            "file_ending": ".nii.gz", "numTraining": 2}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_predict_msd_layout_names_volumes_by_case(fake_model, tmp_path):
    root = _msd(tmp_path / "Task01", shift_odd=0)
    written = inference.predict(fake_model, root, tmp_path / "pred", device="cpu")
    assert [p.name for p in written] == ["box_000.nii.gz", "box_001.nii.gz"]
    _check_like_input(written[0], root / "imagesTr" / "box_000_0000.nii.gz", _rectangles())


def test_evaluate_volume_metrics_are_3d_with_header_spacing(fake_model, tmp_path):
    root = _msd(tmp_path / "Task01", shift_odd=3)  # odd slices' labels 3 rows off
    summary = inference.evaluate(
        fake_model, str(root), split="all", device="cpu", out_dir=tmp_path / "ev"
    )
    pred, target = _rectangles(), _rectangles(3)
    # by hand over the whole volume: 3 slices match (128 px each), 3 overlap by 5 of 8 rows
    inter, total = 3 * 128 + 3 * 80, 2 * 6 * 128
    dice_3d = 2 * inter / total
    assert dice_3d == pytest.approx(2 * (pred & target).sum() / (pred.sum() + target.sum()))
    assert summary["level"] == "volume" and summary["num_cases"] == 2
    assert summary["mean_dice"] == pytest.approx(dice_3d)
    assert summary["mean_iou"] == pytest.approx(inter / (total - inter))
    hd_3d = hd95(pred, target, 2, spacing=SPACING)[0]
    assert hd_3d != pytest.approx(hd95(pred, target, 2, spacing=(0.8, 0.8, 1.0))[0])
    assert summary["mean_hd95"] == pytest.approx(hd_3d) and summary["hd95_unit"] == "mm"
    rows = (tmp_path / "ev" / "per_case.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["box_000", "box_001"]


def test_evaluate_volume_dice_is_not_the_mean_over_slices(fake_model, tmp_path):
    root = tmp_path / "data"
    target = _rectangles()
    target[..., 0] = 0  # slice 0: predicted box, nothing labelled (Dice 0 for that slice)
    for k in range(2):
        _save(root / "images" / f"v{k}.nii.gz", _image(k))
        _save(root / "masks" / f"v{k}.nii.gz", target.astype(np.uint8))
    summary = inference.evaluate(
        fake_model, str(root), split="all", device="cpu", out_dir=tmp_path / "ev"
    )
    pred = _rectangles()
    per_slice = np.mean([dice_iou(pred[..., z], target[..., z], 2)[0][1] for z in range(6)])
    by_hand = 2 * 5 * 128 / (6 * 128 + 5 * 128)  # 5 slices match, slice 0 predicted only
    assert per_slice == pytest.approx(5 / 6)
    assert summary["mean_dice"] == pytest.approx(by_hand) != pytest.approx(per_slice)
    assert summary["level"] == "volume"


def test_2d_images_keep_per_image_masks_and_metrics(fake_model, tmp_path):
    root = tmp_path / "png"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    box = _rectangles()[..., 1]
    for k in range(2):
        Image.fromarray((box * 200 + 10).astype(np.uint8)).save(root / "images" / f"im{k}.png")
        Image.fromarray(box.astype(np.uint8)).save(root / "masks" / f"im{k}.png")
    written = inference.predict(fake_model, root / "images", tmp_path / "pred", device="cpu")
    assert [p.name for p in written] == ["im0.png", "im1.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])), box)
    summary = inference.evaluate(
        fake_model, str(root), split="all", device="cpu", out_dir=tmp_path / "ev"
    )
    assert summary["level"] == "image" and summary["num_cases"] == 2
    assert summary["mean_dice"] == pytest.approx(1.0)

"""predict on nnU-Net channel files: one mask per case, named after the case id, and the
model's input channels checked against the case's (issue 9)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from msnas_graph.backends.torch import inference
from msnas_graph.errors import DataError

SHAPE = (32, 32, 3)


class Threshold(nn.Module):
    """Class 1 where the first channel is above 0 (its slice mean after z-scoring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1], x[:, :1]], dim=1)


def _box() -> np.ndarray:
    vol = np.zeros(SHAPE, dtype=np.int64)
    vol[4:12, 6:20] = 1
    return vol


def _fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, in_channels: int) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    info = {"num_classes": 2, "in_channels": in_channels, "input_size": 32, "run_dir": str(run),
            "weights": str(run / "best.pt"), "label_names": ["background", "box"]}  # fmt: skip
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: (Threshold().eval(), info))
    return run


def _save(path: Path, data: np.ndarray) -> None:
    affine = np.diag([0.7, 0.9, 2.5, 1.0])
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def test_predict_writes_one_volume_per_multichannel_case(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = _fake_model(monkeypatch, tmp_path, in_channels=2)
    images = tmp_path / "Dataset002_Box" / "imagesTs"
    noise = np.random.default_rng(0).normal(size=SHAPE)
    for case in ("box_000", "box_001"):
        _save(images / f"{case}_0000.nii.gz", _box() * 100.0 + 5.0)
        _save(images / f"{case}_0001.nii.gz", noise)
    out = tmp_path / "pred"
    written = inference.predict(run, images, out, device="cpu")
    assert [p.name for p in written] == ["box_000.nii.gz", "box_001.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["box_000.nii.gz", "box_001.nii.gz"]
    mask = nib.load(str(written[1]))
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), _box())  # channel 0 drove it
    assert mask.header.get_zooms() == pytest.approx((0.7, 0.9, 2.5))
    assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (1, 2)


def test_predict_writes_one_png_per_multichannel_case(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = _fake_model(monkeypatch, tmp_path, in_channels=2)
    images = tmp_path / "scans"
    images.mkdir()
    box = _box()[:, :, 0]
    Image.fromarray((box * 200 + 10).astype(np.uint8)).save(images / "us_7_0000.png")
    Image.fromarray(np.full(box.shape, 50, np.uint8)).save(images / "us_7_0001.png")
    written = inference.predict(run, images, tmp_path / "pred", device="cpu")
    assert [p.name for p in written] == ["us_7.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])), box)


def test_predict_refuses_a_case_with_other_channels_than_the_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = _fake_model(monkeypatch, tmp_path, in_channels=1)
    images = tmp_path / "Dataset003_Box" / "imagesTs"
    for c in range(2):
        _save(images / f"box_000_{c:04d}.nii.gz", _box() * 1.0)
    with pytest.raises(DataError) as info:
        inference.predict(run, images, tmp_path / "pred", device="cpu")
    message = str(info.value)
    assert "\n" not in message and "case 'box_000' has 2 image channel(s)" in message
    assert "in_channels=1" in message and not (tmp_path / "pred").exists()

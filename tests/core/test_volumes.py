"""msnas_graph.data.volumes: grouping slices into volumes and writing label volumes with the
input's header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msnas_graph.data import load_dataset
from msnas_graph.data.volumes import (
    output_stem,
    stack_slices,
    volume_spacing,
    volume_units,
    write_label_volume,
)
from msnas_graph.errors import DataError

nib = pytest.importorskip("nibabel")


def _save(path: Path, data: np.ndarray, zooms: tuple[float, float, float]) -> Path:
    aff = np.diag([-zooms[0], zooms[1], zooms[2], 1.0])
    aff[:3, 3] = (3.0, -2.0, 1.0)
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=4)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def test_write_label_volume_keeps_the_input_header(tmp_path: Path) -> None:
    ref = _save(tmp_path / "in" / "ct.nii", np.random.rand(8, 6, 4).astype(np.float32) * 900,
                (0.7, 0.9, 3.0))  # fmt: skip
    labels = np.arange(8 * 6 * 4).reshape(8, 6, 4) % 3
    out = write_label_volume(tmp_path / "out" / "ct.v1", labels, ref)
    assert out.name == "ct.v1.nii.gz"
    img, src = nib.load(str(out)), nib.load(str(ref))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels)
    assert img.get_data_dtype() == np.uint8 and img.header.get_slope_inter() == (None, None)
    np.testing.assert_allclose(img.affine, src.affine)
    assert img.header.get_zooms() == pytest.approx((0.7, 0.9, 3.0))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 4)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert volume_spacing(out) == pytest.approx((0.7, 0.9, 3.0))
    big = write_label_volume(tmp_path / "out" / "big.nii", labels * 200, ref)
    assert nib.load(str(big)).get_data_dtype() == np.uint16
    with pytest.raises(DataError, match="does not match the input"):
        write_label_volume(tmp_path / "out" / "bad", labels[:, :, :3], ref)


def test_volume_units_group_slices_in_order(tmp_path: Path) -> None:
    for k in range(2):
        _save(tmp_path / "imagesTs" / f"c{k}_0000.nii.gz", np.random.rand(8, 8, 3 + k),
              (1.0, 1.0, 2.0))  # fmt: skip
    ds = load_dataset(tmp_path / "imagesTs")
    assert len(ds) == 7
    units = volume_units(ds, [6, 0, 5, 2, 1, 3])  # c1 slices 3, 0 of c0, ...
    assert [(u.name, u.complete) for u in units] == [("c1", False), ("c0", True)]
    assert units[1].indices == (0, 1, 2) and units[0].indices == (3, 5, 6)
    assert units[0].volume is not None and units[0].volume.name == "c1_0000.nii.gz"
    assert [u.name for u in volume_units(load_dataset("phantom:2"), [0])] == ["phantom_000"]


def test_output_stem_and_stack() -> None:
    assert output_stem("a_0001", "imagesTs") == "a"
    assert output_stem("a_0000", "images") == "a_0000"
    assert stack_slices([np.full((2, 3), z) for z in range(4)])[1, 2].tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="differ in shape"):
        stack_slices([np.zeros((2, 3)), np.zeros((3, 2))])


def test_write_volume_mask_keeps_the_input_header(tmp_path: Path) -> None:
    from msnas_graph.data import write_volume_mask

    ref = _save(tmp_path / "scans" / "ct.nii.gz", np.random.rand(8, 6, 3).astype(np.float32),
                (0.7, 0.9, 3.0))  # fmt: skip
    src = nib.load(str(ref))
    qform = src.get_qform()
    qform[:3, 3] += (5.0, 0.0, -1.0)  # a qform that differs from the sform must be kept too
    src.set_qform(qform, code=1)
    nib.save(src, str(ref))
    case = load_dataset(tmp_path / "scans")[1]
    labels = (np.arange(8 * 6 * 3).reshape(8, 6, 3) % 3).astype(np.int64)
    out = write_volume_mask(tmp_path / "out" / "ct.png", [labels[:, :, z] for z in range(3)], case)
    assert out.name == "ct.nii.gz"
    img, src = nib.load(str(out)), nib.load(str(ref))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels)
    assert img.header.get_zooms() == pytest.approx((0.7, 0.9, 3.0))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 4)
    np.testing.assert_allclose(img.get_qform(), src.get_qform(), atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), src.get_sform())
    assert img.header.get_xyzt_units()[0] == "mm"
    ref.unlink()
    with pytest.raises(DataError, match="ct.nii.gz: the volume case ct/z001 was read from is mis"):
        write_volume_mask(tmp_path / "out" / "x", [labels[:, :, z] for z in range(3)], case)

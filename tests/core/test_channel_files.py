"""nnU-Net channel files in a flat folder (``imagesTs/``, a folder given to ``predict``):
``case_0000``, ``case_0001``... are the channels of one case (issue 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msnas_graph.data import load_dataset
from msnas_graph.data.volumes import volume_units
from msnas_graph.errors import DataError

nib = pytest.importorskip("nibabel")


def _png(path: Path, value: int, shape: tuple[int, int] = (6, 7)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def _nifti(path: Path, value: float, shape: tuple[int, ...] = (5, 4, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)), str(path))
    return path


def test_nifti_channel_files_in_images_ts_are_one_case(tmp_path: Path) -> None:
    folder = tmp_path / "imagesTs"
    for case in ("liver_2", "liver_1"):
        for c in (1, 0):  # written out of order: channels follow the index, not the listing
            _nifti(folder / f"{case}_{c:04d}.nii.gz", 10.0 * c + 1)
    ds = load_dataset(folder)
    assert ds.in_channels == 2 and len(ds) == 6
    assert ds.groups() == ["liver_1"] * 3 + ["liver_2"] * 3
    case = ds[4]
    assert case.image.shape == (2, 5, 4)
    assert case.image[0].max() == 1.0 and case.image[1].max() == 11.0
    units = volume_units(ds, range(len(ds)))
    assert [(u.name, u.complete, u.volume.name) for u in units if u.volume] == [
        ("liver_1", True, "liver_1_0000.nii.gz"),
        ("liver_2", True, "liver_2_0000.nii.gz"),
    ]


def test_png_channel_files_in_a_plain_folder_are_one_case(tmp_path: Path) -> None:
    for folder in (tmp_path / "flat", tmp_path / "data" / "images"):
        for case in ("a", "b"):
            _png(folder / f"{case}_0000.png", 3)
            _png(folder / f"{case}_0001.png", 200)
    for source in (tmp_path / "flat", tmp_path / "data"):  # images/ without masks too
        ds = load_dataset(source)
        assert ds.case_ids() == ["a", "b"] and ds.in_channels == 2
        assert ds[1].image[:, 0, 0].tolist() == [3.0, 200.0]
        assert [u.name for u in volume_units(ds, [0, 1])] == ["a", "b"]


def test_a_case_id_ending_in_four_digits_keeps_them(tmp_path: Path) -> None:
    _nifti(tmp_path / "imagesTs" / "c_0001_0000.nii.gz", 1.0)
    ds = load_dataset(tmp_path / "imagesTs")
    assert [u.name for u in volume_units(ds, range(len(ds)))] == ["c_0001"]


def test_files_that_are_not_channel_files_stay_separate(tmp_path: Path) -> None:
    # frames numbered from 1, or names without the suffix: no case has a channel _0000
    for name in ("img_0001", "img_0002"):
        _png(tmp_path / "frames" / f"{name}.png", 5)
    assert load_dataset(tmp_path / "frames").case_ids() == ["img_0001", "img_0002"]
    for name in ("scan_0000", "notes"):
        _png(tmp_path / "mixed" / f"{name}.png", 5)
    assert load_dataset(tmp_path / "mixed").case_ids() == ["notes", "scan_0000"]
    # in imagesTs the rule always holds: channel 0000 is missing
    for name in ("img_0001", "img_0002"):
        _png(tmp_path / "imagesTs" / f"{name}.png", 5)
    with pytest.raises(DataError, match="case 'img' has channel files .* but no channel 0000"):
        load_dataset(tmp_path / "imagesTs")


def _one_line(source: Path, match: str, **kw: object) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_dataset(source, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_channel_files_are_refused_in_one_line(tmp_path: Path) -> None:
    for c in (0, 2):
        _png(tmp_path / "gap" / f"a_{c:04d}.png", 1)
    msg = _one_line(tmp_path / "gap", "no channel 0001")
    assert "a_0000.png, a_0002.png" in msg and "without gaps" in msg
    _png(tmp_path / "shape" / "a_0000.png", 1, (6, 7))
    _png(tmp_path / "shape" / "a_0001.png", 1, (6, 8))
    _one_line(tmp_path / "shape", r"a_0001.png: channel file size \(6, 8, None\) differs")
    _png(tmp_path / "twice" / "a_0000.png", 1)
    _png(tmp_path / "twice" / "a_0000.bmp", 1)
    _one_line(tmp_path / "twice", r"two files for channel 0000 of case 'a' \(a_0000.bmp, a_0000")
    _png(tmp_path / "formats" / "a_0000.png", 1, (5, 4))
    _nifti(tmp_path / "formats" / "a_0001.nii.gz", 1.0)
    _one_line(tmp_path / "formats", "all NIfTI or all 2D files")


def test_cases_with_different_channel_counts_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "imagesTs"
    for c in range(2):
        _nifti(folder / f"a_{c:04d}.nii.gz", 1.0)
    _nifti(folder / "b_0000.nii.gz", 1.0)
    msg = _one_line(folder, "cases have different channel counts")
    assert "'a' has 2: a_0000.nii.gz, a_0001.nii.gz; 'b' has 1: b_0000.nii.gz" in msg


def test_the_channel_count_asked_for_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    for c in range(3):
        _png(folder / f"a_{c:04d}.png", 10 * c)
    # three modalities are not an RGB image: no conversion to one channel
    msg = _one_line(folder, "case 'a' has 3 image channel", in_channels=1)
    assert "a_0000.png, a_0001.png, a_0002.png" in msg and "in_channels=1" in msg
    _one_line(folder, "case 'a' has 3 image channel", in_channels=2)
    assert load_dataset(folder, in_channels=3)[0].image[:, 0, 0].tolist() == [0.0, 10.0, 20.0]
    # a single grey image is still converted for a 3-channel model
    _png(tmp_path / "grey" / "x.png", 7)
    assert load_dataset(tmp_path / "grey", in_channels=3)[0].image.shape == (3, 6, 7)


# --- issue 18 item 4: channels are converted only where they are the colours of an RGB image


def _three_channel_sources(tmp_path: Path) -> dict[str, Path]:
    import tifffile

    rgb_png, rgb_tif = tmp_path / "rgb_png" / "c.png", tmp_path / "rgb_tif" / "c.tif"
    rgb_png.parent.mkdir()
    rgb_tif.parent.mkdir()
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 100
    Image.fromarray(image).save(rgb_png)
    tifffile.imwrite(rgb_tif, image)  # stored as RGB
    pages = tmp_path / "pages" / "p.tif"
    pages.parent.mkdir()
    tifffile.imwrite(pages, np.moveaxis(image, -1, 0), photometric="minisblack")  # 3 pages
    volume = _nifti(tmp_path / "vol" / "v.nii.gz", 1.0, (8, 8, 2, 3))  # 4D: 3 channels
    return {"png": rgb_png, "tif": rgb_tif, "pages": pages, "nifti": volume}


def test_rgb_images_become_grey_with_a_warning(tmp_path: Path, caplog) -> None:
    sources = _three_channel_sources(tmp_path)
    for kind in ("png", "tif"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="msnas_graph.data.files"):
            ds = load_dataset(sources[kind].parent, in_channels=1)
        assert ds[0].image.shape == (1, 8, 8)
        assert np.allclose(ds[0].image, 0.299 * 100, atol=1e-3)
        assert len(caplog.records) == 1 and "converted to grey" in caplog.text
        assert sources[kind].name in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="msnas_graph.data.files"):
        assert load_dataset(sources["png"].parent, in_channels=3)[0].image.shape == (3, 8, 8)
    assert not caplog.records  # nothing converted, nothing said


@pytest.mark.parametrize("kind", ["pages", "nifti"])
def test_channels_that_are_not_colours_are_refused(tmp_path: Path, kind: str) -> None:
    """A 3-page TIFF or a 4D NIfTI with 3 channels is not blended into grey for a 1-channel
    model (it used to be, with RGB weights, silently)."""
    source = _three_channel_sources(tmp_path)[kind]
    with pytest.raises(DataError, match="has 3 image channel.*not the colours of an RGB image"):
        load_dataset(source.parent, in_channels=1)
    assert load_dataset(source.parent, in_channels=3).in_channels == 3
    grey = _png(source.parent / "grey.png", 5, (8, 8))
    with pytest.raises(DataError, match="different channel counts"):
        load_dataset(source.parent)  # grey and a 3-channel stack do not mix either
    grey.unlink()

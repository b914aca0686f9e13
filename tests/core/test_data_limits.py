"""File datasets are estimated from their headers and refused before any pixel is read when
their decoded arrays cannot fit the memory available (issue 9).

``MSNAS_MEMORY_LIMIT`` caps the memory counted as available, so the outcomes do not depend on
this machine's free memory; decoding is made to fail (PIL's ``ImageFile.load``, the NIfTI
``VolumeCache.get``) to prove that the refusal comes from headers alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from msnas_graph.data import load_dataset, readers, sizes
from msnas_graph.errors import DataError, ResourceError

# 4 cases of 32x32 with masks: 4 KiB of bookkeeping + one case decoded (12 KiB) + preparing it
# for a network (its normalised copy and a float64 channel with np.percentile's copy: 20 KiB)
# = 36 KiB; kept in memory (cache=True) also 4 x (12 + 2) KiB = 92 KiB in all
LAZY, CACHED = 36 * 1024, 92 * 1024


class Decoded(Exception):
    """Raised when pixel data is decoded."""


@pytest.fixture(autouse=True)
def _limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "8G")
    monkeypatch.delenv("MSNAS_NO_MEMORY_CHECK", raising=False)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise Decoded("pixel data was read")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(readers.VolumeCache, "get", refuse)


def _folder(root: Path, n: int = 4, side: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 255, (side, side), np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        mask = rng.integers(0, 2, (side, side), np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def _nifti(path: Path, shape: tuple[int, ...], dtype: Any, scaled: bool = False) -> Path:
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(np.ones(shape, dtype), np.eye(4))
    if scaled:
        img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, str(path))
    return path


def test_estimate_from_headers(tmp_path: Path, no_decoding: None) -> None:
    d = _folder(tmp_path / "d")
    pairs = [(d / "images" / f"{i}.png", d / "masks" / f"{i}.png") for i in range(4)]
    assert sizes.dataset_bytes(pairs) == LAZY
    assert sizes.dataset_bytes(pairs, cache=True) == CACHED
    assert sizes.dataset_bytes(pairs, in_channels=3) == LAZY + 32 * 32 * 4 * 4  # grey -> RGB


def test_refused_before_any_pixel_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_decoding: None
) -> None:
    d = _folder(tmp_path / "d")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(LAZY - 1))
    # without num_classes every mask would be read to infer it: refused before that
    with pytest.raises(ResourceError) as info:
        load_dataset(d)
    message = str(info.value)
    assert message.startswith(f"data {d} (4 cases, 4 images of up to 32x32) needs about 36.0 KiB")
    assert "--no-memory-check" in message and "\n" not in message


def test_only_what_is_kept_is_summed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_decoding: None
) -> None:
    """Lazy datasets hold one case at a time; ``cache=True`` holds them all."""
    d = _folder(tmp_path / "d")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(LAZY + 1024))
    ds = load_dataset(d, num_classes=2)  # headers only: fits
    assert len(ds) == 4
    with pytest.raises(DataError, match="pixel data was read"):  # the patch stops decoding
        ds[0]
    with pytest.raises(ResourceError, match=r"all kept in memory \(cache=True\)\) needs about 92"):
        load_dataset(d, num_classes=2, cache=True)


def test_override_and_a_roomy_limit_let_it_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _folder(tmp_path / "d")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "1K")
    with pytest.raises(ResourceError):
        load_dataset(d / "images" / "0.png")  # a single file is checked too
    monkeypatch.setenv("MSNAS_NO_MEMORY_CHECK", "1")
    assert load_dataset(d, cache=True)[3].image.shape == (1, 32, 32)
    monkeypatch.delenv("MSNAS_NO_MEMORY_CHECK")
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(CACHED))
    assert len(load_dataset(d, cache=True)) == 4


def test_nifti_volumes_count_as_stored(tmp_path: Path, no_decoding: None) -> None:
    plain = _nifti(tmp_path / "a.nii.gz", (16, 24, 10), np.int16)
    scaled = _nifti(tmp_path / "b.nii.gz", (16, 24, 10), np.int16, scaled=True)
    four_d = _nifti(tmp_path / "c.nii", (16, 24, 10, 2), np.float32)
    assert sizes.file_size(plain) == sizes.FileSize((16, 24), 1, 10, 16 * 24 * 10 * 2)
    assert sizes.file_size(scaled).stored_bytes == 16 * 24 * 10 * 8  # read as float64
    assert sizes.file_size(four_d) == sizes.FileSize((16, 24), 2, 10, 16 * 24 * 10 * 2 * 4)


def test_msd_volumes_refused_before_any_voxel_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_decoding: None
) -> None:
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(6):
        _nifti(root / "imagesTr" / f"case{i}_0000.nii.gz", (32, 32, 20), np.int16)
        _nifti(root / "labelsTr" / f"case{i}.nii.gz", (32, 32, 20), np.uint8)
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "organ": 1}, "channel_names": {"0": "CT"}})
    )
    pairs = [((root / "imagesTr" / f"case{i}_0000.nii.gz",), root / "labelsTr" / f"case{i}.nii.gz")
             for i in range(6)]  # fmt: skip
    voxels = 32 * 32 * 20
    # 120 slices' bookkeeping; the volume cache's 4 largest volumes as stored (images: int16);
    # one volume decoded (float32 image + int64 mask); one slice prepared for a network
    expected = 120 * 1024 + 4 * voxels * 2 + voxels * 12 + 32 * 32 * (4 + 16)
    assert sizes.dataset_bytes(pairs) == expected
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(expected - 1))
    with pytest.raises(ResourceError, match=r"\(6 cases, 120 images of up to 32x32\) needs"):
        load_dataset(root)
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(expected))
    assert len(load_dataset(root)) == 120


def test_core_still_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys, msnas_graph.data.sizes, msnas_graph.data.sources\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- issue 18 item 2: what a large image really costs, refused from its header


def test_a_huge_image_is_estimated_as_prepared_and_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_decoding: None
) -> None:
    """A 340 KB TIFF of 18000x18000 pixels: decoded (4 bytes a pixel) it is 1.2 GiB, but
    preparing it for a network (a normalised copy, a float64 channel and np.percentile's copy
    of it) peaks at 24 bytes a pixel, 7.2 GiB (a limit of 3G used to let it through)."""
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "big").mkdir()
    path = tmp_path / "big" / "huge.tif"
    tifffile.imwrite(
        path, np.zeros((18000, 18000), np.uint8), compression="zlib", tile=(1024, 1024)
    )
    assert path.stat().st_size < 1_000_000
    pixels = 18000 * 18000
    assert sizes.dataset_bytes([(path, None)]) == 1024 + pixels * (4 + 4 + 16)
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", "3G")
    for source in (path, path.parent):
        with pytest.raises(ResourceError, match=r"up to 18000x18000\) needs about 7\.2 GiB"):
            load_dataset(source)


def test_a_process_limit_counts_as_the_memory_available(tmp_path: Path) -> None:
    """``ulimit -v`` caps what a process may allocate: the estimate is compared with what it
    leaves (an allocation beyond it would end in a MemoryError)."""
    import subprocess

    code = (
        "import resource\n"
        "from msnas_graph.limits import available_memory\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, resource.RLIM_INFINITY))\n"
        "print(available_memory())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "MSNAS_MEMORY_LIMIT"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    assert 0 < int(out.stdout) < 4 * 2**30


# --- issue 17 item 2: one memory estimator with one set of rules


def test_every_data_estimate_follows_the_one_rule_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``msnas_graph.limits`` states the bytes of an element; the file dataset's estimate and
    the phantom's check both follow it (a private copy of the rule would not move)."""
    from msnas_graph import limits
    from msnas_graph.data.phantom import phantom_dataset

    d = _folder(tmp_path / "d")
    pairs = [(d / "images" / f"{i}.png", d / "masks" / f"{i}.png") for i in range(4)]
    monkeypatch.setattr(limits, "FLOAT32", 8)  # as if images were float64
    assert sizes.dataset_bytes(pairs) == LAZY + 32 * 32 * (4 + 4)  # decoded and normalised
    monkeypatch.setenv("MSNAS_MEMORY_LIMIT", str(2 * (32 * 32 * (8 + 8) + 2048) - 1))
    with pytest.raises(ResourceError, match=r"phantom:2 \(2 cases of 32x32\) needs about"):
        phantom_dataset(2, size=32)
    monkeypatch.setattr(limits, "FLOAT32", 4)
    assert len(phantom_dataset(2, size=32)) == 2


def test_the_device_memory_counts_where_it_is_the_smaller() -> None:
    """An accelerator's free memory bounds the work as the host's does; the message names the
    device only where the device's memory is the one that binds."""
    from msnas_graph.limits import check_fits

    with pytest.raises(ResourceError, match=r"^a step on cuda:1 needs about 2\.0 KiB .* 1\.0 KiB"):
        check_fits(2048, "a step", 4096, device=("cuda:1", 1024))
    with pytest.raises(ResourceError, match=r"^a step needs about 2\.0 KiB .* but 1\.0 KiB"):
        check_fits(2048, "a step", 1024, device=("cuda:1", 4096))
    assert check_fits(2048, "a step", None, device=("cuda:1", 4096)) == 2048

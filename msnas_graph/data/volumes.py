"""Whole NIfTI volumes from their slices: which dataset cases make up which volume, stacking
the slices back, writing label volumes with the input's header, and the voxel spacing.

The datasets read NIfTI volumes slice-wise (slice ``z`` is ``data[:, :, z]``, see
:mod:`.readers`). Prediction and evaluation work per slice, then regroup the slices here:
:func:`volume_units` says which dataset indices belong to which input file (in slice order),
:func:`stack_slices` rebuilds the ``(X, Y, Z)`` volume, :func:`write_label_volume` writes it with
the input's affine, zooms and qform/sform codes (as nnU-Net and MONAI do), and
:func:`volume_spacing` gives the voxel size in mm for 3D metrics.

>>> import numpy as np
>>> stack_slices([np.zeros((4, 3)), np.ones((4, 3))]).shape
(4, 3, 2)
>>> output_stem("case_0000", "imagesTs"), output_stem("case_0000", "scans")
('case', 'case_0000')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msnas_graph.data.formats import load_nibabel, split_name, write_nifti
from msnas_graph.errors import DataError

__all__ = [
    "VolumeUnit",
    "output_stem",
    "stack_slices",
    "volume_spacing",
    "volume_units",
    "write_label_volume",
]

_NNUNET_FOLDERS = ("imagesTr", "imagesTs")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


@dataclass(frozen=True)
class VolumeUnit:
    """One output of :func:`volume_units`: a whole NIfTI volume or one 2D case.

    ``indices`` are dataset indices (in slice order for a volume); ``volume`` is the volume's
    (first) image file, ``None`` for a 2D case; ``num_slices`` is the volume's slice count
    (1 for a 2D case); ``name`` is the output file stem (see :func:`output_stem`).
    """

    name: str
    indices: tuple[int, ...]
    volume: Path | None
    num_slices: int

    @property
    def complete(self) -> bool:
        """Whether every slice of the volume is among ``indices``."""
        return len(self.indices) == self.num_slices


def output_stem(group: str, folder: str) -> str:
    """The output stem of a volume whose dataset group is ``group`` and whose image file lies
    in ``folder``: nnU-Net's convention drops the channel suffix ``_0000`` of files in
    ``imagesTr``/``imagesTs`` (``case_0000.nii.gz`` -> ``case.nii.gz``).

    >>> output_stem("liver_7_0000", "imagesTr"), output_stem("liver_7", "imagesTr")
    ('liver_7', 'liver_7')
    """
    if folder in _NNUNET_FOLDERS and _CHANNEL_SUFFIX.search(group):
        return group[:-5]
    return group


def volume_units(ds: Any, indices: Sequence[int]) -> list[VolumeUnit]:
    """Group dataset ``indices`` by the NIfTI volume they are slices of, in order of first
    appearance; a 2D case (or a case held in memory) is a unit of its own.

    Reads file names only, no pixels. ``ds`` is a
    :class:`~msnas_graph.data.dataset.SegmentationDataset`.

    >>> from msnas_graph.data import load_dataset
    >>> [(u.name, u.indices, u.volume) for u in volume_units(load_dataset("phantom:2"), [1, 0])]
    [('phantom_001', (1,), None), ('phantom_000', (0,), None)]
    """
    items = getattr(ds, "_items", None) or [None] * len(ds)
    ids = ds.case_ids()
    volumes: dict[Path, tuple[str, int, list[tuple[int, int]]]] = {}
    order: list[Path | int] = []
    for i in indices:
        item = items[i]
        if item is None or item.slice_index is None:
            order.append(int(i))
            continue
        file = Path(item.image_files[0])
        if file not in volumes:  # a group without the file's _XXXX is a case of channel files
            stripped = item.group != split_name(file)[0]
            name = item.group if stripped else output_stem(item.group, file.parent.name)
            volumes[file] = (name, int(item.num_slices or 1), [])
            order.append(file)
        volumes[file][2].append((int(item.slice_index), int(i)))
    units: list[VolumeUnit] = []
    for key in order:
        if isinstance(key, int):
            units.append(VolumeUnit(ids[key], (key,), None, 1))
            continue
        name, num, slices = volumes[key]
        units.append(VolumeUnit(name, tuple(i for _, i in sorted(slices)), key, num))
    return units


def stack_slices(slices: Sequence[np.ndarray]) -> np.ndarray:
    """Stack ``(X, Y)`` slice masks ``0..Z-1`` along a last axis: ``(X, Y, Z)``."""
    if not slices:
        raise DataError("no slices to stack: give one mask per slice")
    shapes = {np.shape(s) for s in slices}
    if len(shapes) != 1:
        raise DataError(f"slice masks differ in shape {sorted(shapes)}: give one size")
    return np.stack([np.asarray(s) for s in slices], axis=-1)


def _load(path: Path) -> Any:
    nib = load_nibabel()
    try:
        return nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI ({exc}): replace or remove it") from exc


def volume_spacing(path: str | Path) -> tuple[float, float, float]:
    """Voxel size ``(x, y, z)`` of a NIfTI file from its header zooms (mm by NIfTI convention;
    a 2D file gets ``z = 1``)."""
    zooms = [float(z) for z in _load(Path(path)).header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    return zooms[0], zooms[1], zooms[2]


def write_label_volume(path: str | Path, volume: np.ndarray, reference: str | Path) -> Path:
    """Write an integer label ``volume`` as NIfTI with the header of ``reference`` (the input
    volume): same affine, zooms, qform/sform codes and units; ``uint8`` labels (``uint16``
    above 255), no intensity scaling.

    ``volume`` must have the reference's spatial shape (``(X, Y, Z)``, or ``(X, Y, 1)`` for a
    2D reference). The file is ``.nii.gz`` unless ``path`` ends in ``.nii``; it is written
    atomically. Returns the path written.
    """
    ref_path = Path(reference)
    ref = _load(ref_path)
    nib = load_nibabel()
    shape = tuple(int(s) for s in ref.shape[:3])
    vol = np.asarray(volume)
    if vol.shape != shape and not (len(shape) == 2 and vol.shape == (*shape, 1)):
        raise DataError(
            f"{ref_path}: label volume of shape {vol.shape} does not match the input's "
            f"{shape}: give one mask per slice at the slice's original size"
        )
    if vol.size and (vol.min() < 0 or vol.max() > 65535):
        raise DataError(f"{ref_path}: mask labels must lie in 0..65535 to be written")
    dtype = np.uint8 if vol.max(initial=0) < 256 else np.uint16
    vol = vol.reshape(shape).astype(dtype)
    cls = nib.Nifti2Image if isinstance(ref, nib.Nifti2Image) else nib.Nifti1Image
    if isinstance(ref, nib.Nifti1Image | nib.Nifti2Image):
        header = ref.header.copy()
        img = cls(vol, None, header)
        img.set_qform(ref.get_qform(), int(ref.header["qform_code"]))
        img.set_sform(ref.get_sform(), int(ref.header["sform_code"]))
    else:
        img = cls(vol, np.asarray(ref.affine, dtype=float))
        img.header.set_zooms(tuple(float(z) for z in ref.header.get_zooms()[: vol.ndim]))
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, 0
    img.header["intent_code"] = 0
    out = Path(path)
    lower = out.name.lower()
    if not lower.endswith((".nii", ".nii.gz")):
        out = out.with_name(out.name + ".nii.gz")
    return write_nifti(out, img)

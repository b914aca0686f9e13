"""The memory a file dataset will hold, estimated from file headers before any pixel is read.

:func:`check_dataset_memory` runs before a file dataset is built
(:func:`~msnas_graph.data.sources.load_dataset`) and refuses, in one
:class:`~msnas_graph.errors.ResourceError` line naming ``--no-memory-check``, a dataset whose
decoded arrays cannot fit the memory available (:func:`msnas_graph.limits.check_fits`). Only
headers are read: PIL's ``Image.open`` (size and mode), ``tifffile``'s series shape, nibabel's
lazy ``load`` (shape, stored data type, scaling).

What a dataset holds, by the rules of :mod:`msnas_graph.limits`:

* every image or slice: its bookkeeping (:data:`~msnas_graph.limits.ITEM_OBJECTS`);
* NIfTI volumes read slice-wise: the :class:`~msnas_graph.data.readers.VolumeCache`'s most
  recent volumes whole, as stored (8 bytes a voxel where the header scales them);
* one unit being read: the largest volume (all its slices, as evaluation and prediction hold
  them) or 2D image, decoded (:func:`~msnas_graph.limits.case_bytes`);
* the work of preparing one image or slice for a network
  (:data:`~msnas_graph.limits.NORMALISE`); this, not the decoded image, is the peak for
  one large 2D image;
* with ``cache=True``, every case decoded, summed over the dataset, with its objects.

>>> import os, tempfile
>>> import numpy as np
>>> from PIL import Image
>>> folder = tempfile.mkdtemp()
>>> Image.fromarray(np.zeros((32, 48), np.uint8)).save(os.path.join(folder, "a.png"))
>>> size = file_size(os.path.join(folder, "a.png"))
>>> size.shape, size.channels, size.slices, size.stored_bytes
((32, 48), 1, 1, 0)
>>> pairs = [(Path(folder) / "a.png", None)]
>>> dataset_bytes(pairs), dataset_bytes(pairs, cache=True)  # 1 KiB + 32*48*(4 + 4+16) (+...)
(37888, 46080)
>>> os.environ["MSNAS_MEMORY_LIMIT"] = "4K"
>>> check_dataset_memory("scans", pairs)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
msnas_graph.errors.ResourceError: data scans (1 case, 1 image of up to 32x48) needs about ...
>>> del os.environ["MSNAS_MEMORY_LIMIT"]
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msnas_graph import limits
from msnas_graph.data.readers import VolumeCache, file_format, read_header

__all__ = ["FileSize", "check_dataset_memory", "dataset_bytes", "file_size"]

Pair = tuple[Path | tuple[Path, ...], Path | None]


@dataclass(frozen=True)
class FileSize:
    """A file's decoded extent, from its header: ``shape`` (H, W) of one image or slice,
    ``channels``, ``slices`` (1 for 2D files) and ``stored_bytes``, the bytes of the whole
    volume as a NIfTI reader holds it (0 for 2D files, which are decoded one at a time)."""

    shape: tuple[int, int]
    channels: int
    slices: int
    stored_bytes: int

    @property
    def pixels(self) -> int:
        """Pixels of one channel over all slices."""
        return self.shape[0] * self.shape[1] * self.slices


def file_size(path: str | Path) -> FileSize:
    """The :class:`FileSize` of an image or volume, from its header only."""
    path = Path(path)
    head = read_header(path)  # one-line DataError for unreadable files
    slices = int(head.num_slices or 1)
    stored = 0
    if file_format(path) == "nifti":
        stored = head.shape[0] * head.shape[1] * slices * head.channels * _stored_itemsize(path)
    return FileSize((int(head.shape[0]), int(head.shape[1])), int(head.channels), slices, stored)


def _stored_itemsize(path: Path) -> int:
    """Bytes a voxel of a NIfTI file takes once read: its stored type, or float64 if scaled."""
    import nibabel

    img: Any = nibabel.load(str(path))  # lazy: the header only
    itemsize = int(img.get_data_dtype().itemsize)
    proxy = img.dataobj
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    return 8 if (slope != 1.0 or inter != 0.0) else itemsize


def _files(image_spec: Path | tuple[Path, ...]) -> tuple[Path, ...]:
    return (image_spec,) if isinstance(image_spec, Path | str) else tuple(image_spec)


def _scan(
    pairs: Sequence[Pair], in_channels: int | None
) -> tuple[list[int], list[int], list[int], int, tuple[int, int]]:
    """(decoded bytes of each case, the bytes of preparing one of its images or slices for a
    network, stored bytes of each volume file, images, largest shape)."""
    decoded: list[int] = []
    work: list[int] = []
    stored: list[int] = []
    images = 0
    largest = (0, 0)
    for image_spec, mask in pairs:
        sizes = [file_size(f) for f in _files(image_spec)]
        channels = in_channels or sum(s.channels for s in sizes)
        first = sizes[0]
        decoded.append(limits.case_bytes(first.pixels, channels, mask=mask is not None))
        pixels = first.shape[0] * first.shape[1]  # of one image or slice, prepared
        work.append(limits.case_bytes(pixels, channels, mask=False) + pixels * limits.NORMALISE)
        stored += [s.stored_bytes for s in sizes if s.stored_bytes]
        if mask is not None and file_format(mask) == "nifti":
            stored.append(file_size(mask).stored_bytes)
        images += first.slices
        if first.shape[0] * first.shape[1] > largest[0] * largest[1]:
            largest = first.shape
    return decoded, work, stored, images, largest


def dataset_bytes(
    pairs: Sequence[Pair], *, in_channels: int | None = None, cache: bool = False
) -> int:
    """Estimated bytes a dataset of (image files, mask file) ``pairs`` holds at its peak
    (see the module doc), from the files' headers."""
    return _estimate(pairs, in_channels, cache)[0]


def _estimate(
    pairs: Sequence[Pair], in_channels: int | None, cache: bool
) -> tuple[int, int, tuple[int, int]]:
    decoded, work, stored, images, largest = _scan(pairs, in_channels)
    volumes = heapq.nlargest(VolumeCache().max_volumes, stored)
    unit = max((d + w for d, w in zip(decoded, work, strict=True)), default=0)
    total = images * limits.ITEM_OBJECTS + sum(volumes) + unit
    if cache:
        total += sum(decoded) + images * limits.CASE_OBJECTS
    return total, images, largest


def check_dataset_memory(
    name: str | Path,
    pairs: Sequence[Pair],
    *,
    in_channels: int | None = None,
    cache: bool = False,
) -> int:
    """The estimated bytes of loading ``pairs`` (:func:`dataset_bytes`); a one-line
    :class:`~msnas_graph.errors.ResourceError` naming ``--no-memory-check`` if they do not fit
    the memory available. Skipped (0) when memory checks are off."""
    if not limits.checks_enabled():
        return 0
    total, images, (h, w) = _estimate(pairs, in_channels, cache)
    cases = len(pairs)
    what = (
        f"data {name} ({cases} case{'s' * (cases != 1)}, {images} image{'s' * (images != 1)} "
        f"of up to {h}x{w}{', all kept in memory (cache=True)' if cache else ''})"
    )
    return limits.check_fits(total, what)

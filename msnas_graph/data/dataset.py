"""Lazy segmentation datasets: :class:`SegmentationDataset`, a sequence of :class:`Case`.

Datasets are opened by :func:`msnas_graph.data.sources.load_dataset` (from a folder, a file or
``"phantom"``) or built from cases with :meth:`SegmentationDataset.from_cases`. Image/mask
sizes are checked from the file headers when the dataset is opened; pixels are read on
``__getitem__`` (``cache=True`` keeps the cases read). Binary masks stored as 0/255 are read as
0/1 when the dataset has two classes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from msnas_graph.data.case import Case, group_key
from msnas_graph.data.readers import (
    VolumeCache,
    file_format,
    read_image_2d,
    read_mask_2d,
    split_name,
)
from msnas_graph.errors import DataError

__all__ = ["Case", "SegmentationDataset", "group_key"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# items: how one case is found and read


@dataclass(frozen=True)
class _Item:
    """One case of a file-backed dataset (2D file, or one slice of a volume)."""

    case_id: str
    group: str
    image_files: tuple[Path, ...]  # one per channel file (usually one)
    mask_file: Path | None
    slice_index: int | None
    num_slices: int | None
    pixel_size: float | None
    file_name: str
    spacing: tuple[float, float] | None = None
    formats: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        """Names this case answers to in a folds file."""
        stem, _ = split_name(self.file_name)
        return (self.case_id, self.file_name, stem, self.group)


class SegmentationDataset(Sequence[Case]):
    """A lazy sequence of :class:`Case` objects with the dataset's label set and channel count.

    Build it with :func:`load_dataset` or :func:`~msnas_graph.data.phantom.phantom_dataset`.
    Indexing reads the case from disk (``cache=True`` keeps it); slicing and :meth:`subset`
    give datasets sharing the same files.
    """

    def __init__(
        self,
        *,
        name: str,
        items: Sequence[_Item] | None = None,
        cases: Sequence[Case] | None = None,
        num_classes: int,
        in_channels: int,
        label_names: Sequence[str] | None = None,
        format: str,
        labelled: bool = True,
        cache: bool = False,
        _volumes: VolumeCache | None = None,
        _memory: dict[str, Case] | None = None,
    ) -> None:
        self.name = name
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        names = list(label_names) if label_names else []
        names += [f"class_{k}" for k in range(len(names), self.num_classes)]
        self.label_names: list[str] = names[: self.num_classes]
        self.format = format
        self.labelled = labelled
        self.cache = cache
        self._volumes = _volumes or VolumeCache()
        self._memory: dict[str, Case] = dict(_memory or {})
        if cases is not None:
            ids = [c.case_id for c in cases]
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                raise DataError(
                    f"{name}: two cases share the id '{dup}': give every case a unique case_id"
                )
            self._memory.update({c.case_id: c for c in cases})
            self._ids = [c.case_id for c in cases]
            self._groups = [c.group for c in cases]
            self._keys: list[tuple[str, ...]] = [
                (c.case_id, str(c.meta.get("file_name", c.case_id)), c.group) for c in cases
            ]
            self._items: list[_Item | None] = [None] * len(cases)
        else:
            items = list(items or [])
            self._items = list(items)
            self._ids = [it.case_id for it in items]
            self._groups = [it.group for it in items]
            self._keys = [it.keys() for it in items]

    @classmethod
    def from_cases(
        cls,
        cases: Sequence[Case],
        *,
        name: str,
        num_classes: int,
        in_channels: int,
        label_names: Sequence[str] | None = None,
        format: str = "memory",
    ) -> SegmentationDataset:
        """A dataset over cases already in memory."""
        return cls(
            name=name,
            cases=cases,
            num_classes=num_classes,
            in_channels=in_channels,
            label_names=label_names,
            format=format,
            labelled=all(c.mask is not None for c in cases),
        )

    # -- Sequence ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> Case: ...

    @overload
    def __getitem__(self, index: slice) -> SegmentationDataset: ...

    def __getitem__(self, index: int | slice) -> Case | SegmentationDataset:
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"case index {index} out of range for {n} cases")
        index %= n
        case_id = self._ids[index]
        if case_id in self._memory:
            return self._memory[case_id]
        item = self._items[index]
        assert item is not None  # memory datasets hold every case in _memory
        case = self._read(item)
        if self.cache:
            self._memory[case_id] = case
        return case

    def __iter__(self) -> Iterator[Case]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset(name={self.name!r}, cases={len(self)}, "
            f"groups={len(set(self._groups))}, num_classes={self.num_classes}, "
            f"in_channels={self.in_channels}, format={self.format!r})"
        )

    # -- API -----------------------------------------------------------------------------------

    def case_ids(self) -> list[str]:
        """The case ids, in dataset order."""
        return list(self._ids)

    def groups(self) -> list[str]:
        """The group (patient / examination) of every case, in dataset order."""
        return list(self._groups)

    def fold_keys(self, index: int) -> tuple[str, ...]:
        """The names case ``index`` answers to in a folds file (id, file name, stem, group)."""
        return self._keys[index]

    def subset(self, indices: Sequence[int] | Any) -> SegmentationDataset:
        """A dataset of the cases at ``indices`` (in that order), sharing files and caches."""
        idx = [int(i) for i in indices]
        n = len(self)
        for i in idx:
            if not -n <= i < n:
                raise IndexError(f"case index {i} out of range for {n} cases")
        sub = SegmentationDataset(
            name=self.name,
            items=[],
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            label_names=self.label_names,
            format=self.format,
            labelled=self.labelled,
            cache=self.cache,
            _volumes=self._volumes,
        )
        sub._memory = self._memory  # shared cache
        sub._items = [self._items[i] for i in idx]
        sub._ids = [self._ids[i] for i in idx]
        sub._groups = [self._groups[i] for i in idx]
        sub._keys = [self._keys[i] for i in idx]
        return sub

    def validate(self) -> None:
        """Read every case once, raising :class:`DataError` on the first bad file."""
        for i in range(len(self)):
            self[i]

    # -- reading -------------------------------------------------------------------------------

    def _read(self, item: _Item) -> Case:
        z = item.slice_index
        channels = []
        affine = None
        for f in item.image_files:
            if z is None:
                channels.append(read_image_2d(f))
            else:
                channels.append(self._volumes.image_slice(f, z))
                affine = self._volumes.get(f)[1]
        shapes = {c.shape[1:] for c in channels}
        if len(shapes) > 1:
            raise DataError(
                f"{item.image_files[0].parent}: channel files of case {item.case_id} differ in "
                f"size {sorted(shapes)}: make all channels of a case the same size"
            )
        image = np.concatenate(channels, axis=0) if len(channels) > 1 else channels[0]
        image = _match_channels(image, self.in_channels, item.image_files[0])
        mask = None
        scaled = False
        if item.mask_file is not None:
            if z is None:
                mask = read_mask_2d(item.mask_file)
            else:
                mask = self._volumes.mask_slice(item.mask_file, z)
            if mask.shape != image.shape[1:]:
                raise DataError(
                    f"{item.mask_file}: mask size {mask.shape} differs from image size "
                    f"{image.shape[1:]} ({item.image_files[0].name}): save the mask at the "
                    "image's size"
                )
            mask, scaled = _fix_binary_255(mask, self.num_classes)
            _check_labels(mask, self.num_classes, item.mask_file, z)
        fmt = item.formats[0] if item.formats else (file_format(item.image_files[0]) or "")
        meta: dict[str, Any] = {
            "format": fmt,
            "file_name": item.file_name,
            "original_shape": tuple(int(s) for s in image.shape[1:]),
        }
        source = str(item.image_files[0])
        if z is not None:
            meta.update(slice_index=z, num_slices=item.num_slices, affine=affine)
            source = f"{source}#z={z}"
        if item.spacing is not None:
            meta["spacing"] = item.spacing
        if item.mask_file is not None:
            meta["mask_file"] = str(item.mask_file)
        if scaled:
            meta["mask_scaled_from_255"] = True
        return Case(
            case_id=item.case_id,
            image=image,
            mask=mask,
            group=item.group,
            pixel_size=item.pixel_size,
            source=source,
            meta=meta,
        )


def _match_channels(image: np.ndarray, in_channels: int, path: Path) -> np.ndarray:
    c = image.shape[0]
    if c == in_channels:
        return image
    if c == 1 and in_channels == 3:
        return np.repeat(image, 3, axis=0)
    if c == 3 and in_channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.tensordot(weights, image, axes=1)[None].astype(np.float32)
    raise DataError(
        f"{path}: image has {c} channels but the dataset has {in_channels}: give "
        f"in_channels={c} or make every image {in_channels}-channel"
    )


def _fix_binary_255(mask: np.ndarray, num_classes: int) -> tuple[np.ndarray, bool]:
    binary = num_classes == 2 and mask.size and mask.max() == 255
    if binary and not np.any((mask != 0) & (mask != 255)):
        return (mask == 255).astype(np.int64), True
    return mask, False


def _check_labels(mask: np.ndarray, num_classes: int, path: Path, z: int | None) -> None:
    if mask.size == 0:
        return
    if mask.min() < 0 or mask.max() >= num_classes:
        values = _distinct(mask)
        bad = [int(v) for v in values if v < 0 or v >= num_classes]
        where = f"{path}" + (f" (slice {z})" if z is not None else "")
        shown = ", ".join(str(b) for b in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise DataError(
            f"{where}: mask labels {shown} outside 0..{num_classes - 1} (the dataset has "
            f"{num_classes} classes): fix the mask, or give the data {max(bad) + 1} classes "
            f"(dataset.json 'labels', or load_dataset(..., num_classes={max(bad) + 1}))"
            if min(bad) >= 0
            else f"{where}: negative mask labels {shown}: labels must be 0..{num_classes - 1}"
        )


def _distinct(mask: np.ndarray) -> np.ndarray:
    """Distinct values of an integer array (bincount when small and non-negative: fast)."""
    if mask.size and mask.min() >= 0 and mask.max() < 1 << 16:
        return np.flatnonzero(np.bincount(mask.ravel()))
    return np.unique(mask)

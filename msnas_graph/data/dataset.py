"""Segmentation datasets: :class:`Case`, lazy :class:`SegmentationDataset`, :func:`load_dataset`.

``load_dataset(source)`` understands:

* ``"phantom"`` / ``"phantom:N"``: the built-in synthetic data (:mod:`.phantom`).
* an MSD / nnU-Net raw folder: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/``. MSD v1
  (``"labels": {"0": "background", ...}``, ``"modality"``, ``"training"`` list, 4D images give
  channels) and nnU-Net v2 (``"labels": {"background": 0, ...}``, ``"channel_names"``,
  ``"file_ending"``, one file per channel named ``case_0000.nii.gz``, ``case_0001...``).
* a folder with ``images/`` and ``masks/`` (or ``labels/``) whose files match by stem (a mask
  may also be named ``<stem>_mask``, ``_seg``, ``_label``, ``_gt`` or ``_Annotation``); PNG,
  TIFF, JPEG, BMP or NIfTI. ``images/`` alone, a flat folder of images, or a single image file
  give an unlabelled dataset (for prediction).

NIfTI volumes are read slice-wise along the last voxel axis (see :mod:`.readers`); all
slices of a volume share its group. The group of a 2D file named like HC18's ``010_2HC.png``
is the number before the first underscore (the examination), otherwise the file stem.

Image/mask sizes are checked from the file headers when the dataset is loaded; pixels are read
on ``__getitem__`` (``cache=True`` keeps the cases read). When ``num_classes`` is neither in
``dataset.json`` nor given, every mask is read once to infer it as max label + 1 (at least 2).
Binary masks stored as 0/255 (common for PNG masks) are read as 0/1 when the dataset has two
classes.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from msnas_graph.data.readers import (
    FileHeader,
    VolumeCache,
    file_format,
    read_header,
    read_image_2d,
    read_mask_2d,
    split_name,
)
from msnas_graph.errors import DataError

__all__ = ["Case", "SegmentationDataset", "group_key", "load_dataset"]

logger = logging.getLogger(__name__)

_MASK_DIRS = ("masks", "labels", "mask", "label", "annotations", "gt")
_MASK_SUFFIXES = ("", "_mask", "_seg", "_label", "_labels", "_gt", "_Annotation", "_annotation")
_HC18_GROUP = re.compile(r"^(\d+)_")


@dataclass
class Case:
    """One 2D sample: an image, its mask if labelled, and where it came from.

    ``image`` is ``float32 (C, H, W)`` with the stored intensities (not normalised);
    ``mask`` is ``int64 (H, W)`` with labels ``0..num_classes-1``; ``pixel_size`` is mm per
    pixel of this image when known; ``meta`` holds ``format``, ``file_name``,
    ``original_shape`` and, for NIfTI slices, ``slice_index``, ``num_slices``, ``affine`` and
    ``spacing`` (row, col mm).
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray | None
    group: str
    pixel_size: float | None
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float] | None:
        """(row, col) pixel spacing in mm, for :func:`msnas_graph.metrics.hd95`."""
        spacing = self.meta.get("spacing")
        if spacing is not None:
            return (float(spacing[0]), float(spacing[1]))
        if self.pixel_size is not None:
            return (self.pixel_size, self.pixel_size)
        return None


def group_key(stem: str) -> str:
    """Grouping key of a 2D file stem: HC18-style ``"010_2HC"`` -> ``"010"``, else the stem.

    >>> group_key("010_2HC"), group_key("010_HC"), group_key("case_7")
    ('010', '010', 'case_7')
    """
    match = _HC18_GROUP.match(stem)
    return match.group(1) if match else stem


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
            f"{where}: mask labels {shown} outside 0..{num_classes - 1}: fix the mask or pass "
            f"num_classes={max(bad) + 1}"
            if min(bad) >= 0
            else f"{where}: negative mask labels {shown}: labels must be 0..{num_classes - 1}"
        )


# ---------------------------------------------------------------------------------------------
# load_dataset


def load_dataset(
    source: str | Path,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    cache: bool = False,
) -> SegmentationDataset:
    """Open a dataset: ``"phantom[:N]"``, an MSD/nnU-Net folder, an images/masks folder, or a file.

    ``num_classes`` comes from ``dataset.json`` when there is one (giving a different value is
    an error), else from the argument, else it is inferred from the masks (max label + 1, at
    least 2). ``in_channels`` defaults to the files' channel count; 1 <-> 3 channel images are
    converted to it (grey replicated, RGB to luminance).

    >>> ds = load_dataset("phantom:3")
    >>> len(ds), ds.num_classes, ds[0].image.shape
    (3, 4, (1, 64, 64))
    """
    text = str(source)
    if text == "phantom" or text.startswith("phantom:"):
        from msnas_graph.data.phantom import phantom_dataset

        n = 64
        if text.startswith("phantom:"):
            count = text.split(":", 1)[1]
            if not count.isdigit() or int(count) < 1:
                raise DataError(
                    f"'{text}': the phantom case count must be a positive integer, "
                    "e.g. 'phantom:64'"
                )
            n = int(count)
        return phantom_dataset(n, num_classes=num_classes or 4, in_channels=in_channels or 1)

    root = Path(source).expanduser()
    if not root.exists():
        raise DataError(
            f"{root}: no such file or folder: give a folder with images/ and masks/, an "
            "MSD/nnU-Net folder with dataset.json, or 'phantom'"
        )
    if root.is_file():
        if file_format(root) is None:
            raise DataError(
                f"{root}: not an image file (PNG, TIFF, JPEG, BMP, NIfTI) or dataset folder"
            )
        return _build(
            root.stem,
            [(root, None)],
            root.parent,
            num_classes=num_classes,
            in_channels=in_channels,
            cache=cache,
        )
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"{root}: folder is empty: put images/ and masks/ (or dataset.json) there")
    if (root / "dataset.json").is_file():
        return _load_msd(root, num_classes=num_classes, in_channels=in_channels, cache=cache)
    if (root / "imagesTr").is_dir():
        raise DataError(
            f"{root}: imagesTr/ found but no dataset.json: add the MSD/nnU-Net dataset.json, "
            "or rename the folders to images/ and masks/"
        )
    images_dir = root / "images"
    if images_dir.is_dir():
        mask_dir = next((root / d for d in _MASK_DIRS if (root / d).is_dir()), None)
        pairs = _pair_files(images_dir, mask_dir)
        return _build(
            root.name,
            pairs,
            root,
            num_classes=num_classes,
            in_channels=in_channels,
            cache=cache,
        )
    flat = sorted(p for p in entries if p.is_file() and file_format(p) is not None)
    if flat:
        return _build(
            root.name,
            [(p, None) for p in flat],
            root,
            num_classes=num_classes,
            in_channels=in_channels,
            cache=cache,
        )
    raise DataError(
        f"{root}: no images found: expected images/ + masks/ (PNG, TIFF, JPEG, NIfTI), an "
        "MSD/nnU-Net folder with dataset.json, or image files"
    )


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and file_format(p) is not None)


def _names(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _pair_files(images_dir: Path, mask_dir: Path | None) -> list[tuple[Path, Path | None]]:
    images = _list_images(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no images found: put PNG, TIFF, JPEG or NIfTI files in it")
    by_stem: dict[str, Path] = {}
    for p in images:
        stem = split_name(p)[0]
        if stem in by_stem:
            raise DataError(
                f"{images_dir}: two images share the name '{stem}' ({by_stem[stem].name}, "
                f"{p.name}): keep one file per case"
            )
        by_stem[stem] = p
    if mask_dir is None:
        return [(p, None) for p in images]
    masks = _list_images(mask_dir)
    if not masks:
        raise DataError(
            f"{mask_dir}: no masks found: put one PNG/TIFF/NIfTI label image per image there, "
            "or remove the folder for an unlabelled dataset"
        )
    mask_by_stem: dict[str, Path] = {}
    for m in masks:
        mstem = split_name(m)[0]
        match = None
        for suffix in _MASK_SUFFIXES:
            if suffix and mstem.endswith(suffix) and mstem[: -len(suffix)] in by_stem:
                match = mstem[: -len(suffix)]
                break
            if not suffix and mstem in by_stem:
                match = mstem
                break
        key = match if match is not None else mstem
        if key in mask_by_stem:
            raise DataError(
                f"{mask_dir}: two masks for image '{key}' ({mask_by_stem[key].name}, {m.name}): "
                "keep one mask per image"
            )
        mask_by_stem[key] = m
    missing = [by_stem[s].name for s in by_stem if s not in mask_by_stem]
    extra = [mask_by_stem[s].name for s in mask_by_stem if s not in by_stem]
    if missing or extra:
        parts = [f"{len(images)} images and {len(masks)} masks"]
        if missing:
            parts.append(f"no mask for {_names(missing)}")
        if extra:
            parts.append(f"no image for {_names(extra)}")
        raise DataError(
            f"{mask_dir}: {'; '.join(parts)}: give every image a mask with the same file stem"
        )
    return [(by_stem[s], mask_by_stem[s]) for s in by_stem]


def _pixel_sizes(root: Path) -> dict[str, float]:
    """file name -> pixel size (mm) from a CSV beside images/ with filename + pixel size columns."""
    sizes: dict[str, float] = {}
    for csv_path in sorted(root.glob("*.csv")):
        try:
            with csv_path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                fields = reader.fieldnames or []
                norm = {f: f.strip().lower().replace("_", " ") for f in fields}
                name_col = next(
                    (f for f in fields if norm[f] in ("filename", "file name", "file", "image")),
                    None,
                )
                size_col = next(
                    (f for f in fields if "pixel" in norm[f] and "size" in norm[f]), None
                )
                if name_col is None or size_col is None:
                    continue
                for row in reader:
                    name = (row.get(name_col) or "").strip()
                    value = (row.get(size_col) or "").strip()
                    if not name or not value:
                        continue
                    try:
                        sizes[name] = float(value)
                    except ValueError as exc:
                        raise DataError(
                            f"{csv_path}: pixel size '{value}' of {name} is not a number: "
                            "fix the CSV"
                        ) from exc
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{csv_path}: cannot read CSV ({exc}): fix or remove it") from exc
        if sizes:
            logger.debug("pixel sizes from %s (%d files)", csv_path, len(sizes))
            break
    return sizes


def _isotropic(spacing: tuple[float, float] | None) -> float | None:
    if spacing is None:
        return None
    a, b = spacing
    return float(a) if abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1.0) else None


def _check_same_size(image: Path, ih: FileHeader, mask: Path, mh: FileHeader, volume: bool) -> None:
    isize = (*ih.shape, ih.num_slices) if volume else ih.shape
    msize = (*mh.shape, mh.num_slices) if volume else mh.shape
    if isize != msize:
        raise DataError(
            f"{mask}: mask size {msize} differs from image size {isize} ({image.name}): save "
            "the mask at the image's size"
        )


def _build(
    name: str,
    pairs: Sequence[tuple[Path | tuple[Path, ...], Path | None]],
    root: Path,
    *,
    num_classes: int | None,
    in_channels: int | None,
    cache: bool,
    label_names: Sequence[str] | None = None,
    json_channels: int | None = None,
    fixed_classes: bool = False,
) -> SegmentationDataset:
    """Items for (image files, mask file) pairs, with header checks and class inference."""
    pixel_sizes = _pixel_sizes(root)
    items: list[_Item] = []
    formats: set[str] = set()
    channel_counts: set[int] = set()
    for image_spec, mask in pairs:
        files = (image_spec,) if isinstance(image_spec, Path) else tuple(image_spec)
        fmts = tuple(file_format(f) or "" for f in files)
        formats.update(fmts)
        headers = [read_header(f) for f in files]
        first, head = files[0], headers[0]
        volume = fmts[0] == "nifti"
        for f, h in zip(files[1:], headers[1:], strict=True):
            if (h.shape, h.num_slices) != (head.shape, head.num_slices):
                raise DataError(
                    f"{f}: channel file size {(*h.shape, h.num_slices)} differs from "
                    f"{first.name} {(*head.shape, head.num_slices)}: make all channels match"
                )
        channels = sum(h.channels for h in headers)
        channel_counts.add(channels)
        if mask is not None:
            mh = read_header(mask)
            if (file_format(mask) == "nifti") != volume:
                raise DataError(
                    f"{mask}: mask and image {first.name} must both be NIfTI or both 2D files"
                )
            _check_same_size(first, head, mask, mh, volume)
        stem = split_name(first)[0]
        if re.search(r"_\d{4}$", stem) and (
            len(files) > 1 or (mask is not None and split_name(mask)[0] == stem[:-5])
        ):
            stem = stem[:-5]  # nnU-Net channel suffix: case_0000 -> case
        if volume:
            n = head.num_slices or 1
            width = max(3, len(str(n - 1)))
            pixel = _isotropic(head.spacing)
            for z in range(n):
                items.append(
                    _Item(
                        case_id=f"{stem}/z{z:0{width}d}",
                        group=stem,
                        image_files=files,
                        mask_file=mask,
                        slice_index=z,
                        num_slices=n,
                        pixel_size=pixel,
                        file_name=first.name,
                        spacing=head.spacing,
                        formats=fmts,
                    )
                )
        else:
            pixel = pixel_sizes.get(first.name, pixel_sizes.get(stem))
            items.append(
                _Item(
                    case_id=stem,
                    group=group_key(stem),
                    image_files=files,
                    mask_file=mask,
                    slice_index=None,
                    num_slices=None,
                    pixel_size=pixel,
                    file_name=first.name,
                    formats=fmts,
                )
            )
    seen: set[str] = set()
    for it in items:
        if it.case_id in seen:
            raise DataError(
                f"{root}: two cases share the id '{it.case_id}': rename one of the files"
            )
        seen.add(it.case_id)

    if in_channels is None:
        in_channels = json_channels or (3 if 3 in channel_counts else max(channel_counts))
    labelled = all(m is not None for _, m in pairs)
    volumes = VolumeCache()
    if num_classes is None and not fixed_classes:
        num_classes = _infer_classes(pairs, volumes) if labelled else 2
    assert num_classes is not None
    if num_classes < 2:
        raise DataError(f"{root}: num_classes={num_classes}: a segmentation needs at least 2")
    fmt = formats.pop() if len(formats) == 1 else "mixed"
    return SegmentationDataset(
        name=name,
        items=items,
        num_classes=num_classes,
        in_channels=in_channels,
        label_names=label_names,
        format=fmt,
        labelled=labelled,
        cache=cache,
        _volumes=volumes,
    )


def _distinct(mask: np.ndarray) -> np.ndarray:
    """Distinct values of an integer array (bincount when small and non-negative: fast)."""
    if mask.size and mask.min() >= 0 and mask.max() < 1 << 16:
        return np.flatnonzero(np.bincount(mask.ravel()))
    return np.unique(mask)


def _infer_classes(
    pairs: Sequence[tuple[Path | tuple[Path, ...], Path | None]], volumes: VolumeCache
) -> int:
    values: set[int] = set()
    for _, mask in pairs:
        if mask is None:
            continue
        if file_format(mask) == "nifti":
            labels = volumes.labels(mask)
        else:
            labels = _distinct(read_mask_2d(mask))
        if labels.size and labels.min() < 0:
            raise DataError(f"{mask}: negative mask labels: labels must be 0..num_classes-1")
        values.update(int(v) for v in labels)
    if values and values <= {0, 255} and 255 in values:
        return 2  # binary masks stored as 0/255
    return max(2, max(values, default=0) + 1)


# ---------------------------------------------------------------------------------------------
# MSD / nnU-Net


def _json_fail(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}: fix dataset.json (MSD or nnU-Net v2 format)")


def _msd_labels(path: Path, labels: Any) -> list[str]:
    if not isinstance(labels, dict) or not labels:
        raise _json_fail(path, "'labels' must be a non-empty mapping")
    by_index: dict[int, str] = {}
    if all(str(k).strip().lstrip("-").isdigit() for k in labels):  # MSD v1: {"0": "background"}
        for k, v in labels.items():
            by_index[int(k)] = str(v)
    else:  # nnU-Net v2: {"background": 0, "liver": 1}
        for k, v in labels.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise _json_fail(
                    path,
                    f"label '{k}' has value {v!r}; region-based (list) labels are not supported, "
                    "each label needs one integer",
                )
            by_index[v] = str(k)
    if min(by_index) < 0:
        raise _json_fail(path, "label values must be >= 0")
    n = max(by_index) + 1
    return [by_index.get(i, f"class_{i}") for i in range(n)]


def _load_msd(
    root: Path, *, num_classes: int | None, in_channels: int | None, cache: bool
) -> SegmentationDataset:
    path = root / "dataset.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _json_fail(path, f"cannot parse ({exc})") from exc
    if not isinstance(spec, dict):
        raise _json_fail(path, "top level must be a JSON object")
    if "labels" not in spec:
        raise _json_fail(path, "no 'labels' entry")
    names = _msd_labels(path, spec["labels"])
    if num_classes is not None and num_classes != len(names):
        raise DataError(
            f"{path}: defines {len(names)} classes but num_classes={num_classes} was given: "
            "drop the argument or fix dataset.json"
        )
    channel_spec = spec.get("channel_names", spec.get("modality"))
    if channel_spec is not None and (not isinstance(channel_spec, dict) or not channel_spec):
        raise _json_fail(path, "'channel_names'/'modality' must be a non-empty mapping")
    json_channels = len(channel_spec) if channel_spec else None
    ending = spec.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise _json_fail(path, f"'file_ending' {ending!r} must be a suffix like '.nii.gz'")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise DataError(
                f"{d}: folder missing: an MSD/nnU-Net dataset needs imagesTr/ and labelsTr/"
            )

    def images_for(case: str) -> tuple[Path, ...]:
        single = images_dir / f"{case}{ending}"
        if single.is_file():
            return (single,)
        count = json_channels or 1
        files = tuple(images_dir / f"{case}_{c:04d}{ending}" for c in range(count))
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(
                f"{images_dir}: no image for case '{case}' (looked for {case}{ending} and "
                f"{_names(missing)}): add the image files or remove its label"
            )
        return files

    pairs: list[tuple[Path | tuple[Path, ...], Path | None]] = []
    training = spec.get("training")
    if training is not None:
        if not isinstance(training, list):
            raise _json_fail(path, "'training' must be a list of {image, label} entries")
        for k, entry in enumerate(training):
            if not isinstance(entry, dict) or "label" not in entry or "image" not in entry:
                raise _json_fail(path, f"training[{k}] needs 'image' and 'label'")
            label = (root / str(entry["label"])).resolve()
            image = (root / str(entry["image"])).resolve()
            if not label.is_file():
                raise DataError(
                    f"{label}: listed in dataset.json training[{k}] but missing: add the file or "
                    "remove the entry"
                )
            files = (image,) if image.is_file() else images_for(split_name(image)[0])
            pairs.append((files, label))
    else:
        labels = sorted(
            p
            for p in labels_dir.iterdir()
            if p.name.endswith(ending) and not p.name.startswith(".")
        )
        if not labels:
            raise DataError(f"{labels_dir}: no '*{ending}' label files found: add the labels")
        for label in labels:
            case = label.name[: -len(ending)]
            pairs.append((images_for(case), label))
    if not pairs:
        raise DataError(
            f"{path}: no training cases: list them in 'training' or add labelsTr/ files"
        )
    ds = _build(
        str(spec.get("name") or root.name),
        pairs,
        root,
        num_classes=len(names),
        in_channels=in_channels,
        cache=cache,
        label_names=names,
        json_channels=json_channels,
        fixed_classes=True,
    )
    if json_channels is not None and in_channels is None:
        first = ds._items[0]
        if first is not None:
            actual = sum(read_header(f).channels for f in first.image_files)
            if actual != json_channels:
                raise _json_fail(
                    path,
                    f"{json_channels} channels declared but {first.image_files[0].name} has "
                    f"{actual}",
                )
    return ds

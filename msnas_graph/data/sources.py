"""The dataset dispatcher: :func:`load_dataset` opens a dataset from a source string.

``load_dataset(source)`` understands:

* ``"phantom"`` / ``"phantom:N"``: the built-in synthetic data (:mod:`.phantom`).
* an MSD / nnU-Net raw folder: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/``. MSD v1
  (``"labels": {"0": "background", ...}``, ``"modality"``, ``"training"`` list, 4D images give
  channels) and nnU-Net v2 (``"labels": {"background": 0, ...}``, ``"channel_names"``,
  ``"file_ending"``, one file per channel named ``case_0000.nii.gz``, ``case_0001...``).
* a folder with ``images/`` and ``masks/`` (or ``labels/``) whose files match by stem (a mask
  may also be named ``<stem>_mask``, ``_seg``, ``_label``, ``_gt`` or ``_Annotation``); PNG,
  TIFF, JPEG, BMP or NIfTI. ``images/`` alone, a flat folder of images, or a single image file
  give an unlabelled dataset (for prediction); there, and in ``imagesTr``/``imagesTs``,
  nnU-Net's channel files ``case_0000``, ``case_0001``... are the channels of one case ``case``
  (:func:`~msnas_graph.data.files.channel_cases`).

NIfTI volumes are read slice-wise along the last voxel axis (see :mod:`.readers`); all
slices of a volume share its group. The group of a 2D file named like HC18's ``010_2HC.png``
is the number before the first underscore (the examination), otherwise the file stem.

Image/mask sizes are checked from the file headers when the dataset is loaded, and so is the
memory the decoded dataset will take (:mod:`.sizes`: refused in one line naming
``--no-memory-check`` if it cannot fit, before any pixel is read); pixels are read
on ``__getitem__`` (``cache=True`` keeps the cases read). When ``num_classes`` is neither in
``dataset.json`` nor given, every mask is read once to infer it as max label + 1 (at least 2).
Binary masks stored as 0/255 (common for PNG masks) are read as 0/1 when the dataset has two
classes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from msnas_graph._util import input_kind, read_text, regular_input
from msnas_graph.data.dataset import (
    SegmentationDataset,
)
from msnas_graph.data.files import build_dataset, channel_cases
from msnas_graph.data.phantom import phantom_dataset
from msnas_graph.data.readers import (
    file_format,
    read_header,
    split_name,
)
from msnas_graph.data.sizes import check_dataset_memory
from msnas_graph.errors import DataError

__all__ = ["load_dataset"]


def _checked_build(
    name: str,
    pairs: Sequence[tuple[Path | tuple[Path, ...], Path | None]],
    root: Path,
    *,
    in_channels: int | None,
    cache: bool,
    **options: Any,
) -> SegmentationDataset:
    """:func:`~msnas_graph.data.files.build_dataset`, after checking from the files' headers
    that the decoded dataset fits the memory available (before any pixel is read)."""
    check_dataset_memory(root, pairs, in_channels=in_channels, cache=cache)
    return build_dataset(name, pairs, root, in_channels=in_channels, cache=cache, **options)


_MASK_DIRS = ("masks", "labels", "mask", "label", "annotations", "gt")
_MASK_SUFFIXES = ("", "_mask", "_seg", "_label", "_labels", "_gt", "_Annotation", "_annotation")


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
        return _load_phantom(text, num_classes=num_classes, in_channels=in_channels)

    root = Path(source).expanduser()
    kind = input_kind(root)
    if kind != "folder":
        missing = (
            f"{root}: no such file or folder: give a folder with images/ and masks/, an "
            "MSD/nnU-Net folder with dataset.json, or 'phantom'"
        )
        regular_input(root, DataError, missing)
        if file_format(root) is None:
            raise DataError(
                f"{root}: not an image file (PNG, TIFF, JPEG, BMP, NIfTI) or dataset folder"
            )
        check_dataset_memory(root, [(root, None)], in_channels=in_channels, cache=cache)
        return build_dataset(
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
    if os.path.lexists(root / "dataset.json"):  # read only if a regular file
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
        return _checked_build(
            root.name,
            pairs,
            root,
            num_classes=num_classes,
            in_channels=in_channels,
            cache=cache,
        )
    flat = _image_files(entries)
    if flat:
        nnunet = root.name in ("imagesTr", "imagesTs")
        return _checked_build(
            root.name,
            [(c, None) for c in channel_cases(flat, nnunet=nnunet)],
            root,
            num_classes=num_classes,
            in_channels=in_channels,
            cache=cache,
        )
    raise DataError(
        f"{root}: no images found: expected images/ + masks/ (PNG, TIFF, JPEG, NIfTI), an "
        "MSD/nnU-Net folder with dataset.json, or image files"
    )


def _load_phantom(
    text: str, *, num_classes: int | None, in_channels: int | None
) -> SegmentationDataset:
    """``"phantom"`` (64 cases) or ``"phantom:N"``."""
    n = 64
    if text.startswith("phantom:"):
        count = text.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise DataError(
                f"'{text}': the phantom case count must be a positive integer, e.g. 'phantom:64'"
            )
        n = int(count)
    return phantom_dataset(n, num_classes=num_classes or 4, in_channels=in_channels or 1)


def _image_files(entries: Iterable[Path]) -> list[Path]:
    """The image files among ``entries``, sorted; a name of an image format that is a FIFO,
    device or broken link is refused in one line (never opened, never silently skipped)."""
    images = []
    for p in entries:
        if file_format(p) is None:
            continue
        kind = input_kind(p)
        if kind == "file":
            images.append(p)
        elif kind != "folder":
            regular_input(p, DataError)
    return sorted(images)


def _list_images(folder: Path) -> list[Path]:
    return _image_files(folder.iterdir())


def _names(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _pair_files(
    images_dir: Path, mask_dir: Path | None
) -> list[tuple[Path | tuple[Path, ...], Path | None]]:
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
        return [(c, None) for c in channel_cases(images, nnunet=False)]
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
    spec = _read_msd_json(path)
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
    for d in (root / "imagesTr", root / "labelsTr"):
        if not d.is_dir():
            raise DataError(
                f"{d}: folder missing: an MSD/nnU-Net dataset needs imagesTr/ and labelsTr/"
            )
    pairs = _msd_pairs(root, spec.get("training"), ending, json_channels or 1)
    ds = _checked_build(
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
        _check_msd_channels(path, ds, json_channels)
    return ds


def _read_msd_json(path: Path) -> dict[str, Any]:
    """``dataset.json`` as a JSON object with a ``labels`` entry, or a one-line error."""
    text = read_text(path, DataError)
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _json_fail(path, f"cannot parse ({exc})") from exc
    if not isinstance(spec, dict):
        raise _json_fail(path, "top level must be a JSON object")
    if "labels" not in spec:
        raise _json_fail(path, "no 'labels' entry")
    return spec


def _msd_case_images(images_dir: Path, case: str, ending: str, channels: int) -> tuple[Path, ...]:
    """A case's image files: ``case<ending>``, else ``case_0000<ending>``.. one per channel."""
    single = images_dir / f"{case}{ending}"
    if single.is_file():
        return (single,)
    files = tuple(images_dir / f"{case}_{c:04d}{ending}" for c in range(channels))
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"{images_dir}: no image for case '{case}' (looked for {case}{ending} and "
            f"{_names(missing)}): add the image files or remove its label"
        )
    return files


def _msd_pairs(
    root: Path, training: Any, ending: str, channels: int
) -> list[tuple[Path | tuple[Path, ...], Path | None]]:
    """(image files, label) of every case: the ``training`` list of dataset.json when it has
    one, else every ``labelsTr/*<ending>`` file."""
    path, images_dir, labels_dir = root / "dataset.json", root / "imagesTr", root / "labelsTr"
    pairs: list[tuple[Path | tuple[Path, ...], Path | None]] = []
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
            files = (
                (image,)
                if image.is_file()
                else _msd_case_images(images_dir, split_name(image)[0], ending, channels)
            )
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
            pairs.append((_msd_case_images(images_dir, case, ending, channels), label))
    if not pairs:
        raise DataError(
            f"{path}: no training cases: list them in 'training' or add labelsTr/ files"
        )
    return pairs


def _check_msd_channels(path: Path, ds: SegmentationDataset, json_channels: int) -> None:
    """The first case's files have the channel count dataset.json declares."""
    first = ds._items[0]
    if first is not None:
        actual = sum(read_header(f).channels for f in first.image_files)
        if actual != json_channels:
            raise _json_fail(
                path,
                f"{json_channels} channels declared but {first.image_files[0].name} has {actual}",
            )

"""File-backed datasets: from (image, mask) file pairs to a :class:`SegmentationDataset`.

:func:`build_dataset` reads every file's header (sizes, channels, NIfTI slices and spacing),
checks that images and masks match, finds pixel sizes (a ``pixel_size`` CSV beside the files, or
the NIfTI header) and, when ``num_classes`` is not given, infers it from the masks. The
dispatcher :func:`msnas_graph.data.sources.load_dataset` finds the pairs and calls it.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from msnas_graph._util import open_input
from msnas_graph.data.case import group_key
from msnas_graph.data.dataset import (
    SegmentationDataset,
    _distinct,
    _Item,
)
from msnas_graph.data.readers import (
    FileHeader,
    VolumeCache,
    file_format,
    read_header,
    read_mask_2d,
    split_name,
)
from msnas_graph.errors import DataError

__all__ = ["build_dataset", "channel_cases"]

logger = logging.getLogger(__name__)

#: nnU-Net's channel file name: ``<case>_<4-digit channel index><ending>``.
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def channel_cases(files: Sequence[Path], *, nnunet: bool) -> list[Path | tuple[Path, ...]]:
    """The cases of a folder's image ``files``, by nnU-Net's rule: ``case1_0000``,
    ``case1_0001``, ... are the channels of one case ``case1``, in index order.

    A tuple is a case of channel files (its id is the name without ``_XXXX``); a lone
    :class:`~pathlib.Path` is a case of its own (its id is the file stem). With ``nnunet``
    (an ``imagesTr``/``imagesTs`` folder) the rule always applies and a file without the suffix
    is a case of its own (an MSD v1 4D volume). Elsewhere it applies only when every file has
    the suffix and every case has a channel ``_0000``; otherwise each file is one case (frames
    ``img_0001``, ``img_0002`` stay separate images). Refuses, in one line, a case with a gap
    in its channel indices or two files for one channel.

    >>> names = ["b_0000.png", "a_0001.png", "a_0000.png"]
    >>> [tuple(f.name for f in c) for c in channel_cases([Path(n) for n in names], nnunet=False)]
    [('a_0000.png', 'a_0001.png'), ('b_0000.png',)]
    >>> [f.name for f in channel_cases([Path("img_0001.png"), Path("img_0002.png")], nnunet=False)]
    ['img_0001.png', 'img_0002.png']
    """
    groups: dict[str, dict[int, Path]] = {}
    single: list[Path] = []
    for f in files:
        m = _CHANNEL_FILE.match(split_name(f)[0])
        if m is None:
            single.append(f)
            continue
        channels = groups.setdefault(m["case"], {})
        if (index := int(m["channel"])) in channels:
            raise DataError(
                f"{f.parent}: two files for channel {index:04d} of case '{m['case']}' "
                f"({channels[index].name}, {f.name}): keep one file per channel"
            )
        channels[index] = f
    if not nnunet and (single or any(0 not in c for c in groups.values())):
        return sorted(files)
    cases: list[tuple[str, Path | tuple[Path, ...]]] = [(split_name(f)[0], f) for f in single]
    for case, channels in groups.items():
        missing = next(i for i in range(len(channels) + 1) if i not in channels)
        if missing < len(channels):
            shown = ", ".join(channels[i].name for i in sorted(channels))
            raise DataError(
                f"{channels[min(channels)].parent}: case '{case}' has channel files {shown} but "
                f"no channel {missing:04d}: nnU-Net numbers a case's channels _0000, _0001, ... "
                "without gaps; add the missing file or renumber the channels"
            )
        cases.append((case, tuple(channels[i] for i in range(len(channels)))))
    return [files for _, files in sorted(cases, key=lambda c: c[0])]


def _pixel_sizes(root: Path) -> dict[str, float]:
    """file name -> pixel size (mm) from a CSV beside images/ with filename + pixel size columns."""
    sizes: dict[str, float] = {}
    for csv_path in sorted(root.glob("*.csv")):
        try:
            with io.TextIOWrapper(
                open_input(csv_path, DataError), encoding="utf-8-sig", newline=""
            ) as fh:  # a FIFO named x.csv is refused, never waited on
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


def _case_items(
    files: tuple[Path, ...], mask: Path | None, pixel_sizes: dict[str, float], grouped: bool
) -> tuple[list[_Item], tuple[str, ...], int]:
    """The items of one case (one per slice of a NIfTI volume), its file formats and its
    channel count, after checking its channel files and mask against each other. ``grouped``:
    the files are a case's channel files (named ``case_0000``... by nnU-Net's rule)."""
    fmts = tuple(file_format(f) or "" for f in files)
    headers = [read_header(f) for f in files]
    first, head = files[0], headers[0]
    volume = fmts[0] == "nifti"
    for f, fmt, h in zip(files[1:], fmts[1:], headers[1:], strict=True):
        if (fmt == "nifti") != volume:
            raise DataError(
                f"{f}: the channel files of a case must be all NIfTI or all 2D files, unlike "
                f"{first.name}: convert them to one format"
            )
        if (h.shape, h.num_slices) != (head.shape, head.num_slices):
            raise DataError(
                f"{f}: channel file size {(*h.shape, h.num_slices)} differs from "
                f"{first.name} {(*head.shape, head.num_slices)}: make all channels match"
            )
    channels = sum(h.channels for h in headers)
    if mask is not None:
        mh = read_header(mask)
        if (file_format(mask) == "nifti") != volume:
            raise DataError(
                f"{mask}: mask and image {first.name} must both be NIfTI or both 2D files"
            )
        _check_same_size(first, head, mask, mh, volume)
    stem = split_name(first)[0]
    if re.search(r"_\d{4}$", stem) and (
        grouped or len(files) > 1 or (mask is not None and split_name(mask)[0] == stem[:-5])
    ):
        stem = stem[:-5]  # nnU-Net channel suffix: case_0000 -> case
    item = functools.partial(
        _Item, image_files=files, mask_file=mask, file_name=first.name, formats=fmts
    )
    if not volume:
        pixel = pixel_sizes.get(first.name, pixel_sizes.get(stem))
        return (
            [item(stem, group_key(stem), slice_index=None, num_slices=None, pixel_size=pixel)],
            fmts,
            channels,
        )
    n = head.num_slices or 1
    width = max(3, len(str(n - 1)))
    pixel = _isotropic(head.spacing)
    items = [
        item(
            f"{stem}/z{z:0{width}d}",
            stem,
            slice_index=z,
            num_slices=n,
            pixel_size=pixel,
            spacing=head.spacing,
        )
        for z in range(n)
    ]
    return items, fmts, channels


def build_dataset(
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
    cases: list[_Channels] = []
    for image_spec, mask in pairs:
        grouped = not isinstance(image_spec, Path)
        files = (image_spec,) if isinstance(image_spec, Path) else tuple(image_spec)
        case_items, fmts, channels = _case_items(files, mask, pixel_sizes, grouped)
        items += case_items
        formats.update(fmts)
        channel_counts.add(channels)
        head = case_items[0]
        rgb = len(files) == 1 and read_header(files[0]).rgb
        case = head.case_id if head.slice_index is None else head.group
        cases.append(_Channels(case, files, channels, rgb))
    _check_channels(root, cases, in_channels)
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


class _Channels(NamedTuple):
    """A case's channel count, and whether they are the colours of one RGB(A) image."""

    case: str
    files: tuple[Path, ...]
    channels: int
    rgb: bool


def _convertible(c: _Channels, in_channels: int) -> bool:
    """Whether the case's image may be converted to ``in_channels``: one grey image
    replicated to RGB, one real RGB(A) image to grey (never a 4D NIfTI's channels, a
    multi-page TIFF's pages or nnU-Net channel files)."""
    if len(c.files) != 1:
        return False
    return (c.channels, in_channels) == (1, 3) or ((c.channels, in_channels) == (3, 1) and c.rgb)


def _check_channels(root: Path, cases: Sequence[_Channels], in_channels: int | None) -> None:
    """Every case has ``in_channels`` channels (a single grey image may be replicated to RGB,
    a single RGB(A) image turned into grey, with a warning); without ``in_channels``, every
    case has the same count, except that single grey and RGB images may mix (the grey ones
    are replicated when read)."""
    if in_channels is not None:
        for c in cases:
            if c.channels != in_channels and not _convertible(c, in_channels):
                names = ", ".join(f.name for f in c.files)
                colours = len(c.files) > 1 or c.rgb or c.channels == 1
                what = "" if colours else ", not the colours of an RGB image,"
                raise DataError(
                    f"{c.files[0].parent}: case '{c.case}' has {c.channels} image channel(s) "
                    f"({names}){what} but {in_channels} are expected (in_channels="
                    f"{in_channels}, e.g. the channels the model was trained on): give every "
                    f"case {in_channels} channel(s)"
                )
        if in_channels == 1 and (rgb := [c for c in cases if c.channels == 3]):
            logger.warning(
                "%s: %d RGB image(s) (%s%s) converted to grey (luminance 0.299 R + 0.587 G + "
                "0.114 B) for a 1-channel model",
                root, len(rgb), rgb[0].files[0].name, ", ..." if len(rgb) > 1 else "",
            )  # fmt: skip
        return
    first: dict[int, _Channels] = {}  # the first case of each count
    for c in cases:
        first.setdefault(c.channels, c)
    mixable = all(_convertible(c, 1) or c.channels == 1 for c in cases)
    if len(first) > 1 and not (set(first) <= {1, 3} and mixable):
        a, b = list(first.values())[:2]
        raise DataError(
            f"{root}: cases have different channel counts ('{a.case}' has {a.channels}: "
            f"{', '.join(f.name for f in a.files)}; '{b.case}' has {b.channels}: "
            f"{', '.join(f.name for f in b.files)}): give every case the same channels "
            "(nnU-Net: the same _0000, _0001, ... files)"
        )


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
    n = max(2, max(values, default=0) + 1)
    missing = n - len(values | {0})
    if missing:  # 0/7 masks make an 8-class problem: say so
        shown = ", ".join(str(v) for v in sorted(values)[:8]) + (" ..." if len(values) > 8 else "")
        logger.warning(
            "masks use labels %s: read as %d classes (0..%d), %d of which never appear; "
            "relabel the masks 0..%d, or set the classes with a dataset.json 'labels' or "
            "load_dataset(..., num_classes=N)",
            shown, n, n - 1, missing, len(values | {0}) - 1,
        )  # fmt: skip
    return n

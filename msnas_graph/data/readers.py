"""Low-level file reading and writing: 2D images (PNG/TIFF/JPEG/BMP) and NIfTI volumes.

Everything here works on paths and numpy arrays; the dataset layer
(:mod:`msnas_graph.data.dataset`) builds :class:`~msnas_graph.data.case.Case` objects on top.
File names and formats come from :mod:`.formats`, whole label volumes are written by
:mod:`.volumes` (both import nothing from here). Pillow, tifffile and nibabel are imported
inside the functions that need them, so importing this module is cheap. tifffile is
optional (Pillow reads plain TIFFs); nibabel is required for NIfTI only
(``pip install msnas-graph[data]``).

Conventions:

* A 2D image is returned as ``float32`` ``(C, H, W)``; RGBA and grey+alpha images lose their
  alpha channel; palette images are converted to RGB.
* A 2D mask is returned as ``int64`` ``(H, W)`` holding the stored integer values (palette
  masks give the palette indices, as in PASCAL VOC).
* A NIfTI volume is read with its voxel axes as stored (no reorientation): slice ``z`` is
  ``data[:, :, z]``, so a slice's ``H`` is the first voxel axis and ``W`` the second. The
  affine is kept so that predictions can be written back in the same space.
"""

from __future__ import annotations

import functools
import io
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msnas_graph._util import atomic_write, regular_input
from msnas_graph.data.formats import (
    IMAGE_FORMATS,
    file_format,
    load_nibabel,
    load_tifffile,
    split_name,
    write_nifti,
)
from msnas_graph.data.volumes import write_label_volume
from msnas_graph.errors import DataError

if TYPE_CHECKING:
    from msnas_graph.data.case import Case

__all__ = [
    "IMAGE_FORMATS",
    "FileHeader",
    "VolumeCache",
    "file_format",
    "read_header",
    "read_image_2d",
    "read_mask_2d",
    "split_name",
    "write_mask",
    "write_overlay",
    "write_volume_mask",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileHeader:
    """What can be learnt about a file without decoding its pixels."""

    shape: tuple[int, int]  # (H, W) of one 2D image or slice
    channels: int
    num_slices: int | None  # None for 2D files
    spacing: tuple[float, float] | None = None  # (row, col) mm, NIfTI only
    affine: np.ndarray | None = None  # 4x4, NIfTI only
    #: The colours of one RGB(A) image (PNG/JPEG/BMP colour modes, a TIFF stored as RGB or
    #: YCbCr), not a 4D NIfTI's channels or a TIFF's pages: only these may become grey.
    rgb: bool = False


def _tiff_layout(shape: Sequence[int], path: Path) -> tuple[tuple[int, int], int, bool]:
    """((H, W), channels, channels_last) of a TIFF array shape."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (shape[0], shape[1]), 1, True
    if len(shape) == 3 and shape[-1] <= 4:
        return (shape[0], shape[1]), shape[2], True
    if len(shape) == 3 and shape[0] <= 4:
        return (shape[1], shape[2]), shape[0], False
    raise DataError(
        f"{path}: TIFF of shape {shape} is not a 2D image with <= 4 channels: "
        "convert multi-page stacks to NIfTI (read slice-wise) or to one file per slice"
    )


def read_header(path: str | Path) -> FileHeader:
    """Shape, channel count and (for NIfTI) slices, spacing and affine, read cheaply.

    Headers are remembered per file identity (path, inode, size and modification time), so the
    memory estimate and the dataset build read each file's header once; a changed file is read
    again."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return _read_header(path)  # its one-line error
    head = _cached_header(str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    affine = None if head.affine is None else head.affine.copy()
    return FileHeader(head.shape, head.channels, head.num_slices, head.spacing, affine, head.rgb)


@functools.lru_cache(maxsize=4096)
def _cached_header(path: str, _ino: int, _size: int, _mtime_ns: int) -> FileHeader:
    return _read_header(Path(path))


def _voxel_size(path: Path, img: Any) -> tuple[float, ...]:
    """A NIfTI image's voxel size; one line naming the file for complex voxels or a spatial
    voxel size that is not positive and finite (mm for HD95, copied to the masks)."""
    if np.issubdtype(img.get_data_dtype(), np.complexfloating):
        raise DataError(
            f"{path}: complex-valued voxels ({img.get_data_dtype()}) are not an image to "
            "segment: save real intensities (e.g. the magnitude) instead"
        )
    values = tuple(float(z) for z in img.header.get_zooms())
    if not all(np.isfinite(z) and z > 0 for z in values[:3]):
        shown = ", ".join(f"{z:g}" for z in values[:3])
        raise DataError(
            f"{path}: the header's voxel size ({shown}) is not positive and finite: fix its "
            "pixdim (e.g. nibabel's header.set_zooms) or replace the file"
        )
    return values


def _read_header(path: Path) -> FileHeader:
    fmt = file_format(path)
    regular_input(path, DataError)
    try:
        if fmt == "nifti":
            nib = load_nibabel()
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            zooms = _voxel_size(path, img)
            if len(shape) not in (2, 3, 4):
                raise DataError(
                    f"{path}: NIfTI of shape {shape} is not a 2D/3D volume or a 4D "
                    "multi-channel volume: save one channel per file or a 4D (X, Y, Z, C) image"
                )
            _check_nifti(path, shape, img.affine)
            channels = shape[3] if len(shape) == 4 else 1
            slices = shape[2] if len(shape) >= 3 else 1
            spacing = (zooms[0], zooms[1]) if len(zooms) >= 2 else None
            return FileHeader(
                (shape[0], shape[1]), channels, slices, spacing, np.asarray(img.affine, float)
            )
        if fmt == "tiff" and (tf := load_tifffile()) is not None:
            with tf.TiffFile(str(path)) as handle:
                series, photometric = handle.series[0], int(handle.pages[0].photometric)
                series_shape, axes = series.shape, series.axes
            hw, channels, _ = _tiff_layout(series_shape, path)
            rgb = channels in (3, 4) and "S" in axes and photometric in (2, 6)  # RGB, YCbCr
            return FileHeader(hw, 3 if channels == 4 else channels, None, rgb=rgb)  # alpha dropped
        if fmt is None:
            raise DataError(f"{path}: not a supported image file (PNG, TIFF, JPEG, BMP, NIfTI)")
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
        channels = 3 if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV") else 1
        return FileHeader((height, width), channels, None, rgb=channels == 3)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read file ({exc}): replace or remove it") from exc


def _check_nifti(path: Path, shape: Sequence[int], affine: Any) -> None:
    """One-line DataError for a NIfTI volume with no voxels along an axis, or an affine that is
    not finite (a mask could not be written back in its space)."""
    if 0 in shape:
        raise DataError(
            f"{path}: NIfTI of shape {tuple(shape)} has no voxels along an axis: "
            "replace or remove the file"
        )
    if affine is None or not np.all(np.isfinite(np.asarray(affine, dtype=float))):
        raise DataError(
            f"{path}: NIfTI affine holds NaN or infinity (a broken qform/sform): fix the "
            "header (e.g. set its sform from the qform) or remove the file"
        )


def _pil_array(path: Path, as_mask: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        if as_mask:
            arr = np.asarray(im)
        elif mode in ("P", "CMYK", "YCbCr", "LAB", "HSV") or mode == "RGBA":
            arr = np.asarray(im.convert("RGB"))
        elif mode in ("LA", "La", "PA"):
            arr = np.asarray(im.convert("L"))
        else:
            arr = np.asarray(im)
    return arr


def _read_2d_raw(path: Path, as_mask: bool) -> np.ndarray:
    """The stored array: (H, W) or (H, W, C)."""
    fmt = file_format(path)
    regular_input(path, DataError)
    try:
        if fmt == "tiff" and (tf := load_tifffile()) is not None:
            arr = np.asarray(tf.imread(str(path)))
            _, _, channels_last = _tiff_layout(arr.shape, path)
            if arr.ndim == 3 and not channels_last:
                arr = np.moveaxis(arr, 0, -1)
            if arr.ndim == 3 and arr.shape[-1] == 4 and not as_mask:
                arr = arr[..., :3]  # RGBA: alpha dropped, as for PNG (2 channels stay 2)
            return arr
        return _pil_array(path, as_mask)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({exc}): replace or remove it") from exc


def read_image_2d(path: str | Path) -> np.ndarray:
    """Read a 2D image as ``float32`` ``(C, H, W)`` with the stored intensity values."""
    path = Path(path)
    arr = _read_2d_raw(path, as_mask=False)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_label_map(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer ``(H, W)`` labels from a stored mask array, or a one-line DataError."""
    if arr.ndim == 3:
        if arr.shape[-1] in (2, 4):  # grey+alpha / RGBA: drop alpha
            arr = arr[..., :-1]
        if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[-1])):
            raise DataError(
                f"{path}: colour-coded mask (channels differ): save masks as single-channel "
                "PNG/TIFF of integer labels 0..num_classes-1"
            )
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"{path}: mask of shape {arr.shape} is not 2D: save a 2D label image")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{path}: mask contains NaN/inf: save integer labels")
        rounded = np.rint(arr)
        if np.any(np.abs(arr - rounded) > 1e-3):
            raise DataError(
                f"{path}: mask has non-integer values: save integer labels 0..num_classes-1"
            )
        arr = rounded
    return np.asarray(arr, dtype=np.int64)


def read_mask_2d(path: str | Path) -> np.ndarray:
    """Read a 2D label mask as ``int64`` ``(H, W)`` (stored values, not remapped)."""
    path = Path(path)
    return _as_label_map(_read_2d_raw(path, as_mask=True), path)


class VolumeCache:
    """A small LRU cache of whole NIfTI volumes, so slice-wise reading decodes each file once.

    ``get`` returns the voxel array as stored (scaled to float only where the file has a
    slope/intercept) and its affine.
    """

    def __init__(self, max_volumes: int = 4) -> None:
        self.max_volumes = max_volumes
        self._items: OrderedDict[Path, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(data, affine) of the NIfTI file at ``path``."""
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        nib = load_nibabel()
        regular_input(path, DataError)
        try:
            img = nib.load(str(path))
            _check_nifti(path, img.shape, img.affine)
            data = np.asanyarray(img.dataobj)
            affine = np.asarray(img.affine, dtype=float)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: cannot read NIfTI ({exc}): replace or remove it") from exc
        if data.ndim == 2:
            data = data[:, :, None]
        self._items[path] = (data, affine)
        while len(self._items) > self.max_volumes:
            self._items.popitem(last=False)
        return data, affine

    def image_slice(self, path: Path, z: int) -> np.ndarray:
        """Slice ``z`` as ``float32`` ``(C, H, W)``."""
        data, _ = self.get(path)
        sl = data[:, :, z]
        sl = sl[None] if sl.ndim == 2 else np.moveaxis(sl, -1, 0)
        return np.ascontiguousarray(sl, dtype=np.float32)

    def mask_slice(self, path: Path, z: int) -> np.ndarray:
        """Slice ``z`` as ``int64`` ``(H, W)`` labels."""
        data, _ = self.get(path)
        sl = data[:, :, z]
        if sl.ndim == 3 and sl.shape[-1] == 1:
            sl = sl[..., 0]
        return _as_label_map(np.asarray(sl), path)

    def labels(self, path: Path) -> np.ndarray:
        """The distinct values of a whole label volume (for inferring the class count)."""
        data, _ = self.get(path)
        labels = _as_label_map(np.asarray(data).reshape(data.shape[0], -1), path)
        if labels.size and labels.min() >= 0 and labels.max() < 1 << 16:
            return np.flatnonzero(np.bincount(labels.ravel()))
        return np.unique(labels)


# ---------------------------------------------------------------------------------------------
# writing


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _with_suffix(path: Path, suffixes: tuple[str, ...]) -> Path:
    if any(path.name.lower().endswith(s) for s in suffixes):
        return path
    stem, _ = split_name(path)
    return path.with_name(stem + suffixes[0])


def _check_label_array(mask: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise DataError(
            f"{what}: mask shape {mask.shape} differs from the case's original size {shape}: "
            "map predictions back with restore_mask(mask, case) first"
        )
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise DataError(f"{what}: mask labels must lie in 0..65535 to be written")
    return mask


def write_mask(path: str | Path, mask: np.ndarray, like: Case) -> Path:
    """Write a predicted label mask in the format of the case it belongs to.

    2D inputs (PNG, JPEG, TIFF, BMP, phantom) give a PNG (8-bit, or 16-bit for more than 256
    labels); the suffix ``.png`` is used whatever ``path`` says. A slice of a NIfTI volume gives a
    one-slice NIfTI volume (``X, Y, 1``) whose affine is the source affine shifted to that
    slice, so it overlays the source exactly in any viewer; ``.nii.gz`` is appended unless
    ``path`` ends in ``.nii``/``.nii.gz``. To write a whole volume at once use
    :func:`write_volume_mask`. Returns the path written.
    """
    path = Path(path)
    shape = tuple(like.meta.get("original_shape", like.image.shape[1:]))
    mask = _check_label_array(mask, shape, like.case_id or str(path))
    if like.meta.get("format") == "nifti":
        nib = load_nibabel()
        affine = np.asarray(like.meta.get("affine", np.eye(4)), dtype=float)
        z = int(like.meta.get("slice_index") or 0)
        shift = np.eye(4)
        shift[2, 3] = z
        img = nib.Nifti1Image(mask.astype(np.uint16)[:, :, None], affine @ shift)
        return write_nifti(_with_suffix(path, (".nii.gz", ".nii")), img)
    dtype = np.uint8 if mask.max(initial=0) < 256 else np.uint16
    out = _with_suffix(path, (".png",))
    return atomic_write(out, _png_bytes(mask.astype(dtype)))


def write_volume_mask(path: str | Path, slices: Sequence[np.ndarray], like: Case) -> Path:
    """Reassemble per-slice predictions of one NIfTI volume into a label volume with the header
    of the file ``like`` was read from: its affine, zooms, qform/sform (and codes) and units
    (written by :func:`msnas_graph.data.volumes.write_label_volume`).

    ``slices`` are the ``(H, W)`` masks of slices ``0..Z-1`` in order; ``like`` is any case of
    that volume (its ``meta`` carries the slice count and size, its ``source`` the file).
    """
    if like.meta.get("format") != "nifti":
        raise DataError(f"{like.case_id}: write_volume_mask needs a NIfTI case; use write_mask")
    num = int(like.meta.get("num_slices") or 0)
    if len(slices) != num:
        raise DataError(
            f"{like.source}: got {len(slices)} slice masks for a volume of {num} slices: "
            "pass one mask per slice, in order"
        )
    shape = tuple(like.meta["original_shape"])
    vol = np.stack([_check_label_array(s, shape, like.case_id) for s in slices], axis=-1)
    reference = Path(like.source.rsplit("#z=", 1)[0])
    if not reference.is_file():
        raise DataError(
            f"{reference}: the volume case {like.case_id} was read from is missing; "
            "write_volume_mask copies its header, so keep the input file in place"
        )
    return write_label_volume(_with_suffix(Path(path), (".nii.gz", ".nii")), vol, reference)


#: Overlay colours for labels 1.. (label 0 is left uncoloured).
_PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 190),
    ],
    dtype=np.float32,
)


def write_overlay(
    path: str | Path, image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.45
) -> Path:
    """Write a PNG of the image (greyscale, or RGB for 3 channels) with labels ``>= 1`` tinted.

    ``image`` is ``(C, H, W)`` or ``(H, W)``, any intensity range (scaled by its 1st/99th
    percentiles); ``mask`` is ``(H, W)`` integer labels of the same size.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    mask = np.asarray(mask)
    if img.ndim != 3 or mask.shape != img.shape[1:]:
        raise DataError(
            f"{path}: overlay needs image (C, H, W) and mask (H, W) of the same size, got "
            f"{img.shape} and {mask.shape}"
        )
    rgb = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    lo, hi = np.percentile(rgb, [1, 99]) if rgb.size else (0.0, 1.0)
    scaled = np.clip((rgb - lo) / max(float(hi - lo), 1e-8), 0, 1) * 255.0
    rgb = np.moveaxis(scaled, 0, -1).astype(np.float32)
    labels = mask.astype(np.int64)
    fg = labels > 0
    if fg.any():
        colours = _PALETTE[(labels[fg] - 1) % len(_PALETTE)]
        rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colours
    out = _with_suffix(Path(path), (".png",))
    return atomic_write(out, _png_bytes(np.clip(rgb, 0, 255).astype(np.uint8)))

"""Numpy preprocessing: resizing image/mask pairs, intensity normalisation, light augmentation.

Images are ``(C, H, W)`` float arrays, masks ``(H, W)`` integer arrays. Images are resized
bilinearly (Pillow, antialiased when shrinking), masks by nearest neighbour with pixel-centre
alignment, so every output label is one of the input labels.

``mode="resize"`` stretches to the target size; ``mode="pad"`` (letterbox) scales by
``min(S_h / H, S_w / W)`` keeping the aspect ratio, then pads symmetrically (the extra pixel,
if any, at the bottom/right) with the image's per-channel minimum and mask label 0.
:func:`restore_mask` undoes either mode for predictions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from msnas_graph.errors import DataError

if TYPE_CHECKING:
    from msnas_graph.data.case import Case

__all__ = [
    "ResizeMode",
    "augment",
    "letterbox_geometry",
    "normalize_intensity",
    "preprocess",
    "resize_image",
    "resize_mask",
    "resize_pair",
    "restore_mask",
]

ResizeMode = Literal["resize", "pad"]


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        out = (int(size), int(size))
    else:
        out = (int(size[0]), int(size[1]))
    if min(out) < 1:
        raise DataError(f"target size {size} must be positive")
    return out


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W)`` label map (pixel-centre aligned).

    >>> resize_mask(np.array([[0, 1], [2, 3]]), (4, 4))[:, 0].tolist()
    [0, 0, 2, 2]
    """
    h, w = mask.shape
    th, tw = shape
    rows = np.minimum(((np.arange(th) + 0.5) * h / th).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(tw) + 0.5) * w / tw).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``(C, H, W)`` image to ``shape = (h, w)``, float32."""
    from PIL import Image

    th, tw = shape
    if image.shape[1:] == (th, tw):
        return np.asarray(image, dtype=np.float32)
    out = np.empty((image.shape[0], th, tw), dtype=np.float32)
    for c in range(image.shape[0]):
        pil = Image.fromarray(np.ascontiguousarray(image[c], dtype=np.float32))
        out[c] = np.asarray(pil.resize((tw, th), Image.Resampling.BILINEAR))
    return out


def letterbox_geometry(
    shape: tuple[int, int], size: int | tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)`` of the keep-aspect resize inside ``size`` for ``mode="pad"``.

    >>> letterbox_geometry((216, 320), 64)
    (43, 64, 10, 0)
    """
    th, tw = _size2(size)
    h, w = shape
    scale = min(th / h, tw / w)
    nh = min(th, max(1, round(h * scale)))
    nw = min(tw, max(1, round(w * scale)))
    return nh, nw, (th - nh) // 2, (tw - nw) // 2


def resize_pair(
    image: np.ndarray,
    mask: np.ndarray | None,
    size: int | tuple[int, int],
    mode: ResizeMode = "resize",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an image (bilinear) and its mask (nearest) to ``size``, stretching or letterboxing.

    >>> img, m = resize_pair(np.zeros((1, 20, 40)), np.ones((20, 40), dtype=np.int64), 16, "pad")
    >>> img.shape, m.shape, m[0, 0], m[8, 8]
    ((1, 16, 16), (16, 16), np.int64(0), np.int64(1))
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise DataError(f"image of shape {image.shape} must be (C, H, W)")
    if mask is not None and mask.shape != image.shape[1:]:
        raise DataError(
            f"mask shape {mask.shape} differs from image size {image.shape[1:]}: "
            "pass a mask of the image's size"
        )
    th, tw = _size2(size)
    if mode == "resize":
        out_mask = None if mask is None else resize_mask(mask, (th, tw))
        return resize_image(image, (th, tw)), out_mask
    if mode != "pad":
        raise DataError(f"unknown resize mode '{mode}' (known: pad, resize)")
    nh, nw, top, left = letterbox_geometry(image.shape[1:], (th, tw))
    small = resize_image(image, (nh, nw))
    fill = image.reshape(image.shape[0], -1).min(axis=1) if image.size else np.zeros(1)
    out = np.empty((image.shape[0], th, tw), dtype=np.float32)
    out[:] = fill.astype(np.float32)[:, None, None]
    out[:, top : top + nh, left : left + nw] = small
    if mask is None:
        return out, None
    out_mask = np.zeros((th, tw), dtype=mask.dtype)
    out_mask[top : top + nh, left : left + nw] = resize_mask(mask, (nh, nw))
    return out, out_mask


def normalize_intensity(image: np.ndarray) -> np.ndarray:
    """Per-channel robust z-score: clip to the 0.5/99.5 percentiles, subtract mean, divide std.

    A constant channel becomes all zeros (no division by zero).

    >>> x = normalize_intensity(np.arange(16.0).reshape(1, 4, 4))
    >>> round(float(x.mean()), 6), round(float(x.std()), 3)
    (0.0, 1.0)
    >>> normalize_intensity(np.full((1, 3, 3), 7.0)).max()
    np.float32(0.0)
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        ch = image[c].astype(np.float64)
        lo, hi = np.percentile(ch, [0.5, 99.5])
        ch = np.clip(ch, lo, hi)
        std = ch.std()
        out[c] = (ch - ch.mean()) / std if std > 1e-8 * max(1.0, abs(hi)) else 0.0
    return out


def augment(
    image: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    *,
    max_rotation: float = 15.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    flips: bool = True,
    intensity: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Light random augmentation of a ``(C, H, W)`` image and its mask (same geometry).

    Horizontal and vertical flips (each p = 0.5), a rotation within ``+-max_rotation`` degrees
    and isotropic scale within ``scale_range`` about the centre (``scipy.ndimage``: order 1 for
    the image, padding with the channel minimum; order 0 for the mask, padding with 0), then
    (``intensity=True``) gamma in [0.7, 1.5] on the min-max range, contrast x[0.9, 1.1] and a
    brightness shift of N(0, 0.1) std. Inputs are not modified; the mask keeps only labels
    that were in it. Same ``rng`` state, same result.
    """
    from scipy import ndimage

    img = np.array(image, dtype=np.float32, copy=True)
    m = None if mask is None else np.array(mask, copy=True)
    if flips:
        for axis in (2, 1):
            if rng.random() < 0.5:
                img = np.flip(img, axis=axis)
                if m is not None:
                    m = np.flip(m, axis=axis - 1)
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    scale = rng.uniform(*scale_range)
    if abs(angle) > 1e-6 or abs(scale - 1.0) > 1e-6:
        h, w = img.shape[1:]
        centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
        cos, sin = np.cos(angle), np.sin(angle)
        matrix = np.array([[cos, -sin], [sin, cos]]) / scale  # output -> input coordinates
        offset = centre - matrix @ centre
        img = np.stack(
            [
                ndimage.affine_transform(
                    ch, matrix, offset, order=1, mode="constant", cval=float(ch.min())
                )
                for ch in img
            ]
        ).astype(np.float32)
        if m is not None:
            m = ndimage.affine_transform(m, matrix, offset, order=0, mode="constant", cval=0)
    if intensity:
        for c in range(img.shape[0]):
            ch = img[c]
            lo, hi = float(ch.min()), float(ch.max())
            if hi - lo > 1e-8:
                gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
                ch = ((ch - lo) / (hi - lo)) ** gamma * (hi - lo) + lo
            mean, std = float(ch.mean()), float(ch.std())
            ch = (ch - mean) * rng.uniform(0.9, 1.1) + mean + rng.normal(0.0, 0.1) * std
            img[c] = ch
    img = np.ascontiguousarray(img, dtype=np.float32)
    return img, (None if m is None else np.ascontiguousarray(m))


def preprocess(
    case: Case, size: int | tuple[int, int], mode: ResizeMode = "resize"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise (:func:`normalize_intensity`) then resize/letterbox a case for a network.

    Returns ``(image float32 (C, S, S), mask int64 (S, S) or None)``.
    """
    image = normalize_intensity(case.image)
    img, mask = resize_pair(image, case.mask, size, mode)
    return img.astype(np.float32, copy=False), (
        None if mask is None else mask.astype(np.int64, copy=False)
    )


def restore_mask(mask_small: np.ndarray, case: Case, mode: ResizeMode = "resize") -> np.ndarray:
    """Map a mask predicted on :func:`preprocess` output back to the case's original size.

    ``mode`` must be the one given to :func:`preprocess`. Nearest-neighbour, so labels are kept.
    """
    shape = tuple(case.meta.get("original_shape", case.image.shape[1:]))
    h, w = int(shape[0]), int(shape[1])
    mask_small = np.asarray(mask_small)
    if mask_small.ndim != 2:
        raise DataError(f"{case.case_id}: predicted mask of shape {mask_small.shape} must be 2D")
    if mode == "resize":
        return resize_mask(mask_small, (h, w))
    if mode != "pad":
        raise DataError(f"unknown resize mode '{mode}' (known: pad, resize)")
    nh, nw, top, left = letterbox_geometry((h, w), mask_small.shape)
    return resize_mask(mask_small[top : top + nh, left : left + nw], (h, w))

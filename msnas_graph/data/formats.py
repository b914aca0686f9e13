"""File names and formats, the optional readers behind them, and NIfTI bytes on disk.

The lowest layer of :mod:`msnas_graph.data`: :mod:`.readers` (reading and writing masks) and
:mod:`.volumes` (whole NIfTI volumes) both build on it, and it imports neither. nibabel and
tifffile are imported inside :func:`load_nibabel` and :func:`load_tifffile`, so importing this
module is cheap.

>>> split_name("images/liver_003_0000.nii.gz"), file_format("x.JPG")
(('liver_003_0000', '.nii.gz'), 'jpeg')
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from msnas_graph._util import atomic_write
from msnas_graph.errors import DataError

__all__ = [
    "IMAGE_FORMATS",
    "NIFTI_SUFFIXES",
    "file_format",
    "load_nibabel",
    "load_tifffile",
    "split_name",
    "write_nifti",
]

#: File suffix -> format name, for the 2D formats read by Pillow/tifffile.
IMAGE_FORMATS: dict[str, str] = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
}
#: The suffixes of a NIfTI file (``.nii.gz`` is one suffix).
NIFTI_SUFFIXES = (".nii.gz", ".nii")

_NIBABEL_HINT = "install nibabel (pip install 'msnas-graph[data]') to read NIfTI files"


def split_name(path: str | Path) -> tuple[str, str]:
    """Split a file name into stem and suffix, treating ``.nii.gz`` as one suffix.

    >>> split_name("images/liver_003_0000.nii.gz")
    ('liver_003_0000', '.nii.gz')
    >>> split_name("010_2HC.PNG")
    ('010_2HC', '.png')
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], suffix
    p = Path(name)
    return p.stem, p.suffix.lower()


def file_format(path: str | Path) -> str | None:
    """The format name of a readable file (``png``, ``tiff``, ``jpeg``, ``bmp``, ``nifti``).

    Returns ``None`` for anything else (including hidden files such as macOS ``._x.png``).

    >>> file_format("a/b.nii.gz"), file_format("x.JPG"), file_format("notes.txt")
    ('nifti', 'jpeg', None)
    """
    name = Path(path).name
    if name.startswith("."):
        return None
    _, suffix = split_name(name)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    return IMAGE_FORMATS.get(suffix)


def load_tifffile() -> Any | None:
    """The ``tifffile`` module, or ``None`` where it is not installed (Pillow reads plain
    TIFFs).

    >>> load_tifffile() is None or load_tifffile().__name__ == "tifffile"
    True
    """
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is installed in dev
        return None
    return tifffile


def load_nibabel() -> Any:
    """The ``nibabel`` module, or a one-line :class:`~msnas_graph.errors.DataError` saying how
    to install it.

    >>> load_nibabel().__name__
    'nibabel'
    """
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - nibabel is installed in dev
        raise DataError(f"cannot read NIfTI: {_NIBABEL_HINT}") from exc
    return nibabel


def write_nifti(path: Path, img: Any) -> Path:
    """Write the nibabel image ``img`` to ``path`` atomically, gzip-compressed where ``path``
    ends in ``.gz``. Returns ``path``.

    >>> import tempfile
    >>> import numpy as np
    >>> nib = load_nibabel()
    >>> img = nib.Nifti1Image(np.zeros((4, 3, 2), np.uint8), np.eye(4))
    >>> out = write_nifti(Path(tempfile.mkdtemp()) / "m.nii.gz", img)
    >>> nib.load(out).shape
    (4, 3, 2)
    """
    data = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    return atomic_write(path, data)

"""One segmentation sample (:class:`Case`) and the grouping rule of 2D file names.

Kept apart from the dataset machinery so that the readers, the transforms, the phantom and the
datasets can all name :class:`Case` without importing one another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Case", "group_key"]

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

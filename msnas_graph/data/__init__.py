"""Datasets, preprocessing and splits (numpy only, no torch).

Importing this package is cheap: Pillow, scipy, tifffile and nibabel are imported inside the
functions that need them.

>>> from msnas_graph.data import load_dataset, preprocess
>>> ds = load_dataset("phantom:2")
>>> image, mask = preprocess(ds[0], 32)
>>> image.shape, mask.shape, image.dtype.name, mask.dtype.name
((1, 32, 32), (32, 32), 'float32', 'int64')
"""

from msnas_graph.data.case import Case, group_key
from msnas_graph.data.dataset import SegmentationDataset
from msnas_graph.data.phantom import ORGANS, phantom_case, phantom_dataset
from msnas_graph.data.readers import (
    file_format,
    read_image_2d,
    read_mask_2d,
    write_mask,
    write_overlay,
    write_volume_mask,
)
from msnas_graph.data.sources import load_dataset
from msnas_graph.data.splits import group_kfold, load_folds, train_val_test_split
from msnas_graph.data.transforms import (
    augment,
    letterbox_geometry,
    normalize_intensity,
    preprocess,
    resize_image,
    resize_mask,
    resize_pair,
    restore_mask,
)

__all__ = [
    "ORGANS",
    "Case",
    "SegmentationDataset",
    "augment",
    "file_format",
    "group_key",
    "group_kfold",
    "letterbox_geometry",
    "load_dataset",
    "load_folds",
    "normalize_intensity",
    "phantom_case",
    "phantom_dataset",
    "preprocess",
    "read_image_2d",
    "read_mask_2d",
    "resize_image",
    "resize_mask",
    "resize_pair",
    "restore_mask",
    "train_val_test_split",
    "write_mask",
    "write_overlay",
    "write_volume_mask",
]

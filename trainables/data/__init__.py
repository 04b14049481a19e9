"""The data layer: datasets behind one interface, a decoded image cache, group-aware folds, EDA.

Numpy, PIL, OpenCV, pandas and scikit-learn only; no torch, so every stage may import it.

Example:
    >>> from trainables.data import load_dataset, decoded_images, folds_for
    >>> ds = load_dataset("synthetic")               # or "synthetic-factors", or a dataset directory
    >>> imgs = decoded_images(ds, "train", size=128)  # (N, 128, 128, 3) uint8, read-only memmap
    >>> folds = folds_for(ds, k=5, seed=0)            # image_path,target,group,fold,duplicate,...
    >>> folds.attrs["grouping"]["rule"]               # how groups were found: "families", "rows", ...

Leakage groups default to ``group_pattern="auto"`` (file-name families such as ``photo-1``,
``photo-2`` when they look like groups); ``"none"`` or ``None`` keeps every row alone.
"""

from __future__ import annotations

from ._cache import cache_path, cache_sidecar, cache_stats, decoded_images
from ._dataset import BUILTIN_SETS, Dataset, load_dataset
from ._dedup import find_duplicates
from ._errors import BadDataError, DataFormatError
from ._folds import (
    fold_indices,
    folds_for,
    folds_hash,
    make_folds,
    read_folds,
    write_folds,
)
from ._groups import (
    GROUP_PATTERNS,
    SKETCHY_GROUP_PATTERN,
    Grouping,
    base_groups,
    describe_grouping,
    resolve_groups,
)
from ._images import fit_square, read_rgb
from ._inspect import inspect_dataset
from ._objects import find_objects, object_crops, split_objects, with_object_crops
from ._synthetic import ensure_synthetic, generate_synthetic, synthetic_meta
from ._synthetic_factors import ensure_synthetic_factors, generate_synthetic_factors, synthetic_factors_meta

__all__ = [
    "BUILTIN_SETS",
    "GROUP_PATTERNS",
    "SKETCHY_GROUP_PATTERN",
    "BadDataError",
    "DataFormatError",
    "Dataset",
    "Grouping",
    "base_groups",
    "cache_path",
    "cache_sidecar",
    "cache_stats",
    "decoded_images",
    "describe_grouping",
    "ensure_synthetic",
    "ensure_synthetic_factors",
    "find_duplicates",
    "find_objects",
    "fit_square",
    "fold_indices",
    "folds_for",
    "folds_hash",
    "generate_synthetic",
    "generate_synthetic_factors",
    "inspect_dataset",
    "load_dataset",
    "make_folds",
    "object_crops",
    "read_folds",
    "read_rgb",
    "resolve_groups",
    "split_objects",
    "synthetic_factors_meta",
    "synthetic_meta",
    "with_object_crops",
    "write_folds",
]

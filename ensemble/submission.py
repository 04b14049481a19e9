"""The submission file: ``ID,image_path,target`` in test.csv order, as single models and ensembles write it."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.io import atomic_path

__all__ = ["write_submission"]


def write_submission(
    path: str | Path, image_paths: Sequence[str], labels: np.ndarray | Sequence[int]
) -> Path:
    """Write a submission: ``ID,image_path,target`` in test.csv order, atomically.

    ``ID`` is the row number and ``target`` the class index (``classes[target]`` is its name),
    as train.csv's ``target`` column. Single models (the OOF stage) and ensembles write the same file.

    Args:
        path: Destination CSV.
        image_paths: test.csv's ``image_path`` column, in order.
        labels: Predicted class index per test row.

    Returns:
        ``path``.

    Raises:
        ValueError: The two columns differ in length.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(image_paths) != len(labels):
        raise ValueError(f"{len(image_paths)} test image paths but {len(labels)} predictions")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "image_path", "target"])
        writer.writerows((i, p, int(t)) for i, (p, t) in enumerate(zip(image_paths, labels, strict=True)))
    return Path(path)

"""Which training rows a trial fits and which it validates on: the fold, duplicates, class balance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainables.config import train_on_all
from trainables.loader import balanced_index

DUPLICATE_COLUMNS = ("duplicate", "is_duplicate")


@dataclass(frozen=True)
class TrialRows:
    """Row positions (into the train split, train.csv order) of one trial.

    Attributes:
        train_rows: Training positions, originals first, then fill copies.
        train_labels: Their targets.
        train_kinds: ``ORIGINAL`` / ``FLIP_COPY`` / ``RANDAUG_COPY`` per position.
        val_rows: Validation positions (empty when training on all rows).
        val_labels: Their targets.
        dropped_duplicates: Training rows removed by ``aug.del_flip``.
    """

    train_rows: np.ndarray
    train_labels: np.ndarray
    train_kinds: np.ndarray
    val_rows: np.ndarray
    val_labels: np.ndarray
    dropped_duplicates: np.ndarray


def duplicate_mask(folds: pd.DataFrame) -> np.ndarray:
    """Rows the data layer marked as duplicates to drop (all but one of each duplicate set).

    Raises:
        KeyError: The folds table has no duplicate column (the data layer's contract changed).
    """
    for column in DUPLICATE_COLUMNS:
        if column in folds.columns:
            return folds[column].fillna(False).astype(bool).to_numpy()
    raise KeyError(
        f"folds table has no duplicate marker column ({DUPLICATE_COLUMNS}); columns: {list(folds.columns)}"
    )


def trial_rows(config: dict[str, Any], folds: pd.DataFrame) -> TrialRows:
    """Split the folds table into this trial's training and validation rows.

    ``aug.del_flip`` drops the marked duplicates from the training rows only, so validation
    scores stay comparable across the flag. ``aug.balance`` then fills short classes up to the
    largest (copies flipped, or RandAugment-style with ``aug.randaug_balance``).

    Args:
        config: Resolved trial config.
        folds: ``folds_for(...)`` output, in train.csv order.

    Returns:
        The trial's rows.
    """
    targets = folds["target"].to_numpy(dtype=np.int64)
    positions = np.arange(len(folds))
    if train_on_all(config):
        is_val = np.zeros(len(folds), dtype=bool)
    else:
        is_val = folds["fold"].to_numpy() == int(config["fold"])
        if not is_val.any():
            raise ValueError(
                f"fold {config['fold']} has no rows; folds present: {sorted(folds['fold'].unique())}"
            )
    train_mask = ~is_val
    dropped = np.zeros(0, dtype=np.int64)
    if config["aug"]["del_flip"]:
        dup = duplicate_mask(folds) & train_mask
        dropped = positions[dup]
        train_mask &= ~dup
    rows, labels = positions[train_mask], targets[train_mask]
    aug = config["aug"]
    if aug["balance"] or aug["randaug_balance"]:
        rows, labels, kinds = balanced_index(rows, labels, bool(aug["randaug_balance"]), int(config["seed"]))
    else:
        kinds = np.zeros(len(rows), dtype=np.int8)
    return TrialRows(rows, labels, kinds, positions[is_val], targets[is_val], dropped)

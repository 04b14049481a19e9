"""Which training rows a trial fits and which it validates on: the fold, duplicates, class balance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
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


def config_folds(config: Mapping[str, Any]) -> tuple[Any, pd.DataFrame]:
    """The dataset and its folds as a trial config names them (data, skip_bad, k, folds_seed,
    group_pattern, group_column): the one place a config becomes folds.

    Returns:
        ``(dataset, folds_for(...) output)``.
    """
    from trainables.data import folds_for, load_dataset

    ds = load_dataset(config["data"], skip_bad=bool(config.get("skip_bad", False)))
    folds = folds_for(ds, k=int(config["k"]), seed=int(config["folds_seed"]),
                      group_pattern=config["group_pattern"], group_column=config.get("group_column"))  # fmt: skip
    return ds, folds


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


def pseudo_rows(path: str, ds: Any, fold: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Test positions and labels of a pseudo-label CSV (``image_path,target``, as ``search.pseudo`` writes).

    A ``{fold}`` in the path is replaced by the trial's validation fold (``-1`` when training on
    every row), so each fold can read labels made without its own validation rows.

    Raises:
        ValueError: The data set has no test split, the CSV lacks a column, names an image that
            is not in test.csv, or a target outside the classes.
    """
    path = path.replace("{fold}", str(-1 if fold is None else int(fold)))
    if ds.test is None:
        raise ValueError(f"pseudo_labels={path}: the data set {ds.name} has no test split to take rows from")
    table = pd.read_csv(path)
    missing = {"image_path", "target"} - set(table.columns)
    if missing:
        raise ValueError(f"pseudo_labels={path}: missing columns {sorted(missing)} (need image_path,target)")
    position = {p: i for i, p in enumerate(ds.test["image_path"].astype(str))}
    unknown = [p for p in table["image_path"].astype(str) if p not in position]
    if unknown:
        raise ValueError(
            f"pseudo_labels={path}: {len(unknown)} image_path values are not in test.csv, e.g. {unknown[:3]}"
        )
    targets = table["target"].to_numpy(dtype=np.int64)
    if len(targets) and (targets.min() < 0 or targets.max() >= len(ds.classes)):
        raise ValueError(f"pseudo_labels={path}: targets must lie in [0, {len(ds.classes)})")
    rows = np.array([position[p] for p in table["image_path"].astype(str)], dtype=np.int64)
    return rows, targets


def with_pseudo_labels(config: dict[str, Any], ds: Any, rows: TrialRows) -> TrialRows:
    """The trial's rows with the pseudo-labelled test rows (``config["pseudo_labels"]``) added to training.

    Test rows join the training side only, as originals; validation stays train.csv rows. Their
    positions run on after the train split's (``len(ds.train) + i``), the order in which a trainable
    stacks the two decoded caches (:class:`trainables.loader.StackedImages`). Without
    ``pseudo_labels`` the rows come back unchanged.
    """
    if not config.get("pseudo_labels"):
        return rows
    fold = None if train_on_all(config) else int(config["fold"])
    test_rows, test_labels = pseudo_rows(config["pseudo_labels"], ds, fold)
    return replace(
        rows,
        train_rows=np.concatenate([rows.train_rows, len(ds.train) + test_rows]),
        train_labels=np.concatenate([rows.train_labels, test_labels]),
        train_kinds=np.concatenate([rows.train_kinds, np.zeros(len(test_rows), rows.train_kinds.dtype)]),
    )

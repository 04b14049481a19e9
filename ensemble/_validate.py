"""Checks an OOF artifact's arrays must pass: before they are written and before they are combined.

Needs only numpy. :mod:`ensemble.artifacts` runs :func:`checked_arrays` before writing and
:mod:`ensemble._compat` runs :func:`probability_problems` over every artifact it is asked to combine,
so both ends refuse the same things with the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DeterministicError

# float16 keeps ~3 significant digits; rounding 500 probabilities can move a row sum by up to
# ~5e-4, so 1e-3 accepts honest float16 softmax rows and still refuses logits or unnormalised scores.
SUM_TOLERANCE = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-4}
_CHECK_CHUNK_ROWS = 4096


class ArtifactError(DeterministicError, ValueError):
    """An artifact is malformed, incomplete or missing."""


class IncompatibleArtifactsError(ArtifactError):
    """Artifacts cannot be combined: rows, classes, folds or probabilities disagree or are invalid."""


class ArtifactWarning(UserWarning):
    """An artifact was skipped (incomplete) or excluded (no test probabilities)."""


@dataclass(frozen=True)
class CheckedArrays:
    """A writer's inputs once validated, in the dtypes they are stored in.

    Attributes:
        classes: Class names in column order.
        oof: (n_train, C) out-of-fold probabilities.
        targets: (n_train,) int64 class index per train row.
        folds: (n_train,) int64 validation fold per train row.
        test: (n_test, C) test probabilities, or None.
    """

    classes: list[str]
    oof: np.ndarray
    targets: np.ndarray
    folds: np.ndarray
    test: np.ndarray | None


def checked_arrays(
    model_id: str,
    *,
    oof: Any,
    targets: Any,
    folds: Any,
    classes: Sequence[str],
    test: Any,
    test_image_paths: Sequence[str] | None,
    dtype: np.dtype,
    names: tuple[str, str],
) -> CheckedArrays:
    """Validate a writer's inputs and cast the probabilities to ``dtype``.

    Args:
        model_id: The model, named in every message.
        oof: (n_train, C) out-of-fold probabilities.
        targets: (n_train,) class index per train row.
        folds: (n_train,) validation fold per train row (at least two folds).
        classes: Class names in column order.
        test: (n_test, C) test probabilities, or None.
        test_image_paths: test.csv's ``image_path`` column; as many entries as ``test`` has rows.
        dtype: Storage dtype of the probabilities: float16 or float32.
        names: The file names of the OOF and test probabilities, for messages.

    Returns:
        The validated arrays.

    Raises:
        ArtifactError: When shapes, labels, folds or probabilities are invalid.
    """
    if dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ArtifactError(f"dtype must be float16 or float32, got {dtype}")
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    if n_classes < 2 or len(set(classes)) != n_classes:
        raise ArtifactError(f"{model_id}: classes must hold at least two distinct names, got {n_classes}")

    oof_arr = _as_prob_matrix(oof, "oof", model_id, n_classes).astype(dtype, copy=False)
    targets_arr, folds_arr = _checked_labels(model_id, targets, folds, oof_arr.shape[0], n_classes)
    test_arr = None
    if test is not None:
        test_arr = _as_prob_matrix(test, "test", model_id, n_classes).astype(dtype, copy=False)
        if test_image_paths is None or len(test_image_paths) != test_arr.shape[0]:
            got = None if test_image_paths is None else len(test_image_paths)
            raise ArtifactError(
                f"{model_id}: test has {test_arr.shape[0]} rows, so test_image_paths needs as many "
                f"entries (test.csv's image_path column, in order); got {got}"
            )
    problems = probability_problems(model_id, names[0], oof_arr)
    if test_arr is not None:
        problems += probability_problems(model_id, names[1], test_arr)
    if problems:
        raise ArtifactError("refusing to write invalid probabilities:\n  " + "\n  ".join(problems))
    return CheckedArrays(classes=classes, oof=oof_arr, targets=targets_arr, folds=folds_arr, test=test_arr)


def _checked_labels(
    model_id: str, targets: Any, folds: Any, n_train: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Targets in ``[0, n_classes)`` and at least two non-negative folds, one of each per train row."""
    targets_arr = _as_index_vector(targets, "targets", model_id, n_train)
    if targets_arr.size and (targets_arr.min() < 0 or targets_arr.max() >= n_classes):
        raise ArtifactError(
            f"{model_id}: targets must lie in [0, {n_classes}), got {targets_arr.min()}..{targets_arr.max()}"
        )
    folds_arr = _as_index_vector(folds, "folds", model_id, n_train)
    if folds_arr.size and folds_arr.min() < 0:
        raise ArtifactError(f"{model_id}: fold indices must be >= 0")
    if np.unique(folds_arr).size < 2:
        raise ArtifactError(f"{model_id}: folds must hold at least two folds (out-of-fold needs a split)")
    return targets_arr, folds_arr


def _as_prob_matrix(x: Any, name: str, model_id: str, n_classes: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != n_classes:
        raise ArtifactError(
            f"{model_id}: {name} must have shape (rows, {n_classes}) to match classes, got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ArtifactError(f"{model_id}: {name} must hold floating-point probabilities, got {arr.dtype}")
    return arr


def _as_index_vector(x: Any, name: str, model_id: str, n_rows: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ArtifactError(
            f"{model_id}: {name} must have shape ({n_rows},) like oof's rows, got {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
        raise ArtifactError(f"{model_id}: {name} must be integers, got {arr.dtype}")
    return arr.astype(np.int64)


def probability_problems(model_id: str, name: str, probs: np.ndarray) -> list[str]:
    """Problems with one probability matrix (NaN/inf, negatives, rows not summing to 1); empty if fine.

    One chunked pass, upcast to float32 a block at a time, so a memory-mapped float16 file is
    never copied whole.

    Args:
        model_id: The model, named in every message.
        name: The matrix's file name, named in every message.
        probs: (rows, C) probabilities.

    Returns:
        One line per kind of problem.
    """
    tol = SUM_TOLERANCE.get(np.dtype(probs.dtype), 1e-4)
    bad_finite: list[int] = []
    n_bad_finite = 0
    worst: tuple[float, int, float] | None = None  # (|sum - 1|, row, sum)
    n_bad_sum = 0
    n_negative = 0
    for start in range(0, probs.shape[0], _CHECK_CHUNK_ROWS):
        block = np.asarray(probs[start : start + _CHECK_CHUNK_ROWS], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            n_bad_finite += rows.size
            bad_finite.extend((rows[:3] + start).tolist())
        n_negative += int((block < 0).any(axis=1).sum())
        # float64 accumulation: the sum of 500 float32 terms must not add its own error.
        sums = block.sum(axis=1, dtype=np.float64)
        off = np.abs(sums - 1.0)
        off[~finite] = 0.0
        over = off > tol
        if over.any():
            n_bad_sum += int(over.sum())
            i = int(np.argmax(off))
            if worst is None or off[i] > worst[0]:
                worst = (float(off[i]), start + i, float(sums[i]))
    problems = []
    if n_bad_finite:
        problems.append(
            f"model {model_id!r}: {name} has NaN/inf in {n_bad_finite} row(s) (first rows {bad_finite[:3]})"
        )
    if n_negative:
        problems.append(f"model {model_id!r}: {name} has negative probabilities in {n_negative} row(s)")
    if worst is not None:
        problems.append(
            f"model {model_id!r}: {name} rows must sum to 1 (tolerance {tol:g} for {probs.dtype}); "
            f"{n_bad_sum} row(s) do not, worst row {worst[1]} sums to {worst[2]:.6g} "
            "(store softmax probabilities, not logits or scores)"
        )
    return problems

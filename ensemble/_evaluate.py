"""Honest estimates: every method scored in-sample and by nested CV over the OOF rows.

In-sample: fit on all OOF rows, score on the same rows (what a weight search reports and what
it overfits). Nested: for each fold f of the models' own folds, fit on the rows of the other
folds and score on fold f's rows only; the mean and spread across folds estimate how the
method does on rows it never saw, which is the number to choose a method by.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone

from ensemble._base import EnsembleMethod
from ensemble._metrics import METRICS, check_metric
from ensemble._stack import ProbStack

__all__ = ["MethodResult", "evaluate_method", "nested_cv", "pick_winner"]


@dataclass
class MethodResult:
    """One method's fit on all rows and its scores.

    Attributes:
        name: Registry name (or a label).
        method: The method fitted on all OOF rows (used for the test predictions).
        metric: Metric of every score here.
        in_sample: Score on the rows it was fit on.
        fold_scores: Nested CV: score on each held-out fold.
        fold_weights: Nested CV: the weights (or importances) fitted without each fold.
        fit_seconds: Time of the fit on all rows.
        nested_seconds: Time of the nested CV.
    """

    name: str
    method: EnsembleMethod
    metric: str
    in_sample: float
    fold_scores: list[float] = field(default_factory=list)
    fold_weights: list[np.ndarray] = field(default_factory=list)
    fit_seconds: float = 0.0
    nested_seconds: float = 0.0

    @property
    def nested_mean(self) -> float | None:
        return float(np.mean(self.fold_scores)) if self.fold_scores else None

    @property
    def nested_std(self) -> float | None:
        return float(np.std(self.fold_scores)) if self.fold_scores else None

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self.method.weights_)


def nested_cv(
    method: EnsembleMethod,
    stack: ProbStack,
    y: np.ndarray,
    folds: np.ndarray,
    metric: str,
    on_fold: Callable[[int, int], None] | None = None,
) -> tuple[list[float], list[np.ndarray]]:
    """Score ``method`` on each fold after fitting a fresh clone on the other folds' rows.

    Args:
        method: An (unfitted) ensemble method; it is cloned per fold.
        stack: All OOF rows.
        y: (N,) true class per row.
        folds: (N,) fold per row (the models' folds).
        metric: Metric of the held-out scores.
        on_fold: Called as ``on_fold(i, n_folds)`` before each fold (progress reporting).

    Returns:
        Held-out score per fold (in sorted fold order) and the weights fitted per fold.
    """
    check_metric(metric)
    folds = np.asarray(folds)
    if folds.shape != (stack.n_rows,):
        raise ValueError(f"folds must have shape ({stack.n_rows},), got {folds.shape}")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("nested CV needs at least two folds")
    scores, weights = [], []
    for i, f in enumerate(fold_ids):
        if on_fold is not None:
            on_fold(i, fold_ids.size)
        fit_rows = np.flatnonzero(folds != f)
        held_rows = np.flatnonzero(folds == f)
        est = clone(method)
        est.fit(stack.subset(fit_rows), y[fit_rows], folds=folds[fit_rows])
        scores.append(float(est.score(stack.subset(held_rows), y[held_rows], metric=metric)))
        weights.append(np.asarray(est.weights_))
    return scores, weights


def evaluate_method(
    method: EnsembleMethod,
    stack: ProbStack,
    y: np.ndarray,
    folds: np.ndarray,
    metric: str,
    *,
    nested: bool = True,
    name: str | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> MethodResult:
    """Fit ``method`` on all rows, score it in-sample and (optionally) by nested CV.

    Args:
        method: An unfitted ensemble method; it is fitted in place on all rows.
        stack: All OOF rows.
        y: (N,) true class per row.
        folds: (N,) fold per row (the models' folds).
        metric: Metric of every score.
        nested: Also run the nested CV.
        name: Label in reports; defaults to the method's registry name.
        on_fold: Progress callback passed to :func:`nested_cv`.

    Returns:
        The method's result.
    """
    start = time.perf_counter()
    method.fit(stack, y, folds=folds)
    fit_seconds = time.perf_counter() - start
    in_sample = float(method.score(stack, y, metric=metric))
    result = MethodResult(name or method.name, method, metric, in_sample, fit_seconds=fit_seconds)
    if nested:
        start = time.perf_counter()
        result.fold_scores, result.fold_weights = nested_cv(method, stack, y, folds, metric, on_fold=on_fold)
        result.nested_seconds = time.perf_counter() - start
    return result


def pick_winner(results: list[MethodResult], metric: str) -> MethodResult:
    """The method with the best nested estimate (in-sample when nested CV was skipped).

    Ties go to the earlier result, so list simple baselines first and a complex method must
    beat them to win.
    """
    if not results:
        raise ValueError("no results to choose from")
    sign = 1.0 if METRICS[metric] else -1.0

    def key(r: MethodResult) -> float:
        value = r.nested_mean if r.nested_mean is not None else r.in_sample
        return sign * value

    best = results[0]
    for r in results[1:]:
        if key(r) > key(best):
            best = r
    return best

"""Metrics and the vectorised objective the weight searches call.

Values are in their natural direction (accuracy and macro-F1 up, log-loss down); searches
compare with :func:`better`. Ties on a stepped metric (accuracy moves in 1/N steps) are broken
by log-loss, which is smooth, so the weights kept are the most confident among equals.
"""

from __future__ import annotations

import numpy as np

from common.metrics import accuracy
from ensemble._stack import ProbStack

__all__ = [
    "LOGLOSS_EPS",
    "METRICS",
    "BestTracker",
    "Objective",
    "argbest",
    "better",
    "check_metric",
    "score_labels",
    "score_proba",
]

# Greater is better, per metric.
METRICS: dict[str, bool] = {"accuracy": True, "f1": True, "logloss": False}
# Probabilities are clipped here before the log: float16 stores anything below ~6e-8 as 0.
LOGLOSS_EPS = 1e-15


def check_metric(metric: str) -> str:
    """Return ``metric`` if known, else raise listing the valid names."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    return metric


def better(a: float, b: float | None, metric: str) -> bool:
    """Whether value ``a`` is strictly better than ``b`` (None: anything beats it)."""
    if b is None or np.isnan(b):
        return not np.isnan(a)
    return a > b if METRICS[metric] else a < b


def macro_f1(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes present in ``y`` or ``pred`` (scikit-learn's ``average='macro'``).

    The weight searches' hot loop scores thousands of label vectors; three bincounts are ~200x
    faster than ``sklearn.metrics.f1_score`` (0.13 ms vs 26 ms at 15,000 rows x 500 classes) and
    equal to it (tests/common/test_metrics.py).
    Reports use :func:`common.metrics.macro_f1`.
    """
    n_true = np.bincount(y, minlength=n_classes)
    n_pred = np.bincount(pred, minlength=n_classes)
    tp = np.bincount(y[pred == y], minlength=n_classes)
    present = (n_true + n_pred) > 0
    return float(np.mean(2.0 * tp[present] / (n_true + n_pred)[present]))


def log_loss_of_true(p_true: np.ndarray) -> np.ndarray:
    """Mean negative log of the true-class probability along the last axis."""
    return -np.mean(np.log(np.maximum(np.asarray(p_true, dtype=np.float64), LOGLOSS_EPS)), axis=-1)


def score_labels(pred: np.ndarray, y: np.ndarray, metric: str, n_classes: int) -> float:
    """Accuracy or macro-F1 of hard predictions."""
    if metric == "accuracy":
        return accuracy(pred, y)
    if metric == "f1":
        return macro_f1(pred, y, n_classes)
    raise ValueError(f"{metric!r} needs probabilities, not labels")


def score_proba(proba: np.ndarray, y: np.ndarray, metric: str) -> float:
    """Any metric from dense (N, C) probabilities."""
    check_metric(metric)
    if metric == "logloss":
        return float(log_loss_of_true(proba[np.arange(len(y)), y]))
    return score_labels(proba.argmax(axis=1), y, metric, proba.shape[1])


class Objective:
    """Scores weight vectors over one stack and its labels, a batch in one vectorised pass.

    Args:
        stack: The models' probabilities.
        y: (N,) true class per row.
        metric: ``accuracy``, ``f1`` or ``logloss``.
    """

    def __init__(self, stack: ProbStack, y: np.ndarray, metric: str = "accuracy"):
        self.stack = stack
        self.y = np.asarray(y, dtype=np.int64)
        self.metric = check_metric(metric)
        self._q = stack.true_probs(self.y).astype(np.float64)  # (M, N), enough for log-loss
        if metric != "logloss":
            stack.candidates  # noqa: B018 - build the candidate lists now, not inside the first trial
        self.n_evals = 0

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """Metric values (B,) of (B, M) weight vectors (rows need not be normalised)."""
        W = _normalise(weights, self.stack.n_models)
        self.n_evals += W.shape[0]
        if self.metric == "logloss":
            return log_loss_of_true(W @ self._q)
        preds = self.stack.predict_many(W)
        return np.array([score_labels(p, self.y, self.metric, self.stack.n_classes) for p in preds])

    def logloss(self, weights: np.ndarray) -> np.ndarray:
        """Log-loss (B,) of (B, M) weight vectors: one (B, M) @ (M, N) product."""
        return log_loss_of_true(_normalise(weights, self.stack.n_models) @ self._q)


def _normalise(weights: np.ndarray, n_models: int) -> np.ndarray:
    W = np.asarray(weights, dtype=np.float64).reshape(-1, n_models)
    if (W < 0).any():
        raise ValueError("weights must be non-negative")
    total = W.sum(axis=1, keepdims=True)
    # An all-zero vector means "no preference": the plain mean.
    return np.where(total > 0, W / np.where(total > 0, total, 1.0), 1.0 / n_models)


def normalise(weights: np.ndarray) -> np.ndarray:
    """Non-negative weights scaled to sum to 1 (all zeros -> uniform)."""
    w = np.asarray(weights, dtype=np.float64)
    return _normalise(w, w.size)[0]


def argbest(values: np.ndarray, loglosses: np.ndarray, metric: str) -> int:
    """Index of the best value, ties broken by the lowest log-loss (then the lowest index)."""
    values = np.asarray(values, dtype=np.float64)
    top = np.nanmax(values) if METRICS[metric] else np.nanmin(values)
    tied = np.flatnonzero(values == top)
    return int(tied[np.argmin(np.asarray(loglosses, dtype=np.float64)[tied])])


class BestTracker:
    """Keeps the best weights seen: best metric value, ties broken by lower log-loss.

    Args:
        metric: The metric being optimised.
    """

    def __init__(self, metric: str):
        self.metric = metric
        self.value: float | None = None
        self.logloss = np.inf
        self.weights: np.ndarray | None = None
        self.history: list[float] = []

    def offer(self, weights: np.ndarray, values: np.ndarray, loglosses: np.ndarray) -> None:
        """Consider (B, M) weights with their metric values and log-losses."""
        W = np.atleast_2d(weights)
        for w, v, ll in zip(W, np.atleast_1d(values), np.atleast_1d(loglosses), strict=True):
            v, ll = float(v), float(ll)
            self.history.append(v)
            if better(v, self.value, self.metric) or (v == self.value and ll < self.logloss):
                self.value, self.logloss, self.weights = v, ll, normalise(w)

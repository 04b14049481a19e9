"""Classification scores from probabilities or labels, computed one way for every stage.

Reports use scikit-learn's definitions (imported lazily). The ensemble's weight searches score
thousands of weight vectors and keep their own vectorised path (``ensemble._metrics``), which is
tested to agree with these.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "classification_metrics", "labels_of", "log_loss", "macro_f1"]

# Probabilities are clipped here before the log (float16 stores anything below ~6e-8 as 0).
LOG_EPS = 1e-12


def labels_of(predictions: np.ndarray) -> np.ndarray:
    """Hard labels: ``predictions`` itself when 1-D, else the argmax of each (N, C) row."""
    predictions = np.asarray(predictions)
    return predictions if predictions.ndim == 1 else predictions.argmax(axis=1)


def accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose predicted class is the target.

    Args:
        predictions: (N,) labels or (N, C) scores/probabilities (argmax taken).
        targets: (N,) true classes.

    Returns:
        The accuracy; NaN when there are no rows.
    """
    pred, y = labels_of(predictions), np.asarray(targets)
    if len(y) == 0:
        return float("nan")
    return float(np.mean(pred == y))


def macro_f1(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Macro-F1 over the classes present in the targets or the predictions (scikit-learn's)."""
    from sklearn.metrics import f1_score

    y = np.asarray(targets)
    if len(y) == 0:
        return float("nan")
    return float(f1_score(y, labels_of(predictions), average="macro", zero_division=0))


def log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-probability of the true class (no label smoothing), clipped at ``LOG_EPS``."""
    probs, y = np.asarray(probs), np.asarray(targets)
    if len(y) == 0:
        return float("nan")
    picked = probs[np.arange(len(y)), y].astype(np.float64)
    return float(-np.log(np.clip(picked, LOG_EPS, None)).mean())


def classification_metrics(probs: np.ndarray, labels: np.ndarray, prefix: str = "val_") -> dict[str, float]:
    """``<prefix>acc``, macro ``<prefix>f1`` and ``<prefix>loss`` of (N, C) probabilities (NaN when empty)."""
    return {
        f"{prefix}acc": accuracy(probs, labels),
        f"{prefix}f1": macro_f1(probs, labels),
        f"{prefix}loss": log_loss(probs, labels),
    }

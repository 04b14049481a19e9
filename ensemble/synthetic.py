"""Crafted OOF probabilities with realistic accuracies, for benchmarks and tests.

Real OOF probabilities of image classifiers share three traits that a plain random array lacks:
the models err on the same hard rows and confuse the same classes (correlated errors), each has
its own accuracy, and its confidence roughly matches that accuracy. :func:`make_probs` builds
logits with a component shared by every model and a per-row difficulty, then sets each model's
true-class margin so that exactly its target accuracy of the rows has the true class on top, and
its temperature so that its mean top probability is close to that accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["make_folds", "make_probs"]


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def make_probs(
    n_rows: int,
    n_classes: int,
    accuracies: Sequence[float],
    *,
    shared: float = 0.7,
    seed: int = 0,
    dtype: str = "float16",
) -> tuple[list[np.ndarray], np.ndarray]:
    """One (n_rows, n_classes) probability array per target accuracy, and the true classes.

    Args:
        n_rows: Rows (every class gets about ``n_rows / n_classes``).
        n_classes: Classes.
        accuracies: One target accuracy per model, each in (0, 1).
        shared: Weight of the logit component all models share (0: independent errors; the
            per-model part is scaled so that the logits' spread stays the same).
        seed: Seed; the same seed gives the same arrays.
        dtype: Storage of the probabilities (``float16`` as the OOF stage writes by default).

    Returns:
        The models' probabilities (rows sum to 1 up to ``dtype`` rounding) and (n_rows,) int64 labels.
    """
    if not accuracies or not all(0.0 < a < 1.0 for a in accuracies):
        raise ValueError(f"accuracies must be values in (0, 1), one per model; got {list(accuracies)}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_rows) % n_classes).astype(np.int64)
    rows = np.arange(n_rows)
    common = rng.standard_normal((n_rows, n_classes), dtype=np.float32)
    hard = rng.standard_normal(n_rows).astype(np.float32)
    own = float(np.sqrt(max(1.0 - shared**2, 0.0)))  # 0.714 at the default 0.7
    models = []
    for acc in accuracies:
        logits = shared * common + own * rng.standard_normal((n_rows, n_classes), dtype=np.float32)
        logits[rows, y] -= 0.8 * hard
        others = logits.copy()
        others[rows, y] = -np.inf
        gap = others.max(axis=1) - logits[rows, y]
        logits[rows, y] += np.quantile(gap, acc)  # exactly `acc` of the rows now have y on top
        models.append(_softmax_rows(logits * _temperature(logits, acc)).astype(dtype))
    return models, y


def _temperature(logits: np.ndarray, acc: float) -> float:
    """Inverse temperature whose mean top probability is about ``acc`` (bisection on a sample)."""
    lo, hi = 0.1, 50.0
    probe = logits[:2000]
    for _ in range(30):
        mid = (lo * hi) ** 0.5
        conf = _softmax_rows(probe * mid).max(axis=1).mean()
        lo, hi = (mid, hi) if conf < acc else (lo, mid)
    return lo


def make_folds(y: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """(N,) fold per row, stratified by class (scikit-learn's ``StratifiedKFold``, shuffled)."""
    from sklearn.model_selection import StratifiedKFold

    folds = np.empty(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y)):
        folds[held] = f
    return folds

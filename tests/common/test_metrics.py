"""common.metrics agrees with scikit-learn and with the ensemble's fast path."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from common.metrics import accuracy, classification_metrics, macro_f1
from ensemble._metrics import score_proba


def test_scores_match_sklearn_and_the_ensemble_fast_path() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=300).astype(np.float32)
    y = rng.integers(0, 7, size=300)
    pred = probs.argmax(1)
    assert accuracy(probs, y) == accuracy(pred, y) == accuracy_score(y, pred)
    assert macro_f1(probs, y) == f1_score(y, pred, average="macro")
    assert score_proba(probs, y, "accuracy") == accuracy(probs, y)
    assert abs(score_proba(probs, y, "f1") - macro_f1(probs, y)) < 1e-12
    got = classification_metrics(probs, y)
    assert set(got) == {"val_acc", "val_f1", "val_loss"} and got["val_loss"] > 0


def test_no_rows_is_nan() -> None:
    empty = classification_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert all(np.isnan(v) for v in empty.values())

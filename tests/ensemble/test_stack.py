"""ProbStack's fast paths give the dense answers; metrics agree with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from ensemble import Objective, ProbStack, score_proba


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _dense_reference(probs: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 blends: labels and the gap between the top two scores (to spot true near-ties)."""
    blend = np.einsum("bm,mnc->bnc", W.astype(np.float64), probs.astype(np.float64))
    top2 = np.sort(blend, axis=-1)[..., -2:]
    return blend.argmax(axis=-1), top2[..., 1] - top2[..., 0]


@pytest.mark.parametrize("scale", [6.0, 0.3], ids=["peaked", "flat"])
def test_candidate_argmax_equals_dense_argmax(tmp_path: Path, scale: float) -> None:
    """200 classes, top-3 candidates: peaked rows resolve from candidates, flat rows fall back densely."""
    rng = np.random.default_rng(0)
    n_models, n, c = 5, 400, 200
    shared = rng.normal(size=(n, c))
    probs = np.stack([_softmax(scale * (shared + rng.normal(size=(n, c)))) for _ in range(n_models)]).astype(
        np.float16
    )
    files = []
    for m in range(n_models):  # memory-mapped float16, as artifacts are read
        np.save(tmp_path / f"{m}.npy", probs[m])
        files.append(np.load(tmp_path / f"{m}.npy", mmap_mode="r"))
    stack = ProbStack(files, top_k=3, chunk_rows=128)
    W = np.vstack([rng.dirichlet(np.ones(n_models), size=30), np.eye(n_models), np.full(n_models, 0.2)])

    labels = stack.predict_many(W)
    ref, gap = _dense_reference(probs, W)
    mismatch = labels != ref
    assert not mismatch[gap > 1e-5].any(), "a candidate argmax differs from the dense argmax"
    assert mismatch.mean() < 1e-3
    if scale < 1:
        assert stack.n_dense_rows > 0, "flat rows should have needed the dense fallback"
    assert stack.candidates.idx.shape[1] <= n_models * 3
    np.testing.assert_array_equal(stack.model_labels, probs.astype(np.float32).argmax(-1))


def test_blend_subset_and_true_probs(digits_stack: tuple) -> None:
    stack, y, folds = digits_stack
    w = np.linspace(1, 2, stack.n_models)
    w /= w.sum()
    dense = np.stack([np.asarray(m, dtype=np.float64) for m in stack._models])
    np.testing.assert_allclose(stack.blend(w), np.tensordot(w, dense, axes=1), atol=1e-6)

    rows = np.flatnonzero(folds == 2)
    sub = stack.subset(rows)
    assert sub.n_rows == rows.size and np.array_equal(sub.rows, rows)
    np.testing.assert_allclose(sub.blend(w), np.tensordot(w, dense[:, rows], axes=1), atol=1e-6)
    np.testing.assert_array_equal(sub.predict(w), np.tensordot(w, dense[:, rows], axes=1).argmax(1))
    np.testing.assert_array_equal(
        sub.true_probs(y[rows]), dense[:, rows, :][:, np.arange(rows.size), y[rows]].astype(np.float32)
    )
    # A subset of a subset still points at the right source rows.
    assert np.array_equal(sub.subset([0, 5]).rows, rows[[0, 5]])


def test_in_memory_float32_sources_are_not_modified() -> None:
    rng = np.random.default_rng(0)
    probs = _softmax(rng.normal(size=(3, 50, 7))).astype(np.float32)
    before = probs.copy()
    ProbStack(probs, chunk_rows=16).blend(np.array([0.2, 0.3, 0.5]))
    np.testing.assert_array_equal(probs, before)


# float16 storage leaves blends summing to 1 +- 5e-4; sklearn warns about that, and both sides
# score the stored numbers as they are.
@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@pytest.mark.parametrize("metric", ["accuracy", "f1", "logloss"])
def test_objective_matches_sklearn(digits_stack: tuple, metric: str) -> None:
    stack, y, _ = digits_stack
    rng = np.random.default_rng(1)
    W = rng.dirichlet(np.ones(stack.n_models), size=4)
    values = Objective(stack, y, metric)(W)
    for w, value in zip(W, values, strict=True):
        proba = stack.blend(w).astype(np.float64)
        if metric == "accuracy":
            expected = accuracy_score(y, proba.argmax(1))
        elif metric == "f1":
            expected = f1_score(y, proba.argmax(1), average="macro")
        else:
            expected = log_loss(y, np.clip(proba, 1e-15, 1), labels=np.arange(stack.n_classes))
        assert value == pytest.approx(expected, rel=1e-4)
        assert score_proba(proba, y, metric) == pytest.approx(expected, rel=1e-4)


def test_batched_scores_equal_one_at_a_time(digits_stack: tuple) -> None:
    stack, y, _ = digits_stack
    objective = Objective(stack, y, "accuracy")
    W = np.random.default_rng(2).dirichlet(np.ones(stack.n_models), size=7)
    np.testing.assert_array_equal(objective(W), np.concatenate([objective(w[None]) for w in W]))
    assert objective.n_evals == 14


def test_bad_shapes_are_explained() -> None:
    with pytest.raises(ValueError, match="model 1 has shape"):
        ProbStack([np.ones((4, 3)) / 3, np.ones((5, 3)) / 3])
    stack = ProbStack(np.ones((2, 4, 3)) / 3)
    with pytest.raises(ValueError, match="weights must have shape \\(2,\\)"):
        stack.blend([1.0, 0.0, 0.0])

"""Nested CV is honest: a method is only ever scored on rows it was not fit on."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from ensemble import (
    EnsembleMethod,
    MeanEnsemble,
    ProbStack,
    create_method,
    evaluate_method,
    nested_cv,
    pick_winner,
)
from ensemble._stack import as_stack


class Spy(MeanEnsemble):
    """The plain mean, recording which source rows reach fit and scoring."""

    calls: ClassVar[list[tuple[str, np.ndarray]]] = []

    def fit(self, probs, y, folds=None):  # noqa: ANN001, ANN201
        Spy.calls.append(("fit", as_stack(probs).rows.copy()))
        return super().fit(probs, y, folds)

    def _predict_labels(self, stack: ProbStack) -> np.ndarray:
        Spy.calls.append(("score", stack.rows.copy()))
        return super()._predict_labels(stack)


class Memoriser(EnsembleMethod):
    """Remembers the label of every row it was fit on; elsewhere it predicts the plain mean.

    Perfect in-sample; out of sample exactly the mean. Any leak of fit rows into scoring shows.
    """

    name = "memoriser"

    def fit(self, probs, y, folds=None):  # noqa: ANN001, ANN201
        stack = as_stack(probs)
        self.memory_ = dict(zip(stack.rows.tolist(), np.asarray(y).tolist(), strict=True))
        self.n_models_ = stack.n_models
        self.weights_ = np.full(stack.n_models, 1.0 / stack.n_models)
        return self

    def predict_proba(self, probs):  # noqa: ANN001, ANN201
        stack = as_stack(probs)
        out = stack.blend(self.weights_)
        for i, row in enumerate(stack.rows):
            if row in self.memory_:
                out[i] = np.eye(stack.n_classes)[self.memory_[row]]
        return out


def test_scoring_only_sees_held_out_rows(digits_stack: tuple) -> None:
    stack, y, folds = digits_stack
    Spy.calls.clear()
    scores, _ = nested_cv(Spy(), stack, y, folds, "accuracy")
    assert len(scores) == np.unique(folds).size
    fits = [rows for kind, rows in Spy.calls if kind == "fit"]
    held = [rows for kind, rows in Spy.calls if kind == "score"]
    assert len(fits) == len(held) == len(scores)
    for f, (fit_rows, held_rows) in enumerate(zip(fits, held, strict=True)):
        assert np.intersect1d(fit_rows, held_rows).size == 0
        np.testing.assert_array_equal(held_rows, np.flatnonzero(folds == f))  # the models' own folds
        np.testing.assert_array_equal(fit_rows, np.flatnonzero(folds != f))
    np.testing.assert_array_equal(np.sort(np.concatenate(held)), np.arange(stack.n_rows))


def test_a_memorising_method_gains_nothing_out_of_sample(digits_stack: tuple) -> None:
    stack, y, folds = digits_stack
    memo = evaluate_method(Memoriser(), stack, y, folds, "accuracy")
    mean = evaluate_method(create_method("mean"), stack, y, folds, "accuracy")
    assert memo.in_sample == 1.0
    assert memo.fold_scores == mean.fold_scores  # exactly the mean's held-out scores
    assert memo.nested_mean < 0.99


def test_overfitting_stacking_is_exposed(digits_stack: tuple) -> None:
    """A fully grown random forest on the OOF probabilities memorises; nested CV says so."""
    stack, y, folds = digits_stack
    rf = create_method(
        "stacking", meta="rf", features="probs", n_estimators=100, max_depth=None, inner_cv=False
    )
    result = evaluate_method(rf, stack, y, folds, "accuracy")
    assert result.in_sample > 0.99
    assert result.nested_mean < result.in_sample - 0.01
    assert len(result.fold_weights) == np.unique(folds).size


def test_nested_estimates_and_the_winner(digits_stack: tuple) -> None:
    stack, y, folds = digits_stack
    results = [
        evaluate_method(create_method(name, **kw), stack, y, folds, "accuracy")
        for name, kw in (("best", {}), ("mean", {}), ("caruana", {"n_iter": 30}))
    ]
    best, mean, caruana = results
    assert best.nested_std > 0 and len(best.fold_scores) == 5
    assert caruana.nested_mean > best.nested_mean  # ensembling these diverse models pays out of sample
    assert pick_winner(results, "accuracy").name == max(results, key=lambda r: r.nested_mean).name
    assert pick_winner([best, mean], "logloss") is min([best, mean], key=lambda r: r.nested_mean)


def test_nested_cv_needs_two_folds(digits_stack: tuple) -> None:
    stack, y, _ = digits_stack
    with pytest.raises(ValueError, match="at least two folds"):
        nested_cv(create_method("mean"), stack, y, np.zeros(stack.n_rows, dtype=int), "accuracy")

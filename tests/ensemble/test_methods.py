"""Every ensemble method on real OOF probabilities (scikit-learn classifiers on digits)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from ensemble import Objective, create_method, list_methods
from ensemble._metrics import log_loss_of_true

FAST = {"bayesian": {"n_trials": 80}, "genetic": {"n_generations": 15}, "caruana": {"n_iter": 30}}
SEARCHES = ["caruana", "bayesian", "genetic", "logloss"]


def _method(name: str, **kw: object):
    return create_method(name, **{**FAST.get(name, {}), **kw})


@pytest.fixture(scope="module")
def single_scores(digits_stack: tuple) -> tuple[np.ndarray, np.ndarray]:
    stack, y, _ = digits_stack
    eye = np.eye(stack.n_models)
    return Objective(stack, y, "accuracy")(eye), Objective(stack, y, "logloss")(eye)


def test_registry_lists_and_refuses_unknown_names() -> None:
    assert {"mean", "vote", "best", "caruana", "bayesian", "genetic", "logloss", "stacking"} <= set(
        list_methods()
    )
    with pytest.raises(
        ValueError, match="unknown ensemble method 'nope'; valid methods: .*bayesian.*caruana"
    ):
        create_method("nope")


@pytest.mark.parametrize("name", SEARCHES)
def test_search_reaches_the_best_single_model_in_sample(
    digits_stack: tuple, single_scores: tuple, name: str
) -> None:
    stack, y, _ = digits_stack
    method = _method(name).fit(stack, y)
    w = method.weights_
    assert w.shape == (stack.n_models,) and (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert method.score(stack, y, "accuracy") >= single_scores[0].max()


@pytest.mark.parametrize("name", ["caruana", "bayesian", "genetic"])
def test_accuracy_searches_beat_the_plain_mean_in_sample(digits_stack: tuple, name: str) -> None:
    """On these diverse models weighting pays: the searches beat uniform weights."""
    stack, y, _ = digits_stack
    mean = create_method("mean").fit(stack, y).score(stack, y)
    assert _method(name).fit(stack, y).score(stack, y) > mean


def test_logloss_is_the_exact_simplex_optimum(digits_stack: tuple, single_scores: tuple) -> None:
    """KKT conditions of min -mean log(Q w) on the simplex: equal gradients on the support, larger off it."""
    stack, y, _ = digits_stack
    method = create_method("logloss").fit(stack, y)
    w, grad = method.weights_, method.gradient_
    support = w > 1e-6
    lam = grad[support].mean()
    assert np.allclose(grad[support], lam, atol=1e-5)
    assert (grad[~support] >= lam - 1e-5).all()
    assert method.loss_ <= single_scores[1].min()
    assert method.score(stack, y, "logloss") == pytest.approx(method.loss_, rel=1e-6)
    # No random direction on the simplex lowers it.
    q = stack.true_probs(y).astype(np.float64)
    for d in np.random.default_rng(0).dirichlet(np.ones(stack.n_models), size=20):
        assert log_loss_of_true((0.9 * w + 0.1 * d) @ q) >= method.loss_ - 1e-9


@pytest.mark.parametrize("name", ["bayesian", "genetic"])
def test_same_seed_same_weights(digits_stack: tuple, name: str) -> None:
    stack, y, _ = digits_stack
    a = _method(name, random_state=7).fit(stack, y).weights_
    b = _method(name, random_state=7).fit(stack, y).weights_
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("metric", ["f1", "logloss"])
def test_other_metrics_are_optimised(digits_stack: tuple, metric: str) -> None:
    stack, y, _ = digits_stack
    singles = Objective(stack, y, metric)(np.eye(stack.n_models))
    best = singles.max() if metric == "f1" else singles.min()
    score = _method("bayesian", metric=metric).fit(stack, y).score(stack, y)
    assert score >= best if metric == "f1" else score <= best


def test_vote_is_a_weighted_majority_with_mean_tie_break(digits_stack: tuple) -> None:
    stack, y, _ = digits_stack
    vote = create_method("vote").fit(stack, y)
    labels = stack.model_labels
    mean = stack.blend(np.full(stack.n_models, 1 / stack.n_models))
    counts = np.zeros((stack.n_rows, stack.n_classes))
    for m in range(stack.n_models):
        counts[np.arange(stack.n_rows), labels[m]] += 1
    expected = np.where(counts == counts.max(1, keepdims=True), mean, -1.0).argmax(1)
    np.testing.assert_array_equal(vote.predict(stack), expected)
    np.testing.assert_allclose(vote.predict_proba(stack), counts / stack.n_models)


def test_best_single_model_picks_the_most_accurate(digits_stack: tuple, single_scores: tuple) -> None:
    stack, y, _ = digits_stack
    best = create_method("best").fit(stack, y)
    assert best.weights_[np.argmax(single_scores[0])] == 1.0


@pytest.mark.parametrize(
    "params",
    [
        {"meta": "logreg", "features": "probs", "param_grid": {"C": [0.1, 1.0]}},
        {"meta": "logreg"},
        {"meta": "rf", "features": "probs", "n_estimators": 50, "inner_cv": False},
    ],
    ids=["logreg-probs", "logreg-classwise", "rf-probs"],
)
def test_stacking_predicts_distributions(digits_stack: tuple, params: dict) -> None:
    stack, y, folds = digits_stack
    method = create_method("stacking", **params).fit(stack, y, folds=folds)
    proba = method.predict_proba(stack)
    assert proba.shape == (stack.n_rows, stack.n_classes)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=2e-3)
    assert method.score(stack, y) > 0.9
    assert method.weights_.sum() == pytest.approx(1.0) and (method.weights_ >= 0).all()
    if params.get("features") == "probs" and params.get("inner_cv", "auto"):
        assert method.best_params_["model__C"] in (0.1, 1.0)
    else:  # the default class-wise stacking has M + 1 coefficients: no inner grid to run
        assert not hasattr(method, "best_params_")


def test_methods_are_sklearn_estimators(digits_stack: tuple) -> None:
    stack, y, _ = digits_stack
    for name in list_methods():
        method = create_method(name)
        twin = clone(method)
        assert twin.get_params() == method.get_params()
    with pytest.raises(RuntimeError, match="not fitted"):
        create_method("caruana").predict(stack)
    with pytest.raises(ValueError, match="y must have shape"):
        create_method("mean").fit(stack, y[:-1])


def test_classwise_stacking_keeps_non_candidate_mass(digits_oof) -> None:
    """With top-3 candidates out of 10 classes, the other classes keep the mean's probability."""
    from ensemble import ProbStack, find_artifacts

    arts = find_artifacts(digits_oof.experiment, root=digits_oof.root)
    stack = ProbStack.from_artifacts(arts, top_k=3)
    y = digits_oof.y
    method = create_method("stacking", features="classwise", inner_cv=False).fit(stack, y)
    proba = method.predict_proba(stack)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=2e-3)
    mean = stack.blend(np.full(stack.n_models, 1 / stack.n_models))
    cand = stack.candidates
    outside = np.ones_like(proba, dtype=bool)
    for i in range(stack.n_rows):
        outside[i, cand.idx[i, : cand.count[i]]] = False
    assert outside.any()
    np.testing.assert_array_equal(proba[outside], mean[outside])
    assert method.score(stack, y) > create_method("mean").fit(stack, y).score(stack, y) - 0.02


def test_genetic_runs_every_generation_with_a_progress_bar(digits_stack: tuple) -> None:
    """The progress callback must not stop differential evolution early (tqdm.update returns True)."""
    stack, y, _ = digits_stack
    method = create_method("genetic", n_generations=6, popsize=3, verbose=True).fit(stack, y)
    population = 3 * stack.n_models
    assert method.n_evals_ == 2 + population * (6 + 1)  # 2 seeds + initial population + 6 generations

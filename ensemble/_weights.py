"""Weighted ensembles with fixed or directly computed weights: best single model, mean, vote,
Caruana's greedy selection and the exact log-loss optimum."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from ensemble._base import Probs, WeightedEnsemble, progress, register_method
from ensemble._metrics import LOGLOSS_EPS, BestTracker, argbest
from ensemble._stack import ProbStack, as_stack

__all__ = ["BestSingleModel", "CaruanaEnsemble", "LogLossEnsemble", "MeanEnsemble", "VoteEnsemble"]


@register_method
class BestSingleModel(WeightedEnsemble):
    """The baseline: all weight on the model with the best metric (ties: lower log-loss).

    Args:
        metric: ``accuracy``, ``f1`` or ``logloss``.
    """

    name = "best"

    def __init__(self, metric: str = "accuracy"):
        self.metric = metric

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        objective = self._objective(stack, y)
        eye = np.eye(stack.n_models)
        tracker = BestTracker(self.metric)
        tracker.offer(eye, objective(eye), objective.logloss(eye))
        self.model_scores_ = np.asarray(tracker.history)
        return tracker.weights


@register_method
class MeanEnsemble(WeightedEnsemble):
    """Soft voting: the plain mean of the models' probabilities (no fitting).

    Args:
        metric: Only used by :meth:`score`.
    """

    name = "mean"

    def __init__(self, metric: str = "accuracy"):
        self.metric = metric

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        return np.full(stack.n_models, 1.0 / stack.n_models)


@register_method
class VoteEnsemble(WeightedEnsemble):
    """Hard voting: each model votes for its argmax; ties go to the class with the higher mean probability.

    ``predict_proba`` returns the vote shares, so its log-loss is poor by construction (a class
    no model votes for gets probability 0).

    Args:
        metric: Only used by :meth:`score`.
    """

    name = "vote"

    def __init__(self, metric: str = "accuracy"):
        self.metric = metric

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        return np.full(stack.n_models, 1.0 / stack.n_models)

    def predict_proba(self, probs: Probs) -> np.ndarray:
        self._check_is_fitted()
        stack = as_stack(probs)
        shares = np.zeros((stack.n_rows, stack.n_classes), dtype=np.float32)
        rows = np.arange(stack.n_rows)
        for m, labels in enumerate(stack.model_labels):
            np.add.at(shares, (rows, labels), self.weights_[m])
        return shares

    def _predict_labels(self, stack: ProbStack) -> np.ndarray:
        self._check_is_fitted()
        cand = stack.candidates
        rows = np.arange(stack.n_rows)
        votes = np.zeros(cand.idx.shape, dtype=np.float64)
        for m, labels in enumerate(cand.labels):
            # A model's argmax is among its row's candidates; argmax finds its first (real) slot,
            # never a padding copy.
            votes[rows, np.argmax(cand.idx == labels[:, None], axis=1)] += self.weights_[m]
        # The tie-break term stays below the smallest vote difference (1/M), so it only orders
        # classes with equal votes.
        mean = np.tensordot(
            np.full(stack.n_models, 1.0 / stack.n_models, dtype=np.float32), cand.vals, axes=1
        )
        score = votes + mean / (2.0 * stack.n_models)
        return cand.idx[rows, score.argmax(axis=1)].astype(np.int64)

    def _true_class_proba(self, stack: ProbStack, y: np.ndarray) -> np.ndarray:
        self._check_is_fitted()
        return self.weights_ @ (stack.model_labels == y[None, :]).astype(np.float64)


@register_method
class CaruanaEnsemble(WeightedEnsemble):
    """Greedy forward selection with replacement (Caruana et al. 2004, as in AutoGluon).

    Starting empty, each step adds the model (repeats allowed) whose addition gives the best
    metric of the averaged ensemble, ties broken by log-loss; the weights are the selection
    counts of the best ensemble met along the way. The first step picks the best single model,
    so the in-sample score is never below it.

    Args:
        n_iter: Selection steps (the ensemble size).
        metric: ``accuracy``, ``f1`` or ``logloss``.
        verbose: Show a progress bar.
    """

    name = "caruana"

    def __init__(self, n_iter: int = 100, metric: str = "accuracy", verbose: bool = False):
        self.n_iter = n_iter
        self.metric = metric
        self.verbose = verbose

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        if self.n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {self.n_iter}")
        objective = self._objective(stack, y)
        n_models = stack.n_models
        counts = np.zeros(n_models)
        best = BestTracker(self.metric)
        trajectory = []
        bar = progress(self.n_iter, "caruana", self.verbose)
        for _ in range(self.n_iter):
            trial = counts[None, :] + np.eye(n_models)  # every "add model m", scored in one pass
            values, lls = objective(trial), objective.logloss(trial)
            pick = argbest(values, lls, self.metric)
            counts[pick] += 1
            best.offer(counts[None, :], values[pick : pick + 1], lls[pick : pick + 1])
            trajectory.append(float(values[pick]))
            bar.update(1)
        bar.close()
        self.trajectory_ = np.asarray(trajectory)
        self.n_evals_ = objective.n_evals
        return best.weights


@register_method
class LogLossEnsemble(WeightedEnsemble):
    """The exact minimum of log-loss over the weight simplex.

    ``-mean_n log(sum_m w_m p_m[n, y_n])`` is convex in ``w`` and needs only the (M, N) true-class
    probabilities, so SLSQP with the analytic gradient solves it to the optimum in milliseconds.
    It optimises log-loss whatever ``metric`` says; ``metric`` is only what :meth:`score` reports.

    Args:
        metric: Metric reported by :meth:`score`.
        tol: SLSQP's ``ftol``.
        max_iter: SLSQP's iteration limit.
    """

    name = "logloss"

    def __init__(self, metric: str = "accuracy", tol: float = 1e-12, max_iter: int = 1000):
        self.metric = metric
        self.tol = tol
        self.max_iter = max_iter

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        q = stack.true_probs(y).astype(np.float64).T  # (N, M)
        n_rows, n_models = q.shape

        def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
            s = np.maximum(q @ w, LOGLOSS_EPS)
            return float(-np.mean(np.log(s))), -(q / s[:, None]).sum(axis=0) / n_rows

        result = minimize(
            loss_and_grad,
            np.full(n_models, 1.0 / n_models),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * n_models,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
            options={"ftol": self.tol, "maxiter": self.max_iter},
        )
        w = np.clip(result.x, 0.0, None)
        w[w < 1e-9] = 0.0  # SLSQP leaves ~1e-17 dust on inactive bounds
        w /= w.sum()
        self.loss_, self.gradient_ = loss_and_grad(w)
        self.converged_ = bool(result.success)
        self.n_iter_ = int(result.nit)
        return w

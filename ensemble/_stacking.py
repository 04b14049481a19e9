"""Stacking: a scikit-learn meta-learner on the models' OOF probabilities.

Two feature layouts:

* ``probs``: each row's M x C log-probabilities side by side, a multi-class meta-learner on
  top. Faithful and expressive, but its size grows as M x C x C: at 6 models x 125 classes
  that is 750 features and 94k coefficients fit on 1,735 rows, which memorises them (in-sample
  accuracy 1.000, nested 0.267 on sketchy125) and took 392 s for a nested estimate.
* ``classwise``: one sample per (row, candidate class) with the M models' log-probabilities of
  that class as features and "is this the true class" as the label; the meta-learner is a
  binary classifier shared by all classes, and a row's distribution is its candidates' scores
  normalised. With logistic regression this learns a weighted geometric pooling of the models
  (M + 1 coefficients, whatever C is); a random forest learns non-linear pooling. Candidates
  are the union of each model's top-k classes (see :class:`~ensemble.ProbStack`), so a
  1,735-row OOF set gives ~50k samples of M features, and a 15k-row one ~0.5M.

``features`` defaults to ``classwise``: it is fast at any number of classes, and its M + 1
coefficients are too few to memorise rows. ``probs`` overfits as soon as the classes are more than a handful (6 models x 20
classes on 1,000 rows: in-sample 0.96, nested 0.50, where the class-wise one and a log-loss
blend score 0.63), so it is an explicit choice; ``auto`` picks ``probs`` up to
``max_dense_features`` (M x C) and ``classwise`` above.
``inner_cv="auto"`` chooses the meta-learner's regularisation by inner cross-validation over the
given folds (the models' folds, so grouped near-duplicates never straddle a split) for ``probs``
only: a class-wise logistic regression has M + 1 coefficients on tens of thousands of samples,
where the regularisation strength changes nothing worth three more fits per fold.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, PredefinedSplit, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ensemble._base import EnsembleMethod, Probs, _check_y, register_method
from ensemble._stack import ProbStack, as_stack

__all__ = ["StackingEnsemble"]

_LOG_EPS = 1e-6  # below float16's smallest normal number; keeps log features finite
_DEFAULT_GRIDS = {"logreg": {"C": [0.1, 1.0, 10.0]}, "rf": {"min_samples_leaf": [1, 5, 20]}}
_SCORING = {"accuracy": "accuracy", "f1": "f1_macro", "logloss": "neg_log_loss"}


@register_method
class StackingEnsemble(EnsembleMethod):
    """A meta-learner (logistic regression or random forest) fit on the OOF probabilities.

    ``weights_`` holds per-model importances (summing to 1) for reports, not blend weights.

    Args:
        meta: ``logreg`` or ``rf``.
        features: ``classwise`` (default), ``probs`` or ``auto`` (module docstring).
        metric: Metric of the inner CV for ``probs`` features (``classwise`` uses the binary
            log-loss of its samples) and of :meth:`score`.
        inner_cv: Choose the meta-learner's parameters from ``param_grid`` by inner CV: True,
            False, or ``auto`` (for ``probs`` features only; module docstring).
        param_grid: Grid for the inner CV; default ``C`` in {0.1, 1, 10} (logreg) or
            ``min_samples_leaf`` in {1, 5, 20} (rf).
        max_dense_features: Largest M x C for which ``auto`` uses ``probs``.
        C: Logistic regression's inverse regularisation (when not searched).
        n_estimators: Trees of the random forest.
        max_depth: Depth limit of the trees (None: grow fully).
        min_samples_leaf: Random forest leaf size (when not searched).
        random_state: Seed of the meta-learner and fallback inner folds.
        n_jobs: Random forest worker threads.
    """

    name = "stacking"
    blends = False

    def __init__(
        self,
        meta: str = "logreg",
        features: str = "classwise",
        metric: str = "accuracy",
        inner_cv: bool | str = "auto",
        param_grid: dict[str, list[Any]] | None = None,
        max_dense_features: int = 256,
        C: float = 1.0,
        n_estimators: int = 200,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        random_state: int | None = 0,
        n_jobs: int = 1,
    ):
        self.meta = meta
        self.features = features
        self.metric = metric
        self.inner_cv = inner_cv
        self.param_grid = param_grid
        self.max_dense_features = max_dense_features
        self.C = C
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ---------------------------------------------------------------------------------- fitting

    def fit(self, probs: Probs, y: np.ndarray, folds: np.ndarray | None = None) -> StackingEnsemble:
        stack = as_stack(probs)
        y = _check_y(y, stack)
        self.features_ = self._resolve_features(stack)
        X, target, row_of = self._design(stack, y)
        estimator = self._make_meta()
        if self._use_inner_cv():
            grid = self.param_grid if self.param_grid is not None else _DEFAULT_GRIDS[self.meta]
            if self.meta == "logreg":  # the grid names the model's parameters, not the pipeline's
                grid = {f"model__{k}": v for k, v in grid.items()}
            scoring = _SCORING[self.metric] if self.features_ == "probs" else "neg_log_loss"
            search = GridSearchCV(
                estimator,
                grid,
                cv=list(self._inner_splits(X, target, row_of, folds)),
                scoring=scoring,
                refit=True,
            )
            search.fit(X, target)
            self.meta_ = search.best_estimator_
            self.best_params_ = search.best_params_
            self.inner_cv_scoring_ = scoring
            self.inner_cv_score_ = float(search.best_score_)
        else:
            self.meta_ = estimator.fit(X, target)
        self.n_models_ = stack.n_models
        self.n_classes_ = stack.n_classes
        self.weights_ = self._importances()
        return self

    def _use_inner_cv(self) -> bool:
        if self.inner_cv == "auto":
            return self.features_ == "probs"
        if not isinstance(self.inner_cv, bool):
            raise ValueError(f"inner_cv must be True, False or 'auto', got {self.inner_cv!r}")
        return self.inner_cv

    def _resolve_features(self, stack: ProbStack) -> str:
        if self.meta not in _DEFAULT_GRIDS:
            raise ValueError(f"meta must be one of {sorted(_DEFAULT_GRIDS)}, got {self.meta!r}")
        if self.features == "auto":
            return "probs" if stack.n_models * stack.n_classes <= self.max_dense_features else "classwise"
        if self.features not in ("probs", "classwise"):
            raise ValueError(f"features must be 'auto', 'probs' or 'classwise', got {self.features!r}")
        return self.features

    def _make_meta(self) -> ClassifierMixin:
        if self.meta == "logreg":
            # Standardised log-probabilities: lbfgs converges in a few dozen steps instead of
            # hundreds on raw logs that span [-14, 0].
            return Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("model", LogisticRegression(C=self.C, max_iter=1000, random_state=self.random_state)),
                ]
            )
        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _inner_splits(
        self, X: np.ndarray, target: np.ndarray, row_of: np.ndarray, folds: np.ndarray | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if folds is not None and np.unique(folds).size >= 2:
            # The models' own folds: grouped near-duplicates stay on one side of every split.
            return PredefinedSplit(np.asarray(folds)[row_of]).split()
        if self.features_ == "classwise":
            return GroupKFold(n_splits=3).split(X, target, groups=row_of)
        return StratifiedKFold(n_splits=3, shuffle=True, random_state=self.random_state).split(X, target)

    def _design(
        self, stack: ProbStack, y: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Features, targets (None without ``y``) and the source row of every sample."""
        if self.features_ == "probs":
            X = np.empty((stack.n_rows, stack.n_models * stack.n_classes), dtype=np.float32)
            for pos, sel in stack._blocks():
                X[pos] = np.log(
                    np.maximum(np.hstack([stack._read(m, sel) for m in range(stack.n_models)]), _LOG_EPS)
                )
            return X, y, np.arange(stack.n_rows)
        cand = stack.candidates
        rr, ss = _pairs(cand.idx, cand.count)
        X = np.log(np.maximum(cand.vals[:, rr, ss].T, _LOG_EPS))
        target = None if y is None else (cand.idx[rr, ss] == y[rr]).astype(np.int64)
        return np.ascontiguousarray(X), target, rr

    def _importances(self) -> np.ndarray:
        if self.meta == "logreg":
            # Coefficients act on standardised features: |coef| compares the models' influence.
            raw = np.abs(self.meta_[-1].coef_)
        else:
            raw = self.meta_.feature_importances_[None, :]
        per_model = raw.reshape(raw.shape[0], self.n_models_, -1).sum(axis=(0, 2))
        total = per_model.sum()
        return per_model / total if total > 0 else np.full(self.n_models_, 1.0 / self.n_models_)

    # ------------------------------------------------------------------------------- prediction

    def predict_proba(self, probs: Probs) -> np.ndarray:
        self._check_is_fitted()
        stack = as_stack(probs)
        if stack.n_models != self.n_models_ or stack.n_classes != self.n_classes_:
            raise ValueError(
                f"fitted on {self.n_models_} models x {self.n_classes_} classes, got {stack.n_models} x {stack.n_classes}"
            )
        X, _, row_of = self._design(stack, None)
        p = self.meta_.predict_proba(X)
        if self.features_ == "probs":
            out = np.zeros((stack.n_rows, stack.n_classes), dtype=np.float32)
            out[:, self.meta_.classes_] = p  # classes unseen in fit keep probability 0
            return out
        # classwise: candidates share the mass the plain mean gives them, in proportion to the
        # meta-learner's scores; other classes keep their (tiny) mean probability.
        positive = p[:, list(self.meta_.classes_).index(1)] if 1 in self.meta_.classes_ else np.zeros(len(X))
        cand = stack.candidates
        out = stack.blend(np.full(stack.n_models, 1.0 / stack.n_models))
        cols = cand.idx[_pairs(cand.idx, cand.count)]
        mass = np.bincount(row_of, weights=out[row_of, cols], minlength=stack.n_rows)
        score_sum = np.bincount(row_of, weights=positive, minlength=stack.n_rows)
        ok = score_sum[row_of] > 0
        out[row_of[ok], cols[ok]] = (
            mass[row_of] * positive / np.where(score_sum[row_of] > 0, score_sum[row_of], 1.0)
        )[ok]
        return out


def _pairs(idx: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, slot) of every real (non-padding) candidate, row-major."""
    return np.nonzero(np.arange(idx.shape[1])[None, :] < count[:, None])

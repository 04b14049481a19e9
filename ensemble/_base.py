"""Ensemble methods as scikit-learn style estimators, and the registry that names them.

``fit(probs, y, folds=None)`` takes the models' probabilities as an (M, N, C) array, a
sequence of M (N, C) arrays or a :class:`~ensemble.ProbStack`; learned state ends in ``_``;
``predict_proba(probs)`` returns the (N, C) ensemble probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from ensemble._metrics import Objective, check_metric, log_loss_of_true, score_labels
from ensemble._stack import ProbStack, as_stack

__all__ = ["EnsembleMethod", "WeightedEnsemble", "create_method", "list_methods", "register_method"]

Probs = ProbStack | np.ndarray | Sequence[np.ndarray]
_M = TypeVar("_M", bound=type["EnsembleMethod"])
_REGISTRY: dict[str, type[EnsembleMethod]] = {}


def register_method(cls: _M) -> _M:
    """Class decorator: make an :class:`EnsembleMethod` available to :func:`create_method` by its ``name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"ensemble method {name!r} is already registered by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    # Importing the modules runs their @register_method decorators.
    from ensemble import _search, _stacking, _weights  # noqa: F401


def list_methods() -> list[str]:
    """Names of every registered ensemble method."""
    _load_builtins()
    return sorted(_REGISTRY)


def create_method(name: str, **kwargs: Any) -> EnsembleMethod:
    """Build a registered ensemble method by name (timm-style factory).

    Args:
        name: A name from :func:`list_methods`, e.g. ``"caruana"`` or ``"bayesian"``.
        **kwargs: Parameters of that method's constructor.

    Returns:
        An unfitted estimator.

    Raises:
        ValueError: For an unknown name, listing the valid ones.
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown ensemble method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


class EnsembleMethod(BaseEstimator):
    """Base of every ensemble method.

    Subclasses set ``name``, implement :meth:`fit` and :meth:`predict_proba`, and may override
    the fast paths :meth:`_predict_labels` and :meth:`_true_class_proba`.
    """

    name: ClassVar[str] = ""
    #: Whether ``weights_`` are blend weights (True) or only per-model importances (False).
    blends: ClassVar[bool] = True

    def fit(self, probs: Probs, y: np.ndarray, folds: np.ndarray | None = None) -> EnsembleMethod:
        """Learn the ensemble from out-of-fold probabilities.

        Args:
            probs: (M, N, C) probabilities of M models on N rows.
            y: (N,) true class per row.
            folds: (N,) fold per row, for methods that cross-validate internally.

        Returns:
            self
        """
        raise NotImplementedError

    def predict_proba(self, probs: Probs) -> np.ndarray:
        """(N, C) ensemble probabilities; rows sum to 1."""
        raise NotImplementedError

    def predict(self, probs: Probs) -> np.ndarray:
        """(N,) predicted class index per row."""
        return self._predict_labels(as_stack(probs))

    def score(self, probs: Probs, y: np.ndarray, metric: str | None = None) -> float:
        """The metric on these rows, in its natural direction (log-loss: lower is better).

        Args:
            probs: (M, N, C) probabilities.
            y: (N,) true class per row.
            metric: Defaults to the method's own ``metric`` (or accuracy).
        """
        metric = check_metric(metric or getattr(self, "metric", "accuracy"))
        stack = as_stack(probs)
        y = _check_y(y, stack)
        if metric == "logloss":
            return float(log_loss_of_true(self._true_class_proba(stack, y)))
        return score_labels(self._predict_labels(stack), y, metric, stack.n_classes)

    def _predict_labels(self, stack: ProbStack) -> np.ndarray:
        return self.predict_proba(stack).argmax(axis=1)

    def _true_class_proba(self, stack: ProbStack, y: np.ndarray) -> np.ndarray:
        return self.predict_proba(stack)[np.arange(len(y)), y]

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "n_models_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(probs, y) first")


class WeightedEnsemble(EnsembleMethod):
    """A method whose ensemble is a weighted mean of the models' probabilities.

    Subclasses implement ``_fit_weights(stack, y, folds) -> weights``; this class checks the
    weights (non-negative, summing to 1) and provides fast scoring and prediction.
    """

    metric: str

    def fit(self, probs: Probs, y: np.ndarray, folds: np.ndarray | None = None) -> WeightedEnsemble:
        stack = as_stack(probs)
        y = _check_y(y, stack)
        check_metric(getattr(self, "metric", "accuracy"))
        # One BLAS thread: the searches make thousands of small, memory-bound products, where
        # extra threads only add synchronisation; on the shared 2-core machine 1 thread measured
        # 3-4x faster per evaluation than 2 (bench/bench_ensemble.py).
        with threadpool_limits(limits=1, user_api="blas"):
            w = np.asarray(self._fit_weights(stack, y, folds), dtype=np.float64)
        if w.shape != (stack.n_models,) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
            raise AssertionError(f"{type(self).__name__} produced invalid weights {w}")
        self.weights_ = w / w.sum()
        self.n_models_ = stack.n_models
        self.n_classes_ = stack.n_classes
        return self

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _objective(self, stack: ProbStack, y: np.ndarray) -> Objective:
        return Objective(stack, y, getattr(self, "metric", "accuracy"))

    def predict_proba(self, probs: Probs) -> np.ndarray:
        self._check_is_fitted()
        return as_stack(probs).blend(self.weights_)

    def _predict_labels(self, stack: ProbStack) -> np.ndarray:
        self._check_is_fitted()
        return stack.predict(self.weights_)

    def _true_class_proba(self, stack: ProbStack, y: np.ndarray) -> np.ndarray:
        self._check_is_fitted()
        return self.weights_ @ stack.true_probs(y).astype(np.float64)


def _check_y(y: np.ndarray, stack: ProbStack) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (stack.n_rows,):
        raise ValueError(f"y must have shape ({stack.n_rows},) to match the probabilities, got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= stack.n_classes):
        raise ValueError(f"y must hold class indices in [0, {stack.n_classes})")
    return y.astype(np.int64, copy=False)


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A transient tqdm bar (``update``/``close``); silent when not ``enabled``."""
    import sys

    from tqdm.auto import tqdm

    # Redraw on every update: these bars tick once per generation or selection step (a few
    # hundred at most), and a bar that lags behind slow generations reads as a hang. Only on a
    # terminal: in a log file every redraw would be a line of its own.
    enabled = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, mininterval=0)

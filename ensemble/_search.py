"""Black-box weight searches: Bayesian (Optuna TPE) and genetic (scipy's differential evolution).

Both search raw weights in [0, 1]^M scored after normalising to the simplex, and both score the
uniform blend and the best single model first, so the result is never worse in-sample than
either. Accuracy is flat-stepped in the weights, which suits these derivative-free searches.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

from ensemble._base import WeightedEnsemble, progress, register_method
from ensemble._defaults import DEFAULT_TRIALS
from ensemble._metrics import METRICS, BestTracker, Objective, argbest
from ensemble._stack import ProbStack

__all__ = ["BayesianEnsemble", "GeneticEnsemble"]


def _best_single(objective: Objective, metric: str) -> int:
    """Index of the best model alone (ties: lower log-loss)."""
    eye = np.eye(objective.stack.n_models)
    return argbest(objective(eye), objective.logloss(eye), metric)


def _tick(bar: Any) -> bool:
    """Advance the bar and return False explicitly: scipy stops the search on a truthy callback
    result, and ``tqdm.update`` returns True whenever it redraws."""
    bar.update(1)
    return False


@register_method
class BayesianEnsemble(WeightedEnsemble):
    """Bayesian optimisation of the weights with Optuna's multivariate TPE sampler.

    Each trial suggests M raw weights in [0, 1], normalised to sum to 1. The first trials are
    the best single model and the uniform blend (enqueued), so the search starts from the
    baselines. The weights kept are the best trial's, ties broken by log-loss.

    Optuna's GP sampler is not offered: it needs torch, which ``ensemble`` must not import.

    Args:
        n_trials: Optuna trials (weight vectors scored).
        metric: ``accuracy``, ``f1`` or ``logloss``.
        sampler: ``tpe`` (default) or ``random`` (an ablation: random search, same budget).
        random_state: Sampler seed; the same seed gives the same weights.
        verbose: Show Optuna's progress bar.
    """

    name = "bayesian"

    def __init__(
        self,
        n_trials: int = DEFAULT_TRIALS,
        metric: str = "accuracy",
        sampler: str = "tpe",
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self.n_trials = n_trials
        self.metric = metric
        self.sampler = sampler
        self.random_state = random_state
        self.verbose = verbose

    def _make_sampler(self) -> Any:  # an optuna sampler; optuna is imported lazily
        import optuna

        if self.sampler == "tpe":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(seed=self.random_state, multivariate=True)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.random_state)
        raise ValueError(f"sampler must be 'tpe' or 'random', got {self.sampler!r}")

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        import optuna

        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}")
        objective = self._objective(stack, y)
        n_models = stack.n_models
        tracker = BestTracker(self.metric)
        names = [f"w{m}" for m in range(n_models)]

        def trial_fn(trial: optuna.Trial) -> float:
            raw = np.array([trial.suggest_float(n, 0.0, 1.0) for n in names])
            value, ll = objective(raw[None])[0], objective.logloss(raw[None])[0]
            tracker.offer(raw[None], [value], [ll])
            trial.set_user_attr("logloss", float(ll))
            return float(value)

        best_single = _best_single(objective, self.metric)
        # Quiet Optuna's per-trial INFO lines for this study only; the caller's setting is restored.
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(
                direction="maximize" if METRICS[self.metric] else "minimize", sampler=self._make_sampler()
            )
            study.enqueue_trial({n: float(m == best_single) for m, n in enumerate(names)})
            study.enqueue_trial(dict.fromkeys(names, 1.0))
            # Optuna's bar redraws per trial: on a terminal only, or a log file gets a line per trial.
            study.optimize(
                trial_fn, n_trials=self.n_trials, show_progress_bar=self.verbose and sys.stderr.isatty()
            )
        finally:
            optuna.logging.set_verbosity(verbosity)
        self.history_ = np.asarray(tracker.history)
        self.best_value_ = tracker.value
        self.n_evals_ = len(tracker.history)
        return tracker.weights


@register_method
class GeneticEnsemble(WeightedEnsemble):
    """Evolutionary weight search with scipy's differential evolution.

    The population (``popsize * M`` weight vectors) is scored in one batched pass per
    generation (``vectorized=True``); the best single model seeds the population and the best
    weights met anywhere are kept (ties broken by log-loss). No polishing step: the objective
    is piecewise constant, so gradients say nothing.

    Args:
        n_generations: Generations (``maxiter``); evaluations are about
            ``popsize * M * (n_generations + 1)``.
        popsize: Population size per weight (scipy's multiplier).
        metric: ``accuracy``, ``f1`` or ``logloss``.
        mutation: Differential weight (or dithering range).
        recombination: Crossover probability.
        random_state: Seed; the same seed gives the same weights.
        verbose: Show a progress bar over generations.
    """

    name = "genetic"

    def __init__(
        self,
        n_generations: int = 100,
        popsize: int = 5,
        metric: str = "accuracy",
        mutation: float | tuple[float, float] = (0.5, 1.0),
        recombination: float = 0.7,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self.n_generations = n_generations
        self.popsize = popsize
        self.metric = metric
        self.mutation = mutation
        self.recombination = recombination
        self.random_state = random_state
        self.verbose = verbose

    def _fit_weights(self, stack: ProbStack, y: np.ndarray, folds: np.ndarray | None) -> np.ndarray:
        from scipy.optimize import differential_evolution

        objective = self._objective(stack, y)
        n_models = stack.n_models
        tracker = BestTracker(self.metric)
        starts = np.vstack(
            [np.eye(n_models)[_best_single(objective, self.metric)], np.full(n_models, 1.0 / n_models)]
        )
        tracker.offer(starts, objective(starts), objective.logloss(starts))
        sign = -1.0 if METRICS[self.metric] else 1.0  # scipy minimises

        def population_fn(x: np.ndarray) -> np.ndarray:
            W = np.atleast_2d(x.T)  # scipy passes (M, S) with vectorized=True
            values, lls = objective(W), objective.logloss(W)
            tracker.offer(W, values, lls)
            return sign * values

        bar = progress(self.n_generations, "genetic", self.verbose)
        differential_evolution(
            population_fn,
            bounds=[(0.0, 1.0)] * n_models,
            maxiter=self.n_generations,
            popsize=self.popsize,
            mutation=self.mutation,
            recombination=self.recombination,
            rng=np.random.default_rng(self.random_state),
            x0=starts[0],  # the best single model joins the initial population
            polish=False,
            tol=0.0,
            vectorized=True,
            updating="deferred",
            callback=lambda intermediate_result: _tick(bar),
        )
        bar.close()
        self.history_ = np.asarray(tracker.history)
        self.best_value_ = tracker.value
        self.n_evals_ = len(tracker.history)
        return tracker.weights

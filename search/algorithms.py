"""The searcher (which configs to try) and the scheduler (when to stop a trial) of a search."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher

from search.config import dimensions, max_epochs, search_plan, trainable_config
from search.space import Dimension, normalize_points, points_for_optuna, points_for_variants

log = logging.getLogger(__name__)

# Schedulers compare trials at the same epoch; the trainable reports `epoch` with every result.
TIME_ATTR = "epoch"


def resolve_search_alg(cfg: DictConfig) -> str:
    """The concrete algorithm: ``auto`` is ``grid`` when every searched key is a grid, else ``tpe``."""
    return search_plan(cfg).search_alg  # resolved once per config by search.plan


def uses_grid_search(cfg: DictConfig) -> bool:
    """Whether grid keys are enumerated (``tune.grid_search``) rather than sampled as categoricals."""
    return resolve_search_alg(cfg) == "grid"


def make_searcher(cfg: DictConfig, max_concurrent: int | None) -> Searcher | SearchAlgorithm:
    """Build the search algorithm named by ``tune.search_alg``, with the known-good points first.

    ``grid``/``random`` use Ray's variant generator (a grid is enumerated, ``num_samples`` times);
    ``tpe``/``gp``/``cmaes`` are Optuna samplers behind Ray's ``OptunaSearch``, which see grid
    keys as categoricals, wrapped in a ``ConcurrencyLimiter`` so each suggestion can learn from
    the results before it.

    Args:
        cfg: A loaded config.
        max_concurrent: Trials run at once (None: no limit).

    Returns:
        The object for ``TuneConfig(search_alg=...)``.
    """
    alg = resolve_search_alg(cfg)
    dims = dimensions(cfg)
    points = normalize_points(_container(cfg.tune.points_to_evaluate), dims, trainable_config(cfg))
    seed = cfg.tune.seed
    if alg in ("grid", "random"):
        return BasicVariantGenerator(
            points_to_evaluate=points_for_variants(points) or None,
            max_concurrent=max_concurrent or 0,
            random_state=seed,
        )
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        sampler=_optuna_sampler(alg, seed, int(cfg.tune.num_samples), dims),
        points_to_evaluate=points_for_optuna(points) or None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


def _optuna_sampler(alg: str, seed: int | None, num_samples: int, dims: Mapping[str, Dimension]) -> Any:
    import optuna

    # Optuna's defaults start model-based sampling after 10 random trials, the whole budget of a
    # small search; a quarter of the budget (2..10) keeps some of it for the model.
    startup = max(2, min(10, num_samples // 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if alg == "tpe":
            # multivariate: lr and batch size interact; independent TPE would miss that.
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
        if alg == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        if alg == "cmaes":
            if all(d.kind in ("grid", "choice") for d in dims.values()):
                log.warning("cmaes: every searched key is categorical; CMA-ES samples those at random")
            # CMA-ES has no categoricals: Optuna samples those independently (random), on purpose.
            return optuna.samplers.CmaEsSampler(
                seed=seed, n_startup_trials=startup, warn_independent_sampling=False
            )
    raise ValueError(f"unknown search algorithm {alg!r}")


def make_scheduler(cfg: DictConfig) -> TrialScheduler:
    """Build the trial scheduler named by ``scheduler.name``; ``max_t`` is the trainable's epochs.

    Args:
        cfg: A loaded config.

    Returns:
        The object for ``TuneConfig(scheduler=...)`` (metric and mode come from TuneConfig).
    """
    name = str(cfg.scheduler.name)
    max_t = max_epochs(cfg)
    grace = min(int(cfg.scheduler.grace_period), max_t)
    if grace < int(cfg.scheduler.grace_period):
        log.info("scheduler.grace_period %s > %s epochs; using %s", cfg.scheduler.grace_period, max_t, grace)
    factor = float(cfg.scheduler.reduction_factor)
    if name == "asha":
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t, grace_period=grace, reduction_factor=factor)
    if name == "hyperband":
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_t, reduction_factor=factor)
    if name == "median":
        return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=grace, min_samples_required=3)
    if name == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler {name!r}")


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node

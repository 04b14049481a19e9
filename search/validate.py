"""The value checks of a search's config (its types are :mod:`search.schema`'s, checked on load).

:func:`validate` checks the ranges and choices the search itself uses; the trainable checks its
own keys (``validate_config``), here run on the base config and on every searched value before
any trial starts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from search.plan import search_plan
from search.space import Dimension, SpaceError, normalize_points
from trainables.overrides import ConfigError

SEARCH_ALGS = ("auto", "grid", "random", "tpe", "gp", "cmaes")
SCHEDULERS = ("asha", "hyperband", "median", "fifo")


def _is_int(x: Any) -> bool:
    """An int and not a bool (an ``Any`` key such as ``grace_period`` may hold either)."""
    return isinstance(x, int) and not isinstance(x, bool)


def _raise_first(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Check the values that the search itself uses (the trainable checks its own keys).

    Args:
        cfg: A typed config (:func:`search.config.load_config`): every value has its schema's type.

    Raises:
        ConfigError: A value is out of range or not one of the allowed choices.
    """
    tune, sched, res = cfg.tune, cfg.scheduler, cfg.resources
    _raise_first(
        [
            (
                tune.search_alg in SEARCH_ALGS,
                f"tune.search_alg={tune.search_alg!r}: use one of {list(SEARCH_ALGS)}",
            ),
            (sched.name in SCHEDULERS, f"scheduler.name={sched.name!r}: use one of {list(SCHEDULERS)}"),
            (tune.mode in ("max", "min"), f"tune.mode={tune.mode!r}: use max or min"),
            (tune.num_samples >= 1, "tune.num_samples must be an integer >= 1"),
            (
                tune.max_concurrent is None or tune.max_concurrent >= 1,
                "tune.max_concurrent must be null or an integer >= 1",
            ),
            (
                tune.time_budget_s is None or tune.time_budget_s > 0,
                "tune.time_budget_s must be null or seconds > 0",
            ),
            (
                sched.grace_period == "auto" or (_is_int(sched.grace_period) and sched.grace_period >= 1),
                f"scheduler.grace_period={sched.grace_period!r}: use auto (one epoch past the "
                "trainable's warmup) or an integer >= 1",
            ),
            (sched.reduction_factor > 1, "scheduler.reduction_factor must be > 1"),
            (sched.noise_margin >= 0, "scheduler.noise_margin must be >= 0 (0: stop on any score below the cutoff)"),
            (res.cpu > 0, "resources.cpu must be > 0 (fractions are fine)"),
            (res.gpu >= 0, "resources.gpu must be >= 0 (fractions are fine)"),
            (
                res.gpu <= 1 or float(res.gpu).is_integer(),
                f"resources.gpu={res.gpu}: above 1 a trial needs whole GPUs",
            ),
            (cfg.checkpoint.num_to_keep >= 1, "checkpoint.num_to_keep must be >= 1"),
            (cfg.max_failures >= -1, "max_failures must be an integer >= 0 (-1: retry forever)"),
            (
                "/" not in str(cfg.experiment),
                f"experiment={cfg.experiment!r} must be a plain name, not a path",
            ),
            *oof_checks(cfg),
        ]
    )
    _check_search(cfg)


def oof_checks(cfg: DictConfig) -> list[tuple[bool, str]]:
    """``(ok, message)`` for the typed ``oof`` and ``ensemble`` sections (shared with ``search.oof``)."""
    oof, ens = cfg.oof, cfg.ensemble
    return [
        (oof.top_k >= 1, "oof.top_k must be an integer >= 1"),
        (
            oof.max_per_backbone is None or oof.max_per_backbone >= 1,
            "oof.max_per_backbone must be null or an integer >= 1",
        ),
        (
            oof.epochs == "best" or (_is_int(oof.epochs) and oof.epochs >= 1),
            f"oof.epochs={oof.epochs!r}: use best (the search's best epoch per trial) or a number >= 1",
        ),
        (oof.dtype in ("float16", "float32"), f"oof.dtype={oof.dtype!r}: use float16 or float32"),
        (oof.mode in ("refit", "promote"), f"oof.mode={oof.mode!r}: use refit or promote"),
        (oof.select in ("score", "gain"), f"oof.select={oof.select!r}: use score or gain"),
        (
            oof.ship_results in ("auto", True, False),
            f"oof.ship_results={oof.ship_results!r}: use auto (when ray.storage is a URI), true or false",
        ),
        (
            oof.time_budget_s is None or oof.time_budget_s > 0,
            "oof.time_budget_s must be null or seconds > 0 (budget= sets it)",
        ),
        (
            all(v > 0 for v in oof.model_s.values()),
            "oof.model_s: each backbone's seconds must be > 0 (budget= sets them)",
        ),
        (
            ens.metric in ("accuracy", "f1", "logloss"),
            f"ensemble.metric={ens.metric!r}: use accuracy, f1 or logloss",
        ),
        (ens.trials >= 1, "ensemble.trials must be an integer >= 1"),
    ]


def _check_search(cfg: DictConfig) -> None:
    """The searched keys against the algorithm, the known-good points, and the trainable's checks."""
    plan = search_plan(cfg)
    dims = plan.dimensions
    alg = cfg.tune.search_alg
    if alg == "grid" and not all(d.is_grid for d in dims.values()):
        sampled = [p for p, d in dims.items() if not d.is_grid]
        raise ConfigError(
            f"tune.search_alg=grid needs every searched key to be a grid; {sampled} are sampled: use random or tpe"
        )
    if alg in ("gp", "cmaes", "tpe") and not dims:
        raise ConfigError(f"tune.search_alg={alg} needs at least one searched key (search: is empty)")
    base = OmegaConf.to_container(cfg.trainable, resolve=True)
    base.pop("name", None)
    try:
        normalize_points(OmegaConf.to_container(cfg.tune.points_to_evaluate), dims, base)
    except SpaceError as err:
        raise ConfigError(str(err)) from err
    _check_trainable_values(str(cfg.trainable.name), base, dims)


def _check_trainable_values(name: str, base: dict[str, Any], dims: Mapping[str, Dimension]) -> None:
    """Let the trainable check its config, and each searched value in it, before any trial starts."""
    import trainables

    check = trainables.create_trainable(name).validate_config
    try:
        check(base)
    except ValueError as err:
        raise ConfigError(f"trainable config: {err}") from err
    for path, dim in dims.items():
        values = dim.args if dim.kind in ("grid", "choice") else dim.args[:2]
        for value in values:
            trial = OmegaConf.create(copy.deepcopy(base))
            OmegaConf.update(trial, path, value)
            try:
                check(OmegaConf.to_container(trial))
            except ValueError as err:
                raise ConfigError(
                    f"search.{path}: value {value!r} of {dim.describe()} is invalid: {err}"
                ) from err

"""The searcher (which configs to try) and the scheduler (when to stop a trial) of a search."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, QMCSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from ray.tune.schedulers import (
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher

from search.config import dimensions, max_epochs, search_plan, trainable_config
from search.provisional_asha import ProvisionalASHA
from search.space import (
    Dimension,
    build_param_space,
    normalize_points,
    points_for_optuna,
    points_for_variants,
)

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
    the results before it. Those start space-filling (:func:`start_trials` scrambled-Sobol
    points, ``points_to_evaluate`` counted among them) before the model takes over.

    Args:
        cfg: A loaded config.
        max_concurrent: Trials run at once (None: no limit).

    Returns:
        The object for ``TuneConfig(search_alg=...)``.
    """
    alg = resolve_search_alg(cfg)
    dims = dimensions(cfg)
    base = trainable_config(cfg)
    points = normalize_points(_container(cfg.tune.points_to_evaluate), dims, base)
    seed = cfg.tune.seed
    if alg in ("grid", "random"):
        return BasicVariantGenerator(
            points_to_evaluate=points_for_variants(points) or None,
            max_concurrent=max_concurrent or 0,
            random_state=seed,
        )
    from ray.tune.search.optuna import OptunaSearch

    # The Optuna distributions exactly as OptunaSearch will derive them from the Tuner's param_space,
    # so the start sampler knows the space before the first trial (QMCSampler alone would not).
    space = OptunaSearch.convert_search_space(build_param_space(base, dims, grid_as_choice=True))
    n_start = start_trials(len(dims), int(cfg.tune.num_samples))
    searcher = OptunaSearch(
        sampler=SpaceFillingStart(_optuna_sampler(alg, seed, dims), n_start, seed, space),
        points_to_evaluate=points_for_optuna(points) or None,
    )
    log.info(
        "%s: the first %d of %d trials space-filling (scrambled Sobol, %d of them points_to_evaluate)",
        alg, n_start, cfg.tune.num_samples, min(len(points), n_start),
    )  # fmt: skip
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


def start_trials(n_keys: int, num_samples: int) -> int:
    """Trials of the space-filling start: ``max(n_keys + 1, ceil(num_samples / 4))``, at most all of them.

    ``n_keys + 1`` points are the fewest that can say something about every searched key; a
    quarter of the budget keeps three quarters for the model. Optuna's own default (10 random
    trials) would be the whole budget of a small search, and multivariate TPE after 2 trials
    never explores (measured: 4 trials sampled lr 1.00e-3, 1.06e-3, 1.05e-3, 2.90e-3).
    """
    return min(num_samples, max(n_keys + 1, math.ceil(num_samples / 4)))


def _optuna_sampler(alg: str, seed: int | None, dims: Mapping[str, Dimension]) -> Any:
    import optuna

    # Random only until one trial has a result: the space-filling start did the exploring.
    startup = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
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


class SpaceFillingStart(BaseSampler):
    """Scrambled-Sobol points for the first ``n_start`` trials, then ``model`` (TPE, GP, CMA-ES).

    Trials are told apart by number, so enqueued ``points_to_evaluate`` (numbered first, and
    sampled by nobody) count toward the start. Sobol points spread over the unit cube whatever
    the results say, which is what a handful of trials needs before a model can learn anything;
    scrambling with the search's seed makes them random yet reproducible.

    Args:
        model: The sampler after the start.
        n_start: Trials of the start (points included).
        seed: Seeds the scrambling (and the first trial's fallback for keys outside ``space``).
        space: Optuna distributions of every searched key, as ``OptunaSearch`` names them; lets
            the very first trial be a Sobol point too (``QMCSampler`` learns the space from a
            finished trial otherwise). None: learn it that way.
    """

    def __init__(
        self,
        model: BaseSampler,
        n_start: int,
        seed: int | None = None,
        space: Mapping[str, BaseDistribution] | None = None,
    ) -> None:
        self.model, self.n_start, self.space = model, int(n_start), dict(space or {})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # QMCSampler is stable in use since 3.0
            self.qmc = QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed,
                independent_sampler=RandomSampler(seed=seed),
                warn_asynchronous_seeding=False,  # one driver asks for every trial: one sequence
                warn_independent_sampling=False,
            )

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        return self.qmc if trial.number < self.n_start else self.model

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The start's space is ``space`` when given; the model infers its own."""
        if trial.number < self.n_start and self.space:
            return dict(self.space)
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The trial's point from the start (Sobol) or the model."""
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """A key outside the relative space, from the same sampler as the rest of the trial."""
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Both samplers see every trial start, so their bookkeeping stays whole."""
        self.qmc.before_trial(study, trial)
        self.model.before_trial(study, trial)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """Both samplers see every trial end."""
        self.qmc.after_trial(study, trial, state, values)
        self.model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Reseed the model; the Sobol sequence keeps its seed (its points are numbered in the study)."""
        self.model.reseed_rng()


def make_scheduler(cfg: DictConfig) -> TrialScheduler:
    """Build the trial scheduler named by ``scheduler.name``; ``max_t`` is the trainable's epochs.

    ASHA's rungs (and the median rule's first check) start at :func:`grace_period`. When that is
    not before the last epoch there is nothing to stop early: the search runs FIFO and says so.

    Args:
        cfg: A loaded config.

    Returns:
        The object for ``TuneConfig(scheduler=...)`` (metric and mode come from TuneConfig).
    """
    name = str(cfg.scheduler.name)
    max_t = max_epochs(cfg)
    factor = float(cfg.scheduler.reduction_factor)
    if name == "hyperband":
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_t, reduction_factor=factor)
    if name == "fifo":
        return FIFOScheduler()
    if name not in ("asha", "median"):
        raise ValueError(f"unknown scheduler {name!r}")
    grace = grace_period(cfg)
    if grace >= max_t:
        log.info(
            "scheduler %s: grace period %d >= %d epochs leaves no epoch to stop a trial at; running FIFO "
            "(train more epochs or lower scheduler.grace_period to stop trials early)", name, grace, max_t,
        )  # fmt: skip
        return FIFOScheduler()
    log.info("scheduler %s: first judged after epoch %d of %d", name, grace, max_t)
    if name == "asha":
        return ProvisionalASHA(
            time_attr=TIME_ATTR, max_t=max_t, grace_period=grace, reduction_factor=factor,
            noise_margin=float(cfg.scheduler.noise_margin),
        )  # fmt: skip
    return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=grace, min_samples_required=3)


def first_epoch_after_warmup(warmup_epochs: float) -> int:
    """The first whole epoch that ends with the learning rate past its warmup ramp.

    A warmup of 1 epoch ends exactly at the end of epoch 1, so every update of epoch 1 ran on a
    ramping lr and the first honest score is epoch 2's; a warmup of 0.5 epoch leaves half of
    epoch 1 at the peak lr, so epoch 1's score already is one.

    Args:
        warmup_epochs: The trainable's warmup in epochs (fractions allowed).

    Returns:
        ``floor(warmup_epochs) + 1``.
    """
    return int(math.floor(float(warmup_epochs))) + 1


def _top_warmup(cfg: DictConfig) -> float:
    """The longest warmup a trial may have: the top of ``warmup_epochs``'s range, else the trainable's."""
    dims = dimensions(cfg)
    if "warmup_epochs" in dims:
        return float(dims["warmup_epochs"].upper())
    return float(trainable_config(cfg).get("warmup_epochs", 0) or 0)


def auto_grace_period(cfg: DictConfig) -> int:
    """What ``scheduler.grace_period=auto`` means for ``cfg``: the first epoch past the longest warmup."""
    return first_epoch_after_warmup(_top_warmup(cfg))


def grace_period(cfg: DictConfig) -> int:
    """Epochs a trial runs before a scheduler may stop it, at most the epochs it has.

    ``auto`` is the first epoch that ends past the trainable's warmup
    (:func:`first_epoch_after_warmup`, on the top of ``warmup_epochs``'s range when it is
    searched): a score taken while the learning rate still ramps up says little about the
    trial, and stopping on it stopped three of four trials of a 4-trial search. A number set by
    hand is kept, with a warning when it ends inside the warmup.

    Args:
        cfg: A loaded config.

    Returns:
        The grace period in epochs, clamped to ``max_epochs(cfg)``.
    """
    warmup = _top_warmup(cfg)
    earliest = first_epoch_after_warmup(warmup)
    value = cfg.scheduler.grace_period
    if value == "auto":
        grace = earliest
    else:
        grace = int(value)
        if grace < earliest:
            log.warning(
                "scheduler.grace_period=%d ends inside the trainable's warmup (%g epochs): trials are "
                "judged on a warmup score; use scheduler.grace_period=auto (%d)", grace, warmup, earliest,
            )  # fmt: skip
    max_t = max_epochs(cfg)
    if grace > max_t:
        log.info("scheduler.grace_period %s > %d epochs; using %d", value, max_t, max_t)
    return min(grace, max_t)


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node

"""Which trials of a finished search the OOF stage refits: the best ones, with a diversity rule."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.leaderboard import STATUS_CUT, STATUS_DONE, STATUS_STOPPED
from search.search_result import FoundTrial, SearchResult

# Trials that trained (to the end, or until ASHA stopped them) have a trustworthy score and epoch.
_USABLE = (STATUS_DONE, STATUS_STOPPED, STATUS_CUT)


@dataclass(frozen=True)
class RefitModel:
    """One config to refit on every fold.

    Attributes:
        model_id: Directory name of its artifact: ``<backbone>-<trial_id>``, stable across reruns.
        trial_id: The search trial it comes from.
        trainable: The registered trainable's name.
        config: The trial's complete trainable config (``fold`` and ``epochs`` are set per fold).
        epochs: Epochs each fold trains.
        search_score: The trial's best score in the search.
        backbone: What the diversity rule counts.
    """

    model_id: str
    trial_id: str
    trainable: str
    config: dict[str, Any]
    epochs: int
    search_score: float
    backbone: str


class NoUsableTrial(ValueError):
    """The search left no trial of the statuses asked for with a score."""


def select_models(
    result: SearchResult,
    *,
    trainable: str,
    top_k: int,
    max_per_backbone: int | None = None,
    epochs: int | str = "best",
) -> list[RefitModel]:
    """The best trials to refit, best first.

    Trials that errored, were interrupted or never scored are skipped. Trials with the same
    config (a grid repeated, a searcher proposing a point twice) count once. With
    ``max_per_backbone`` a backbone already taken that many times is passed over, so the
    ensemble gets different models rather than five variants of one.

    Args:
        result: What the search found (:func:`search.search_result.load_search_result`).
        trainable: The trainable the search ran.
        top_k: How many to take.
        max_per_backbone: Diversity cap per backbone; None for none.
        epochs: ``"best"`` (each trial's best epoch) or a fixed number.

    Returns:
        Up to ``top_k`` models.

    Raises:
        ValueError: No trial is usable; the message says what the leaderboard holds.
    """
    found = candidates(result, trainable=trainable, epochs=epochs)
    return cap_per_backbone(found, max_per_backbone)[:top_k]


def candidates(
    result: SearchResult,
    *,
    trainable: str,
    epochs: int | str = "best",
    statuses: tuple[str, ...] = _USABLE,
) -> list[RefitModel]:
    """Every trial with a usable score and a distinct config, best first.

    Args:
        statuses: Statuses to accept (promotion takes only ``done``: trials that ran their
            whole schedule, whose last checkpoint is the model the search scored).
        epochs: ``"best"``, ``"full"`` (the config's own ``epochs``) or a number.

    Raises:
        NoUsableTrial: No trial is usable; the message says what the leaderboard holds.
    """
    found: list[RefitModel] = []
    seen: set[str] = set()
    for trial in result.trials:
        if trial.status not in statuses or math.isnan(trial.score):
            continue
        key = json.dumps(trial.config, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        backbone = str(trial.config.get("backbone") or trainable)
        n_epochs = int(trial.config.get("epochs", 1)) if epochs == "full" else _refit_epochs(trial, epochs)
        found.append(
            RefitModel(
                model_id=f"{_slug(backbone)}-{trial.trial_id}",
                trial_id=trial.trial_id,
                trainable=trainable,
                config=dict(trial.config),
                epochs=n_epochs,
                search_score=trial.score,
                backbone=backbone,
            )
        )
    if not found:
        counts = dict(result.status_counts)
        advice = (
            "; the search's time cap ended every trial before its first score: give it more time "
            "(a larger budget=, or tune.time_budget_s)"
            if counts and set(counts) == {"cut"}
            else ""
        )
        raise NoUsableTrial(
            f"no trial of the search can be refit: it needs a trial with status {' or '.join(statuses)} "
            f"and a {result.metric} score; the leaderboard holds {sum(counts.values())} trials ({counts or 'none'})"
            + advice
        )
    return found


# The chosen models may exceed the OOF's planned time by this much: budget= keeps a reserve.
TIME_SLACK = 1.05


@dataclass(frozen=True)
class OofTime:
    """The time ``budget=`` gave the OOF, and what each model's folds cost in it.

    The plan prices the OOF at the space's backbone cheapest to refit; a dearer model is chosen only
    while the chosen models' costs add up to at most ``budget_s`` (times :data:`TIME_SLACK`).

    Attributes:
        budget_s: ``oof.time_budget_s``; None: no limit.
        model_s: ``oof.model_s``: one model's OOF seconds per backbone (a backbone not in it costs
            the dearest one that is).
        extra_s: Seconds a model adds beyond its backbone's (a stopped trial's fold 0 to finish).
        full_s: ``oof.model_full_s``: ``model_s`` of a model whose config keeps its folds from
            reading the frozen stages' caches (:func:`trainables.frozen.config_refusal`).
    """

    budget_s: float | None = None
    model_s: Mapping[str, float] = field(default_factory=dict)
    extra_s: Mapping[str, float] = field(default_factory=dict)
    full_s: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, oof: Any) -> OofTime:
        """From the config's ``oof:`` section (``time_budget_s``, ``model_s``, ``model_full_s``)."""
        budget, costs = oof.get("time_budget_s"), dict(oof.get("model_s") or {})
        full = dict(oof.get("model_full_s") or {})
        return cls(None if budget is None else float(budget), costs, full_s=full)

    @property
    def limited(self) -> bool:
        return self.budget_s is not None and bool(self.model_s)

    def cost(self, model: RefitModel) -> float:
        """Seconds ``model``'s OOF takes (0 without a plan)."""
        if not self.model_s:
            return 0.0
        from trainables.frozen import config_refusal

        costs = self.model_s
        if self.full_s and model.trainable == "timm" and config_refusal(model.config) is not None:
            costs = self.full_s
        return costs.get(model.backbone, max(costs.values())) + self.extra_s.get(model.model_id, 0.0)

    def fits(self, chosen: list[RefitModel], model: RefitModel) -> bool:
        """Whether ``model`` still fits beside ``chosen``."""
        if not self.limited:
            return True
        assert self.budget_s is not None
        return sum(map(self.cost, [*chosen, model])) <= self.budget_s * TIME_SLACK


def take_in_time(models: list[RefitModel], top_k: int, time: OofTime) -> list[RefitModel]:
    """Up to ``top_k`` of ``models``, in their order, passing over those the OOF's time cannot fit.

    When not even one fits, the cheapest is taken: a flow that ends with a model beats one that
    ends with none, and its time is over the plan's by less than any other's.
    """
    chosen: list[RefitModel] = []
    for model in models:
        if len(chosen) < top_k and time.fits(chosen, model):
            chosen.append(model)
    if not chosen and models:
        chosen = [min(models, key=time.cost)]
    return chosen


def cap_per_backbone(models: list[RefitModel], max_per_backbone: int | None) -> list[RefitModel]:
    """``models`` in order, passing over a backbone once it was taken ``max_per_backbone`` times."""
    if max_per_backbone is None:
        return list(models)
    taken: dict[str, int] = {}
    out = []
    for model in models:
        if taken.get(model.backbone, 0) < max_per_backbone:
            taken[model.backbone] = taken.get(model.backbone, 0) + 1
            out.append(model)
    return out


def select_by_gain(
    models: list[RefitModel],
    val_probs: Mapping[str, np.ndarray],
    targets: np.ndarray,
    *,
    top_k: int,
    max_per_backbone: int | None = None,
    time: OofTime | None = None,
) -> list[RefitModel]:
    """Forward selection by what each model adds to the ensemble of those already chosen.

    Starting from the model the search scored best (the lowest fold-0 log-loss among equals), each
    step adds the model whose predictions most lower the log-loss of the equal-weight mean of the
    chosen ones (Caruana's ensemble selection, without repeats), and stops at ``top_k`` or when
    no model lowers it: a near-copy of a chosen model adds almost nothing, so a weaker but
    different one is promoted before it, and a model that could only add noise is not refit.

    Args:
        models: Candidates (each with fold-0 predictions in ``val_probs``).
        val_probs: Fold-0 validation probabilities per ``model_id``, rows in one order.
        targets: The labels of those rows.
        top_k: The most models to promote.
        max_per_backbone: Diversity cap per backbone; None for none.
        time: The OOF's time: a model whose folds no longer fit is passed over (when not even
            the first fits, the cheapest is taken, as in :func:`take_in_time`).

    Returns:
        The promoted models, in the order they were chosen.
    """
    time = time or OofTime()
    pool = [m for m in models if m.model_id in val_probs]
    if pool and not any(time.fits([], m) for m in pool):
        pool = take_in_time(pool, 1, time)  # the cheapest, alone
        time = OofTime()
    chosen: list[RefitModel] = []
    total: np.ndarray | None = None
    best_loss = math.inf
    while pool and len(chosen) < top_k:
        allowed = cap_per_backbone(chosen + pool, max_per_backbone)[len(chosen) :]
        allowed = [m for m in allowed if time.fits(chosen, m)]
        scored = [(_log_loss(_mean(total, val_probs[m.model_id], len(chosen)), targets), m) for m in allowed]
        if not scored:
            break
        if not chosen:
            # The first is the one the search scored best. Log-loss alone would start from the least
            # smoothed model, not the most accurate: compete at 30 min promoted a trial with label
            # smoothing 0.03 (fold-0 accuracy 0.517, log-loss 2.01) over the reference's 0.1 (0.535, 2.11).
            loss, model = max(scored, key=lambda pair: (pair[1].search_score, -pair[0]))
        else:
            loss, model = min(scored, key=lambda pair: pair[0])
            if loss >= best_loss - 1e-9:
                break
        best_loss = loss
        chosen.append(model)
        pool.remove(model)
        probs = val_probs[model.model_id].astype(np.float64)
        total = probs if total is None else total + probs
    return chosen


def _mean(total: np.ndarray | None, probs: np.ndarray, n: int) -> np.ndarray:
    return probs.astype(np.float64) if total is None else (total + probs) / (n + 1)


def _log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    picked = probs[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def _refit_epochs(trial: FoundTrial, epochs: int | str) -> int:
    if epochs != "best":
        return int(epochs)
    if trial.best_epoch is None:
        return int(trial.config.get("epochs", 1))
    # 0 is a real fit for trainables that report an untrained epoch 0 (CLIP's zero-shot model)
    return max(0, trial.best_epoch)


def _slug(text: str) -> str:
    """A directory-safe name (``hf-hub:org/model`` -> ``hf-hub_org_model``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"

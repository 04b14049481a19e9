"""Promotion (``oof.mode=promote``): the search's own fold-0 trials become their models' fold 0.

The OOF stage then trains only folds 1..K-1 of each promoted model with the trial's full
schedule. A trial that ran that schedule predicts fold 0 from its last checkpoint; a trial ASHA
stopped (or the time cap cut) continues on fold 0 from its last checkpoint to the end of the
same schedule, as if it had never been stopped. No fold is trained twice either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
from omegaconf import DictConfig

from search.leaderboard import STATUS_CUT, STATUS_DONE, STATUS_STOPPED
from search.oof_data import data_facts
from search.oof_select import (
    NoUsableTrial,
    OofTime,
    RefitModel,
    candidates,
    cap_per_backbone,
    select_by_gain,
    take_in_time,
)
from search.search_result import SearchResult

log = logging.getLogger("search.oof")

__all__ = ["NothingToPromote", "Promotion", "promote"]


class NothingToPromote(ValueError):
    """No fold-0 trial left a checkpoint here (the refit can still run)."""


@dataclass
class Promotion:
    """The promoted models and where each one's fold 0 comes from.

    Attributes:
        models: In the order they were chosen.
        predict_from: Finished trials: the checkpoint fold 0 predicts from (nothing is trained).
        resume_from: Trials stopped before their schedule's end: the checkpoint fold 0 continues
            training from, to the end of the schedule.
    """

    models: list[RefitModel] = field(default_factory=list)
    predict_from: dict[str, str] = field(default_factory=dict)
    resume_from: dict[str, str] = field(default_factory=dict)


def promote(cfg: DictConfig, result: SearchResult) -> Promotion:
    """Promotion: pick the fold-0 trials whose models the ensemble gets, finished or not.

    Candidates are every finished trial, and the best ``top_k`` of those stopped early (ASHA, or
    the time cap), each with its last checkpoint on this machine. A stopped trial is promoted
    only when the ensemble needs it: ``oof.select=gain`` ranks candidates by what each one's
    predictions, as the search left them, add to the fold-0 ensemble of those already chosen,
    and a stopped trial's predictions come from fewer epochs, so it wins a place by being
    different, not by being trained longer. ``score`` takes them by search score. Either way the
    promoted model is the trial's own, trained to the end of its full schedule. Under
    ``budget=`` the chosen models' folds must fit in the time the plan gave the OOF
    (:class:`~search.oof_select.OofTime`): a model too slow for it is passed over.

    Args:
        cfg: The refit's config (``oof.*``, ``trainable.name``).
        result: What the search found: its trials, their configs and checkpoints.

    Returns:
        The promoted models, and each one's fold-0 checkpoint (to predict from, or to resume).

    Raises:
        NothingToPromote: No fold-0 trial left a checkpoint on this machine's disk.
    """
    top_k, cap = int(cfg.oof.top_k), cfg.oof.max_per_backbone
    checkpoints = {t.trial_id: t.checkpoint for t in result.trials if t.checkpoint}
    finished = _with_checkpoint(result, checkpoints, str(cfg.trainable.name), (STATUS_DONE,))
    stopped = _with_checkpoint(result, checkpoints, str(cfg.trainable.name), (STATUS_STOPPED, STATUS_CUT))
    time = _oof_time(cfg, stopped, checkpoints)
    stopped = stopped_candidates(stopped, time, top_k)
    pool = sorted(finished + stopped, key=lambda m: -m.search_score)
    if not pool:
        raise NothingToPromote(
            "oof.mode=promote needs fold-0 trials that left a checkpoint on this machine's disk; this "
            "search has none (none trained an epoch, or Ray's storage is remote)"
        )
    done = {m.model_id for m in finished}
    if cfg.oof.select == "gain" and len(pool) > 1:
        facts = data_facts(pool)
        rows = np.flatnonzero(facts.folds == 0)
        probs = {m.model_id: _predict(m, checkpoints[m.trial_id], rows, bool(cfg.oof.tta_flip)) for m in pool}
        chosen = select_by_gain(pool, probs, facts.targets[rows], top_k=top_k, max_per_backbone=cap, time=time)
    else:
        chosen = take_in_time(cap_per_backbone(pool, cap), top_k, time)
    if time.limited:
        best = max(m.search_score for m in chosen)
        slow = [f"{m.model_id} ({m.search_score:.4f}, {time.cost(m):.0f} s)" for m in pool
                if m.search_score > best and not time.fits([], m)]  # fmt: skip
        log.info(
            "budget=: the OOF's %.0f s hold %s%s",
            time.budget_s, ", ".join(f"{m.model_id} ({time.cost(m):.0f} s)" for m in chosen),
            f"; better-scored but too slow to train on every fold in it: {', '.join(slow)} "
            "(search.oof ... oof.time_budget_s=null promotes them after all)" if slow else "",
        )  # fmt: skip
    out = Promotion(models=chosen)
    for model in chosen:
        target = out.predict_from if model.model_id in done else out.resume_from
        target[model.model_id] = str(checkpoints[model.trial_id])
    log.info(
        "promoting %s (of %d finished and %d stopped trials) to every fold%s",
        ", ".join(m.model_id for m in chosen),
        len(finished),
        len(stopped),
        f"; {', '.join(out.resume_from)} continue fold 0 from where the search stopped them" if out.resume_from else "",
    )
    return out


def stopped_candidates(stopped: list[RefitModel], time: OofTime, top_k: int) -> list[RefitModel]:
    """The best ``top_k`` stopped trials (best first) that fit the OOF's time alone; all of them
    when none does. A better-scored trial too slow to refit must not push a cheaper one out of the
    candidates: a compete run promoted a Lite2 trial at twice the OOF's time, the Lite0 trial
    the search's cap had cut behind it left out."""
    return ([m for m in stopped if time.fits([], m)] or stopped)[:top_k]


def _oof_time(cfg: DictConfig, stopped: list[RefitModel], checkpoints: dict[str, str]) -> OofTime:
    """The OOF's time; a stopped trial also costs the rest of its fold 0 (a fold's share of its
    model's time, times the share of the schedule left)."""
    from trainables.checkpoint import read_meta

    time = OofTime.from_config(cfg.oof)
    if not time.limited:
        return time
    trained_folds = max(int(cfg.trainable.k) - 1, 1)
    extra = {}
    for model in stopped:
        reached = int(read_meta(checkpoints[model.trial_id])["epoch"])
        left = max(model.epochs - reached, 0) / max(model.epochs, 1)
        extra[model.model_id] = time.cost(model) / trained_folds * left
    return replace(time, extra_s=extra)


def _with_checkpoint(
    result: SearchResult, checkpoints: dict[str, str], trainable: str, statuses: tuple[str, ...]
) -> list[RefitModel]:
    """Fold-0 candidates of these statuses with a checkpoint here, best first, with the full schedule."""
    try:
        found = candidates(result, trainable=trainable, epochs="full", statuses=statuses)
    except NoUsableTrial:  # none of these statuses: the caller says what to do if none at all
        return []
    return [m for m in found if int(m.config.get("fold", 0)) == 0 and m.trial_id in checkpoints]


def _predict(model: RefitModel, checkpoint: str, rows: np.ndarray, tta_flip: bool) -> np.ndarray:
    from trainables import create_trainable

    return create_trainable(model.trainable).predict(
        None, checkpoint, split="train", rows=rows, tta_flip=tta_flip
    )

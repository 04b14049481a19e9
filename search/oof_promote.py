"""Promotion (``oof.mode=promote``): finished search trials become their model's fold 0.

The OOF stage then trains only folds 1..K-1 of each promoted model; fold 0 predicts from the
search's own last checkpoint, so no fold is trained twice.
"""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig

from search.leaderboard import STATUS_DONE
from search.oof_data import data_facts
from search.oof_select import NoUsableTrial, RefitModel, candidates, cap_per_backbone, select_by_gain
from search.search_result import SearchResult

log = logging.getLogger("search.oof")

__all__ = ["NothingToPromote", "promote"]


class NothingToPromote(ValueError):
    """No fold-0 trial ran its whole schedule and left a checkpoint here (the refit can still run)."""


def promote(cfg: DictConfig, result: SearchResult) -> tuple[list[RefitModel], dict[str, str]]:
    """Promotion: trials that ran their whole schedule keep their model as fold 0; pick which ones.

    Only finished trials qualify: their last checkpoint is the model the search scored, trained
    with the schedule the other folds will use. ``oof.select=gain`` ranks them by what each adds
    to the fold-0 ensemble of those already chosen; ``score`` by their own score.

    Args:
        cfg: The refit's config (``oof.*``, ``trainable.name``).
        result: What the search found: its trials, their configs and checkpoints.

    Returns:
        The promoted models, and the search checkpoint that is each one's fold 0.

    Raises:
        NothingToPromote: No fold-0 trial finished its schedule and left a local checkpoint.
    """
    try:
        found = candidates(result, trainable=str(cfg.trainable.name), epochs="full", statuses=(STATUS_DONE,))
    except NoUsableTrial:  # no finished trial at all: said below, with what to do
        found = []
    saved = {t.trial_id: t.checkpoint for t in result.trials}
    checkpoints = {m.model_id: c for m in found if int(m.config.get("fold", 0)) == 0
                   and (c := saved.get(m.trial_id))}  # fmt: skip
    found = [m for m in found if m.model_id in checkpoints]
    if not found:
        raise NothingToPromote(
            "oof.mode=promote needs fold-0 trials that ran their whole schedule and left a checkpoint on "
            "this machine's disk; this search has none (all stopped early or cut by the time cap, or Ray's "
            "storage is remote)"
        )
    top_k, cap = int(cfg.oof.top_k), cfg.oof.max_per_backbone
    if cfg.oof.select == "gain" and len(found) > 1:
        facts = data_facts(found)
        rows = np.flatnonzero(facts.folds == 0)
        probs = {
            m.model_id: _predict(m, checkpoints[m.model_id], rows, bool(cfg.oof.tta_flip)) for m in found
        }
        chosen = select_by_gain(found, probs, facts.targets[rows], top_k=top_k, max_per_backbone=cap)
    else:
        chosen = cap_per_backbone(found, cap)[:top_k]
    log.info(
        "promoting %s (of %d finished trials) to every fold",
        ", ".join(m.model_id for m in chosen),
        len(found),
    )
    return chosen, {m.model_id: checkpoints[m.model_id] for m in chosen}


def _predict(model: RefitModel, checkpoint: str, rows: np.ndarray, tta_flip: bool) -> np.ndarray:
    from trainables import create_trainable

    return create_trainable(model.trainable).predict(
        None, checkpoint, split="train", rows=rows, tta_flip=tta_flip
    )

"""Which trials of a finished search the OOF stage refits: the best ones, with a diversity rule."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from search.leaderboard import STATUS_DONE, STATUS_STOPPED

# Trials that trained (to the end, or until ASHA stopped them) have a trustworthy score and epoch.
_USABLE = (STATUS_DONE, STATUS_STOPPED)


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


def trial_configs(ray_path: str) -> dict[str, dict[str, Any]]:
    """The complete config of every trial of a Ray Tune experiment, by trial id.

    Raises:
        FileNotFoundError: Ray's experiment state is not there (a search that never started).
    """
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(ray_path).trials
    except Exception as err:  # Ray raises ValueError/RuntimeError/OSError depending on what is missing
        raise FileNotFoundError(f"cannot read the search's Ray state at {ray_path}: {err}") from err
    return {str(t.trial_id): dict(t.config) for t in trials}


def select_models(
    leaderboard: pd.DataFrame,
    configs: dict[str, dict[str, Any]],
    *,
    trainable: str,
    metric: str,
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
        leaderboard: The search's leaderboard (best first) with ``trial_id``, ``<metric>``,
            ``best_epoch`` and ``status``.
        configs: :func:`trial_configs` of the search.
        trainable: The trainable the search ran.
        metric: The leaderboard's ranking metric.
        top_k: How many to take.
        max_per_backbone: Diversity cap per backbone; None for none.
        epochs: ``"best"`` (each trial's best epoch) or a fixed number.

    Returns:
        Up to ``top_k`` models.

    Raises:
        ValueError: No trial is usable; the message says what the leaderboard holds.
    """
    chosen: list[RefitModel] = []
    seen: set[str] = set()
    per_backbone: dict[str, int] = {}
    for _, row in leaderboard.iterrows():
        tid = str(row["trial_id"])
        score = _float(row.get(metric))
        if row.get("status") not in _USABLE or math.isnan(score) or tid not in configs:
            continue
        config = dict(configs[tid])
        key = json.dumps(config, sort_keys=True, default=str)
        if key in seen:
            continue
        backbone = str(config.get("backbone") or trainable)
        if max_per_backbone is not None and per_backbone.get(backbone, 0) >= max_per_backbone:
            continue
        seen.add(key)
        per_backbone[backbone] = per_backbone.get(backbone, 0) + 1
        n_epochs = _refit_epochs(row, config, epochs)
        chosen.append(
            RefitModel(
                model_id=f"{_slug(backbone)}-{tid}",
                trial_id=tid,
                trainable=trainable,
                config=config,
                epochs=n_epochs,
                search_score=score,
                backbone=backbone,
            )
        )
        if len(chosen) == top_k:
            break
    if not chosen:
        statuses = leaderboard["status"].value_counts().to_dict() if "status" in leaderboard else {}
        raise ValueError(
            f"no trial of the search can be refit: it needs a trial that finished or was stopped early "
            f"with a {metric} score; the leaderboard holds {len(leaderboard)} trials ({statuses or 'none'})"
        )
    return chosen


def _refit_epochs(row: pd.Series, config: dict[str, Any], epochs: int | str) -> int:
    if epochs != "best":
        return int(epochs)
    best = row.get("best_epoch")
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return int(config.get("epochs", 1))
    # 0 is a real fit for trainables that report an untrained epoch 0 (CLIP's zero-shot model)
    return max(0, int(best))


def _slug(text: str) -> str:
    """A directory-safe name (``hf-hub:org/model`` -> ``hf-hub_org_model``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

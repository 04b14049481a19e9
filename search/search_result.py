"""What a finished search found, as one typed value: the one input of the OOF stage.

A search leaves its findings in two places: its leaderboard (``leaderboard.csv``: each trial's
status, score and best epoch) and Ray Tune's saved experiment (each trial's complete config and
its checkpoints). :func:`load_search_result` joins them once; the refit (:mod:`search.oof`), the
selection (:mod:`search.oof_select`) and promotion (:mod:`search.oof_promote`) read nothing else
about the search, so the OOF path reads in one direction: search result -> models -> fold jobs ->
fold files -> artifacts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from search.leaderboard import TRIAL_DIR_PREFIX, to_float
from search.records import SearchRecord, load_record, search_dir

__all__ = ["FoundTrial", "SearchResult", "from_leaderboard", "last_checkpoint", "load_search_result"]


@dataclass(frozen=True)
class FoundTrial:
    """One trial of the search, as the OOF stage sees it.

    Attributes:
        trial_id: Ray Tune's trial id.
        config: The trial's complete trainable config.
        status: The leaderboard's status (``done``, ``stopped``, ``error``, ``interrupted``).
        score: The search metric at the trial's best epoch (NaN: never scored).
        best_epoch: The epoch of that score (None: unknown).
        checkpoint: The trial's newest checkpoint on this machine's disk (None: none, or Ray's
            storage is remote); promotion predicts fold 0 from it.
    """

    trial_id: str
    config: dict[str, Any]
    status: str
    score: float
    best_epoch: int | None
    checkpoint: str | None = None


@dataclass(frozen=True)
class SearchResult:
    """The trials of one search, best first.

    Attributes:
        experiment: The search's name.
        metric: The metric that ranked its trials.
        ray_path: Ray's experiment directory (or URI).
        trials: Every trial with a saved config, in leaderboard order (best first).
        status_counts: How many leaderboard rows had each status (for messages).
        record: The search's saved state (its MLflow parent run, under which the refit logs).
    """

    experiment: str
    metric: str
    ray_path: str
    trials: tuple[FoundTrial, ...]
    status_counts: Mapping[str, int] = field(default_factory=dict)
    record: SearchRecord | None = None


def load_search_result(runs: Path, experiment: str, metric: str) -> SearchResult:
    """Read the finished search ``experiment`` under ``runs``.

    Raises:
        FileNotFoundError: The search has no leaderboard (it did not finish) or Ray's state is gone.
    """
    directory = search_dir(runs, experiment)
    board_path = directory / "leaderboard.csv"
    if not board_path.is_file():
        raise FileNotFoundError(f"{board_path} is missing: the search did not finish; resume it first")
    record = load_record(directory)
    board = pd.read_csv(board_path, index_col="rank")
    found = from_leaderboard(board, trial_configs(record.ray_path), metric, ray_path=record.ray_path, experiment=experiment)
    return replace(found, record=record)


def from_leaderboard(
    board: pd.DataFrame,
    configs: Mapping[str, dict[str, Any]],
    metric: str,
    *,
    ray_path: str = "",
    experiment: str = "",
) -> SearchResult:
    """Join a leaderboard (best first; ``trial_id``, ``status``, ``best_epoch``, ``<metric>``) with
    each trial's config; trials without a saved config are left out."""
    trials = []
    for _, row in board.iterrows():
        tid = str(row["trial_id"])
        if tid not in configs:
            continue
        best = to_float(row.get("best_epoch"))
        trials.append(
            FoundTrial(
                trial_id=tid,
                config=dict(configs[tid]),
                status=str(row.get("status")),
                score=to_float(row.get(metric)),
                best_epoch=None if math.isnan(best) else int(best),
                checkpoint=last_checkpoint(ray_path, tid) if ray_path else None,
            )
        )
    counts = board["status"].value_counts().to_dict() if "status" in board else {}
    return SearchResult(experiment, metric, ray_path, tuple(trials), {str(k): int(v) for k, v in counts.items()})


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


def last_checkpoint(ray_path: str, trial_id: str) -> str | None:
    """The newest checkpoint folder of a search trial, where Ray's storage is a local path."""
    if "://" in ray_path:
        return None
    trial_dir = Path(ray_path) / f"{TRIAL_DIR_PREFIX}{trial_id}"
    found = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name)
    return str(found[-1]) if found else None

"""Which trials ended on their own or by the scheduler's decision, to tell them from trials cut by time.

When ``tune.time_budget_s`` runs out (``budget=`` always sets it), Ray stops every running trial
without the ``on_trial_complete`` callback that a trial finishing its schedule, or stopped by ASHA,
gets. So a trial that ran fewer epochs than its schedule and is missing from this record was cut
by the time cap, not judged by the scheduler: the leaderboard says ``cut``, not ``stopped``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune import Callback

from common.io import atomic_write_json

TRIAL_ENDS_FILE = "trial_ends.json"

__all__ = ["TRIAL_ENDS_FILE", "TrialEnds", "read_trial_ends"]


class TrialEnds(Callback):
    """A Tune callback that records, in ``path``, the ids of trials Tune completed normally.

    The file is the state (read, extended and rewritten atomically at each completion), so a
    callback restored by a resume, pickled before the first trial ended, loses nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def setup(self, **info: Any) -> None:
        if not self.path.exists():
            atomic_write_json(self.path, [])  # present from the start: "no trial ended yet"

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ended = (read_trial_ends(self.path) or set()) | {str(trial.trial_id)}
        atomic_write_json(self.path, sorted(ended))


def read_trial_ends(path: Path) -> set[str] | None:
    """The recorded ids, or None when the search kept no record (then no trial is called cut)."""
    try:
        return {str(t) for t in json.loads(Path(path).read_text())}
    except (OSError, ValueError, TypeError):
        return None

"""What a search leaves beside its outputs so that it can be resumed: ``<runs>/search/<experiment>/``.

``config.yaml`` is the resolved config (a resume runs exactly it again) and ``state.json`` says
where Ray keeps the experiment and which MLflow run is its parent.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.io import atomic_write_json

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
PLAN_FILE = "budget_plan.txt"  # what budget= chose and left out, as the terminal said it


@dataclass
class SearchRecord:
    """The resumable state of one search.

    Attributes:
        experiment: The experiment's name.
        ray_path: Ray Tune's experiment directory (a path or URI) for ``Tuner.restore``.
        tracking_uri: MLflow store, or None when untracked.
        mlflow_experiment_id: MLflow experiment holding the parent run.
        parent_run_id: The search's MLflow parent run.
        status: ``running``, ``finished`` or ``failed``.
        created: Unix time the search first started.
        updated: Unix time of the last change.
        resumes: How many times it was resumed.
    """

    experiment: str
    ray_path: str
    tracking_uri: str | None = None
    mlflow_experiment_id: str | None = None
    parent_run_id: str | None = None
    status: str = "running"
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    resumes: int = 0


def search_dir(runs: Path, experiment: str) -> Path:
    """``<runs>/search/<experiment>``: leaderboard, plots, config and state of one search."""
    return Path(runs) / "search" / experiment


def save_record(directory: Path, record: SearchRecord) -> None:
    """Write ``state.json`` atomically."""
    record.updated = time.time()
    atomic_write_json(directory / STATE_FILE, asdict(record), default=str)


def load_record(directory: Path) -> SearchRecord:
    """Read ``state.json``.

    Raises:
        FileNotFoundError: Not a search directory.
    """
    data = json.loads((directory / STATE_FILE).read_text())
    return SearchRecord(**{k: v for k, v in data.items() if k in SearchRecord.__dataclass_fields__})


def list_experiments(runs: Path, *, resumable: bool = False) -> list[str]:
    """Experiments under ``<runs>/search``, most recently started first.

    Args:
        runs: The output root.
        resumable: Leave out searches that failed (every trial errored): resuming one would fail
            the same way, so ``resume=true`` never picks it.
    """
    found = []
    for state in (Path(runs) / "search").glob(f"*/{STATE_FILE}"):
        try:
            record = load_record(state.parent)
        except (OSError, ValueError, TypeError):
            continue
        if not (resumable and record.status == "failed"):
            found.append((record.created, state.parent.name))
    return [name for _, name in sorted(found, reverse=True)]

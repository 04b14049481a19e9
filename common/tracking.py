"""MLflow helpers every stage shares: which store, where a local store keeps files, value limits.

MLflow itself is imported inside the functions that need it, so importing this module is free.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from common.io import runs_dir

__all__ = [
    "MAX_PARAM",
    "MAX_TAG",
    "artifact_location",
    "get_or_create_experiment",
    "is_finite",
    "now_ms",
    "param_value",
    "tracking_uri",
]

# MLflow's limits on the length of a param value and of a tag value.
MAX_PARAM = 6000
MAX_TAG = 8000


def tracking_uri(configured: str | None = None) -> str:
    """Where runs are stored: ``configured``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs>/mlflow.db``.

    Args:
        configured: A URI from a config or command line; empty or None means "not set".

    Returns:
        The tracking URI.
    """
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs_dir() / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    """Whether the store is a file MLflow writes itself (sqlite, a folder), not a tracking server."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its run files: beside a local sqlite database, else None.

    MLflow's default for a sqlite store is ``./mlruns`` relative to the working directory, which
    would scatter artifacts wherever a command happens to run; ``mlartifacts/`` beside the
    database keeps them together. A server or a folder store (None) decides for itself.
    """
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///") :]
        if db and db != ":memory:":
            return (Path(db).resolve().parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client: Any, name: str, uri: str) -> str:
    """The id of MLflow experiment ``name`` in ``client``'s store, created (see :func:`artifact_location`) if needed.

    Args:
        client: An ``MlflowClient`` for ``uri``.
        name: The experiment's name.
        uri: The client's tracking URI.

    Returns:
        The experiment id.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location(uri)))


def param_value(value: Any, limit: int = MAX_PARAM) -> str:
    """``str(value)``, shortened with ``...`` to MLflow's limit, so a long path cannot fail a log call."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a real, finite number MLflow can log as a metric (bools are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def now_ms() -> int:
    """The current time in milliseconds, MLflow's timestamp unit."""
    return int(time.time() * 1000)

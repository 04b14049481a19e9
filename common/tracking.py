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
    "DEFAULT_EXPERIMENT",
    "EXPERIMENT_KIND",
    "MAX_PARAM",
    "MAX_TAG",
    "artifact_location",
    "find_search_run",
    "get_or_create_experiment",
    "log_table",
    "is_finite",
    "now_ms",
    "param_value",
    "tracking_uri",
    "ui_url",
]

# MLflow's limits on the length of a param value and of a tag value.
MAX_PARAM = 6000
MAX_TAG = 8000

# The MLflow experiment every stage logs to unless told otherwise (search, OOF refit, ensemble):
# one experiment, one parent run per search, everything else nested under it.
DEFAULT_EXPERIMENT = "sketchsearch"

# MLflow 3's UI opens an experiment on its GenAI overview (traces) unless the experiment says it
# holds training runs. Older 3.x UIs read this tag; newer ones (3.6+) also key the view on the
# ``workflowType`` query parameter, which :func:`ui_url` adds.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


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
    key, kind = EXPERIMENT_KIND
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return str(client.create_experiment(name, artifact_location=artifact_location(uri), tags={key: kind}))
    if key not in experiment.tags:  # made by an older version, or by MLflow itself
        client.set_experiment_tag(experiment.experiment_id, key, kind)
    return str(experiment.experiment_id)


def find_search_run(client: Any, experiment_id: str, search: str) -> str | None:
    """The parent run of search ``search`` (its ``experiment`` tag) in an MLflow experiment, newest first.

    Stages that run later (OOF refit, ensemble, standalone or not) nest their runs under it.

    Returns:
        The run id, or None when that search was not logged there.
    """
    quoted = search.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.experiment = '{quoted}'",
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return str(parents[0].info.run_id) if parents else None


def log_table(client: Any, run_id: str, frame: Any, artifact_file: str) -> None:
    """Log (or replace) a DataFrame as a table MLflow's UI browses: ``<artifact_file>`` in the run's artifacts.

    ``MlflowClient.log_table`` appends to a table that exists, which would double the rows each
    time a report is rewritten; this writes the same file (pandas' ``split`` JSON) over the old
    one and sets the same ``mlflow.loggedArtifacts`` tag, so the UI lists it as a table.

    Args:
        client: An ``MlflowClient``.
        run_id: The run.
        frame: A pandas DataFrame.
        artifact_file: ``<name>.json``, at the top of the run's artifacts.
    """
    import json
    import tempfile

    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / artifact_file
        frame.to_json(path, orient="split", index=False, date_format="iso")
        client.log_artifact(run_id, str(path))
    logged = json.loads(client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in logged:
        client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry]))


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str | None:
    """The page of an experiment (or a run) in the MLflow UI of a tracking server, on its training runs.

    Returns:
        The address, or None for a local store (no server to open).
    """
    if not uri.startswith(("http://", "https://")):
        return None
    page = f"{uri.rstrip('/')}/#/experiments/{experiment_id}"
    page += f"/runs/{run_id}" if run_id else "/runs"
    return page + "?workflowType=machine_learning"


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

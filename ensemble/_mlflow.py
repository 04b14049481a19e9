"""Log an ensemble run to MLflow, nested under its search's parent run and linked to the source model runs.

MLflow is imported lazily.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from common.tracking import (
    DEFAULT_EXPERIMENT,
    MAX_TAG,
    find_search_run,
    get_or_create_experiment,
    log_table,
    now_ms,
    param_value,
    tracking_uri,
)
from ensemble._report import RunSummary, report_markdown

__all__ = ["log_run"]


def _tag_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def log_run(
    summary: RunSummary,
    out_dir: Path,
    *,
    experiment_name: str | None = None,
    params: dict[str, Any] | None = None,
    uri: str | None = None,
) -> str:
    """Log one ensemble run: params, every method's scores, the output files and links to source runs.

    Args:
        summary: The run's results.
        out_dir: Directory whose files (report, weights, submission, chart) become the run's artifacts.
        experiment_name: MLflow experiment; defaults to :data:`common.tracking.DEFAULT_EXPERIMENT`, where
            the search logs. The run nests under the parent run of the search named
            ``summary.experiment`` there (found by its ``experiment`` tag), standalone or as a stage.
        params: Extra parameters (e.g. CLI options).
        uri: Tracking URI; defaults to :func:`common.tracking.tracking_uri`.

    Returns:
        The MLflow run id.
    """
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = get_or_create_experiment(client, experiment_name or DEFAULT_EXPERIMENT, uri)
    parent = find_search_run(client, experiment_id, summary.experiment)
    sources = {a.model_id: a.mlflow_run_id for a in summary.artifacts if a.mlflow_run_id}
    tags = {
        "sketchsearch.stage": "ensemble",
        "ensemble.experiment": summary.experiment,
        "ensemble.method": summary.chosen.name,
        "ensemble.winner": summary.winner.name,
        "source_run_ids": ",".join(sources.values()),
        "mlflow.note.content": report_markdown(summary)[:MAX_TAG],
    }
    tags.update({_tag_key(f"source_run.{model_id}"): run_id for model_id, run_id in sources.items()})
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, run_name=f"ensemble-{summary.chosen.name}", tags=tags)
    run_id = run.info.run_id
    try:
        all_params = {**_params(summary), **(params or {})}
        metrics = _metrics(summary)
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, param_value(v)) for k, v in all_params.items()],
            tags=[RunTag("ensemble.out_dir", str(out_dir.resolve()))],
        )
        client.log_artifacts(run_id, str(out_dir))
        log_table(client, run_id, methods_table(summary), "ensemble_methods.json")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


def _params(summary: RunSummary) -> dict[str, Any]:
    """What was ensembled and how: the chosen method, the models, the data's shape, the method's settings."""
    return {
        "method": summary.chosen.name,
        "metric": summary.metric,
        "models": ",".join(summary.model_ids),
        "n_models": len(summary.artifacts),
        "n_train": summary.artifacts[0].n_train,
        "n_classes": summary.artifacts[0].n_classes,
        "methods_compared": ",".join(r.name for r in summary.results),
        **{f"{summary.chosen.name}.{k}": v for k, v in summary.chosen.method.get_params().items()},
    }


def _metrics(summary: RunSummary) -> list[Any]:
    """The chosen method's scores, every method's scores and fold scores, and the chosen weights."""
    from mlflow.entities import Metric

    now = now_ms()
    metrics = []

    def scores(result: Any, prefix: str = "") -> None:
        for key in ("in_sample", "nested_mean", "nested_std"):
            value = getattr(result, key)
            if value is not None:
                metrics.append(Metric(f"{prefix}{key}", float(value), now, 0))

    scores(summary.chosen)
    for r in summary.results:
        scores(r, f"{r.name}.")
        metrics += [Metric(f"{r.name}.fold_score", float(s), now, step) for step, s in enumerate(r.fold_scores)]
    for model_id, w in zip(summary.model_ids, summary.chosen.weights, strict=True):
        metrics.append(Metric(_tag_key(f"weight.{model_id}"), float(w), now, 0))
    return metrics


def methods_table(summary: RunSummary) -> Any:
    """Every compared method as a row: its scores and each model's weight (a pandas DataFrame)."""
    import pandas as pd

    rows = []
    for r in summary.results:
        row: dict[str, Any] = {
            "method": r.name,
            "chosen": r.name == summary.chosen.name,
            "in_sample": r.in_sample,
            "nested_mean": r.nested_mean,
            "nested_std": r.nested_std,
        }
        row.update({f"w.{m}": round(float(w), 4) for m, w in zip(summary.model_ids, r.weights, strict=True)})
        rows.append(row)
    return pd.DataFrame(rows)

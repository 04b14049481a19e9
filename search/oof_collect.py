"""Turn a model's finished folds into its OOF artifact, its submission and its MLflow record."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.metrics import accuracy
from common.tracking import now_ms
from ensemble.artifacts import META_FILE, read_artifact, write_artifact, write_submission
from search import tracking
from search.oof_fold import fold_result_path, read_fold_result
from search.oof_select import RefitModel

log = logging.getLogger(__name__)

SUBMISSION_FILE = "submission.csv"


@dataclass(frozen=True)
class DataFacts:
    """What every model of one refit shares: the data set's rows, labels, folds and hashes."""

    classes: list[str]
    targets: np.ndarray
    folds: np.ndarray
    folds_hash: str
    data_hash: str
    test_image_paths: list[str] | None

    @property
    def k(self) -> int:
        return int(self.folds.max()) + 1


@dataclass
class ModelResult:
    """A refit model after the folds ran."""

    model: RefitModel
    directory: Path
    missing_folds: list[int]
    fold_scores: list[float] | None = None
    fold_epochs: list[int] | None = None
    cv_mean: float | None = None
    cv_std: float | None = None
    oof_accuracy: float | None = None
    submission: Path | None = None
    mlflow_run_id: str | None = None
    reused: bool = False

    @property
    def complete(self) -> bool:
        return not self.missing_folds


def missing_folds(model_dir: Path, k: int) -> list[int]:
    """Folds of a model without saved predictions."""
    return [f for f in range(k) if not fold_result_path(model_dir, f).is_file()]


def collect_model(
    model: RefitModel,
    model_dir: Path,
    facts: DataFacts,
    *,
    experiment: str,
    dtype: str = "float16",
    tta_flip: bool = False,
    mlflow_run_id: str | None = None,
) -> ModelResult:
    """Assemble the artifact from the fold results, if every fold is done.

    The OOF matrix puts each fold's validation predictions at their train.csv rows; the test
    matrix is the mean of the folds' test predictions. Fold scores are computed from the
    probabilities as stored (``dtype``), so the CV score in ``meta.json`` is exactly what a
    reader recomputes from ``oof.npy``.

    Raises:
        RuntimeError: A fold's rows disagree with the folds file, or rows are predicted twice or
            never (the refit would otherwise write a silently wrong artifact).
    """
    missing = missing_folds(model_dir, facts.k)
    result = ModelResult(model, model_dir, missing)
    if missing:
        return result
    if is_current(model_dir, facts.k):
        return _reuse(result)
    oof, test, scores, epochs = _gather_folds(model, model_dir, facts, dtype)
    oof_accuracy = accuracy(oof.astype(dtype), facts.targets)  # what a reader recomputes from oof.npy
    write_artifact(
        model_dir,
        oof=oof,
        targets=facts.targets,
        folds=facts.folds,
        classes=facts.classes,
        test=test,
        test_image_paths=facts.test_image_paths if test is not None else None,
        model_id=model.model_id,
        config={"trainable": model.trainable, **model.config, "epochs": model.epochs},
        fold_scores=scores,
        metric="accuracy",
        data_hash=facts.data_hash,
        folds_hash=facts.folds_hash,
        mlflow_run_id=mlflow_run_id,
        dtype=dtype,
        extra={"experiment": experiment, "trial_id": model.trial_id, "search_score": model.search_score,
               "refit_epochs": epochs, "tta_flip": tta_flip, "oof_accuracy": oof_accuracy},
    )  # fmt: skip
    result.fold_scores, result.fold_epochs, result.mlflow_run_id = scores, epochs, mlflow_run_id
    result.cv_mean, result.cv_std = float(np.mean(scores)), float(np.std(scores))
    result.oof_accuracy = oof_accuracy
    if test is not None:  # the single model's own submission, from the probabilities as stored
        result.submission = write_submission(
            model_dir / SUBMISSION_FILE, facts.test_image_paths, test.astype(dtype).argmax(1)
        )
    return result


def _gather_folds(
    model: RefitModel, model_dir: Path, facts: DataFacts, dtype: str
) -> tuple[np.ndarray, np.ndarray | None, list[float], list[int]]:
    """Every fold's validation rows into one OOF matrix, the mean test matrix, per-fold scores and epochs.

    Raises:
        RuntimeError: A fold's rows or shape disagree with the folds file, or rows are predicted
            twice or never.
    """
    n, n_classes = len(facts.targets), len(facts.classes)
    oof, seen = np.zeros((n, n_classes), dtype=np.float32), np.zeros(n, dtype=np.int64)
    test_sum: np.ndarray | None = None
    scores: list[float] = []
    epochs: list[int] = []
    for fold in range(facts.k):
        saved = read_fold_result(fold_result_path(model_dir, fold))
        rows = saved["val_rows"]
        _check_fold(model, model_dir, facts, fold, saved)
        stored = saved["val_probs"].astype(dtype)  # score what the artifact will hold
        scores.append(accuracy(stored, facts.targets[rows]))
        oof[rows] = saved["val_probs"]
        seen[rows] += 1
        epochs.append(int(saved["epochs"]))
        if saved["test_probs"] is not None:
            test = saved["test_probs"].astype(np.float64)
            test_sum = test if test_sum is None else test_sum + test
    if not (seen == 1).all():
        raise RuntimeError(
            f"{model.model_id}: {(seen == 0).sum()} rows never predicted and {(seen > 1).sum()} predicted "
            "more than once; the folds are inconsistent"
        )
    test_mean = None
    if test_sum is not None and facts.test_image_paths is not None:
        test_mean = (test_sum / facts.k).astype(np.float32)
        test_mean /= test_mean.sum(1, keepdims=True)
    return oof, test_mean, scores, epochs


def _check_fold(model: RefitModel, model_dir: Path, facts: DataFacts, fold: int, saved: dict) -> None:
    rows, n_classes = saved["val_rows"], len(facts.classes)
    expected = np.flatnonzero(facts.folds == fold)
    if not np.array_equal(np.sort(rows), expected):
        raise RuntimeError(
            f"{model.model_id} fold {fold}: its predictions cover {len(rows)} rows, not the {len(expected)} "
            f"rows of fold {fold} in the folds file; delete {fold_result_path(model_dir, fold)} and rerun"
        )
    if saved["val_probs"].shape != (len(rows), n_classes):
        raise RuntimeError(
            f"{model.model_id} fold {fold}: predictions of shape {saved['val_probs'].shape}, "
            f"expected ({len(rows)}, {n_classes})"
        )


def is_current(model_dir: Path, k: int) -> bool:
    """Whether the model's artifact exists and is newer than every fold result (nothing to redo)."""
    meta = model_dir / META_FILE
    if not meta.is_file():
        return False
    newest = max(fold_result_path(model_dir, f).stat().st_mtime_ns for f in range(k))
    return meta.stat().st_mtime_ns >= newest


def _reuse(result: ModelResult) -> ModelResult:
    art = read_artifact(result.directory)
    result.fold_scores = art.fold_scores
    result.fold_epochs = art.meta.get("extra", {}).get("refit_epochs")
    result.cv_mean, result.cv_std = art.cv_mean, art.cv_std
    result.oof_accuracy = art.meta.get("extra", {}).get("oof_accuracy")
    result.mlflow_run_id = art.mlflow_run_id
    submission = result.directory / SUBMISSION_FILE
    result.submission = submission if submission.is_file() else None
    result.reused = True
    return result


def model_run_id(
    tracker: tracking.Tracker,
    experiment_id: str,
    parent_run_id: str | None,
    model: RefitModel,
    tags: dict[str, str],
) -> str | None:
    """The MLflow run that holds a model's OOF files: its search trial's run, else a new one.

    The search logs one child run per trial (tag ``trial_id``); the refit belongs there, beside
    the trial's learning curves. A search that ran untracked gets a run of its own per model.
    """

    def find_or_create(client: Any) -> str:
        if parent_run_id:
            found = client.search_runs(
                [experiment_id],
                filter_string=f"tags.trial_id = '{model.trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
                max_results=1,
            )
            if found:
                return str(found[0].info.run_id)
        run_tags = {**tags, "trial_id": model.trial_id, "oof_model_id": model.model_id}
        if parent_run_id:
            run_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=f"oof/{model.model_id}", tags=run_tags)
        client.set_terminated(run.info.run_id)
        return str(run.info.run_id)

    return tracker.call(find_or_create, queue=False)


def log_model(tracker: tracking.Tracker, run_id: str, result: ModelResult, prefix: str = "oof") -> None:
    """Log the CV scores and the artifact's files to the model's MLflow run (queued if the store is down).

    Metrics are ``<prefix>_cv_mean``, ``<prefix>_cv_std``, ``<prefix>_acc`` and ``<prefix>_fold_acc``
    (one step per fold); the files go under the artifact folder ``<prefix>/``. Each fold fit also
    gets a run nested under the model's (``fold k``, or ``<prefix> fold k``: its ``fold_acc`` and
    ``epochs``), so the UI shows the refit as the tree it is.
    """
    from mlflow.entities import Metric, RunTag

    directory, scores = result.directory, result.fold_scores or []

    def log(client: Any) -> None:
        now = now_ms()
        metrics = [Metric(f"{prefix}_fold_acc", s, now, i) for i, s in enumerate(scores)]
        metrics += [
            Metric(f"{prefix}_cv_mean", float(result.cv_mean or 0.0), now, 0),
            Metric(f"{prefix}_cv_std", float(result.cv_std or 0.0), now, 0),
            Metric(f"{prefix}_acc", float(result.oof_accuracy or 0.0), now, 0),
        ]
        tags = [RunTag(f"{prefix}_artifact", str(directory)), RunTag("oof_model_id", result.model.model_id)]
        client.log_batch(run_id, metrics=metrics, tags=tags)
        for path in sorted(directory.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                client.log_artifact(run_id, str(path), artifact_path=prefix)
        log_fold_runs(client, run_id, result, prefix)

    tracker.call(log)


def log_fold_runs(client: Any, run_id: str, result: ModelResult, prefix: str = "oof") -> list[str]:
    """One finished run per fold fit, nested under the model's run; an earlier one is updated, not doubled.

    Returns:
        The fold runs' ids, in fold order.
    """
    from mlflow.entities import Metric

    parent = client.get_run(run_id)
    found = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and tags.fold_stage = '{prefix}'",
        max_results=1000,
    )
    existing = {r.data.tags.get("fold"): r.info.run_id for r in found}
    epochs = result.fold_epochs or []
    ids = []
    for fold, score in enumerate(result.fold_scores or []):
        fold_id = existing.get(str(fold))
        if fold_id is None:
            name = f"fold {fold}" if prefix == "oof" else f"{prefix} fold {fold}"
            tags = {
                "mlflow.parentRunId": run_id,
                "fold": str(fold),
                "fold_stage": prefix,
                "oof_model_id": result.model.model_id,
                "trial_id": result.model.trial_id,
            }
            fold_id = client.create_run(parent.info.experiment_id, run_name=name, tags=tags).info.run_id
        now = now_ms()
        metrics = [Metric("fold_acc", float(score), now, 0)]
        if fold < len(epochs):
            metrics.append(Metric("epochs", float(epochs[fold]), now, 0))
        client.log_batch(fold_id, metrics=metrics)
        client.set_terminated(fold_id)
        ids.append(fold_id)
    return ids

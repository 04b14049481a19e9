"""The OOF artifact: the on-disk contract between the out-of-fold stage and the ensemble.

Writer and reader live side by side here so the format cannot drift between its two ends; both
need only numpy and json. Discovery is :mod:`ensemble._discover`, vetting a set
:mod:`ensemble._compat`, and the checks both ends share :mod:`ensemble._validate`.

Layout of one artifact, ``$RUNS_DIR/oof/<experiment>/<model_id>/``::

    oof.npy      (n_train, C) float16/float32  out-of-fold probabilities, train.csv order
    test.npy     (n_test, C)                   test probabilities, test.csv order (optional)
    targets.npy  (n_train,) int                class index per train row (train.csv's target)
    folds.npy    (n_train,) int                validation fold of each train row
    meta.json                                  written last: its presence marks the artifact complete

``meta.json`` holds ``model_id``, ``classes`` (column order), ``folds_hash``, ``data_hash``,
``config``, ``fold_scores``, ``cv_mean``, ``cv_std``, ``metric``, ``test_image_paths``,
``created``, ``mlflow_run_id`` and free-form ``extra``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common.io import atomic_path, atomic_write_text, runs_dir
from ensemble._validate import (
    SUM_TOLERANCE,
    ArtifactError,
    ArtifactWarning,
    CheckedArrays,
    IncompatibleArtifactsError,
    checked_arrays,
)
from ensemble.submission import write_submission  # search.oof_collect imports it from here

FORMAT_VERSION = 1
OOF_FILE = "oof.npy"
TEST_FILE = "test.npy"
TARGETS_FILE = "targets.npy"
FOLDS_FILE = "folds.npy"
META_FILE = "meta.json"

__all__ = [
    "Artifact",
    "ArtifactError",
    "ArtifactWarning",
    "IncompatibleArtifactsError",
    "SUM_TOLERANCE",
    "artifact_dir",
    "hash_folds",
    "oof_root",
    "read_artifact",
    "write_artifact",
    "write_submission",
]


def oof_root() -> Path:
    """Where experiments' OOF artifacts live: ``<runs_dir>/oof``."""
    return runs_dir() / "oof"


def artifact_dir(experiment: str, model_id: str, root: str | Path | None = None) -> Path:
    """The directory of one model's artifact: ``<root or oof_root()>/<experiment>/<model_id>``."""
    for label, name in (("experiment", experiment), ("model_id", model_id)):
        if not name or "/" in name or "\\" in name or name in {".", ".."}:
            raise ArtifactError(f"{label} {name!r} must be a non-empty name without path separators")
    return Path(root if root is not None else oof_root()) / experiment / model_id


def hash_folds(folds: np.ndarray | Sequence[int]) -> str:
    """A short, stable hash of a fold assignment (one fold index per train row, in train order).

    Two artifacts share folds exactly when their hashes match; the OOF stage should
    leave :func:`write_artifact` to compute it rather than hashing something else.
    """
    arr = np.ascontiguousarray(np.asarray(folds), dtype="<i8")
    digest = hashlib.sha256(b"sketchsearch-folds-v1:" + str(arr.shape).encode() + arr.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Artifact:
    """One model's OOF artifact as read from disk; the arrays are read-only memory maps.

    Attributes:
        path: The artifact directory.
        meta: The parsed ``meta.json``.
        oof: (n_train, C) out-of-fold probabilities in train.csv order.
        targets: (n_train,) class index per train row.
        folds: (n_train,) validation fold per train row.
        test: (n_test, C) test probabilities in test.csv order, or None when absent.
    """

    path: Path
    meta: dict[str, Any]
    oof: np.ndarray
    targets: np.ndarray
    folds: np.ndarray
    test: np.ndarray | None

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def n_train(self) -> int:
        return int(self.oof.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.oof.shape[1])

    @property
    def n_test(self) -> int:
        return 0 if self.test is None else int(self.test.shape[0])

    @property
    def has_test(self) -> bool:
        return self.test is not None

    @property
    def folds_hash(self) -> str:
        return str(self.meta["folds_hash"])

    @property
    def data_hash(self) -> str:
        return str(self.meta.get("data_hash") or "")

    @property
    def test_image_paths(self) -> list[str] | None:
        paths = self.meta.get("test_image_paths")
        return None if paths is None else list(paths)

    @property
    def metric(self) -> str:
        return str(self.meta.get("metric") or "accuracy")

    @property
    def cv_mean(self) -> float | None:
        return self.meta.get("cv_mean")

    @property
    def cv_std(self) -> float | None:
        return self.meta.get("cv_std")

    @property
    def fold_scores(self) -> list[float]:
        return list(self.meta.get("fold_scores") or [])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta.get("config") or {})

    @property
    def mlflow_run_id(self) -> str | None:
        return self.meta.get("mlflow_run_id")

    def __repr__(self) -> str:
        return (
            f"Artifact(model_id={self.model_id!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"n_classes={self.n_classes}, dtype={self.oof.dtype}, path={str(self.path)!r})"
        )


# ----------------------------------------------------------------------------------------- writer


def write_artifact(
    directory: str | Path,
    *,
    oof: np.ndarray,
    targets: np.ndarray | Sequence[int],
    folds: np.ndarray | Sequence[int],
    classes: Sequence[str],
    test: np.ndarray | None = None,
    test_image_paths: Sequence[str] | None = None,
    model_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    fold_scores: Sequence[float] = (),
    metric: str = "accuracy",
    data_hash: str = "",
    folds_hash: str | None = None,
    mlflow_run_id: str | None = None,
    dtype: str | np.dtype = "float16",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one model's OOF artifact atomically and return its directory.

    Every array goes to a temporary name and is renamed into place; ``meta.json`` is written
    last, so a reader never sees a half-written artifact (a directory without ``meta.json`` is
    ignored with a warning). Rewriting an existing artifact first removes its ``meta.json``.
    Inputs are validated before anything is written, so a bad array never reaches disk.

    Long only for its signature and docstring (the whole contract); the body is three steps.

    Args:
        directory: Target directory, normally ``artifact_dir(experiment, model_id)``.
        oof: (n_train, C) out-of-fold probabilities (softmax outputs, rows sum to 1) in
            train.csv order.
        targets: (n_train,) class index per train row, as train.csv's ``target`` column.
        folds: (n_train,) validation fold index of each train row (at least two folds).
        classes: Class names in column order (``classes[target] == class_name``).
        test: (n_test, C) test probabilities in test.csv order; None if the model has none.
        test_image_paths: test.csv's ``image_path`` column, required when ``test`` is given.
        model_id: Defaults to the directory name.
        config: The model's (JSON-serialisable) config.
        fold_scores: Validation score of each fold, in fold order.
        metric: Name of the metric in ``fold_scores``.
        data_hash: Fingerprint of the data set the model was fit on (``ds.fingerprint``).
        folds_hash: Override for the folds hash; by default :func:`hash_folds` of ``folds``.
        mlflow_run_id: The model's MLflow run, linked from the ensemble's run.
        dtype: Storage dtype of the probabilities: ``float16`` (default) or ``float32``.
        extra: Anything else worth keeping, stored under ``meta["extra"]``.

    Returns:
        The artifact directory.

    Raises:
        ArtifactError: When shapes, labels, folds or probabilities are invalid.
    """
    directory = Path(directory)
    model_id = model_id or directory.name
    arrays = checked_arrays(
        model_id,
        oof=oof,
        targets=targets,
        folds=folds,
        classes=classes,
        test=test,
        test_image_paths=test_image_paths,
        dtype=np.dtype(dtype),
        names=(OOF_FILE, TEST_FILE),
    )
    meta = _meta(
        model_id,
        arrays,
        test_image_paths=test_image_paths,
        config=config,
        fold_scores=fold_scores,
        metric=metric,
        data_hash=data_hash,
        folds_hash=folds_hash,
        mlflow_run_id=mlflow_run_id,
        extra=extra,
    )

    _write_files(directory, arrays, meta)
    return directory


def _write_files(directory: Path, arrays: CheckedArrays, meta: dict[str, Any]) -> None:
    """Write the arrays, then ``meta.json`` last, each atomically; a reader never sees a half artifact."""
    directory.mkdir(parents=True, exist_ok=True)
    # Invalidate first: from here until the new meta.json lands the directory reads as incomplete.
    (directory / META_FILE).unlink(missing_ok=True)
    _save_npy(directory / OOF_FILE, arrays.oof)
    _save_npy(directory / TARGETS_FILE, arrays.targets)
    _save_npy(directory / FOLDS_FILE, arrays.folds)
    if arrays.test is not None:
        _save_npy(directory / TEST_FILE, arrays.test)
    else:
        (directory / TEST_FILE).unlink(missing_ok=True)  # a stale test.npy from an older write
    atomic_write_text(directory / META_FILE, json.dumps(meta, indent=1, allow_nan=False) + "\n")


def _meta(
    model_id: str,
    arrays: CheckedArrays,
    *,
    test_image_paths: Sequence[str] | None,
    config: Mapping[str, Any] | None,
    fold_scores: Sequence[float],
    metric: str,
    data_hash: str,
    folds_hash: str | None,
    mlflow_run_id: str | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``meta.json`` of an artifact whose arrays passed :func:`checked_arrays`."""
    scores = [float(s) for s in fold_scores]
    finite = [s for s in scores if math.isfinite(s)]
    now = time.time()
    return {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "classes": arrays.classes,
        "n_classes": len(arrays.classes),
        "n_train": int(arrays.oof.shape[0]),
        "n_test": 0 if arrays.test is None else int(arrays.test.shape[0]),
        "dtype": arrays.oof.dtype.name,
        "folds_hash": folds_hash or hash_folds(arrays.folds),
        "n_folds": int(np.unique(arrays.folds).size),
        "data_hash": data_hash,
        "config": _jsonable(dict(config or {})),
        "metric": metric,
        "fold_scores": scores,
        "cv_mean": float(np.mean(finite)) if finite else None,
        "cv_std": float(np.std(finite)) if finite else None,
        "test_image_paths": None if test_image_paths is None else [str(p) for p in test_image_paths],
        "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "created_unix": now,
        "mlflow_run_id": mlflow_run_id,
        "extra": _jsonable(dict(extra or {})),
    }


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(arr), allow_pickle=False)


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths inside a config so json.dumps accepts them."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# ----------------------------------------------------------------------------------------- reader


def read_artifact(path: str | Path) -> Artifact:
    """Read one artifact directory; arrays come back memory-mapped and read-only.

    Args:
        path: An artifact directory (the one holding ``meta.json``).

    Returns:
        The artifact.

    Raises:
        ArtifactError: When ``meta.json`` or a required array is missing or shapes disagree.
    """
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise ArtifactError(
            f"{path} has no {META_FILE}: the artifact is incomplete (its writer crashed or is still "
            "running); rerun the OOF stage for this model or remove the directory"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{meta_path} is not valid JSON: {err}") from err
    for key in ("model_id", "classes", "folds_hash"):
        if key not in meta:
            raise ArtifactError(
                f"{meta_path} lacks {key!r}; it was not written by ensemble.artifacts.write_artifact"
            )

    def load(name: str) -> np.ndarray:
        file = path / name
        if not file.is_file():
            raise ArtifactError(
                f"{path}: {name} is missing although {META_FILE} exists; rewrite the artifact"
            )
        return np.load(file, mmap_mode="r", allow_pickle=False)

    oof = load(OOF_FILE)
    targets = load(TARGETS_FILE)
    folds = load(FOLDS_FILE)
    test = load(TEST_FILE) if (path / TEST_FILE).is_file() else None
    model_id = meta["model_id"]
    n_classes = len(meta["classes"])
    if oof.ndim != 2 or oof.shape[1] != n_classes:
        raise ArtifactError(
            f"{model_id}: {OOF_FILE} has shape {oof.shape} but meta lists {n_classes} classes"
        )
    if targets.shape != (oof.shape[0],) or folds.shape != (oof.shape[0],):
        raise ArtifactError(
            f"{model_id}: {TARGETS_FILE} {targets.shape} and {FOLDS_FILE} {folds.shape} must match "
            f"{OOF_FILE}'s {oof.shape[0]} rows"
        )
    if test is not None and (test.ndim != 2 or test.shape[1] != n_classes):
        raise ArtifactError(f"{model_id}: {TEST_FILE} has shape {test.shape}; expected (n_test, {n_classes})")
    return Artifact(path=path, meta=meta, oof=oof, targets=targets, folds=folds, test=test)

"""The OOF artifact: the on-disk contract between the out-of-fold stage and the ensemble.

Writer and reader live side by side here so the format cannot drift between its two ends. The
module needs only numpy and json: ``search.oof`` imports :func:`write_artifact`, the ensemble
reads with :func:`find_artifacts` / :func:`read_artifact` and vets a set with
:func:`check_compatible`.

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

import csv
import hashlib
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DeterministicError
from common.io import atomic_path, atomic_write_text, runs_dir

FORMAT_VERSION = 1
OOF_FILE = "oof.npy"
TEST_FILE = "test.npy"
TARGETS_FILE = "targets.npy"
FOLDS_FILE = "folds.npy"
META_FILE = "meta.json"

# float16 keeps ~3 significant digits; rounding 500 probabilities can move a row sum by up to
# ~5e-4, so 1e-3 accepts honest float16 softmax rows and still refuses logits or unnormalised scores.
SUM_TOLERANCE = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-4}
_CHECK_CHUNK_ROWS = 4096

__all__ = [
    "Artifact",
    "ArtifactError",
    "ArtifactWarning",
    "IncompatibleArtifactsError",
    "artifact_dir",
    "check_compatible",
    "check_probabilities",
    "find_artifacts",
    "hash_folds",
    "latest_experiment",
    "oof_root",
    "read_artifact",
    "write_artifact",
]


class ArtifactError(DeterministicError, ValueError):
    """An artifact is malformed, incomplete or missing."""


class IncompatibleArtifactsError(ArtifactError):
    """Artifacts cannot be combined: rows, classes, folds or probabilities disagree or are invalid."""


class ArtifactWarning(UserWarning):
    """An artifact was skipped (incomplete) or excluded (no test probabilities)."""


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
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ArtifactError(f"dtype must be float16 or float32, got {dtype}")

    classes = [str(c) for c in classes]
    n_classes = len(classes)
    if n_classes < 2 or len(set(classes)) != n_classes:
        raise ArtifactError(f"{model_id}: classes must hold at least two distinct names, got {n_classes}")

    oof_arr = _as_prob_matrix(oof, "oof", model_id, n_classes).astype(dtype, copy=False)
    n_train = oof_arr.shape[0]
    targets_arr = _as_index_vector(targets, "targets", model_id, n_train)
    if targets_arr.size and (targets_arr.min() < 0 or targets_arr.max() >= n_classes):
        raise ArtifactError(
            f"{model_id}: targets must lie in [0, {n_classes}), got {targets_arr.min()}..{targets_arr.max()}"
        )
    folds_arr = _as_index_vector(folds, "folds", model_id, n_train)
    if folds_arr.size and folds_arr.min() < 0:
        raise ArtifactError(f"{model_id}: fold indices must be >= 0")
    if np.unique(folds_arr).size < 2:
        raise ArtifactError(f"{model_id}: folds must hold at least two folds (out-of-fold needs a split)")

    test_arr = None
    if test is not None:
        test_arr = _as_prob_matrix(test, "test", model_id, n_classes).astype(dtype, copy=False)
        if test_image_paths is None or len(test_image_paths) != test_arr.shape[0]:
            got = None if test_image_paths is None else len(test_image_paths)
            raise ArtifactError(
                f"{model_id}: test has {test_arr.shape[0]} rows, so test_image_paths needs as many "
                f"entries (test.csv's image_path column, in order); got {got}"
            )
    problems = _probability_problems(model_id, OOF_FILE, oof_arr)
    if test_arr is not None:
        problems += _probability_problems(model_id, TEST_FILE, test_arr)
    if problems:
        raise ArtifactError("refusing to write invalid probabilities:\n  " + "\n  ".join(problems))

    scores = [float(s) for s in fold_scores]
    finite = [s for s in scores if math.isfinite(s)]
    now = time.time()
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "classes": classes,
        "n_classes": n_classes,
        "n_train": int(n_train),
        "n_test": 0 if test_arr is None else int(test_arr.shape[0]),
        "dtype": dtype.name,
        "folds_hash": folds_hash or hash_folds(folds_arr),
        "n_folds": int(np.unique(folds_arr).size),
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

    directory.mkdir(parents=True, exist_ok=True)
    # Invalidate first: from here until the new meta.json lands the directory reads as incomplete.
    (directory / META_FILE).unlink(missing_ok=True)
    _save_npy(directory / OOF_FILE, oof_arr)
    _save_npy(directory / TARGETS_FILE, targets_arr)
    _save_npy(directory / FOLDS_FILE, folds_arr)
    if test_arr is not None:
        _save_npy(directory / TEST_FILE, test_arr)
    else:
        (directory / TEST_FILE).unlink(missing_ok=True)  # a stale test.npy from an older write
    atomic_write_text(directory / META_FILE, json.dumps(meta, indent=1, allow_nan=False) + "\n")
    return directory


def write_submission(
    path: str | Path, image_paths: Sequence[str], labels: np.ndarray | Sequence[int]
) -> Path:
    """Write a submission: ``ID,image_path,target`` in test.csv order, atomically.

    ``ID`` is the row number and ``target`` the class index (``classes[target]`` is its name),
    as train.csv's ``target`` column. Single models (the OOF stage) and ensembles write the same file.

    Args:
        path: Destination CSV.
        image_paths: test.csv's ``image_path`` column, in order.
        labels: Predicted class index per test row.

    Returns:
        ``path``.

    Raises:
        ValueError: The two columns differ in length.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(image_paths) != len(labels):
        raise ValueError(f"{len(image_paths)} test image paths but {len(labels)} predictions")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "image_path", "target"])
        writer.writerows((i, p, int(t)) for i, (p, t) in enumerate(zip(image_paths, labels, strict=True)))
    return Path(path)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(arr), allow_pickle=False)


def _as_prob_matrix(x: Any, name: str, model_id: str, n_classes: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != n_classes:
        raise ArtifactError(
            f"{model_id}: {name} must have shape (rows, {n_classes}) to match classes, got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ArtifactError(f"{model_id}: {name} must hold floating-point probabilities, got {arr.dtype}")
    return arr


def _as_index_vector(x: Any, name: str, model_id: str, n_rows: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ArtifactError(
            f"{model_id}: {name} must have shape ({n_rows},) like oof's rows, got {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
        raise ArtifactError(f"{model_id}: {name} must be integers, got {arr.dtype}")
    return arr.astype(np.int64)


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


def latest_experiment(root: str | Path | None = None) -> str:
    """The experiment under ``root`` (default :func:`oof_root`) whose artifacts were written last."""
    root = Path(root if root is not None else oof_root())
    best: tuple[float, str] | None = None
    for exp in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        stamps = [m.stat().st_mtime for m in exp.glob(f"*/{META_FILE}")]
        if stamps and (best is None or max(stamps) > best[0]):
            best = (max(stamps), exp.name)
    if best is None:
        raise ArtifactError(
            f"no OOF artifacts under {root} (set RUNS_DIR, run the OOF stage, or pass --runs DIR ...)"
        )
    return best[1]


def find_artifacts(
    experiment: str | None = None,
    runs: Iterable[str | Path] | None = None,
    root: str | Path | None = None,
) -> list[Artifact]:
    """Find complete artifacts: one experiment's, or those named by ``runs``.

    Directories without ``meta.json`` are incomplete (a crashed or running writer) and are
    skipped with an :class:`ArtifactWarning`.

    Args:
        experiment: Experiment name under ``root``; None or ``"latest"`` picks the experiment
            whose artifacts were written most recently. Ignored when ``runs`` is given.
        runs: Artifact directories (or experiment directories, which are expanded) to use instead.
        root: Where experiments live; defaults to ``$RUNS_DIR/oof``.

    Returns:
        The artifacts, in the order given (``runs``) or sorted by model directory name.

    Raises:
        ArtifactError: When nothing complete is found or a named directory does not exist.
    """
    if runs is not None:
        dirs: list[Path] = []
        for run in runs:
            run = Path(run)
            if not run.is_dir():
                raise ArtifactError(f"--runs {run}: no such directory")
            if (run / META_FILE).is_file() or (run / OOF_FILE).is_file():
                dirs.append(run)
            else:  # an experiment directory: take its models
                dirs.extend(sorted(p for p in run.iterdir() if p.is_dir()))
        where = ", ".join(str(r) for r in runs)
    else:
        root = Path(root if root is not None else oof_root())
        if experiment in (None, "latest"):
            experiment = latest_experiment(root)
        exp_dir = root / experiment
        if not exp_dir.is_dir():
            known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise ArtifactError(f"experiment {experiment!r} not found under {root}; known: {known or 'none'}")
        dirs = sorted(p for p in exp_dir.iterdir() if p.is_dir())
        where = str(exp_dir)

    artifacts = []
    for d in dirs:
        if not (d / META_FILE).is_file():
            warnings.warn(
                f"skipping {d}: no {META_FILE}, so the artifact is incomplete (writer crashed or still running)",
                ArtifactWarning,
                stacklevel=2,
            )
            continue
        artifacts.append(read_artifact(d))
    if not artifacts:
        raise ArtifactError(f"no complete OOF artifacts in {where}")
    return artifacts


# ------------------------------------------------------------------------------------- validation


def check_probabilities(artifact: Artifact) -> list[str]:
    """Problems with an artifact's probabilities (NaN/inf, rows not summing to 1); empty if fine.

    One chunked pass over each array, upcast to float32 a block at a time, so a memory-mapped
    float16 file is never copied whole.
    """
    problems = _probability_problems(artifact.model_id, OOF_FILE, artifact.oof)
    if artifact.test is not None:
        problems += _probability_problems(artifact.model_id, TEST_FILE, artifact.test)
    return problems


def _probability_problems(model_id: str, name: str, probs: np.ndarray) -> list[str]:
    tol = SUM_TOLERANCE.get(np.dtype(probs.dtype), 1e-4)
    bad_finite: list[int] = []
    n_bad_finite = 0
    worst: tuple[float, int, float] | None = None  # (|sum - 1|, row, sum)
    n_bad_sum = 0
    n_negative = 0
    for start in range(0, probs.shape[0], _CHECK_CHUNK_ROWS):
        block = np.asarray(probs[start : start + _CHECK_CHUNK_ROWS], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            n_bad_finite += rows.size
            bad_finite.extend((rows[:3] + start).tolist())
        n_negative += int((block < 0).any(axis=1).sum())
        # float64 accumulation: the sum of 500 float32 terms must not add its own error.
        sums = block.sum(axis=1, dtype=np.float64)
        off = np.abs(sums - 1.0)
        off[~finite] = 0.0
        over = off > tol
        if over.any():
            n_bad_sum += int(over.sum())
            i = int(np.argmax(off))
            if worst is None or off[i] > worst[0]:
                worst = (float(off[i]), start + i, float(sums[i]))
    problems = []
    if n_bad_finite:
        problems.append(
            f"model {model_id!r}: {name} has NaN/inf in {n_bad_finite} row(s) (first rows {bad_finite[:3]})"
        )
    if n_negative:
        problems.append(f"model {model_id!r}: {name} has negative probabilities in {n_negative} row(s)")
    if worst is not None:
        problems.append(
            f"model {model_id!r}: {name} rows must sum to 1 (tolerance {tol:g} for {probs.dtype}); "
            f"{n_bad_sum} row(s) do not, worst row {worst[1]} sums to {worst[2]:.6g} "
            "(store softmax probabilities, not logits or scores)"
        )
    return problems


def check_compatible(
    artifacts: Sequence[Artifact],
    *,
    require_test: bool = True,
    check_probs: bool = True,
) -> list[Artifact]:
    """Refuse artifacts that cannot be ensembled; return those to use.

    Checks every artifact against the majority: the same train rows (``n_train`` and
    ``targets``), the same classes in the same order, the same folds (``folds_hash`` and the
    fold array), the same data hash, the same test rows, unique model ids, and finite, normalised
    probabilities. All problems are collected and raised together, naming the culprits.

    Args:
        artifacts: Artifacts from :func:`find_artifacts`.
        require_test: Exclude (with an :class:`ArtifactWarning`) models without ``test.npy``, so
            every kept model can contribute to a submission.
        check_probs: Scan the probabilities (one chunked pass over every array).

    Returns:
        The artifacts to ensemble (all of them, or those with test probabilities).

    Raises:
        IncompatibleArtifactsError: With one line per problem, naming the models involved.
    """
    artifacts = list(artifacts)
    if not artifacts:
        raise IncompatibleArtifactsError("no artifacts to combine")
    problems: list[str] = []

    ids = Counter(a.model_id for a in artifacts)
    for model_id, count in ids.items():
        if count > 1:
            paths = [str(a.path) for a in artifacts if a.model_id == model_id]
            problems.append(
                f"model id {model_id!r} appears {count} times ({', '.join(paths)}); model ids must be unique"
            )

    def disagree(what: str, key: Any, describe: Any, fix: str) -> bool:
        """Group by ``key``; report minority groups against the majority. True if all agree."""
        groups: dict[Any, list[Artifact]] = {}
        for a in artifacts:
            groups.setdefault(key(a), []).append(a)
        if len(groups) == 1:
            return True
        ref_key, ref = max(groups.items(), key=lambda kv: len(kv[1]))
        ref_ids = ", ".join(repr(a.model_id) for a in ref)
        for k, members in groups.items():
            if k == ref_key:
                continue
            ids_ = ", ".join(repr(a.model_id) for a in members)
            problems.append(f"{what}: model(s) {ids_} {describe(members[0], ref[0])} unlike {ref_ids}; {fix}")
        return False

    rows_ok = disagree(
        "train rows differ",
        lambda a: a.n_train,
        lambda a, r: f"have {a.n_train} train rows, not {r.n_train}",
        "every model must be fit on the same train.csv",
    )
    if rows_ok:
        disagree(
            "train rows differ",
            lambda a: hashlib.sha256(np.ascontiguousarray(a.targets, dtype="<i8").tobytes()).hexdigest(),
            lambda a, r: f"have different targets (first at row {_first_diff(a.targets, r.targets)})",
            "every model must see train.csv's rows in the same order",
        )
    disagree(
        "class order differs",
        lambda a: a.classes,
        _describe_classes,
        "every model must use the data layer's class order (classes[target] == class_name)",
    )
    folds_ok = disagree(
        "folds differ",
        lambda a: a.folds_hash,
        lambda a, r: f"have folds hash {a.folds_hash}, not {r.folds_hash}",
        "refit them on the same folds (same k, seed and folds file) so nested CV stays honest",
    )
    if folds_ok and rows_ok:
        disagree(
            "folds differ",
            lambda a: hashlib.sha256(np.ascontiguousarray(a.folds, dtype="<i8").tobytes()).hexdigest(),
            lambda a, r: (
                f"have different fold arrays despite the same folds hash (first at row {_first_diff(a.folds, r.folds)})"
            ),
            "rewrite the artifacts with write_artifact",
        )
    disagree(
        "data differs",
        lambda a: a.data_hash,
        lambda a, r: f"have data hash {a.data_hash or '(none)'}, not {r.data_hash or '(none)'}",
        "every model must be fit on the same data set version",
    )
    with_test = [a for a in artifacts if a.has_test]
    if with_test:
        groups: dict[tuple[str, ...] | None, list[Artifact]] = {}
        for a in with_test:
            paths = a.test_image_paths
            groups.setdefault(None if paths is None else tuple(paths), []).append(a)
        if len(groups) > 1:
            ref = max(groups.values(), key=len)
            for members in groups.values():
                if members is not ref:
                    problems.append(
                        f"test rows differ: model(s) {', '.join(repr(a.model_id) for a in members)} predict "
                        f"{members[0].n_test} test rows / different test_image_paths than "
                        f"{', '.join(repr(a.model_id) for a in ref)}; every model must predict test.csv in order"
                    )
    if check_probs:
        for a in artifacts:
            problems.extend(check_probabilities(a))
    if problems:
        raise IncompatibleArtifactsError(
            f"cannot ensemble these {len(artifacts)} artifacts:\n  - " + "\n  - ".join(problems)
        )

    if not require_test:
        return artifacts
    kept = [a for a in artifacts if a.has_test]
    for a in artifacts:
        if not a.has_test:
            warnings.warn(
                f"excluding model {a.model_id!r} from the ensemble: it has no {TEST_FILE} "
                "(test probabilities are needed for a submission)",
                ArtifactWarning,
                stacklevel=2,
            )
    if not kept:
        raise IncompatibleArtifactsError(
            "no artifact has test probabilities (test.npy), so no submission can be made; "
            "rerun the OOF stage with test prediction, or analyse OOF only (--no-submission)"
        )
    return kept


def _first_diff(a: np.ndarray, b: np.ndarray) -> int:
    diff = np.flatnonzero(np.asarray(a) != np.asarray(b))
    return int(diff[0]) if diff.size else -1


def _describe_classes(a: Artifact, ref: Artifact) -> str:
    if set(a.classes) == set(ref.classes):
        i = next(i for i, (x, y) in enumerate(zip(a.classes, ref.classes, strict=True)) if x != y)
        return (
            f"have the same classes in a different order (column {i}: {a.classes[i]!r} vs {ref.classes[i]!r})"
        )
    missing = sorted(set(ref.classes) - set(a.classes))[:3]
    added = sorted(set(a.classes) - set(ref.classes))[:3]
    return (
        f"have different classes ({len(a.classes)} vs {len(ref.classes)}; missing {missing}, extra {added})"
    )

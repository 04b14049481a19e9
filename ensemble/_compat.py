"""Whether a set of OOF artifacts can be ensembled: same rows, classes, folds, data and test rows.

:func:`check_compatible` collects every disagreement, names the models involved and raises them
together, so a user fixes a whole set at once rather than one problem per run.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from ensemble._validate import ArtifactWarning, IncompatibleArtifactsError, probability_problems
from ensemble.artifacts import OOF_FILE, TEST_FILE, Artifact

__all__ = ["check_compatible", "check_probabilities"]


def check_probabilities(artifact: Artifact) -> list[str]:
    """Problems with an artifact's probabilities (NaN/inf, rows not summing to 1); empty if fine.

    One chunked pass over each array, upcast to float32 a block at a time, so a memory-mapped
    float16 file is never copied whole.
    """
    problems = probability_problems(artifact.model_id, OOF_FILE, artifact.oof)
    if artifact.test is not None:
        problems += probability_problems(artifact.model_id, TEST_FILE, artifact.test)
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
        artifacts: Artifacts from :func:`ensemble.find_artifacts`.
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
    problems = _duplicate_ids(artifacts) + _disagreements(artifacts) + _test_row_problems(artifacts)
    if check_probs:
        for a in artifacts:
            problems.extend(check_probabilities(a))
    if problems:
        raise IncompatibleArtifactsError(
            f"cannot ensemble these {len(artifacts)} artifacts:\n  - " + "\n  - ".join(problems)
        )
    return _with_test(artifacts) if require_test else artifacts


def _duplicate_ids(artifacts: list[Artifact]) -> list[str]:
    problems = []
    for model_id, count in Counter(a.model_id for a in artifacts).items():
        if count > 1:
            paths = [str(a.path) for a in artifacts if a.model_id == model_id]
            problems.append(
                f"model id {model_id!r} appears {count} times ({', '.join(paths)}); model ids must be unique"
            )
    return problems


def _disagree(
    artifacts: list[Artifact],
    problems: list[str],
    what: str,
    key: Callable[[Artifact], Hashable],
    describe: Callable[[Artifact, Artifact], str],
    fix: str,
) -> bool:
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


def _disagreements(artifacts: list[Artifact]) -> list[str]:
    """Train rows, class order, folds and data hash, each checked against the majority."""
    problems: list[str] = []
    rows_ok = _disagree(
        artifacts,
        problems,
        "train rows differ",
        lambda a: a.n_train,
        lambda a, r: f"have {a.n_train} train rows, not {r.n_train}",
        "every model must be fit on the same train.csv",
    )
    if rows_ok:
        _disagree(
            artifacts,
            problems,
            "train rows differ",
            lambda a: _array_hash(a.targets),
            lambda a, r: f"have different targets (first at row {_first_diff(a.targets, r.targets)})",
            "every model must see train.csv's rows in the same order",
        )
    _disagree(
        artifacts,
        problems,
        "class order differs",
        lambda a: a.classes,
        _describe_classes,
        "every model must use the data layer's class order (classes[target] == class_name)",
    )
    folds_ok = _disagree(
        artifacts,
        problems,
        "folds differ",
        lambda a: a.folds_hash,
        lambda a, r: f"have folds hash {a.folds_hash}, not {r.folds_hash}",
        "refit them on the same folds (same k, seed and folds file) so nested CV stays honest",
    )
    if folds_ok and rows_ok:
        _disagree(
            artifacts,
            problems,
            "folds differ",
            lambda a: _array_hash(a.folds),
            lambda a, r: (
                f"have different fold arrays despite the same folds hash (first at row {_first_diff(a.folds, r.folds)})"
            ),
            "rewrite the artifacts with write_artifact",
        )
    _disagree(
        artifacts,
        problems,
        "data differs",
        lambda a: a.data_hash,
        lambda a, r: f"have data hash {a.data_hash or '(none)'}, not {r.data_hash or '(none)'}",
        "every model must be fit on the same data set version",
    )
    return problems


def _test_row_problems(artifacts: list[Artifact]) -> list[str]:
    """Models with test probabilities must all predict the same test rows."""
    groups: dict[tuple[str, ...] | None, list[Artifact]] = {}
    for a in artifacts:
        if a.has_test:
            paths = a.test_image_paths
            groups.setdefault(None if paths is None else tuple(paths), []).append(a)
    if len(groups) <= 1:
        return []
    ref = max(groups.values(), key=len)
    return [
        f"test rows differ: model(s) {', '.join(repr(a.model_id) for a in members)} predict "
        f"{members[0].n_test} test rows / different test_image_paths than "
        f"{', '.join(repr(a.model_id) for a in ref)}; every model must predict test.csv in order"
        for members in groups.values()
        if members is not ref
    ]


def _with_test(artifacts: list[Artifact]) -> list[Artifact]:
    """The artifacts with test probabilities, warning about each one left out."""
    kept = [a for a in artifacts if a.has_test]
    for a in artifacts:
        if not a.has_test:
            warnings.warn(
                f"excluding model {a.model_id!r} from the ensemble: it has no {TEST_FILE} "
                "(test probabilities are needed for a submission)",
                ArtifactWarning,
                stacklevel=3,
            )
    if not kept:
        raise IncompatibleArtifactsError(
            "no artifact has test probabilities (test.npy), so no submission can be made; "
            "rerun the OOF stage with test prediction, or analyse OOF only (--no-submission)"
        )
    return kept


def _array_hash(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype="<i8").tobytes()).hexdigest()


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

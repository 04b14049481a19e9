"""Checking a data set's image files and fingerprinting it: what every load does after reading its layout."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from common.io import atomic_write_json, read_json, runs_dir, short_hash

from ._errors import BadDataError, listing
from ._images import check_image
from ._io import default_workers

log = logging.getLogger(__name__)

# Bump when what a check accepts changes, so remembered verdicts are not reused.
_CHECK_VERSION = 1

__all__ = ["check_files", "dataset_fingerprint"]


def check_files(
    train: pd.DataFrame, test: pd.DataFrame | None, *, skip_bad: bool, workers: int | None, where: str
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[tuple[str, str]], dict[str, list[str]]]:
    """Check every image file (readable, decodable), once per set of files, in parallel.

    Args:
        train: The train rows, with absolute ``path``.
        test: The test rows, or None.
        skip_bad: Drop bad files with a warning rather than refusing the data set.
        workers: Threads for the checks (default: :func:`._io.default_workers`).
        where: The data set, named in messages.

    Returns:
        ``(train, test, problems, digests)``: the frames without bad files, ``(path, reason)``
        per bad file, and the content digest of each kept file by split.

    Raises:
        BadDataError: A file is bad and ``skip_bad`` is off, or no good file is left in a split.
    """
    frames = {"train": train, "test": test}
    verdicts = {
        split: _file_verdicts(list(df["path"]), workers) for split, df in frames.items() if df is not None
    }
    problems = [
        (path, reason)
        for split, (reasons, _) in verdicts.items()
        for path, reason in zip(frames[split]["path"], reasons, strict=True)  # type: ignore[index]
        if reason
    ]
    if problems and not skip_bad:
        raise BadDataError(problems, where=where)
    if problems:
        log.warning(
            "skipping %d missing or corrupt file(s): %s", len(problems), listing([p for p, _ in problems])
        )
    digests: dict[str, list[str]] = {}
    for split, (reasons, split_digests) in verdicts.items():
        good = np.array([not r for r in reasons], dtype=bool)
        if not good.any():
            raise BadDataError(problems, where=f"{where} (no good {split} file left)")
        frames[split] = frames[split][good].reset_index(drop=True)  # type: ignore[index]
        digests[split] = [d for d, ok in zip(split_digests, good, strict=True) if ok]
    return frames["train"], frames["test"], problems, digests  # type: ignore[return-value]


def _file_verdicts(paths: list[str], workers: int | None) -> tuple[list[str], list[str]]:
    """``(reason or "" per file, content digest or "" per file)``, remembered by path+size+mtime."""
    signature = [_stat_signature(p) for p in paths]
    memo = runs_dir() / "cache" / "validated" / f"{short_hash(_CHECK_VERSION, *signature, length=24)}.json"
    found = read_json(memo)
    if isinstance(found, dict) and len(found.get("reasons", ())) == len(paths):
        return found["reasons"], found["digests"]
    n_workers = workers or default_workers()
    reasons, digests = [""] * len(paths), [""] * len(paths)
    with ThreadPoolExecutor(n_workers) as pool:
        results = pool.map(check_image, paths)
        for i, (reason, digest) in enumerate(
            tqdm(results, total=len(paths), desc="checking images", unit="img", disable=None, leave=False)
        ):
            reasons[i], digests[i] = reason or "", digest
    if not any(reasons):  # a failed check leaves nothing behind; the user fixes the files and reruns
        atomic_write_json(memo, {"reasons": reasons, "digests": digests})
    return reasons, digests


def _stat_signature(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\0missing"
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}"


def dataset_fingerprint(
    classes: list[str], train: pd.DataFrame, test: pd.DataFrame | None, digests: dict[str, list[str]]
) -> str:
    """A short hash of the classes, the train rows' labels, the test rows and every file's content."""
    # Every label-like column counts (a person column groups the folds, an age column labels a
    # factor head); a set without extra columns hashes as it always did.
    cols = [c for c in train.columns if c not in ("class_name", "path")]
    parts: list[object] = [
        "classes",
        "\n".join(classes),
        "train",
        train[cols].to_csv(index=False, lineterminator="\n"),
        *digests["train"],
    ]
    if test is not None:
        parts += ["test", test["image_path"].to_csv(index=False, lineterminator="\n"), *digests["test"]]
    return short_hash(*parts)

"""Group-aware stratified K-fold: copies and re-drawings of one source never straddle a fold boundary.

A row's group comes from, in order: the train.csv column named by ``group_column`` (e.g. the
person of a face photo); a ``group`` column in train.csv; else ``group_pattern``: by default
``"auto"``, file-name families found without being told (see ``_groups``), or a regex over the
file name, or ``"none"``: the row alone. Near-duplicate sets (flipped or resized copies,
see ``_dedup``) then merge the groups they touch. scikit-learn's ``StratifiedGroupKFold``
assigns whole groups to folds while keeping class proportions close to the whole set's.
"""

from __future__ import annotations

import logging
import operator
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import atomic_path, atomic_write_json, file_lock, read_json, runs_dir, short_hash

from ._dataset import Dataset
from ._dedup import DEFAULT_MAX_DISTANCE, find_duplicates
from ._errors import DataFormatError, listing
from ._groups import AUTO, AUTO_GROUPS_VERSION, NONE, describe_grouping, normalize_pattern, resolve_groups

log = logging.getLogger(__name__)

FOLD_COLUMNS = ["image_path", "target", "group", "fold", "duplicate", "duplicate_of", "row"]
_FOLDS_VERSION = 1


def make_folds(
    ds: Dataset,
    k: int = 5,
    seed: int = 0,
    group_pattern: str | None = AUTO,
    dedup: bool = True,
    drop_duplicates: bool = False,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    group_column: str | None = None,
) -> pd.DataFrame:
    """Assign every training row to one of ``k`` folds, keeping groups and duplicate sets whole.

    Same inputs, same folds. Classes with fewer groups than ``k`` cannot appear in every
    validation fold; they are kept and a warning names how many there are.

    Args:
        ds: The dataset.
        k: Number of folds (at least 2).
        seed: Seed of ``StratifiedGroupKFold``'s shuffle.
        group_pattern: ``"auto"`` (default: file-name families, when they look like groups),
            ``"none"`` or ``None`` (each row alone), ``"sketchy"`` or a regex; see
            :func:`~trainables.data.resolve_groups`.
        dedup: Find flipped/resized copies inside each class and put each set in one group.
        drop_duplicates: Leave out every copy but the first of each set (the rows are removed;
            ``row`` still points into ``ds.train``).
        max_distance: Near-duplicate threshold, see :func:`find_duplicates`.
        group_column: A train.csv column naming each row's group; wins over ``group_pattern``.

    Returns:
        A DataFrame in train order with ``image_path, target, group, fold`` (0..k-1),
        ``duplicate`` (True for each copy but the first of a set), ``duplicate_of`` (that first
        row's ``image_path``, or ``""``) and ``row`` (the row number in ``ds.train``, and so in
        the decoded cache). ``attrs["hash"]`` holds :func:`folds_hash`, ``attrs["grouping"]``
        the resolved grouping (rule, number of groups before and after duplicate sets, sizes,
        an example; see :meth:`Grouping.summary`).

    Raises:
        ValueError: ``k`` < 2, or fewer groups than folds.
    """
    k, seed = _check_k_seed(k, seed)
    grouping = resolve_groups(ds, group_pattern, group_column)
    groups = grouping.keys.to_numpy(dtype=object)
    targets = ds.train["target"].to_numpy()
    dup_sets = find_duplicates(ds, max_distance=max_distance) if dedup else []
    groups, duplicate, duplicate_of = _merge_duplicates(ds, groups, dup_sets)
    fold = _assign(targets, groups, k, seed, ds.classes)
    df = _folds_table(ds, groups, fold, duplicate, duplicate_of)
    if drop_duplicates:
        df = df[~df["duplicate"]].reset_index(drop=True)
    df.attrs.update(
        _attrs(ds, k, seed, group_pattern, dedup, drop_duplicates, max_distance, group_column),
        hash=folds_hash(df),
    )
    df.attrs["duplicate_sets"] = len(dup_sets)
    df.attrs["grouping"] = {**grouping.summary(), "groups_with_duplicates": int(df["group"].nunique())}
    if grouping.rule == "families":
        log.info("folds of %s: %s", ds.name, describe_grouping(df.attrs["grouping"]))
    return df


def _folds_table(
    ds: Dataset, groups: np.ndarray, fold: np.ndarray, duplicate: np.ndarray, duplicate_of: np.ndarray
) -> pd.DataFrame:
    """The folds table, one row per train row in train order, columns :data:`FOLD_COLUMNS`."""
    return pd.DataFrame(
        {
            "image_path": ds.train["image_path"].to_numpy(),
            "target": ds.train["target"].to_numpy(),
            "group": groups.astype(str),
            "fold": fold,
            "duplicate": duplicate,
            "duplicate_of": duplicate_of.astype(str),
            "row": np.arange(len(groups)),
        }
    )


def _merge_duplicates(
    ds: Dataset, groups: np.ndarray, dup_sets: list[list[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put each duplicate set in one group and mark every copy but the first.

    Returns:
        The merged group keys, ``duplicate`` (bool per row) and ``duplicate_of`` (the first
        copy's ``image_path``, or ``""``).
    """
    n = len(groups)
    duplicate = np.zeros(n, dtype=bool)
    duplicate_of = np.full(n, "", dtype=object)
    if dup_sets:
        groups = _merge_groups(groups, dup_sets)
        for members in dup_sets:
            duplicate[members[1:]] = True
            duplicate_of[members[1:]] = ds.train["image_path"].iloc[members[0]]
    return groups, duplicate, duplicate_of


def _check_k_seed(k: int, seed: int) -> tuple[int, int]:
    try:
        k, seed = operator.index(k), operator.index(seed)  # numpy integers from a search space are fine
    except TypeError:
        raise ValueError(f"k={k!r} and seed={seed!r} must be integers") from None
    if k < 2:
        raise ValueError(f"k={k}: need at least 2 folds")
    return k, seed


def _merge_groups(groups: np.ndarray, dup_sets: list[list[int]]) -> np.ndarray:
    """Join the groups that a duplicate set touches; the merged group keeps its smallest key."""
    from scipy.sparse import coo_matrix  # imported here: ~0.3 s, and cached folds need none of it
    from scipy.sparse.csgraph import connected_components

    codes, uniques = pd.factorize(pd.Series(groups, dtype=object))
    # Each set links its first member's group to every other member's.
    first = np.concatenate([np.full(len(m) - 1, codes[m[0]]) for m in dup_sets])
    other = np.concatenate([codes[m[1:]] for m in dup_sets])
    graph = coo_matrix((np.ones(len(first)), (first, other)), shape=(len(uniques), len(uniques)))
    _, component = connected_components(graph, directed=False)
    smallest = pd.Series(uniques, dtype=object).groupby(component).transform("min").to_numpy()
    return smallest[codes]


def _assign(targets: np.ndarray, groups: np.ndarray, k: int, seed: int, classes: list[str]) -> np.ndarray:
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    if len(uniques) < k:
        raise ValueError(f"only {len(uniques)} group(s) for k={k} folds; lower k or check group_pattern")
    per_class = pd.Series(codes).groupby(targets).nunique()
    short = per_class[per_class < k]
    if len(short):
        # Logged, not warnings.warn: it is a fact about the data for the run's log, and a Python
        # warning printed its source line into the user's terminal, which reads like a crash.
        log.warning(
            "%d of %d classes have fewer than k=%d groups and are missing from some validation folds: %s",
            len(short), len(per_class), k, listing([f"{classes[t]} ({n})" for t, n in short.items()], 8),
        )  # fmt: skip
    # Imported here: scikit-learn costs ~1 s to import, and most processes only read cached folds.
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    splitter: StratifiedGroupKFold | GroupKFold = StratifiedGroupKFold(
        n_splits=k, shuffle=True, random_state=seed
    )
    if (np.bincount(targets) < k).all():
        # sklearn refuses to stratify when every class is smaller than k; nothing to stratify then.
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(len(targets), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # Reported above, per class, in one line; sklearn repeats it for the least populated class.
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        for f, (_, val) in enumerate(splitter.split(np.zeros(len(targets)), targets, codes)):
            fold[val] = f
    return fold


def _attrs(
    ds: Dataset,
    k: int,
    seed: int,
    group_pattern: str | None,
    dedup: bool,
    drop: bool,
    max_distance: int,
    group_column: str | None = None,
) -> dict[str, object]:
    # group_column only when set, so the cache names of folds made without it stay as they were.
    extra: dict[str, object] = {"group_column": group_column} if group_column else {}
    pattern = normalize_pattern(group_pattern)
    if pattern == AUTO:
        # A change of what "auto" finds must not reuse folds cached under the old rule.
        extra["auto_groups"] = AUTO_GROUPS_VERSION
    return {
        "dataset": ds.name,
        "fingerprint": ds.fingerprint,
        "k": k,
        "seed": seed,
        # None is what "none" was called before "auto" existed: same meaning, same cached folds.
        "group_pattern": None if pattern == NONE else pattern,
        "dedup": dedup,
        "drop_duplicates": drop,
        "max_distance": max_distance,
        "version": _FOLDS_VERSION,
        **extra,
    }


def folds_hash(df: pd.DataFrame) -> str:
    """The hash of a fold assignment: which row (``image_path``, ``target``) is in which fold,
    and which rows are marked duplicate. Artifacts fit on different folds have different hashes.
    """
    cols = ["image_path", "target", "fold"] + (["duplicate"] if "duplicate" in df.columns else [])
    return short_hash("folds", df[cols].to_csv(index=False, lineterminator="\n"))


def fold_indices(
    folds: pd.DataFrame, fold: int, *, drop_duplicates: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row numbers (into ``ds.train`` and its cache) for one fold.

    Args:
        folds: A table from :func:`folds_for` / :func:`make_folds`.
        fold: The validation fold; ``-1`` trains on every row and validates on none.
        drop_duplicates: Also leave duplicate copies out of training ("del flip"); they stay in
            validation, where they are honest (their set is all in that fold).

    Returns:
        ``(train_rows, val_rows)``, sorted int64 arrays.
    """
    rows = folds["row"].to_numpy() if "row" in folds.columns else np.arange(len(folds))
    in_val = folds["fold"].to_numpy() == fold
    keep = ~folds["duplicate"].to_numpy() if drop_duplicates and "duplicate" in folds.columns else True
    return np.sort(rows[~in_val & keep]), np.sort(rows[in_val])


def folds_for(
    ds: Dataset,
    k: int = 5,
    seed: int = 0,
    group_pattern: str | None = AUTO,
    dedup: bool = True,
    drop_duplicates: bool = False,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    group_column: str | None = None,
) -> pd.DataFrame:
    """:func:`make_folds`, cached as a CSV (plus a JSON with its hash) under ``runs_dir()/folds``.

    The file name holds the dataset fingerprint and a hash of the options, so every trial of a
    search reads the same folds, and a change to the data or the options makes new ones. A lock
    lets one process compute them while the others wait. ``group_pattern="auto"`` is keyed with
    the version of its rule, so folds cached before it existed (when the default kept every row
    alone) or under an older rule are never read for it; ``"none"``, ``""`` and ``None`` share
    one entry, the old default's, since they mean what it meant.

    Returns:
        As :func:`make_folds`; ``attrs["hash"]`` is checked against the stored hash on reading,
        and ``attrs["path"]`` is the CSV.
    """
    k, seed = _check_k_seed(k, seed)
    attrs = _attrs(ds, k, seed, group_pattern, dedup, drop_duplicates, max_distance, group_column)
    path = (
        runs_dir()
        / "folds"
        / f"{ds.name}-{ds.fingerprint}-k{k}-s{seed}-{short_hash(sorted(attrs.items()), length=10)}.csv"
    )
    df = _read_folds(path)
    if df is None:
        with file_lock(path.with_suffix(".lock")):
            df = _read_folds(path)
            if df is None:
                df = make_folds(
                    ds, k, seed, group_pattern, dedup, drop_duplicates, max_distance, group_column
                )
                write_folds(df, path)
    df.attrs["path"] = str(path)
    return df


def write_folds(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a folds table as CSV, atomically, with a JSON beside it (``.json``) holding its hash and options."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df[[c for c in FOLD_COLUMNS if c in df.columns]].to_csv(tmp, index=False, lineterminator="\n")
    meta = {key: value for key, value in df.attrs.items() if key != "path"}
    meta.update(hash=folds_hash(df), rows=len(df), groups=int(df["group"].nunique()), csv=path.name)
    meta["fold_sizes"] = df["fold"].value_counts().sort_index().astype(int).tolist()
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


def read_folds(path: str | Path) -> pd.DataFrame:
    """Read a folds CSV written by :func:`write_folds` (or any ``image_path,target,group,fold`` CSV).

    Raises:
        DataFormatError: Required columns are missing, or the CSV does not match its stored hash.
    """
    path = Path(path)
    df = pd.read_csv(
        path, dtype={"image_path": str, "group": str, "duplicate_of": str}, keep_default_na=False
    )
    missing = [c for c in ("image_path", "target", "fold") if c not in df.columns]
    if missing:
        raise DataFormatError(f"{path} lacks folds column(s) {missing}; found {list(df.columns)}")
    if "duplicate" in df.columns:
        df["duplicate"] = df["duplicate"].astype(str).str.lower().eq("true")
    meta = read_json(path.with_suffix(".json")) or {}
    df.attrs.update(meta)
    digest = folds_hash(df)
    if meta.get("hash") not in (None, digest):
        raise DataFormatError(
            f"{path} does not match the hash stored in {path.with_suffix('.json')}; it was edited"
        )
    df.attrs["hash"] = digest
    return df


def _read_folds(path: Path) -> pd.DataFrame | None:
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        return None
    try:
        return read_folds(path)
    except (DataFormatError, ValueError, OSError) as exc:
        log.warning("ignoring cached folds %s (%s); recomputing", path, exc)
        return None

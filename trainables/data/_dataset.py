"""One interface over the data sources: competition CSVs, a class-folder tree, the built-in set.

Layouts accepted by :func:`load_dataset` (first match wins):

1. ``synthetic`` (the built-in sketch set) or ``synthetic-factors`` (the factorised face set of
   :mod:`._synthetic_factors`): generated on first use under ``runs_dir()/data`` in the
   competition layout, then loaded exactly like 2.
2. Competition: ``<root>/train.csv`` with ``class_name,image_path,target`` (optional ``group``),
   paths relative to ``<root>/train/`` (or to ``<root>`` when that is where the files are);
   optional ``<root>/test.csv`` with ``image_path`` relative to ``<root>/test/``. Any other
   train.csv columns (a person id, an age) are kept, as text, after ``path``: the folds may read
   one as the group (``group_column``) and the factor heads one as finer labels.
3. Class folders with a test folder: ``<root>/train/<class>/*.png`` and optional ``<root>/test/**``.
4. Class folders: ``<root>/<class>/*.png``. When ``<root>`` is itself named ``train``, a sibling
   ``<root>/../test/`` is its test split; otherwise there is none (use layout 3 to add one).

In the folder layouts classes are the sorted folder names (torchvision's ImageFolder order),
``image_path`` is relative to the class-tree root (``<class>/<file>``) or to the test folder, and
files are every image (by extension) below a folder, sorted; other files are ignored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._errors import DataFormatError, listing
from ._filecheck import check_files, dataset_fingerprint
from ._images import IMAGE_EXTENSIONS
from ._synthetic import ensure_synthetic
from ._synthetic_factors import ensure_synthetic_factors

log = logging.getLogger(__name__)
# Fingerprints of the data sets this process has announced at INFO (:func:`load_dataset`).
_ANNOUNCED: set[str] = set()

TRAIN_COLUMNS = ("class_name", "image_path", "target")
# Names of the generated sets, and what makes each (a folder under runs_dir()/data).
BUILTIN_SETS = {"synthetic": ensure_synthetic, "synthetic-factors": ensure_synthetic_factors}
# Columns that ds.train defines itself; a train.csv column of that name is not carried.
_RESERVED = ("path",)


@dataclass(eq=False)
class Dataset:
    """A loaded, validated dataset. Row ``i`` of ``train`` is row ``i`` of every derived array.

    Attributes:
        name: Short name (the folder name; ``synthetic-v1`` for the built-in set).
        root: The folder it was loaded from.
        classes: Class names in target order: ``classes[target] == class_name``.
        train: ``image_path`` (as written in train.csv), ``class_name``, ``target`` (int),
            ``group`` when train.csv has one, ``path`` (absolute), then train.csv's other
            columns as text (in file order).
        test: ``image_path`` (as written in test.csv) and ``path``; None without a test split.
        fingerprint: Hash of the class list, the rows and every file's bytes: "the data hash".
        layout: ``competition`` or ``folders``.
        skipped: ``(path, reason)`` for every row dropped by ``skip_bad=True``.
    """

    name: str
    root: Path
    classes: list[str]
    train: pd.DataFrame
    test: pd.DataFrame | None
    fingerprint: str
    layout: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of classes (columns of every probability matrix)."""
        return len(self.classes)

    def split(self, split: str) -> pd.DataFrame:
        """The rows of ``"train"`` or ``"test"``; a clear error when there is no test split."""
        if split == "train":
            return self.train
        if split == "test":
            if self.test is None:
                raise ValueError(f"dataset {self.name!r} at {self.root} has no test split")
            return self.test
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")

    def __repr__(self) -> str:
        n_test = 0 if self.test is None else len(self.test)
        return (
            f"Dataset(name={self.name!r}, classes={self.num_classes}, train={len(self.train)}, "
            f"test={n_test}, fingerprint={self.fingerprint!r}, root={str(self.root)!r})"
        )


def load_dataset(
    spec: str | os.PathLike[str] | Dataset = "synthetic",
    *,
    skip_bad: bool = False,
    workers: int | None = None,
) -> Dataset:
    """Load and validate a dataset from a name or a path (see the module docstring for layouts).

    Every image file is checked before anything else uses it, and all problems are reported in
    one error. The check reads each file once; its verdict is remembered under
    ``runs_dir()/cache/validated`` keyed by the files' paths, sizes and modification times, so
    later loads (every trial) only ``stat`` the files.

    Args:
        spec: ``"synthetic"``, ``"synthetic-factors"``, a dataset folder, or an already loaded
            Dataset (returned as is).
        skip_bad: Drop rows whose file is missing or corrupt instead of raising; they are listed
            in ``Dataset.skipped`` and logged.
        workers: Threads for the file check; default: the cores available.

    Returns:
        The dataset, its fingerprint covering the rows kept.

    Raises:
        DataFormatError: The folder matches no layout, or a CSV is malformed (missing columns,
            targets that are not integers in ``0..C-1``, class names and targets that disagree).
        BadDataError: Some files are missing or corrupt (and ``skip_bad`` is False); the message
            lists every one of them.
    """
    if isinstance(spec, Dataset):
        return spec
    # Absolute with ".." folded but symlinks kept, so messages show the path the user gave.
    builtin = BUILTIN_SETS.get(str(spec))
    root = builtin() if builtin else Path(os.path.abspath(Path(spec).expanduser()))
    layout, name, classes, train, test = _read_layout(root)
    train, test, skipped, digests = check_files(
        train, test, skip_bad=skip_bad, workers=workers, where=str(root)
    )
    fingerprint = dataset_fingerprint(classes, train, test, digests)
    ds = Dataset(name, root, classes, train, test, fingerprint, layout, skipped)
    # Once per data set and process at INFO: the flow loads it in several places, and the
    # terminal needs the line once.
    log.log(logging.DEBUG if fingerprint in _ANNOUNCED else logging.INFO, "loaded %r", ds)
    _ANNOUNCED.add(fingerprint)
    return ds


# -- layouts -------------------------------------------------------------------------------------


def _read_layout(root: Path) -> tuple[str, str, list[str], pd.DataFrame, pd.DataFrame | None]:
    if not root.exists():
        raise DataFormatError(
            f"data={str(root)!r} does not exist; pass one of {sorted(BUILTIN_SETS)} or an existing dataset folder"
        )
    if not root.is_dir():
        raise DataFormatError(
            f"data={str(root)!r} is a file; pass the folder that holds train.csv or class folders"
        )
    if (root / "train.csv").is_file():
        train, classes = _read_train_csv(root)
        test = _read_test_csv(root)
        return "competition", root.name, classes, train, test
    if (root / "train").is_dir():
        train, classes = _read_class_tree(root / "train")
        test = _read_test_folder(root / "test") if (root / "test").is_dir() else None
        return "folders", root.name, classes, train, test
    if any(_class_dirs(root)):
        train, classes = _read_class_tree(root)
        sibling = root.parent / "test"
        test = _read_test_folder(sibling) if root.name == "train" and sibling.is_dir() else None
        name = root.parent.name if root.name == "train" else root.name
        return "folders", name, classes, train, test
    raise DataFormatError(
        f"{root} is not a dataset folder: expected train.csv (+ train/), or class folders "
        f"(<root>/<class>/*.png or <root>/train/<class>/*.png); found: {listing(sorted(p.name for p in root.iterdir()))}"
    )


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # Everything as text: targets are checked by hand so that "3.5" or "cat" gets a clear error.
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # BOM-safe
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path} is not a readable CSV file: {exc}") from exc


def _read_train_csv(root: Path) -> tuple[pd.DataFrame, list[str]]:
    path = root / "train.csv"
    df = _read_csv(path)
    missing = [c for c in TRAIN_COLUMNS if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path} lacks column(s) {missing}: expected {','.join(TRAIN_COLUMNS)} (optional: group); "
            f"found {list(df.columns)}"
        )
    if df.empty:
        raise DataFormatError(f"{path} has a header but no rows")
    _require_filled(df, ["class_name", "image_path", *(["group"] if "group" in df.columns else [])], path)
    df["target"] = _integer_targets(df["target"], path)
    classes = _classes_from_rows(df, path)
    _require_unique_paths(df, path)
    keep = ["image_path", "class_name", "target", *(["group"] if "group" in df.columns else [])]
    extra = [c for c in df.columns if c not in keep and c not in _RESERVED]
    if any(c in _RESERVED for c in df.columns):
        log.info("%s: column(s) %s are not carried (ds.train defines them)", path, list(_RESERVED))
    train = df[keep].reset_index(drop=True)
    train["path"] = _resolve_paths(train["image_path"], [root / "train", root])
    for column in extra:
        train[column] = df[column].to_numpy()
    return train, classes


def _read_test_csv(root: Path) -> pd.DataFrame | None:
    path = root / "test.csv"
    if not path.is_file():
        return None
    df = _read_csv(path)
    if "image_path" not in df.columns:
        raise DataFormatError(f"{path} lacks column 'image_path'; found {list(df.columns)}")
    if df.empty:
        log.warning("%s has no rows; the dataset has no test split", path)
        return None
    _require_filled(df, ["image_path"], path)
    _require_unique_paths(df, path)
    test = df[["image_path"]].reset_index(drop=True)
    test["path"] = _resolve_paths(test["image_path"], [root / "test", root])
    return test


def _require_filled(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    for col in columns:
        empty = df.index[df[col].str.strip() == ""]
        if len(empty):
            raise DataFormatError(f"{path}: column {col!r} is empty on line(s) {listing(list(empty + 2))}")


def _integer_targets(raw: pd.Series, path: Path) -> pd.Series:
    values = pd.to_numeric(raw.str.strip(), errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        rows = [f"line {i + 2} ({raw[i]!r})" for i in raw.index[bad]]
        raise DataFormatError(
            f"{path}: column 'target' must hold integer class indices; not integers: {listing(rows)}"
        )
    return values.astype(np.int64)


def _classes_from_rows(df: pd.DataFrame, path: Path) -> list[str]:
    """Check that class names and targets are one-to-one and cover ``0..C-1``; return the class list."""
    problems: list[str] = []
    per_name = df.groupby("class_name", sort=True)["target"].unique()
    for name, targets in per_name.items():
        if len(targets) > 1:
            problems.append(
                f"class_name {name!r} has several targets {sorted(int(t) for t in targets)}"
                f" ({_minority_lines(df, df['class_name'] == name, 'target')})"
            )
    per_target = df.groupby("target", sort=True)["class_name"].unique()
    for target, names in per_target.items():
        if len(names) > 1:
            problems.append(
                f"target {target} is used by several class names {sorted(names)}"
                f" ({_minority_lines(df, df['target'] == target, 'class_name')})"
            )
    if problems:
        raise DataFormatError(
            f"{path}: class names and targets must map one-to-one:\n  " + "\n  ".join(problems[:50])
        )
    n = len(per_target)
    outside = sorted(int(t) for t in per_target.index if not 0 <= t < n)
    if outside:
        absent = sorted(set(range(n)) - {int(t) for t in per_target.index})
        raise DataFormatError(
            f"{path}: targets must be 0..{n - 1} for the {n} class names found; out of range: "
            f"{listing(outside)}; targets without rows: {listing(absent)}"
        )
    return [str(per_target[t][0]) for t in range(n)]


def _minority_lines(df: pd.DataFrame, rows: pd.Series, column: str) -> str:
    """The CSV lines (header = line 1) holding the less common values of ``column`` among ``rows``:
    the likely typos, so the user knows which lines to fix."""
    values = df.loc[rows, column]
    usual = values.value_counts().index[0]
    odd = values.index[values != usual]
    return f"the usual {column} is {usual!r}; other values on line(s) {listing([int(i) + 2 for i in odd])}"


def _require_unique_paths(df: pd.DataFrame, path: Path) -> None:
    dup = df["image_path"][df["image_path"].duplicated()].unique()
    if len(dup):
        raise DataFormatError(
            f"{path}: image_path repeated on several rows: {listing(list(dup))}; keep one row per file"
        )


def _resolve_paths(image_paths: pd.Series, bases: list[Path]) -> list[str]:
    """Absolute paths under whichever base folder holds most of the files (``train/`` first on ties)."""
    bases = [b for b in bases if b.is_dir()] or bases[:1]
    best, best_hits = bases[0], -1
    for base in bases:
        hits = sum(os.path.exists(base / p) for p in image_paths)
        if hits > best_hits:
            best, best_hits = base, hits
        if hits == len(image_paths):
            break
    return [os.path.normpath(best / p) for p in image_paths]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_dirs(tree: Path) -> list[Path]:
    return sorted(p for p in tree.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.rglob("*") if _is_image(p)), key=lambda p: p.relative_to(folder).as_posix()
    )


def _read_class_tree(tree: Path) -> tuple[pd.DataFrame, list[str]]:
    classes = [d.name for d in _class_dirs(tree)]
    if not classes:
        raise DataFormatError(f"{tree} holds no class folders; expected {tree}/<class_name>/<image files>")
    rows: list[tuple[str, str, int, str]] = []
    empty: list[str] = []
    for target, name in enumerate(classes):
        files = _image_files(tree / name)
        if not files:
            empty.append(name)
        rows += [(f.relative_to(tree).as_posix(), name, target, str(f)) for f in files]
    if empty:
        raise DataFormatError(
            f"{tree}: class folder(s) without image files ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
            f"{listing(empty)}; add images or remove the folders"
        )
    loose = [p.name for p in tree.iterdir() if _is_image(p)]
    if loose:
        log.warning(
            "%s: %d image file(s) outside any class folder are ignored: %s", tree, len(loose), listing(loose)
        )
    return pd.DataFrame(rows, columns=["image_path", "class_name", "target", "path"]), classes


def _read_test_folder(folder: Path) -> pd.DataFrame | None:
    files = _image_files(folder)
    if not files:
        log.warning("%s holds no image files; the dataset has no test split", folder)
        return None
    return pd.DataFrame(
        {"image_path": [f.relative_to(folder).as_posix() for f in files], "path": [str(f) for f in files]}
    )

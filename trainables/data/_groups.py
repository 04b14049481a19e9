"""Leakage groups before near-duplicates: a column, a file-name pattern, or file-name families found alone.

A row's group comes from, in order: the train.csv column named by ``group_column``; a ``group``
column in train.csv; else ``group_pattern``. The pattern is ``"auto"`` by default: file-name
*families* are found without being told. A family is the set of files whose stems differ only by
a trailing counter (``photo-3``, ``photo_03``, ``photo (2)``; a plain ``photo`` joins its own
copies ``photo (2)``). Families are used as groups only when they look like groups:

* a family that spans classes is a naming scheme (``sketch_0.jpg`` in every class folder), and so
  is one named after its class (``cat/cat_001.jpg``): their rows stay alone;
* when, in more than half of the classes that have families, one family holds most (80 %) of the
  class, the families are the classes' own numbering (ImageNet's ``n01440764_10026``): none is used;
* the families kept must cover a real share (20 %) of the rows, else the names are not a scheme
  of groups at all.

``"none"`` (or ``None`` from Python) keeps every row alone; ``"sketchy"`` and any regex keep
working as before.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd

from ._dataset import Dataset
from ._errors import DataFormatError, listing

log = logging.getLogger(__name__)

AUTO = "auto"
NONE = "none"
# Sketchy file names are <wnid>_<photo>-<k>: sketches of one photo by different people.
SKETCHY_GROUP_PATTERN = r"^(?P<group>.+)-\d+$"
# Names accepted in place of a regex (e.g. ``group_pattern: sketchy`` in a config).
GROUP_PATTERNS = {"sketchy": SKETCHY_GROUP_PATTERN}
# Bump when what "auto" finds changes, so folds cached under the old rule are not reused.
AUTO_GROUPS_VERSION = 1

# A trailing counter after a separator: "-3", "_03", " 3", " (2)", "(2)". Bare digits ("img12")
# are not stripped: they are as often part of an id as a counter.
_COUNTER = re.compile(r"^(?P<group>.+?)(?:[-_ ]\d+|\s*\(\d+\))$")
MIN_FAMILY_SHARE = 0.2  # families must cover this share of the rows to be used
MOST_OF_A_CLASS = 0.8  # a family this large a share of its class is that class's numbering ...
MAX_HELD_CLASSES = 0.5  # ... when it is so in more than this share of the classes with families


@dataclass(frozen=True)
class Grouping:
    """The groups of the training rows and how they were chosen.

    Attributes:
        keys: Group key per training row, in train order (a lone row's key is its ``image_path``).
        rule: ``"column:<name>"``, ``"pattern:<name or regex>"``, ``"families"`` (found by
            ``auto``) or ``"rows"`` (every row alone).
        reason: One sentence on why (what ``auto`` found, or which option decided).
        requested: The ``group_pattern`` asked for (``"none"`` for ``None``).
        paths: ``image_path`` per row (for the example in :meth:`summary`).
        extra: More facts for the metadata (what ``auto`` saw).
    """

    keys: pd.Series
    rule: str
    reason: str
    requested: str
    paths: pd.Series
    extra: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """JSON-able facts for the folds metadata: rule, number of groups, sizes, one example."""
        sizes = self.keys.value_counts()
        shared = sizes[sizes > 1]
        example = ""
        if len(shared):
            key = str(shared.index[0])
            example = f"{key}: " + ", ".join(self.paths[self.keys == key].astype(str)[:3])
        return {
            "rule": self.rule,
            "requested": self.requested,
            "groups": int(len(sizes)),
            "grouped_rows": int(shared.sum()),
            "sizes": {
                "min": int(sizes.min()) if len(sizes) else 0,
                "median": float(sizes.median()) if len(sizes) else 0.0,
                "max": int(sizes.max()) if len(sizes) else 0,
            },
            "example": example,
            "reason": self.reason,
            **self.extra,
        }


def describe_grouping(summary: dict[str, object]) -> str:
    """One line for people: the rule, how many groups, their sizes, an example, how to turn it off."""
    sizes = summary.get("sizes") or {}
    text = (
        f"groups: {summary.get('rule')} ({summary.get('reason')}); {summary.get('groups')} groups, "
        f"sizes min/median/max {sizes.get('min')}/{sizes.get('median'):g}/{sizes.get('max')}"
    )
    if summary.get("example"):
        text += f"; e.g. {summary['example']}"
    if summary.get("rule") == "families":
        text += "; group_pattern=none turns this off"
    return text


def normalize_pattern(group_pattern: str | None) -> str:
    """``None``/``""``/``"none"`` -> ``"none"``; names and regexes as given (``"AUTO"`` -> ``"auto"``)."""
    if group_pattern is None or not str(group_pattern).strip():
        return NONE
    text = str(group_pattern).strip()
    return text.lower() if text.lower() in (AUTO, NONE) else text


def resolve_groups(
    ds: Dataset, group_pattern: str | None = AUTO, group_column: str | None = None
) -> Grouping:
    """The group of every training row before near-duplicates are merged in, and the rule used.

    Args:
        ds: The dataset.
        group_pattern: ``"auto"`` (default): file-name families when they look like groups (see
            the module doc). ``"none"``, ``""`` or ``None``: every row alone. A name from
            :data:`GROUP_PATTERNS` (``"sketchy"``) or a regex searched in each file's stem, falling
            back to the whole ``image_path``; its named group ``group``, else its first group,
            else the whole match is the key. A ``group`` column in train.csv wins over it.
        group_column: A train.csv column whose value is the group (all photos of one person);
            it wins over a ``group`` column and over ``group_pattern``.

    Raises:
        ValueError: The pattern is not a valid regex.
        DataFormatError: ``group_column`` is not a column of train.csv, or is empty on some rows.
    """
    pattern = normalize_pattern(group_pattern)
    explicit = pattern not in (AUTO, NONE)
    paths = ds.train["image_path"].astype(str)
    if group_column or "group" in ds.train.columns:
        column = group_column or "group"
        if explicit:
            log.warning("group column %r is set; group_pattern %r is ignored", column, pattern)
        keys = _column_groups(ds, column) if group_column else ds.train["group"].astype(str)
        return Grouping(keys.rename("group"), f"column:{column}", f"{column!r} column", pattern, paths)
    if pattern == NONE:
        return Grouping(paths.rename("group"), "rows", "group_pattern=none", pattern, paths)
    if pattern == AUTO:
        return file_families(ds)
    return Grouping(_pattern_groups(ds, pattern), f"pattern:{pattern}", "group_pattern", pattern, paths)


def base_groups(ds: Dataset, group_pattern: str | None = AUTO, group_column: str | None = None) -> pd.Series:
    """String group keys in train order, before near-duplicates are merged; see :func:`resolve_groups`."""
    return resolve_groups(ds, group_pattern, group_column).keys


def file_families(ds: Dataset) -> Grouping:
    """``group_pattern="auto"``: the training rows' file-name families, used when they look like groups.

    Returns:
        A :class:`Grouping` with rule ``"families"`` (families kept as groups, the other rows
        alone) or ``"rows"`` (no usable families; ``reason`` says why).
    """
    paths = ds.train["image_path"].astype(str)
    stems = [PurePosixPath(p).stem for p in paths]
    stripped = [(m.group("group") if (m := _COUNTER.match(s)) else None) for s in stems]
    heads = {s for s in stripped if s is not None}
    # "x.png" beside "x (2).png": the original belongs to its copies' family.
    family = pd.Series(
        [s if s in heads else key for s, key in zip(stems, stripped, strict=True)], index=paths.index
    )
    classes = ds.train["class_name"].astype(str)
    folders = paths.map(lambda p: PurePosixPath(p).parent.name)
    facts = pd.DataFrame({"family": family, "cls": classes, "folder": folders}).dropna(subset=["family"])
    per = facts.groupby("family").agg(rows=("cls", "size"), classes=("cls", "nunique"), cls=("cls", "first"))
    named = facts["family"].str.lower().eq(facts["cls"].str.lower()) | facts["family"].str.lower().eq(
        facts["folder"].str.lower()
    )
    per["named"] = named.groupby(facts["family"]).any()
    scheme = (per["classes"] > 1) | per["named"]
    kept = per[~scheme]
    share_of_class = kept["rows"] / classes.value_counts().reindex(kept["cls"]).to_numpy()
    multi = kept[kept["rows"] > 1]
    with_family = multi["cls"].nunique()
    held = kept.loc[share_of_class >= MOST_OF_A_CLASS].query("rows > 1")["cls"].nunique()
    covered = int(kept.loc[kept["rows"] > 1, "rows"].sum())
    extra = {"scheme_families": int((scheme & (per["rows"] > 1)).sum()), "family_rows": covered}
    n_schemes = extra["scheme_families"]
    schemes = (
        f"{n_schemes} are naming schemes (span classes or named after one), the rest" if n_schemes else ""
    )
    if with_family and held / with_family > MAX_HELD_CLASSES:
        reason = f"auto: in {held} of {with_family} classes one file-name family holds most of the class (numbering)"
    elif covered < MIN_FAMILY_SHARE * len(paths):
        reason = f"auto: of file-name families, {schemes or 'all'} cover {covered} of {len(paths)} rows, under {MIN_FAMILY_SHARE:.0%}"
    else:
        keys = paths.where(~family.isin(kept.index), family).rename("group")
        reason = f"auto: {len(multi)} file-name families of {covered} rows"
        grouping = Grouping(keys, "families", reason, AUTO, paths, extra)
        log.info("group_pattern=auto: %s", describe_grouping(grouping.summary()))
        return grouping
    log.info("group_pattern=auto: %s; every row is its own group", reason)
    return Grouping(paths.rename("group"), "rows", reason, AUTO, paths, extra)


def _pattern_groups(ds: Dataset, group_pattern: str) -> pd.Series:
    paths = ds.train["image_path"]
    try:
        regex = re.compile(GROUP_PATTERNS.get(group_pattern, group_pattern))
    except re.error as exc:
        raise ValueError(f"group_pattern {group_pattern!r} is not a valid regular expression: {exc}") from exc
    keys, unmatched = [], []
    for path in paths:
        match = regex.search(PurePosixPath(path).stem) or regex.search(path)
        if match is None:
            unmatched.append(path)
            keys.append(path)
        else:
            keys.append(_group_key(match))
    if unmatched:
        log.warning(
            "group_pattern %r matched neither the file name nor the path of %d of %d rows; "
            "each of those is its own group: %s",
            group_pattern, len(unmatched), len(paths), listing(unmatched, 5),
        )  # fmt: skip
    return pd.Series(keys, index=paths.index, name="group", dtype=str)


def _column_groups(ds: Dataset, column: str) -> pd.Series:
    if column not in ds.train.columns or column == "path":
        usable = [c for c in ds.train.columns if c not in ("image_path", "class_name", "target", "path")]
        raise DataFormatError(
            f"group_column={column!r} is not a column of {ds.name}'s train.csv; columns that could "
            f"name a group: {usable or 'none'}"
        )
    keys = ds.train[column].astype(str)
    empty = keys.index[keys.str.strip() == ""]
    if len(empty):
        raise DataFormatError(
            f"group_column {column!r} is empty on train.csv line(s) {listing(list(empty + 2))}; "
            "give every row its group (e.g. the person id)"
        )
    return keys.rename("group")


def _group_key(match: re.Match[str]) -> str:
    if "group" in match.re.groupindex:
        return match.group("group")
    return match.group(1) if match.re.groups else match.group(0)

"""Build a :class:`~trainables.factors.Factorisation` from a config's ``targets`` and a dataset.

Checks what needs the dataset (the class names split into the factors' values, finer labels from a
train.csv column that each fall inside one value) and names what to change when they do not.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trainables.config import factor_name
from trainables.factors import Factor, Factorisation

log = logging.getLogger(__name__)


def build_factorisation(
    targets: Mapping[str, Any], classes: Sequence[str], train: pd.DataFrame
) -> tuple[Factorisation, np.ndarray]:
    """Resolve a config's ``targets`` against a dataset: the factorisation and every row's head labels.

    Args:
        targets: The config's ``targets`` group (``factors`` set; see :mod:`trainables.config`).
        classes: The dataset's classes in target order.
        train: Its training rows (``target``, and any column a factor names).

    Returns:
        ``(factorisation, labels)``, ``labels`` being ``(len(train), F)`` int64: per row and factor,
        the bin index where the head has bins, else the value index of the row's class.

    Raises:
        ValueError: The classes do not decompose as configured, or a column does not give usable
            finer labels; the message names the classes, rows or bins at fault and what to change.
    """
    specs = [_spec(entry) for entry in targets["factors"]]
    codes, values = _class_codes(specs, list(classes), targets["sep"])
    class_codes = np.asarray(codes, dtype=np.int64)
    row_targets = train["target"].to_numpy(dtype=np.int64)
    factors: list[Factor] = []
    labels = np.empty((len(train), len(specs)), dtype=np.int64)
    for f, spec in enumerate(specs):
        factor = Factor(spec["name"], values[f], weight=float(spec.get("weight", 1.0)))
        row_values = class_codes[row_targets, f]
        labels[:, f] = row_values
        if targets["fine"] and spec.get("column"):
            bins, bin_value, row_bins = _fine_labels(spec, factor, train, row_values)
            factor = Factor(factor.name, factor.values, bins, bin_value, factor.weight)
            labels[:, f] = row_bins
        factors.append(factor)
    fz = Factorisation(classes, factors, class_codes)
    missing = int(np.prod([len(f.values) for f in factors])) - len(classes)
    if missing:
        log.warning(
            "%d of the %d combinations of %s have no class; class probabilities renormalise over the %d classes",
            missing, missing + len(classes), fz.names, len(classes),
        )  # fmt: skip
    log.info("multi-task targets: %r", fz)
    return fz, labels


def _spec(entry: Any) -> dict[str, Any]:
    name = factor_name(entry)
    return {"name": name} if isinstance(entry, str) else {**entry, "name": name}


def _class_codes(
    specs: list[dict[str, Any]], classes: list[str], sep: str | None
) -> tuple[list[list[int]], list[tuple[str, ...]]]:
    """Each class's value index per factor, and each factor's values."""
    names = [s["name"] for s in specs]
    declared = [None if s.get("values") is None else tuple(str(v) for v in s["values"]) for s in specs]
    if sep is None:
        sizes = [len(v) for v in declared]  # validate_targets made sure every factor lists values
        if int(np.prod(sizes)) != len(classes):
            raise ValueError(
                f"targets.sep=null numbers the classes by {names} with sizes {sizes}, "
                f"{' x '.join(map(str, sizes))} = {int(np.prod(sizes))}, but the dataset has {len(classes)} "
                "classes; fix the factors' values, or split the class names with targets.sep"
            )
        codes = np.stack(np.unravel_index(np.arange(len(classes)), sizes), axis=1)
        return codes.tolist(), [tuple(v) for v in declared]  # type: ignore[arg-type]
    parts = [c.split(sep) for c in classes]
    wrong = [c for c, p in zip(classes, parts, strict=True) if len(p) != len(specs)]
    if wrong:
        raise ValueError(
            f"targets.factors has {len(specs)} factors {names} but these class names do not split on "
            f"{sep!r} into {len(specs)} parts: {wrong[:8]}{' ...' if len(wrong) > 8 else ''}; "
            "set targets.sep to the separator the names use, or targets.sep=null with values to "
            "number the classes"
        )
    values: list[tuple[str, ...]] = []
    for f, spec in enumerate(specs):
        seen = list(dict.fromkeys(p[f] for p in parts))  # first appearance in target order
        if declared[f] is None:
            values.append(tuple(seen))
            continue
        unknown = [v for v in seen if v not in declared[f]]
        if unknown:
            raise ValueError(
                f"factor {spec['name']!r}: class names use value(s) {unknown} that are not in its "
                f"values {list(declared[f])}"
            )
        values.append(declared[f])
    for f, spec in enumerate(specs):
        if len(values[f]) < 2:
            raise ValueError(
                f"factor {spec['name']!r} has one value {list(values[f])} in every class; drop it"
            )
    codes = [[values[f].index(p[f]) for f in range(len(specs))] for p in parts]
    seen_at: dict[tuple[int, ...], str] = {}
    for c, row in zip(classes, codes, strict=True):
        other = seen_at.setdefault(tuple(row), c)
        if other != c:
            raise ValueError(
                f"classes {other!r} and {c!r} split into the same factor values; the split must be one-to-one"
            )
    return codes, values


def _fine_labels(
    spec: dict[str, Any], factor: Factor, train: pd.DataFrame, row_values: np.ndarray
) -> tuple[tuple[str, ...], tuple[int, ...], np.ndarray]:
    """``(bin names, value of each bin, bin of each row)`` from the factor's train.csv column."""
    column = spec["column"]
    if column not in train.columns:
        usable = [c for c in train.columns if c not in ("image_path", "class_name", "target", "path")]
        raise ValueError(
            f"factor {factor.name!r}: column {column!r} is not in train.csv; columns that could label it: "
            f"{usable or 'none'}"
        )
    names, row_bins = _column_bins(spec, factor, train[column])
    counts = pd.crosstab(pd.Series(row_bins, name="bin"), pd.Series(row_values, name="value"))
    straddling = [
        f"{names[b]} ({', '.join(f'{factor.values[v]}: {n}' for v, n in row.items() if n)})"
        for b, row in counts.iterrows()
        if (row > 0).sum() > 1
    ]
    if straddling:
        raise ValueError(
            f"factor {factor.name!r}: finer label(s) of column {column!r} fall in several of its values "
            f"{list(factor.values)}: {straddling[:6]}; each finer label must belong to one value "
            "(put a bin cut at every boundary between values)"
        )
    used = [int(b) for b in counts.index]  # bins with rows, in order
    empty_bins = [names[b] for b in range(len(names)) if b not in used]
    if empty_bins:
        log.warning(
            "factor %r: bin(s) %s of column %r have no rows; the head leaves them out",
            factor.name, empty_bins, column,
        )  # fmt: skip
    # The crosstab's columns are the value indices present; each bin's row has one non-zero.
    bin_value = tuple(int(counts.columns[int(np.argmax(counts.loc[b].to_numpy()))]) for b in used)
    lacking = [factor.values[v] for v in range(len(factor.values)) if v not in bin_value]
    if lacking:
        raise ValueError(
            f"factor {factor.name!r}: value(s) {lacking} have no rows with a finer label in column {column!r}"
        )
    position = {b: i for i, b in enumerate(used)}
    return tuple(names[b] for b in used), bin_value, np.array([position[int(b)] for b in row_bins], np.int64)


def _column_bins(spec: dict[str, Any], factor: Factor, raw: pd.Series) -> tuple[list[str], np.ndarray]:
    """``(bin names, bin of each row)`` of a column: cut at ``bins``, or its distinct values in natural order."""
    if spec.get("bins") is not None:
        cuts = [float(b) for b in spec["bins"]]
        numbers = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(numbers))
        if len(bad):
            shown = [f"line {i + 2} ({raw.iloc[i]!r})" for i in bad[:8]]
            raise ValueError(
                f"factor {factor.name!r}: column {spec['column']!r} must hold numbers to cut into bins; not: {shown}"
            )
        row_bins = np.searchsorted(cuts, numbers, side="right")  # cut c starts a bin: [c, next)
        names = [f"<{_num(cuts[0])}"]
        names += [f"{_num(a)}-{_num(b)}" for a, b in itertools.pairwise(cuts)]
        names.append(f">={_num(cuts[-1])}")
    else:
        text = raw.astype(str).str.strip()
        empty = np.flatnonzero((text == "").to_numpy())
        if len(empty):
            raise ValueError(
                f"factor {factor.name!r}: column {spec['column']!r} is empty on line(s) {[int(i) + 2 for i in empty[:8]]}"
            )
        names = _natural_sorted(text.unique().tolist())
        row_bins = text.map({n: i for i, n in enumerate(names)}).to_numpy(dtype=np.int64)
    return names, row_bins


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _natural_sorted(items: list[str]) -> list[str]:
    numbers = pd.to_numeric(pd.Series(items), errors="coerce")
    if numbers.notna().all():
        return [items[i] for i in np.argsort(numbers.to_numpy(), kind="stable")]
    return sorted(items)

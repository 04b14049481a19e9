"""The data every model of one refit shares: rows, labels, folds and hashes, checked to agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from search.oof_collect import DataFacts
from search.oof_select import RefitModel

__all__ = ["data_facts"]


def data_facts(models: Sequence[RefitModel]) -> DataFacts:
    """Rows, labels and folds of the data the models are fit on (which must be the same for all).

    Raises:
        ValueError: The models use different data or fold settings (searched ``k``, say): their
            artifacts could not be ensembled.
    """
    from trainables.data import folds_for, folds_hash, load_dataset

    specs = {_fold_spec(m.config) for m in models}
    if len(specs) != 1:
        raise ValueError(
            "the chosen models use different data or folds (data, k, folds_seed, group_pattern, group_column): "
            f"{sorted(specs, key=str)}; refit them separately (oof.top_k, or a search with those keys fixed)"
        )
    data, k, seed, pattern, column = specs.pop()
    ds = load_dataset(data)
    folds = folds_for(ds, k=k, seed=seed, group_pattern=pattern, group_column=column)
    test_paths = None if ds.test is None else [str(p) for p in ds.test["image_path"]]
    return DataFacts(
        classes=[str(c) for c in ds.classes],
        targets=folds["target"].to_numpy(dtype=np.int64),
        folds=folds["fold"].to_numpy(dtype=np.int64),
        folds_hash=str(folds.attrs.get("hash") or folds_hash(folds)),
        data_hash=str(ds.fingerprint),
        test_image_paths=test_paths,
    )


def _fold_spec(config: dict[str, Any]) -> tuple[Any, ...]:
    return (
        config.get("data"),
        int(config.get("k", 5)),
        int(config.get("folds_seed", 0)),
        config.get("group_pattern"),
        config.get("group_column"),
    )

"""Folds: duplicates found and kept together, groups respected, reproducible, cached with a hash."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables.data import (
    Dataset,
    base_groups,
    find_duplicates,
    fold_indices,
    folds_for,
    folds_hash,
    load_dataset,
    make_folds,
    synthetic_meta,
)


def _rows(ds: Dataset, paths: list[str]) -> list[int]:
    index = {p: i for i, p in enumerate(ds.train["image_path"])}
    return sorted(index[p] for p in paths)


def test_detector_finds_every_planted_set_and_nothing_else(synthetic: Dataset) -> None:
    planted = [_rows(synthetic, m) for m in synthetic_meta(synthetic.root)["duplicates"]]
    found = find_duplicates(synthetic)
    assert sorted(planted) == found, "each planted set found whole, and no distinct drawings merged"


def test_no_planted_set_straddles_a_fold(synthetic: Dataset) -> None:
    folds = folds_for(synthetic, k=5, seed=0)
    assert len(folds) == len(synthetic.train) and folds["row"].tolist() == list(range(len(folds)))
    assert list(folds.columns[:4]) == ["image_path", "target", "group", "fold"]
    assert folds["image_path"].tolist() == synthetic.train["image_path"].tolist()
    assert set(folds["fold"]) == set(range(5))
    for members in synthetic_meta(synthetic.root)["duplicates"]:
        rows = folds.set_index("image_path").loc[members]
        assert rows["fold"].nunique() == 1 and rows["group"].nunique() == 1, members
        assert rows["duplicate"].sum() == len(members) - 1
        assert set(rows.loc[rows["duplicate"], "duplicate_of"]) == {rows.index[~rows["duplicate"]][0]}
    # Stratified: every class in every validation fold, in near-equal shares.
    per_fold = pd.crosstab(folds["target"], folds["fold"])
    assert per_fold.min().min() >= 4 and per_fold.max().max() <= 9


def test_same_seed_same_folds_and_the_cache_keeps_the_hash(synthetic: Dataset) -> None:
    first = folds_for(synthetic, k=5, seed=0)
    again = folds_for(synthetic, k=5, seed=0)  # read back from the CSV
    fresh = make_folds(synthetic, k=5, seed=0)  # recomputed from scratch
    assert first.attrs["hash"] == again.attrs["hash"] == fresh.attrs["hash"] == folds_hash(fresh)
    assert (first["fold"].to_numpy() == fresh["fold"].to_numpy()).all()
    path = Path(again.attrs["path"])
    assert path.is_file() and path.with_suffix(".json").is_file() and path.parent.name == "folds"
    assert pd.read_csv(path).columns[:4].tolist() == ["image_path", "target", "group", "fold"]
    other = folds_for(synthetic, k=5, seed=1)
    assert other.attrs["hash"] != first.attrs["hash"] and other.attrs["path"] != first.attrs["path"]


def test_drop_duplicates_and_fold_indices(synthetic: Dataset) -> None:
    full = folds_for(synthetic, k=5, seed=0)
    dropped = folds_for(synthetic, k=5, seed=0, drop_duplicates=True)
    n_copies = int(full["duplicate"].sum())
    assert n_copies >= 12 and len(dropped) == len(full) - n_copies and not dropped["duplicate"].any()
    assert (full.set_index("row").loc[dropped["row"], "fold"].to_numpy() == dropped["fold"].to_numpy()).all()
    train, val = fold_indices(full, 2)
    assert len(train) + len(val) == len(full) and not set(train) & set(val)
    lean, _ = fold_indices(full, 2, drop_duplicates=True)
    assert len(lean) == len(train) - int(full.loc[train, "duplicate"].sum())
    train_d, val_d = fold_indices(dropped, 2)  # rows still index ds.train
    assert set(train_d) <= set(train) and set(val_d) <= set(val)
    assert fold_indices(full, -1)[0].tolist() == list(range(len(full)))


def test_group_column_and_pattern(competition: Path) -> None:
    ds = load_dataset(competition)
    assert base_groups(ds).tolist() == ds.train["image_path"].tolist()  # alone by default
    assert base_groups(ds, r"^(?P<group>[a-z]+)_\d$").tolist()[:5] == ["apple"] * 4 + ["bus"]
    assert base_groups(ds, r"_(\d)$").tolist()[:3] == ["0", "1", "2"]  # first group when unnamed
    with pytest.raises(ValueError, match="not a valid regular expression"):
        base_groups(ds, "(")
    df = pd.read_csv(competition / "train.csv")
    df["group"] = [f"g{i % 2}" for i in range(len(df))]
    df.to_csv(competition / "train.csv", index=False)
    grouped = load_dataset(competition)
    assert base_groups(grouped, r"ignored(.)").tolist() == grouped.train["group"].tolist()


def test_small_classes_warn_and_too_few_groups_fail(competition: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = load_dataset(competition)  # 3 classes x 4 images
    with caplog.at_level(logging.WARNING, logger="trainables.data._folds"):
        folds = make_folds(ds, k=5, seed=0, dedup=False)
    assert "3 of 3 classes have fewer than k=5 groups" in caplog.text
    assert folds["fold"].between(0, 4).all()
    with pytest.raises(ValueError, match="only 3 group"):
        make_folds(ds, k=4, seed=0, group_pattern=r"^([a-z]+)_", dedup=False)
    with pytest.raises(ValueError, match="at least 2 folds"):
        make_folds(ds, k=1)


def test_duplicates_merge_groups_across_a_pattern(tmp_path: Path, write_png) -> None:
    """A flipped copy filed under another photo's name joins that photo's group."""
    from PIL import Image

    root = tmp_path / "d"
    rows = []
    for k in range(12):
        rel = f"a/p{k}-1.png"
        write_png(root / "train" / rel, seed=k, h=120, w=100)
        rows.append(("a", rel, 0))
    src = root / "train" / "a" / "p0-1.png"
    Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((80, 96)).save(
        root / "train" / "a" / "p7-2.png"
    )
    rows.append(("a", "a/p7-2.png", 0))
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(root / "train.csv", index=False)
    ds = load_dataset(root)
    folds = make_folds(ds, k=3, seed=0, group_pattern=r"^(.+)-\d+$")
    g = folds.set_index("image_path")["group"]
    assert g["a/p0-1.png"] == g["a/p7-1.png"] == g["a/p7-2.png"] == "p0"
    assert (
        folds.set_index("image_path").loc[["a/p0-1.png", "a/p7-1.png", "a/p7-2.png"], "fold"].nunique() == 1
    )
    assert np.sum(folds["duplicate"]) == 1

"""The real data: sketchy125 (skipped with a reason where ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainables.data import (
    SKETCHY_GROUP_PATTERN,
    Dataset,
    decoded_images,
    find_duplicates,
    fold_indices,
    folds_for,
    load_dataset,
)


@pytest.fixture
def sketchy(sketchy125: Path) -> Dataset:
    return load_dataset(sketchy125)


def test_every_row_loads(sketchy: Dataset) -> None:
    assert sketchy.num_classes == 125 and len(sketchy.train) == 1735
    assert sketchy.test is not None and len(sketchy.test) == 1390
    assert sketchy.classes[0] == "airplane"
    for split, rows in (("train", sketchy.train), ("test", sketchy.test)):
        imgs = decoded_images(sketchy, split, 128)
        assert imgs.shape == (len(rows), 128, 128, 3)
        ink = (np.asarray(imgs).min(axis=3) < 128).mean(axis=(1, 2))
        assert (ink > 0.001).all(), f"every {split} sketch decodes to visible strokes"


@pytest.mark.parametrize("pattern", ["default", SKETCHY_GROUP_PATTERN])
def test_no_photo_group_straddles_a_fold(sketchy: Dataset, pattern: str) -> None:
    """With no option at all (group_pattern=auto) the photo groups are found and kept whole."""
    folds = folds_for(sketchy, k=5, seed=0) if pattern == "default" else folds_for(sketchy, 5, 0, pattern)
    photo = folds["image_path"].str.extract(r"([^/]+)-\d+\.png$")[0]
    assert photo.notna().all()
    assert (folds.groupby(photo)["fold"].nunique() == 1).all()
    train, val = fold_indices(folds, 0)
    assert not set(photo[val]) & set(photo[train]), "no validation sketch has its photo in training"
    assert folds["group"].nunique() == photo.nunique() == 333
    sizes = folds["fold"].value_counts()
    assert sizes.min() > 0.7 * sizes.max(), f"folds should be of similar size: {sizes.to_dict()}"


def test_auto_finds_the_photo_groups_and_none_splits_them(sketchy: Dataset) -> None:
    auto = folds_for(sketchy, k=5, seed=0)
    assert auto.attrs["hash"] == folds_for(sketchy, 5, 0, "sketchy").attrs["hash"]  # the same folds
    grouping = auto.attrs["grouping"]
    assert grouping["rule"] == "families" and grouping["groups"] == 333
    assert grouping["sizes"] == {"min": 1, "median": 5.0, "max": 13}
    leaky = folds_for(sketchy, k=5, seed=0, group_pattern="none")
    photo = leaky["image_path"].str.extract(r"([^/]+)-\d+\.png$")[0]
    assert (leaky.groupby(photo)["fold"].nunique() > 1).sum() > 300  # what "none" costs


def test_redrawings_are_not_taken_for_copies(sketchy: Dataset) -> None:
    """Sketches of one photo by different people look alike but are not flipped/resized copies."""
    assert find_duplicates(sketchy) == []

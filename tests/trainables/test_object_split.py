"""``aug.object_split``: objects of multi-object training sketches train as extra rows, validation never split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.trainables.conftest import tiny_config
from trainables import create_trainable
from trainables.config import resolve_config
from trainables.data import generate_synthetic, load_dataset, object_crops, synthetic_meta
from trainables.session import InlineSession
from trainables.trialkit import load_trial_data

K = 4


@pytest.fixture(scope="module")
def multi_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small drawn set where a quarter of the training sketches hold two objects."""
    root = tmp_path_factory.mktemp("multi") / "multi4"
    return generate_synthetic(
        root, classes=["cup", "fish", "key", "star"], n_train=8, n_test=2, n_duplicate_sets=0, n_multi=8
    )


def _config(data: Path, **overrides: Any) -> dict[str, Any]:
    return resolve_config(create_trainable("timm").default_config(), tiny_config(data, k=K, **overrides))


@pytest.mark.parametrize("fold", range(K))
def test_crops_of_training_rows_are_added_and_validation_rows_are_never_split(
    multi_data: Path, fold: int
) -> None:
    plain = load_trial_data(_config(multi_data, fold=fold))
    data = load_trial_data(_config(multi_data, fold=fold, aug={"object_split": True}))
    crops, sources = object_crops(load_dataset(str(multi_data)), 32)
    paths = list(plain.ds.train["image_path"])
    planted = [paths.index(p) for p in synthetic_meta(multi_data)["multi_object"]["train"]]
    train_side, val_side = set(plain.rows.train_rows.tolist()), set(plain.rows.val_rows.tolist())

    assert np.array_equal(data.rows.val_rows, plain.rows.val_rows)
    assert np.array_equal(data.rows.val_labels, plain.rows.val_labels)
    n_plain = len(plain.rows.train_rows)
    assert np.array_equal(data.rows.train_rows[:n_plain], plain.rows.train_rows)
    added = data.rows.train_rows[n_plain:] - len(plain.images)
    assert added.min(initial=0) >= 0 and added.max(initial=0) < len(crops)
    assert not set(sources[added].tolist()) & val_side, "a validation sketch was split"
    # every planted two-object sketch on the training side gives its two objects, labelled as it is
    expected = [i for i in planted if i in train_side]
    assert sorted(sources[added].tolist()) == sorted(expected * 2)
    assert np.array_equal(
        data.rows.train_labels[n_plain:], plain.ds.train["target"].to_numpy()[sources[added]]
    )
    assert (data.rows.train_kinds[n_plain:] == 0).all() and data.n_train == plain.n_train + len(added)
    for position, crop in zip(data.rows.train_rows[n_plain:], added, strict=True):
        assert np.array_equal(data.images[int(position)], crops[crop])


def test_some_planted_sketches_fall_on_the_validation_side(multi_data: Path) -> None:
    """Guards the test above: without planted sketches in validation it would prove nothing."""
    folds = [load_trial_data(_config(multi_data, fold=f)).rows.val_rows for f in range(K)]
    paths = list(load_dataset(str(multi_data)).train["image_path"])
    planted = {paths.index(p) for p in synthetic_meta(multi_data)["multi_object"]["train"]}
    assert sum(len(planted & set(v.tolist())) for v in folds) == len(planted)
    assert all(planted & set(v.tolist()) for v in folds)


def test_crops_come_after_pseudo_labelled_test_rows(multi_data: Path, tmp_path: Path) -> None:
    test = pd.read_csv(multi_data / "test.csv")
    pd.DataFrame({"image_path": test["image_path"], "target": 0}).to_csv(tmp_path / "pl.csv", index=False)
    both = load_trial_data(
        _config(multi_data, pseudo_labels=str(tmp_path / "pl.csv"), aug={"object_split": True})
    )
    n_train, n_test = len(both.ds.train), len(test)
    rows = both.rows.train_rows
    pseudo = rows[(rows >= n_train) & (rows < n_train + n_test)]
    crops = rows[rows >= n_train + n_test]
    assert len(pseudo) == n_test and len(crops) > 0
    assert len(both.images) == n_train + n_test + len(object_crops(both.ds, 32)[0])


@pytest.mark.slow
def test_a_trial_trains_on_the_crops(multi_data: Path, tmp_path: Path) -> None:
    config = tiny_config(multi_data, epochs=1, k=K)
    plain = create_trainable("timm").fit(config, InlineSession(tmp_path / "plain", verbose=False))
    split = create_trainable("timm").fit(
        {**config, "aug": {"object_split": True}}, InlineSession(tmp_path / "split", verbose=False)
    )
    assert split["n_train"] > plain["n_train"]

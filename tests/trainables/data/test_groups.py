"""Person-like groups: every photo of one person lands in one fold, whatever the column is called."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables.data import (
    DataFormatError,
    Dataset,
    base_groups,
    folds_for,
    generate_synthetic_factors,
    load_dataset,
    make_folds,
    synthetic_factors_meta,
)


@pytest.fixture
def faces() -> Dataset:
    """The built-in factorised face set (generated once per session under the shared RUNS_DIR)."""
    return load_dataset("synthetic-factors")


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small face set whose person column is named ``person`` rather than ``group``."""
    return generate_synthetic_factors(
        tmp_path_factory.mktemp("people") / "people", persons_per_cell=2, test_persons_per_cell=0,
        group_column="person", size=48,
    )  # fmt: skip


def test_the_face_set_has_seven_photos_per_person_and_its_labels(faces: Dataset) -> None:
    train = faces.train
    assert faces.name == "synthetic-factors-v1" and len(faces.classes) == 18 and len(train) == 54 * 7
    assert list(train.columns) == ["image_path", "class_name", "target", "group", "path", "age", "gender"]
    photos = train.groupby("group")["image_path"].count()
    assert len(photos) == 54 and (photos == 7).all()
    # a person is one gender and one age: the class's gender and age group agree with the columns
    per_person = train.groupby("group")[["age", "gender"]].nunique()
    assert (per_person == 1).all().all()
    parts = train["class_name"].str.split("_", expand=True)
    assert (parts[1] == train["gender"]).all()
    ages = train["age"].astype(int)
    group_of_age = np.select([ages < 30, ages < 60], ["young", "middle"], "old")
    assert (parts[2] == group_of_age).all()
    # five masked photos, one worn wrong, one without, for everyone
    counts = parts.groupby(train["group"])[0].value_counts().unstack()[["wear", "incorrect", "nomask"]]
    assert counts.eq([5, 1, 1]).all().all()
    assert faces.test is not None and len(faces.test) == 12 * 7
    test_labels = pd.read_csv(faces.root / "test_labels.csv")
    assert test_labels["image_path"].tolist() == faces.test["image_path"].tolist()
    assert synthetic_factors_meta(faces.root)["fine_age_cuts"][2] == 30


def test_no_person_spans_two_folds(faces: Dataset) -> None:
    folds = folds_for(faces, k=5, seed=0)
    assert folds.groupby(faces.train["group"])["fold"].nunique().max() == 1
    assert folds["fold"].nunique() == 5
    # stratified too: the 5:1:1 mask classes and the persons' classes spread over the folds
    assert pd.crosstab(folds["target"], folds["fold"]).min().min() >= 1


def test_group_column_names_the_person_column(people: Path) -> None:
    ds = load_dataset(people)
    assert "person" in ds.train.columns and "group" not in ds.train.columns
    person = ds.train["person"]
    leaky = make_folds(ds, k=2, seed=0, dedup=False)  # without it every photo is its own group
    assert leaky.groupby(person)["fold"].nunique().max() > 1, "photos of one person split across folds"
    folds = make_folds(ds, k=2, seed=0, dedup=False, group_column="person")
    assert folds.groupby(person)["fold"].nunique().max() == 1
    assert folds["group"].tolist() == person.tolist()
    assert (base_groups(ds, group_column="person") == person).all()
    # the cached folds are keyed by the option: both kinds live side by side
    cached = folds_for(ds, k=2, seed=0, group_column="person")
    assert cached.attrs["hash"] != folds_for(ds, k=2, seed=0).attrs["hash"]
    assert cached.groupby(person)["fold"].nunique().max() == 1
    assert folds_for(ds, k=2, seed=0, group_column="person").attrs["hash"] == cached.attrs["hash"]


def test_group_column_wins_over_a_group_pattern(people: Path) -> None:
    ds = load_dataset(people)
    by_folder = base_groups(ds, group_pattern=r"^(\d{6})_")  # the person folder in the path
    assert by_folder.nunique() == ds.train["person"].nunique()
    assert (base_groups(ds, group_pattern=r"^(nomatch)", group_column="person") == ds.train["person"]).all()


def test_a_bad_group_column_says_what_exists(people: Path, tmp_path: Path) -> None:
    ds = load_dataset(people)
    with pytest.raises(
        DataFormatError, match=r"group_column='id' is not a column.*\['person', 'age', 'gender'\]"
    ):
        base_groups(ds, group_column="id")
    copy = tmp_path / "copy"
    shutil.copytree(people, copy)
    train = pd.read_csv(copy / "train.csv", dtype=str)
    train.loc[[3, 9], "person"] = ""
    train.to_csv(copy / "train.csv", index=False)
    with pytest.raises(DataFormatError, match=r"group_column 'person' is empty on train.csv line\(s\) 5, 11"):
        base_groups(load_dataset(copy), group_column="person")


def test_extra_columns_are_carried_and_count_in_the_fingerprint(people: Path, tmp_path: Path) -> None:
    ds = load_dataset(people)
    assert ds.train["age"].iloc[0] == pd.read_csv(people / "train.csv", dtype=str)["age"].iloc[0]
    copy = tmp_path / "copy"
    shutil.copytree(people, copy)
    train = pd.read_csv(copy / "train.csv", dtype=str)
    train.loc[0, "age"] = "99"  # same images and classes, another label: another dataset
    train.to_csv(copy / "train.csv", index=False)
    assert load_dataset(copy).fingerprint != ds.fingerprint
    train.drop(columns=["age", "gender", "person"]).to_csv(copy / "train.csv", index=False)
    plain = load_dataset(copy)
    assert list(plain.train.columns) == ["image_path", "class_name", "target", "path"]

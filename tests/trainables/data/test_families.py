"""group_pattern="auto": file-name families found without being told, naming schemes left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.trainables.data.conftest import ImageWriter
from trainables.data import base_groups, folds_for, load_dataset, make_folds, resolve_groups
from trainables.data._dedup import duplicate_sets

CLASSES = ["apple", "bus", "cat"]


def _write_set(root: Path, names: dict[str, list[str]], write_png: ImageWriter) -> Path:
    """A competition-layout set with real image files: ``names[class]`` are the file names."""
    rows = []
    for target, cls in enumerate(CLASSES):
        for i, name in enumerate(names[cls]):
            path = root / "train" / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(path.with_suffix(".png"), seed=100 * target + i)
            if path.suffix.lower() != ".png":  # a real file of the named type
                from PIL import Image

                Image.open(path.with_suffix(".png")).convert("RGB").save(path, format="JPEG")
                path.with_suffix(".png").unlink()
            rows.append((cls, f"{cls}/{name}", target))
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture
def families(tmp_path: Path, write_png: ImageWriter) -> Path:
    """Per class: three families in three counter styles, and one file of its own."""
    names = {
        c: [f"{c}A-1.png", f"{c}A-2.png", f"{c}A-3.png"]
        + [f"{c}B_01.png", f"{c}B_02.png", f"{c}B_03.png"]
        + [f"{c}C.png", f"{c}C (2).png", f"{c}C (3).png"]
        + [f"{c}_lone.png"]
        for c in CLASSES
    }
    return _write_set(tmp_path / "fam", names, write_png)


def test_counter_styles_make_families(families: Path) -> None:
    ds = load_dataset(families)
    grouping = resolve_groups(ds)  # auto is the default
    assert grouping.rule == "families"
    keys = dict(zip(ds.train["image_path"], grouping.keys, strict=True))
    assert keys["apple/appleA-1.png"] == keys["apple/appleA-3.png"] == "appleA"  # -3
    assert keys["apple/appleB_01.png"] == keys["apple/appleB_03.png"] == "appleB"  # _03
    # " (2)": the copies, and the plain name they copy
    assert (
        keys["apple/appleC.png"] == keys["apple/appleC (2).png"] == keys["apple/appleC (3).png"] == "appleC"
    )
    assert keys["apple/apple_lone.png"] == "apple/apple_lone.png"  # no counter: alone
    summary = grouping.summary()
    assert summary["groups"] == 12 and summary["sizes"] == {"min": 1, "median": 3.0, "max": 3}
    assert summary["example"].startswith("apple")


def test_auto_folds_keep_families_whole_and_record_the_rule(families: Path) -> None:
    ds = load_dataset(families)
    folds = folds_for(ds, k=3, seed=0)
    family = folds["image_path"].str.extract(r"/(\w+?[ABC])[-_ .]?")[0].fillna(folds["image_path"])
    assert (folds.groupby(family)["fold"].nunique() == 1).all()
    meta = json.loads(Path(folds.attrs["path"]).with_suffix(".json").read_text())
    assert meta["grouping"]["rule"] == "families" and meta["grouping"]["groups"] == 12
    assert meta["group_pattern"] == "auto" and meta["auto_groups"] >= 1
    # "none" is another cache entry (never the auto one), and keeps every row alone.
    alone = folds_for(ds, k=3, seed=0, group_pattern="none")
    assert alone.attrs["path"] != folds.attrs["path"]
    assert alone["group"].tolist() == ds.train["image_path"].tolist()
    assert alone.attrs["grouping"]["rule"] == "rows"
    # None (the old default, which meant the same) reads the same entry
    assert folds_for(ds, k=3, seed=0, group_pattern=None).attrs["path"] == alone.attrs["path"]


@pytest.mark.parametrize("off", ["none", None, "", "NONE"])
def test_none_keeps_rows_alone(families: Path, off: str | None) -> None:
    ds = load_dataset(families)
    assert base_groups(ds, off).tolist() == ds.train["image_path"].tolist()
    folds = make_folds(ds, k=3, seed=0, group_pattern=off, dedup=False)
    assert folds["group"].nunique() == len(ds.train)


def test_a_naming_scheme_across_classes_is_not_a_group(tmp_path: Path, write_png: ImageWriter) -> None:
    """sketch_0.JPEG, sketch_1.JPEG ... in every class folder: "sketch" is no group."""
    ds = load_dataset(
        _write_set(tmp_path / "s", {c: [f"sketch_{i}.JPEG" for i in range(5)] for c in CLASSES}, write_png)
    )
    grouping = resolve_groups(ds)
    assert grouping.rule == "rows" and "span classes" in grouping.reason
    assert grouping.keys.tolist() == ds.train["image_path"].tolist()
    assert make_folds(ds, k=3, seed=0, dedup=False)["group"].nunique() == 15


def test_a_class_numbering_is_not_a_group(tmp_path: Path, write_png: ImageWriter) -> None:
    """ImageNet-like n0001_17.JPEG: one family per class holding all of it is the class's numbering."""
    names = {c: [f"n000{t}_{i * 7}.JPEG" for i in range(5)] for t, c in enumerate(CLASSES)}
    ds = load_dataset(_write_set(tmp_path / "n", names, write_png))
    grouping = resolve_groups(ds)
    assert grouping.rule == "rows" and "holds most of the class" in grouping.reason
    # and files named after their class (cat/cat_001.png) are the classes' numbering too
    named = {c: [f"{c}_{i:03d}.png" for i in range(4)] for c in CLASSES}
    assert resolve_groups(load_dataset(_write_set(tmp_path / "c", named, write_png))).rule == "rows"


def test_a_column_or_a_pattern_still_wins(families: Path) -> None:
    ds = load_dataset(families)
    by_class = base_groups(ds, r"^([a-z]+)")
    assert by_class.nunique() == 3
    ds.train["group"] = ds.train["target"].astype(str)
    assert resolve_groups(ds).rule == "column:group"


def test_duplicate_sets_are_connected_components() -> None:
    pairs = pd.DataFrame([(5, 9), (1, 2), (9, 7), (3, 4), (2, 4)]).to_numpy()
    assert duplicate_sets(pairs, 10) == [[1, 2, 3, 4], [5, 7, 9]]
    assert duplicate_sets(pairs[:0], 3) == []

"""Loading: the layouts, every image mode, and one clear error for every kind of bad input."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainables.data import BadDataError, DataFormatError, decoded_images, load_dataset, read_rgb


def test_competition_layout(competition: Path) -> None:
    ds = load_dataset(competition)
    assert ds.layout == "competition" and ds.name == "comp"
    assert ds.classes == ["apple", "bus", "cat"] and ds.num_classes == 3
    assert list(ds.train.columns) == ["image_path", "class_name", "target", "path"]
    assert ds.train["image_path"].iloc[0] == "apple/apple_0.png"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in ds.train["path"])
    assert [ds.classes[t] for t in ds.train["target"]] == ds.train["class_name"].tolist()
    assert ds.test is not None and list(ds.test.columns) == ["image_path", "path"]
    assert ds.test["image_path"].tolist() == ["0.png", "1.png", "2.png"]
    assert ds.skipped == []


def test_paths_relative_to_root_and_group_column(competition: Path) -> None:
    """image_path may include the train/ prefix; a group column is kept."""
    df = pd.read_csv(competition / "train.csv")
    df["image_path"] = "train/" + df["image_path"]
    df["group"] = ["g0", "g0", "g1", "g2"] * 3
    df.to_csv(competition / "train.csv", index=False)
    ds = load_dataset(competition)
    assert ds.train["path"].map(os.path.isfile).all()
    assert ds.train["group"].tolist()[:4] == ["g0", "g0", "g1", "g2"]


def test_fingerprint_is_stable_and_tracks_content(competition: Path, write_png) -> None:
    first = load_dataset(competition).fingerprint
    assert load_dataset(competition).fingerprint == first
    write_png(competition / "train" / "bus" / "bus_1.png", seed=999)  # same name, new pixels
    assert load_dataset(competition).fingerprint != first


def test_a_data_set_is_announced_once_per_process(
    tmp_path: Path, write_png, caplog: pytest.LogCaptureFixture
) -> None:
    """The flow loads its data set in several places; the terminal shows "loaded" once (a compete
    run printed the same line 8 times)."""
    for name in ("owl", "cat"):
        write_png(tmp_path / "once" / "train" / name / "0.png", seed=4321)  # pixels no other test has
    caplog.set_level(logging.DEBUG, logger="trainables.data._dataset")
    for _ in range(3):
        load_dataset(tmp_path / "once")
    loaded = [r for r in caplog.records if r.getMessage().startswith("loaded Dataset(name='once'")]
    assert [r.levelno for r in loaded] == [logging.INFO, logging.DEBUG, logging.DEBUG]


def test_class_folders_with_test_folder(tmp_path: Path, write_png) -> None:
    for name in ("zebra", "ant"):
        for k in range(2):
            write_png(tmp_path / "ds" / "train" / name / f"{k}.png", seed=k)
    (tmp_path / "ds" / "train" / "ant" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "ds" / "test" / "b.png")
    write_png(tmp_path / "ds" / "test" / "sub" / "a.png")
    for spec in (tmp_path / "ds", tmp_path / "ds" / "train"):  # the root, or its train folder
        ds = load_dataset(spec)
        assert ds.layout == "folders" and ds.name == "ds"
        assert ds.classes == ["ant", "zebra"]  # sorted, as torchvision's ImageFolder
        assert ds.train["image_path"].tolist() == ["ant/0.png", "ant/1.png", "zebra/0.png", "zebra/1.png"]
        assert ds.train["target"].tolist() == [0, 0, 1, 1]
        assert ds.test is not None and ds.test["image_path"].tolist() == ["b.png", "sub/a.png"]


def test_plain_class_tree_has_no_test(tmp_path: Path, write_png) -> None:
    for name in ("b", "a"):
        write_png(tmp_path / "tree" / name / "x.png")
    write_png(tmp_path / "test" / "0.png")  # a sibling test/ counts only for a folder named train
    ds = load_dataset(tmp_path / "tree")
    assert ds.classes == ["a", "b"] and ds.test is None
    with pytest.raises(ValueError, match="no test split"):
        decoded_images(ds, "test", 32)


# -- image modes -----------------------------------------------------------------------------------


def test_every_mode_decodes_to_rgb_on_white(tmp_path: Path) -> None:
    base = np.full((30, 20), 255, np.uint8)
    base[5:25, 8:12] = 0  # a black bar on white
    files = {}
    files["L"] = Image.fromarray(base)
    files["RGB"] = Image.fromarray(np.stack([base] * 3, axis=2))
    rgba = np.zeros((30, 20, 4), np.uint8)  # transparent black background, opaque black bar
    rgba[5:25, 8:12, 3] = 255
    files["RGBA"] = Image.fromarray(rgba)
    files["P"] = Image.fromarray(np.stack([base] * 3, axis=2)).convert("P")
    p_transparent = Image.fromarray(np.where(base == 0, 1, 0).astype(np.uint8), mode="L").convert("P")
    p_transparent.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both indices black; index 0 transparent
    p_transparent.info["transparency"] = 0
    files["P-transparent"] = p_transparent
    files["I;16"] = Image.fromarray(base.astype(np.uint16) * 257)  # 0 and 65535
    for name, im in files.items():
        path = tmp_path / f"{name}.png"
        im.save(path, transparency=0) if name == "P-transparent" else im.save(path)
        with Image.open(path) as check:
            assert check.mode == name.split("-")[0], name
        rgb = read_rgb(path)
        assert rgb.shape == (30, 20, 3) and rgb.dtype == np.uint8, name
        assert (rgb[0, 0] == 255).all(), f"{name}: background should be white, got {rgb[0, 0]}"
        assert (rgb[15, 10] == 0).all(), f"{name}: stroke should be black, got {rgb[15, 10]}"


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    stored = np.full((40, 60, 3), 255, np.uint8)  # 60 wide, 40 high as stored
    stored[:10, :10] = 0  # a dark block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    rgb = read_rgb(path)
    assert rgb.shape == (60, 40, 3)  # upright: 40 wide, 60 high
    assert rgb[:10, -10:].mean() < 40  # the block is now top-right
    assert rgb[:10, :10].mean() > 215


# -- bad input -------------------------------------------------------------------------------------


def _break_files(root: Path) -> dict[str, str]:
    """Corrupt three files and remove one; return path -> expected reason fragment."""
    png = (root / "train" / "apple" / "apple_1.png").read_bytes()
    (root / "train" / "apple" / "apple_1.png").write_bytes(png[: len(png) // 2])
    (root / "train" / "bus" / "bus_2.png").write_text("this is not an image\n")
    (root / "train" / "cat" / "cat_0.png").unlink()
    (root / "test" / "1.png").write_bytes(b"")
    return {
        str(root / "train" / "apple" / "apple_1.png"): "truncated",
        str(root / "train" / "bus" / "bus_2.png"): "not an image",
        str(root / "train" / "cat" / "cat_0.png"): "not found",
        str(root / "test" / "1.png"): "empty",
    }


def test_bad_files_are_all_listed_in_one_error(competition: Path) -> None:
    expected = _break_files(competition)
    with pytest.raises(BadDataError) as info:
        load_dataset(competition)
    message = str(info.value)
    assert "4 image file(s)" in message and "skip_bad=True" in message
    for path, reason in expected.items():
        line = next(line for line in message.splitlines() if path in line)
        assert reason in line, line
    assert sorted(p for p, _ in info.value.problems) == sorted(expected)
    assert isinstance(info.value, ValueError)


def test_skip_bad_drops_and_records_them(competition: Path) -> None:
    expected = _break_files(competition)
    ds = load_dataset(competition, skip_bad=True)
    assert sorted(p for p, _ in ds.skipped) == sorted(expected)
    assert len(ds.train) == 12 - 3 and ds.test is not None and len(ds.test) == 2
    assert not set(ds.train["path"]) & set(expected)
    assert decoded_images(ds, "train", 32).shape == (9, 32, 32, 3)  # the rest builds a cache


def _write_csv(root: Path, text: str, name: str = "train.csv") -> None:
    (root / name).write_text(text)


@pytest.mark.parametrize(
    ("csv", "fragments"),
    [
        ("class_name,image_path\napple,apple/apple_0.png\n", ["lacks column(s) ['target']", "expected class_name,image_path,target", "found ['class_name', 'image_path']"]),
        ("class_name,image_path,target\napple,apple/apple_0.png,0\nbus,bus/bus_0.png,one\n", ["integer class indices", "line 3 ('one')"]),
        ("class_name,image_path,target\napple,apple/apple_0.png,0\nbus,bus/bus_0.png,1.5\n", ["line 3 ('1.5')"]),
        ("class_name,image_path,target\napple,apple/apple_0.png,0\nbus,bus/bus_0.png,1\ncat,cat/cat_0.png,7\n", ["targets must be 0..2", "out of range: 7", "without rows: 2"]),
        ("class_name,image_path,target\napple,apple/apple_0.png,0\napple,apple/apple_1.png,1\n", ["class_name 'apple' has several targets [0, 1]"]),
        ("class_name,image_path,target\napple,apple/apple_0.png,0\nbus,bus/bus_0.png,0\n", ["target 0 is used by several class names ['apple', 'bus']"]),
        ("class_name,image_path,target\napple,apple/apple_0.png,0\napple,apple/apple_0.png,0\n", ["image_path repeated", "apple/apple_0.png"]),
        ("class_name,image_path,target\n", ["header but no rows"]),
        ("class_name,image_path,target\n,apple/apple_0.png,0\n", ["'class_name' is empty on line(s) 2"]),
    ],
    ids=["missing-column", "text-target", "float-target", "out-of-range", "name-two-targets", "target-two-names", "repeated-path", "empty", "empty-cell"],
)  # fmt: skip
def test_bad_train_csv_gets_a_clear_error(competition: Path, csv: str, fragments: list[str]) -> None:
    _write_csv(competition, csv)
    with pytest.raises(DataFormatError) as info:
        load_dataset(competition)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_bad_test_csv_and_bad_folders(competition: Path, tmp_path: Path) -> None:
    _write_csv(competition, "path\n0.png\n", "test.csv")
    with pytest.raises(DataFormatError, match=r"lacks column 'image_path'; found \['path'\]"):
        load_dataset(competition)
    with pytest.raises(DataFormatError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(DataFormatError, match="not a dataset folder.*readme.md"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "tree" / "cls").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="without image files.*cls"):
        load_dataset(tmp_path / "tree")

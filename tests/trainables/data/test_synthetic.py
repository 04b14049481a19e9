"""The built-in sketch set: the promised properties, determinism, and every row loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from trainables.data import Dataset, decoded_images, generate_synthetic, load_dataset, synthetic_meta


def test_layout_and_properties(synthetic: Dataset) -> None:
    root = synthetic.root
    assert (
        synthetic.layout == "competition" and (root / "train.csv").is_file() and (root / "test.csv").is_file()
    )
    assert synthetic.num_classes >= 20
    counts = synthetic.train["target"].value_counts()
    assert (
        counts.min() >= 30
        and synthetic.test is not None
        and len(synthetic.test) == 10 * synthetic.num_classes
    )
    sizes, modes, formats = [], [], []
    for path in synthetic.train["path"]:
        with Image.open(path) as im:
            sizes.append(im.size)
            modes.append(im.mode)
            formats.append(im.format)
    w, h = np.array(sizes).T
    assert w.min() >= 400 and h.min() >= 400 and w.max() <= 800 and h.max() <= 800
    assert (w / h).min() >= 0.79 and (w / h).max() <= 1.21
    assert np.ptp(w) > 300, "sizes should spread over 400-800 px"
    gray = modes.count("L") / len(modes)
    assert 0.1 < gray < 0.25 and set(modes) == {"L", "RGB"}, f"about one in six grayscale, got {gray:.2f}"
    assert {"PNG", "JPEG"} <= set(formats)
    labels = pd.read_csv(root / "test_labels.csv")
    assert labels["image_path"].tolist() == synthetic.test["image_path"].tolist()


def test_planted_facts_are_recorded(synthetic: Dataset) -> None:
    meta = synthetic_meta(synthetic.root)
    paths = set(synthetic.train["image_path"])
    assert len(meta["duplicates"]) >= 10
    kinds = {kind for kinds in meta["duplicate_kinds"] for kind in kinds}
    assert {"flip", "resize", "flip+resize"} <= kinds
    for members in meta["duplicates"]:
        assert set(members) <= paths
        classes = synthetic.train.set_index("image_path").loc[members, "class_name"]
        assert classes.nunique() == 1, "planted copies stay inside their class"
    assert len(meta["multi_object"]["train"]) >= 4 and set(meta["multi_object"]["train"]) <= paths


def test_every_row_loads_with_ink(synthetic: Dataset) -> None:
    imgs = decoded_images(synthetic, "train", 128)
    assert imgs.shape == (len(synthetic.train), 128, 128, 3)
    ink = (np.asarray(imgs).min(axis=3) < 200).mean(axis=(1, 2))  # light pencil counts too
    assert (ink > 0.005).all(), "every drawing has visible strokes at 128 px"
    assert (np.asarray(imgs[:, 0, 0]) > 200).all(), "white background"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    kw = {
        "classes": ["house", "fish", "star"],
        "n_train": 4,
        "n_test": 2,
        "n_duplicate_sets": 2,
        "n_multi": 1,
    }
    a = generate_synthetic(tmp_path / "a", seed=3, **kw)
    b = generate_synthetic(tmp_path / "b", seed=3, **kw, workers=1)
    c = generate_synthetic(tmp_path / "c", seed=4, **kw)

    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    ds = load_dataset(a)
    copies = sum(len(members) - 1 for members in synthetic_meta(a)["duplicates"])
    assert ds.classes == ["fish", "house", "star"] and copies == 2 and len(ds.train) == 3 * 4 + copies
    assert load_dataset(b).fingerprint == ds.fingerprint

"""Pseudo-labelled test rows train every trainable: on the training side only, and they are learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.trainables.conftest import TINY_CLASSES, TINY_TEST_ROWS, tiny_config
from tests.trainables.test_clip import clip_config
from tests.trainables.test_dino import dino_config
from trainables import create_trainable
from trainables.config import resolve_config
from trainables.data import decoded_images, load_dataset
from trainables.session import InlineSession
from trainables.trialkit import load_trial_data

pytestmark = pytest.mark.slow

LABEL = 3  # every pseudo-labelled test row is said to be this class

CONFIGS = {
    "timm": lambda data: tiny_config(data, epochs=3),
    "clip": lambda data: clip_config(data, backbone="test-clip-rn", epochs=3, batch_size=16, lr=3e-3),
    "dino": lambda data: dino_config(data, head="linear", epochs=3, lr=1e-2),  # on cached features
}


def _fit(name: str, config: dict[str, Any], out: Path) -> tuple[dict[str, Any], str, InlineSession]:
    session = InlineSession(out, verbose=False)
    metrics = create_trainable(name).fit(config, session)
    return metrics, str(session.latest_checkpoint()), session


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pseudo_rows_join_training_and_pull_predictions_towards_their_labels(
    name: str, tiny_data: Path, tmp_path: Path
) -> None:
    test = pd.read_csv(tiny_data / "test.csv")
    # fold 0 reads its own file through {fold}; a file for another fold must not be read
    pd.DataFrame({"image_path": test["image_path"], "target": LABEL}).to_csv(
        tmp_path / "pseudo_fold0.csv", index=False
    )
    pd.DataFrame({"image_path": test["image_path"][:1], "target": 0}).to_csv(
        tmp_path / "pseudo_fold1.csv", index=False
    )
    config = CONFIGS[name](tiny_data)
    plain, plain_ckpt, plain_session = _fit(name, config, tmp_path / "plain")
    pseudo_config = {**config, "pseudo_labels": str(tmp_path / "pseudo_fold{fold}.csv")}
    pseudo, pseudo_ckpt, _ = _fit(name, pseudo_config, tmp_path / "pseudo")

    assert pseudo["n_train"] == plain["n_train"] + TINY_TEST_ROWS
    trainable = create_trainable(name)
    before = trainable.predict(None, plain_ckpt, split="test")[:, LABEL].mean()
    after = trainable.predict(None, pseudo_ckpt, split="test")[:, LABEL].mean()
    assert after > before + 0.02, f"{name}: P(class {LABEL}) on the pseudo rows {before:.3f} -> {after:.3f}"


def test_pseudo_rows_extend_only_the_training_side(tiny_data: Path, tmp_path: Path) -> None:
    test = pd.read_csv(tiny_data / "test.csv")
    pd.DataFrame(
        {"image_path": test["image_path"][::-1], "target": np.arange(TINY_TEST_ROWS) % TINY_CLASSES}
    ).to_csv(tmp_path / "labels.csv", index=False)
    config = resolve_config(create_trainable("timm").default_config(), tiny_config(tiny_data))
    plain = load_trial_data(config)
    data = load_trial_data({**config, "pseudo_labels": str(tmp_path / "labels.csv")})
    n = len(plain.images)
    assert np.array_equal(data.rows.val_rows, plain.rows.val_rows)
    assert np.array_equal(data.rows.train_rows[:-TINY_TEST_ROWS], plain.rows.train_rows)
    added = data.rows.train_rows[-TINY_TEST_ROWS:]
    assert sorted(added - n) == list(range(TINY_TEST_ROWS)) and data.n_train == plain.n_train + TINY_TEST_ROWS
    # each added position reads its test image, with the label the file gave it
    test_images = decoded_images(load_dataset(str(tiny_data)), "test", size=int(config["image_size"]))
    first = int(added[0]) - n
    assert first == TINY_TEST_ROWS - 1 and data.rows.train_labels[-TINY_TEST_ROWS] == 0
    assert np.array_equal(data.images[int(added[0])], test_images[first])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_pseudo_file_naming_unknown_images_is_a_clear_error(
    name: str, tiny_data: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"image_path": ["not/in/test.png"], "target": [0]}).to_csv(path, index=False)
    config = {**CONFIGS[name](tiny_data), "pseudo_labels": str(path)}
    with pytest.raises(ValueError, match="not in test.csv"):
        _fit(name, config, tmp_path / "out")


def test_factor_heads_learn_pseudo_labels_through_their_class_values(
    session_runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pseudo row's heads train on its class's factor values; a finer-bin head cannot and says so."""
    monkeypatch.setenv("RUNS_DIR", str(session_runs_dir))
    ds = load_dataset("synthetic-factors")
    label = ds.classes.index("nomask_female_old")
    some = ds.test["image_path"]
    pd.DataFrame({"image_path": some, "target": label}).to_csv(tmp_path / "pseudo.csv", index=False)
    config = {
        "data": "synthetic-factors", "backbone": "test_resnet", "pretrained": False, "image_size": 32,
        "epochs": 3, "batch_size": 16, "lr": 1e-2, "warmup_epochs": 0, "num_workers": 0, "k": 4,
        "aug.balance": False, "targets.factors": ["mask", "gender", "age"],
    }  # fmt: skip
    plain, plain_ckpt, _ = _fit("timm", config, tmp_path / "plain")
    pseudo, pseudo_ckpt, _ = _fit(
        "timm", {**config, "pseudo_labels": str(tmp_path / "pseudo.csv")}, tmp_path / "p"
    )
    assert pseudo["n_train"] == plain["n_train"] + len(some)
    trainable, rows = create_trainable("timm"), np.arange(len(some))
    before = trainable.predict(None, plain_ckpt, split="test", rows=rows)[:, label].mean()
    after = trainable.predict(None, pseudo_ckpt, split="test", rows=rows)[:, label].mean()
    assert after > before + 0.02, f"P({ds.classes[label]}) on the pseudo rows {before:.3f} -> {after:.3f}"

    fine = {
        **config,
        "targets.factors": [
            "mask",
            "gender",
            {"name": "age", "column": "age", "bins": [20, 25, 30, 35, 40, 45, 50, 55, 60, 65]},
        ],
    }
    with pytest.raises(ValueError, match="finer-bin head"):
        _fit("timm", {**fine, "pseudo_labels": str(tmp_path / "pseudo.csv")}, tmp_path / "fine")

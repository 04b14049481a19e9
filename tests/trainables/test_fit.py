"""Training end to end on real images: it learns, predicts, resumes exactly, refits on all rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.trainables.conftest import TINY_CLASSES, TINY_TEST_ROWS, tiny_config
from trainables import create_trainable, list_trainables
from trainables.checkpoint import META_FILE, MODEL_FILE, STATE_FILE, read_meta
from trainables.session import InlineSession

pytestmark = pytest.mark.slow

METRICS = ("epoch", "val_acc", "val_f1", "val_loss", "train_loss", "lr", "img_per_s")


def test_learns_clearly_above_chance(trained: dict[str, Any]) -> None:
    history = trained["session"].history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    for row in history:
        assert set(METRICS) <= set(row)
        assert row["img_per_s"] > 0 and row["lr"] > 0
    chance = 1 / TINY_CLASSES
    assert history[-1]["val_acc"] >= 2.5 * chance, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trained["metrics"]["best_val_acc"] == max(h["val_acc"] for h in history)


def test_checkpoint_holds_what_resume_and_predict_need(trained: dict[str, Any]) -> None:
    ckpt = Path(trained["checkpoint"])
    assert ckpt.name == "checkpoint_0005"
    assert {MODEL_FILE, STATE_FILE, META_FILE} <= {p.name for p in ckpt.iterdir()}
    # InlineSession keeps only the latest checkpoint.
    assert [p.name for p in ckpt.parent.glob("checkpoint_*")] == ["checkpoint_0005"]
    meta = read_meta(ckpt)
    assert meta["epoch"] == 5 and len(meta["classes"]) == TINY_CLASSES and meta["data_fingerprint"]


@pytest.mark.parametrize("name", list_trainables())
def test_predict_gives_normalised_probabilities(name: str, trained: dict[str, Any]) -> None:
    t = create_trainable(name)
    probs = t.predict(trained["config"], trained["checkpoint"], split="test")
    assert probs.shape == (TINY_TEST_ROWS, TINY_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    rows = np.array([5, 0, 3])
    sub = t.predict(trained["config"], trained["checkpoint"], split="test", rows=rows)
    np.testing.assert_allclose(sub, probs[rows], atol=1e-6)
    tta = t.predict(None, trained["checkpoint"], split="test", rows=rows, tta_flip=True)
    assert tta.shape == sub.shape and not np.allclose(tta, sub)
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-5)


def test_predict_on_validation_rows_reproduces_val_acc(trained: dict[str, Any]) -> None:
    from trainables.data import folds_for, load_dataset

    config = trained["config"]
    ds = load_dataset(config["data"])
    folds = folds_for(ds, k=config["k"], seed=0)
    val = np.flatnonzero(folds["fold"].to_numpy() == 0)
    probs = create_trainable("timm").predict(config, trained["checkpoint"], split="train", rows=val)
    acc = float((probs.argmax(1) == folds["target"].to_numpy()[val]).mean())
    assert acc == pytest.approx(trained["metrics"]["val_acc"], abs=1e-9)


def test_predict_refuses_a_contradicting_config(trained: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="backbone"):
        create_trainable("timm").predict({**trained["config"], "backbone": "test_vit"}, trained["checkpoint"])


def test_frozen_stages_stay_as_built_and_the_checkpoint_predicts(tiny_data: Path, tmp_path: Path) -> None:
    from trainables.checkpoint import load_model_state

    t = create_trainable("timm")
    states = {}
    for epochs in (1, 2):
        session = InlineSession(tmp_path / f"e{epochs}", verbose=False)
        final = t.fit(tiny_config(tiny_data, epochs=epochs, freeze_stages=1), session)
        states[epochs] = load_model_state(session.latest_checkpoint())
    # Same seed, same initial weights: the stem and layer1 never moved, the later layers did.
    frozen = [k for k in states[1] if k.startswith(("conv1.", "bn1.", "layer1."))]
    assert frozen and all(torch.equal(states[1][k], states[2][k]) for k in frozen)
    assert not torch.equal(states[1]["layer4.0.conv1.weight"], states[2]["layer4.0.conv1.weight"])
    assert not any(k.endswith("num_batches_tracked") for k in frozen)  # frozen batch norms
    from trainables.data import folds_for, load_dataset

    config = tiny_config(tiny_data, epochs=2, freeze_stages=1)
    folds = folds_for(load_dataset(config["data"]), k=config["k"], seed=0)
    val = np.flatnonzero(folds["fold"].to_numpy() == 0)
    probs = t.predict(config, session.latest_checkpoint(), split="train", rows=val)
    acc = float((probs.argmax(1) == folds["target"].to_numpy()[val]).mean())
    assert acc == pytest.approx(final["val_acc"], abs=1e-9)  # the frozen layout loads back as trained
    assert read_meta(session.latest_checkpoint())["config"]["freeze_stages"] == 1


class _Crash(RuntimeError):
    pass


class _CrashingSession(InlineSession):
    """An inline session whose process 'dies' right after the n-th checkpoint is in place."""

    def __init__(self, out_dir: Path, crash_after: int) -> None:
        super().__init__(out_dir)
        self.crash_after = crash_after

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        if len(self.history) == self.crash_after:
            raise _Crash


def test_resume_continues_at_next_epoch_with_identical_metrics(tiny_data: Path, tmp_path: Path) -> None:
    # Dropout, cutmix/mixup and augmentation all draw random numbers: every stream must resume.
    config = tiny_config(
        tiny_data,
        epochs=3,
        drop_rate=0.2,
        schedule="plateau",
        step_size=1,
        **{"aug.cutmix": 0.5, "aug.mixup": 0.3, "aug.sketch_ab": True},
    )
    t = create_trainable("timm")
    straight = InlineSession(tmp_path / "straight", verbose=False)
    final = t.fit(config, straight)

    with pytest.raises(_Crash):
        t.fit(config, _CrashingSession(tmp_path / "crashed", crash_after=2))
    resumed = InlineSession(tmp_path / "crashed", verbose=False)
    assert resumed.latest_checkpoint().endswith("checkpoint_0002")
    final_resumed = t.fit(config, resumed)

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for key in ("val_acc", "val_f1", "val_loss", "train_loss", "lr"):
        assert final_resumed[key] == final[key], key
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]


class _LastEpochSession(InlineSession):
    validate_every_epoch = False  # as a fold fit asks (search.oof_fold.FoldSession)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_a_session_may_ask_for_the_last_epoch_only_to_be_validated(
    tiny_data: Path, tmp_path: Path, schedule: str
) -> None:
    config = tiny_config(tiny_data, epochs=3, schedule=schedule, step_size=1)
    every = InlineSession(tmp_path / "every", verbose=False)
    create_trainable("timm").fit(config, every)
    last = _LastEpochSession(tmp_path / "last", verbose=False)
    final = create_trainable("timm").fit(config, last)
    validated = ["val_acc" in h for h in last.history]
    # plateau decays on the validation loss, so it is validated every epoch whatever is asked
    assert validated == ([True] * 3 if schedule == "plateau" else [False, False, True])
    # the same model either way: validation draws no random numbers the training uses
    assert final["val_acc"] == every.history[-1]["val_acc"]
    assert final["train_loss"] == every.history[-1]["train_loss"]
    if schedule == "cosine":  # the only epoch scored is the last
        assert final["best_epoch"] == 3 and final["best_val_acc"] == final["val_acc"]


def test_refit_on_all_rows_has_no_validation(tiny_data: Path, tmp_path: Path) -> None:
    session = InlineSession(tmp_path, verbose=False)
    final = create_trainable("timm").fit(
        tiny_config(tiny_data, fold=-1, epochs=1, schedule="plateau"), session
    )
    assert np.isnan(final["val_acc"]) and final["train_loss"] > 0
    assert final["n_train"] == len(__import__("pandas").read_csv(tiny_data / "train.csv"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_fit_with_amp_channels_last_and_workers(tiny_data: Path, tmp_path: Path) -> None:
    from trainables.runtime import resolve_runtime

    config = tiny_config(tiny_data, epochs=2, num_workers=2, device="auto", amp="auto", **{"aug.cutmix": 0.5})
    runtime = resolve_runtime(config)
    assert runtime.cuda and runtime.amp_dtype is not None and runtime.pin_memory
    session = InlineSession(tmp_path, verbose=False)
    final = create_trainable("timm").fit(config, session)
    assert np.isfinite(final["train_loss"]) and final["val_acc"] > 1 / TINY_CLASSES
    probs = create_trainable("timm").predict(config, session.latest_checkpoint(), split="test", tta_flip=True)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)

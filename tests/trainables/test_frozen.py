"""Frozen-stage caches (trainables.frozen): the same network, its stages run once per image and epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.trainables.conftest import tiny_config
from trainables import create_trainable
from trainables.augment import FLIP_COPY, SampleTransform
from trainables.config import BASE_DEFAULTS, resolve_config
from trainables.features import feature_stats
from trainables.frozen import EpochFeatures, FrozenSplit, cache_refusal, config_refusal
from trainables.models import create_model
from trainables.runtime import derived_seed
from trainables.session import InlineSession
from trainables.trialkit import load_trial_data

CPU = torch.device("cpu")


def _config(data: Path, **overrides: Any) -> dict[str, Any]:
    """A tiny EfficientNet (the family the cache splits) with its stem and first stage frozen.

    Its frozen stages are randomly initialised from the seed, and a cache is keyed by their
    weights: each test takes a seed of its own, so no other test has built its caches.
    """
    return {**tiny_config(data, backbone="test_efficientnet", freeze_stages=1, epochs=3), **overrides}


def test_the_rest_of_the_network_on_the_frozen_stages_output_is_the_network() -> None:
    model = create_model("test_efficientnet", 5, freeze_stages=2).train()
    split = FrozenSplit(model, 2)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(split.rest(split.prefix(x)), model(x))  # frozen batch norm: train mode alike


def test_a_second_fold_reads_every_epoch_the_first_built(tiny_data: Path, tmp_path: Path) -> None:
    """Fold 0 builds each epoch's cache over the whole split; fold 1 computes no frozen output."""
    t = create_trainable("timm")
    before = feature_stats()
    first = t.fit(_config(tiny_data, fold=0, seed=11), InlineSession(tmp_path / "f0", verbose=False))
    built = feature_stats()
    assert built["builds"] - before["builds"] == 3  # one per epoch
    second = t.fit(_config(tiny_data, fold=1, seed=11), InlineSession(tmp_path / "f1", verbose=False))
    after = feature_stats()
    assert after["builds"] == built["builds"] and after["computed"] == built["computed"]
    assert after["hits"] > built["hits"]
    assert np.isfinite(first["train_loss"]) and np.isfinite(second["train_loss"])
    # frozen_cache=false trains on images: nothing is built or read
    t.fit(_config(tiny_data, fold=2, seed=11, frozen_cache=False), InlineSession(tmp_path / "f2", verbose=False))
    assert feature_stats() == after


def test_an_epoch_batch_is_its_cached_rows_and_fill_copies_are_drawn_as_the_loader_draws_them(
    tiny_data: Path,
) -> None:
    cfg = resolve_config(BASE_DEFAULTS, _config(tiny_data, batch_size=8, seed=12))
    data = load_trial_data(cfg)
    model = create_model("test_efficientnet", len(data.classes), freeze_stages=1)
    split = FrozenSplit(model, 1)
    features = EpochFeatures(data, cfg, split, (0.5,) * 3, (0.5,) * 3)
    rows, kinds = data.rows.train_rows, data.rows.train_kinds
    copy = kinds == FLIP_COPY
    assert copy.any()  # the tiny set's classes are uneven: balancing adds copies
    order = list(range(2 * len(rows), 3 * len(rows)))  # epoch 2's keys, in place order
    batches = list(features.batches(order, data.rows.train_labels, 8, False, epoch=2))
    x = torch.cat([b[0] for b in batches]).numpy()
    labels = torch.cat([b[1] for b in batches]).numpy()
    np.testing.assert_array_equal(x[~copy], features.epoch(2)[rows[~copy], 0].astype(np.float32))
    np.testing.assert_array_equal(labels, data.rows.train_labels)
    # a fill copy: the loader's draw (flipped, then augmented with its place's seed), through the stages
    first = int(np.flatnonzero(copy)[0])
    image = SampleTransform(cfg["aug"], 32, train=True)(data.images[rows[first]], FLIP_COPY, derived_seed(12, 2, first))
    expected = split.extractor((0.5,) * 3, (0.5,) * 3)(image[None])[0]
    np.testing.assert_allclose(x[first], expected, rtol=1e-5, atol=1e-5)
    # the cache holds the frozen stages' output of each row of the split, augmented
    assert features.epoch(2).shape[0] == len(data.ds.train)
    assert not np.array_equal(features.epoch(2)[rows[0], 0], features.epoch(1)[rows[0], 0])


def test_test_predictions_from_the_cache_match_the_network_on_the_images(tiny_data: Path, tmp_path: Path) -> None:
    t = create_trainable("timm")
    config = _config(tiny_data, epochs=1, seed=13)
    session = InlineSession(tmp_path, verbose=False)
    t.fit(config, session)
    checkpoint = session.latest_checkpoint()
    before = feature_stats()
    cached = t.predict(None, checkpoint, split="test", tta_flip=True)
    assert feature_stats()["builds"] == before["builds"] + 1  # the test split's cache
    images = t.predict({"frozen_cache": False}, checkpoint, split="test", tta_flip=True)
    np.testing.assert_allclose(cached, images, atol=2e-3)  # float16 storage
    assert (cached.argmax(1) == images.argmax(1)).mean() >= 0.9
    rows = np.array([3, 0, 7])
    again = t.predict(None, checkpoint, split="test", rows=rows, tta_flip=True)
    np.testing.assert_allclose(again, cached[rows], atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"frozen_cache": False}, "frozen_cache=false"),
        ({"freeze_stages": 0}, "nothing is frozen"),
        ({"aug.object_split": True}, "object_split"),
        ({"drop_path_rate": 0.1}, "stochastic depth"),
    ],
)
def test_a_trial_the_cache_would_change_trains_on_images(
    tiny_data: Path, overrides: dict[str, Any], reason: str
) -> None:
    cfg = resolve_config(BASE_DEFAULTS, _config(tiny_data, **overrides))
    assert reason in str(config_refusal(cfg))


def test_only_known_families_on_a_cpu_are_split(tiny_data: Path) -> None:
    cfg = resolve_config(BASE_DEFAULTS, _config(tiny_data))
    assert cache_refusal(cfg, create_model("test_efficientnet", 5, freeze_stages=1), CPU) is None
    assert "not split" in str(cache_refusal(cfg, create_model("test_resnet", 5, freeze_stages=1), CPU))
    model = create_model("test_efficientnet", 5, freeze_stages=1)
    assert "GPU" in str(cache_refusal(cfg, model, torch.device("cuda")))


def test_a_finished_flow_removes_the_frozen_stage_caches_and_keeps_the_others(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainables.features import cached_features, feature_cache_dir
    from trainables.frozen import prune_frozen_caches

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))  # this test's own caches only
    cfg = resolve_config(BASE_DEFAULTS, _config(tiny_data, seed=14))
    data = load_trial_data(cfg)
    model = create_model("test_efficientnet", len(data.classes), freeze_stages=1)
    features = EpochFeatures(data, cfg, FrozenSplit(model, 1), (0.5,) * 3, (0.5,) * 3)
    size = features.epoch(0).nbytes + features.epoch(1).nbytes
    cached_features(data.ds, "train", 32, {"other": 1}, lambda x: np.zeros((len(x), 3), np.float32))
    assert len(list(feature_cache_dir().glob("*.npy"))) == 3
    removed, freed = prune_frozen_caches()
    assert (removed, freed) == (2, pytest.approx(size, rel=0.01))
    left = [p.name for p in feature_cache_dir().iterdir()]
    assert len(left) == 3 and not any("lock" in n and n.replace(".lock", ".npy") not in left for n in left)

"""The ``dino`` trainable: heads on frozen ViTs, the feature cache, partial fine-tuning, local weights, Ray."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import _session_runs
from tests.trainables.conftest import TINY_CLASSES, TINY_TEST_ROWS
from trainables import create_trainable
from trainables.checkpoint import load_model_state, read_meta
from trainables.data import folds_for, load_dataset
from trainables.dino_model import build_dino_model, load_backbone_file
from trainables.features import feature_stats
from trainables.session import InlineSession

METRICS = ("epoch", "val_acc", "val_f1", "val_loss", "train_loss", "lr", "img_per_s")


def dino_config(data: Path, **overrides: Any) -> dict[str, Any]:
    """timm's random ``test_vit`` at 32 px (5 tokens of width 64): seconds per trial on CPU."""
    base: dict[str, Any] = {
        "data": str(data),
        "backbone": "test_vit",
        "pretrained": False,
        "image_size": 32,
        "epochs": 2,
        "batch_size": 32,
        "lr": 3e-3,
        "warmup_epochs": 0,
        "num_workers": 0,
        "k": 4,
        "attn_heads": 2,
        "mlp_hidden": 32,
    }
    return {**base, **overrides}


def _fit(config: dict[str, Any], out: Path) -> tuple[dict[str, Any], InlineSession]:
    session = InlineSession(out, verbose=False)
    return create_trainable("dino").fit(config, session), session


@pytest.fixture(scope="module")
def linear_trial(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A linear head on cached test_vit features; records the cache counters around the fit."""
    # Module fixtures run before the per-test RUNS_DIR fixture: point at the session's runs dir here.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNS_DIR", str(_session_runs(tmp_path_factory)))
        before = feature_stats()
        config = dino_config(tiny_data, head="linear")
        metrics, session = _fit(config, tmp_path_factory.mktemp("dino-linear"))
        yield {
            "config": config,
            "metrics": metrics,
            "session": session,
            "before": before,
            "after": feature_stats(),
        }


def test_head_trial_reports_every_epoch_and_predicts(linear_trial: dict[str, Any]) -> None:
    metrics, session = linear_trial["metrics"], linear_trial["session"]
    assert [h["epoch"] for h in session.history] == [1, 2]
    for h in session.history:
        assert set(METRICS) <= set(h) and all(math.isfinite(h[k]) for k in METRICS)
    assert metrics["best_epoch"] in (1, 2) and metrics["n_train"] > 0
    meta = read_meta(session.latest_checkpoint())
    assert meta["trainable"] == "dino" and meta["feature_cache"] is True
    probs = create_trainable("dino").predict(None, session.latest_checkpoint(), split="test")
    assert probs.shape == (TINY_TEST_ROWS, TINY_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_second_head_trial_reuses_the_features(
    linear_trial: dict[str, Any], tiny_data: Path, tmp_path: Path
) -> None:
    """The first trial built the train split's features; an MLP head on the same backbone computes none."""
    before, after = linear_trial["before"], linear_trial["after"]
    assert after["builds"] == before["builds"] + 1 and after["computed"] > before["computed"]
    start = feature_stats()
    metrics, session = _fit(dino_config(tiny_data, head="mlp"), tmp_path / "mlp")
    now = feature_stats()
    assert now["computed"] == start["computed"], "the second head trial ran the backbone again"
    assert now["hits"] > start["hits"]
    assert math.isfinite(metrics["val_acc"]) and read_meta(session.latest_checkpoint())["feature_cache"]
    # Out-of-fold predictions of the first trial's validation rows come from the same cache.
    folds = folds_for(load_dataset(str(tiny_data)), k=4, seed=0)
    val_rows = np.flatnonzero(folds["fold"].to_numpy() == 0)
    probs = create_trainable("dino").predict(None, session.latest_checkpoint(), split="train", rows=val_rows)
    assert probs.shape == (len(val_rows), TINY_CLASSES) and feature_stats()["computed"] == now["computed"]


@pytest.mark.parametrize(
    "overrides",
    [{"head": "linear", "tta_flip": True}, {"head": "attention"}, {"head": "mlp", "finetune_blocks": 2}],
    ids=["linear-tta", "attention", "finetune2"],
)
def test_cached_predictions_equal_running_the_backbone(
    overrides: dict[str, Any], tiny_data: Path, tmp_path: Path
) -> None:
    """What a head reads from the cache is what the backbone computes (to float16 storage precision)."""
    from trainables.augment import SampleTransform
    from trainables.data import decoded_images
    from trainables.engine import Batcher, predict_proba
    from trainables.loader import CachedImages, make_loader
    from trainables.runtime import resolve_runtime

    config = dino_config(tiny_data, epochs=1, **overrides)
    _, session = _fit(config, tmp_path / "run")
    ckpt = session.latest_checkpoint()
    cached = create_trainable("dino").predict(None, ckpt, split="test")

    meta = read_meta(ckpt)
    model = build_dino_model(meta["config"], TINY_CLASSES, load_pretrained=False)
    model.load_state_dict(load_model_state(ckpt))
    images = decoded_images(load_dataset(str(tiny_data)), "test", size=32)
    runtime = resolve_runtime(meta["config"])
    dataset = CachedImages(
        images,
        np.arange(len(images)),
        np.full(len(images), -1),
        SampleTransform(meta["config"]["aug"], 32, False),
    )
    direct = predict_proba(
        model, make_loader(dataset, 16, runtime), Batcher(runtime, meta["mean"], meta["std"]),
        tta_flip=bool(config.get("tta_flip")),
    )  # fmt: skip
    np.testing.assert_allclose(cached, direct, atol=2e-3)


def test_linear_probe_on_pretrained_features_learns(tiny_data: Path, tmp_path: Path) -> None:
    """Frozen ImageNet EfficientNet-Lite0 (offline weights) features: a linear head separates 8 classes."""
    config = dino_config(
        tiny_data, backbone="tf_efficientnet_lite0", pretrained=True, pool="avg", image_size=64, epochs=3
    )
    metrics, _ = _fit(config, tmp_path / "lite0")
    assert metrics["best_val_acc"] > 0.6, metrics  # chance is 1/8; measured 0.98 on 24 classes


def test_partial_finetune_trains_only_the_last_blocks(tiny_data: Path, tmp_path: Path) -> None:
    config = dino_config(tiny_data, finetune_blocks=2, epochs=1)
    _, session = _fit(config, tmp_path / "ft")
    trained = load_model_state(session.latest_checkpoint())
    torch.manual_seed(0)
    initial = build_dino_model(
        create_trainable("dino").resolve(config), TINY_CLASSES, load_pretrained=True
    ).state_dict()
    for key, value in initial.items():
        changed = not torch.equal(value, trained[key])
        if key.startswith(("backbone.blocks.4.", "backbone.blocks.5.", "backbone.norm.", "head.")):
            if value.dtype.is_floating_point and value.numel() > 1 and key.endswith("weight"):
                assert changed, f"{key} should have trained"
        else:
            assert not changed, f"{key} is frozen but changed"


def test_augmented_and_full_finetune_trials_run_the_backbone(tiny_data: Path, tmp_path: Path) -> None:
    """Random image augmentation (or a trained backbone) cannot use cached features; it still trains."""
    before = feature_stats()
    aug, session = _fit(dino_config(tiny_data, epochs=1, aug={"sketch_ab": True}, seed=3), tmp_path / "aug")
    assert feature_stats()["computed"] == before["computed"], "an augmented trial must not build a cache"
    assert read_meta(session.latest_checkpoint())["feature_cache"] is False and math.isfinite(
        aug["train_loss"]
    )

    full, session = _fit(dino_config(tiny_data, epochs=1, finetune_blocks=99), tmp_path / "full")
    state = load_model_state(session.latest_checkpoint())
    torch.manual_seed(0)
    fresh = build_dino_model(
        create_trainable("dino").resolve(dino_config(tiny_data)), TINY_CLASSES, load_pretrained=False
    )
    key = "backbone.patch_embed.proj.weight"
    assert not torch.equal(state[key], fresh.state_dict()[key]), "full fine-tuning left the patch embedding"
    assert read_meta(session.latest_checkpoint())["feature_cache"] is False and math.isfinite(
        full["train_loss"]
    )


def test_refit_on_all_rows_and_resume(tiny_data: Path, tmp_path: Path) -> None:
    """fold=-1 (the OOF refit) reports NaN validation; a later session resumes at the next epoch."""
    metrics, session = _fit(dino_config(tiny_data, fold=-1, epochs=1), tmp_path / "all")
    assert math.isnan(metrics["val_acc"]) and math.isfinite(metrics["train_loss"])
    resumed, again = _fit(dino_config(tiny_data, fold=-1, epochs=2), tmp_path / "all")
    assert [h["epoch"] for h in again.history] == [1, 2] and resumed["epoch"] == 2
    with pytest.raises(ValueError, match="cannot resume"):
        _fit(dino_config(tiny_data, fold=-1, epochs=3, head="mlp"), tmp_path / "all")


def test_local_weights_load_exactly(tiny_data: Path, tmp_path: Path) -> None:
    """pretrained_path: a timm file (its classifier ignored) or a dino checkpoint; every tensor equal."""
    import timm

    source = timm.create_model("test_vit", num_classes=10, img_size=32)
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    config = create_trainable("dino").resolve(
        dino_config(tiny_data, pretrained_path=str(tmp_path / "vit.pth"))
    )
    model = build_dino_model(config, TINY_CLASSES, load_pretrained=True)
    loaded = model.backbone.state_dict()
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key

    _, session = _fit(dino_config(tiny_data, epochs=1), tmp_path / "src")
    trained = load_model_state(session.latest_checkpoint())
    config["pretrained_path"] = session.latest_checkpoint()
    from_dir = build_dino_model(config, TINY_CLASSES, load_pretrained=True).backbone.state_dict()
    for key, value in from_dir.items():
        assert torch.equal(value, trained[f"backbone.{key}"]), key

    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "resnet.pth")
    backbone = timm.create_model("test_vit", num_classes=0, img_size=32)
    with pytest.raises(ValueError, match="do not fit backbone"):
        load_backbone_file(backbone, tmp_path / "resnet.pth")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"head": "svm"}, "head='svm' is not one of"),
        ({"pool": "max"}, "pool='max' is not one of"),
        ({"finetune_blocks": -1}, "finetune_blocks=-1 must be an integer >= 0"),
        ({"backbone_lr_scale": 0}, "backbone_lr_scale=0 must be > 0"),
        ({"lr": -1.0}, "lr=-1.0 must be a positive number"),
        ({"nope": 1}, "unknown config key"),
    ],
)
def test_bad_config_says_what_is_wrong(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_trainable("dino").resolve(overrides)


def test_class_token_pool_on_a_cnn_is_a_clear_error(tiny_data: Path) -> None:
    config = create_trainable("dino").resolve(dino_config(tiny_data, backbone="test_resnet", pool="cls_avg"))
    with pytest.raises(ValueError, match="needs a backbone with a class token"):
        build_dino_model(config, TINY_CLASSES, load_pretrained=False)


@pytest.mark.slow
def test_dino_space_runs_a_tiny_search_under_ray(tiny_data: Path, ray_session: Any) -> None:
    """spaces/dino.yaml under search.run with test_vit: a linear and an attention head, one epoch each."""
    import pandas as pd

    from common.io import runs_dir
    from search.records import search_dir
    from search.run import main

    argv = [
        "space=dino",
        f"data={tiny_data}",
        "experiment=dino-tiny",
        "trainable.backbone=test_vit",
        "trainable.pretrained=false",
        "trainable.image_size=32",
        "trainable.epochs=1",
        "trainable.batch_size=32",
        "trainable.num_workers=0",
        "trainable.attn_heads=2",
        "trainable.finetune_blocks=0",
        "trainable.aug.sketch_ab=false",
        "search.head={grid: [linear, attention]}",
        "mlflow.enabled=false",
        "verbose=0",
    ]
    assert main(argv) == 0
    board = pd.read_csv(search_dir(runs_dir(), "dino-tiny") / "leaderboard.csv")
    assert len(board) == 2 and set(board["head"]) == {"linear", "attention"}
    assert (board["status"] == "done").all()
    checkpoints = sorted((runs_dir() / "ray").glob("dino-tiny*/**/checkpoint_*/meta.json"))
    assert checkpoints, "no trial checkpoint in the Ray storage"
    probs = create_trainable("dino").predict(None, checkpoints[0].parent, split="test")
    assert probs.shape == (TINY_TEST_ROWS, TINY_CLASSES)


@pytest.fixture
def ray_session(_isolated_runs_dir: None) -> Any:
    """A local 2-CPU Ray, started after RUNS_DIR is set (so its workers write where the tests read).

    Left running for the next module's search, as tests/search does (Ray shuts down at exit); a
    test that needs a Ray of its own shuts this one down first.
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    return ray

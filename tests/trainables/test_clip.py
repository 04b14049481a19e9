"""The ``clip`` trainable: zero-shot epoch 0, fine-tuning variants, prompt ensembles, local weights, Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.trainables.conftest import TINY_CLASSES, TINY_TEST_ROWS
from trainables import create_trainable
from trainables.checkpoint import load_model_state, read_meta
from trainables.clip_model import ClipClassifier, create_clip, load_clip_file, prompt_tokens
from trainables.prompts import IMAGENET_TEMPLATES, class_text, prompt_templates
from trainables.session import InlineSession


def clip_config(data: Path, **overrides: Any) -> dict[str, Any]:
    """A tiny random open_clip model (registered ``test-clip``: ViT image tower) at 32 px."""
    base: dict[str, Any] = {
        "data": str(data),
        "backbone": "test-clip",
        "pretrained": None,
        "image_size": 32,
        "epochs": 1,
        "batch_size": 32,
        "lr": 1e-3,
        "warmup_epochs": 0,
        "num_workers": 0,
        "k": 4,
        "prompts": "single",
    }
    return {**base, **overrides}


def _fit(config: dict[str, Any], out: Path) -> tuple[dict[str, Any], InlineSession]:
    session = InlineSession(out, verbose=False)
    return create_trainable("clip").fit(config, session), session


def test_zero_shot_is_epoch_zero_then_fine_tuning_epochs(tiny_data: Path, tmp_path: Path) -> None:
    metrics, session = _fit(clip_config(tiny_data, epochs=2), tmp_path / "run")
    assert [h["epoch"] for h in session.history] == [0, 1, 2]
    zero = session.history[0]
    assert (
        math.isfinite(zero["val_acc"]) and math.isfinite(zero["val_loss"]) and math.isnan(zero["train_loss"])
    )
    for h in session.history[1:]:
        assert all(
            math.isfinite(h[k]) for k in ("val_acc", "val_f1", "val_loss", "train_loss", "lr", "img_per_s")
        )
    assert metrics["epoch"] == 2 and metrics["best_epoch"] in (0, 1, 2)
    meta = read_meta(session.latest_checkpoint())
    assert meta["trainable"] == "clip" and meta["templates"] == ["a sketch of a {}."]
    probs = create_trainable("clip").predict(None, session.latest_checkpoint(), split="test")
    assert probs.shape == (TINY_TEST_ROWS, TINY_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Another trainable asked about this checkpoint hands it to the one that wrote it.
    np.testing.assert_array_equal(create_trainable("dino").predict(None, session.latest_checkpoint()), probs)
    # Resuming with more epochs goes on from epoch 3; the zero-shot row is not repeated.
    _, again = _fit(clip_config(tiny_data, epochs=3), tmp_path / "run")
    assert [h["epoch"] for h in again.history] == [0, 1, 2, 3]


def test_zero_epochs_is_the_zero_shot_classifier(tiny_data: Path, tmp_path: Path) -> None:
    """epochs=0 (an OOF refit whose best epoch was 0) leaves a checkpoint of the untouched CLIP model."""
    config = clip_config(tiny_data, epochs=0, prompts="sketch")
    metrics, session = _fit(config, tmp_path / "zs")
    assert metrics["epoch"] == 0 and metrics["best_epoch"] == 0 and len(session.history) == 1
    state = load_model_state(session.latest_checkpoint())
    torch.manual_seed(0)
    clip, tokenizer = create_clip("test-clip", image_size=32)
    for key, value in clip.state_dict().items():
        assert torch.equal(state[f"clip.{key}"], value), key
    # The stored classifier is the prompt ensemble: open_clip's own zero-shot classifier builder agrees.
    from open_clip import build_zero_shot_classifier

    classes = read_meta(session.latest_checkpoint())["classes"]
    expected = build_zero_shot_classifier(
        clip.eval(),
        tokenizer,
        [class_text(c) for c in classes],
        list(prompt_templates("sketch")),
        num_classes_per_batch=None,
    ).T
    np.testing.assert_allclose(state["classifier"].numpy(), expected.numpy(), atol=1e-5)


def test_fine_tuning_learns(tiny_data: Path, tmp_path: Path) -> None:
    """A tiny CLIP with a CNN image tower (``test-clip-rn``) learns the 8 classes from scratch."""
    config = clip_config(
        tiny_data,
        backbone="test-clip-rn",
        epochs=6,
        batch_size=16,
        lr=3e-3,
        label_smoothing=0.0,
        weight_decay=0.0,
    )
    metrics, session = _fit(config, tmp_path / "rn")
    # measured 0.52 (chance 0.125)
    assert metrics["best_val_acc"] > max(0.3, session.history[0]["val_acc"] + 0.1), session.history
    assert session.history[-1]["train_loss"] < math.log(TINY_CLASSES) - 0.2


@pytest.mark.parametrize(
    ("overrides", "text_trains"),
    [
        ({"text_tower": "frozen", "loss": "ce"}, False),
        ({"text_tower": "trained", "loss": "ce", "prompts": "imagenet"}, True),
        ({"text_tower": "frozen", "loss": "contrastive"}, False),
        ({"text_tower": "trained", "loss": "contrastive", "prompts": "sketch"}, True),
    ],
    ids=["frozen-ce", "trained-ce-imagenet80", "frozen-contrastive", "trained-contrastive"],
)
def test_text_tower_frozen_or_trained(
    overrides: dict[str, Any], text_trains: bool, tiny_data: Path, tmp_path: Path
) -> None:
    metrics, session = _fit(clip_config(tiny_data, **overrides), tmp_path / "run")
    assert math.isfinite(metrics["train_loss"])
    state = load_model_state(session.latest_checkpoint())
    torch.manual_seed(0)
    initial, _ = create_clip("test-clip", image_size=32)
    init = initial.state_dict()
    text_keys = [
        k
        for k in init
        if not k.startswith("visual.") and k not in ("logit_scale",) and init[k].is_floating_point()
    ]
    text_changed = any(not torch.equal(state[f"clip.{k}"], init[k]) for k in text_keys)
    image_changed = any(not torch.equal(state[f"clip.{k}"], init[k]) for k in init if k.startswith("visual."))
    assert image_changed and text_changed == text_trains
    zero_shot = InlineSession(tmp_path / "run", verbose=False).history[0]
    assert zero_shot["epoch"] == 0


def test_local_weights_load_exactly(tiny_data: Path, tmp_path: Path) -> None:
    """pretrained_path: an open_clip state-dict file or a clip checkpoint dir, every tensor equal."""
    source, _ = create_clip("test-clip", image_size=32)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))  # not what a fresh random init would give
    torch.save({"state_dict": source.state_dict()}, tmp_path / "clip.pt")
    loaded, _ = create_clip("test-clip", pretrained_path=tmp_path / "clip.pt", image_size=32)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    # A checkpoint dir; at another image size the position embedding is resized, the rest is exact.
    _, session = _fit(clip_config(tiny_data, epochs=0), tmp_path / "src")
    trained = load_model_state(session.latest_checkpoint())
    bigger, _ = create_clip("test-clip", pretrained_path=session.latest_checkpoint(), image_size=64)
    for key, value in bigger.state_dict().items():
        if key == "visual.positional_embedding":
            assert value.shape == (1 + (64 // 8) ** 2, 32)
        else:
            assert torch.equal(value, trained[f"clip.{key}"]), key

    other, _ = create_clip("test-clip-rn", image_size=32)
    torch.save(other.state_dict(), tmp_path / "rn.pt")
    with pytest.raises(ValueError, match="do not fit this open_clip model"):
        load_clip_file(create_clip("test-clip", image_size=32)[0], tmp_path / "rn.pt")


def test_prompt_sets_and_tokens() -> None:
    import open_clip

    assert len(IMAGENET_TEMPLATES) == 80
    assert [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES] == list(IMAGENET_TEMPLATES)
    assert prompt_templates("a doodle of a {}.") == ("a doodle of a {}.",)
    assert class_text("hot_air-balloon") == "hot air balloon"
    with pytest.raises(ValueError, match="neither a prompt set"):
        prompt_templates("no placeholder")
    _, tokenizer = create_clip("test-clip", image_size=32)
    tokens = prompt_tokens(tokenizer, ["cat", "hot_air_balloon"], IMAGENET_TEMPLATES)
    assert tokens.shape == (2, 80, 16)
    model = ClipClassifier(create_clip("test-clip", image_size=32)[0], tokens, 2, train_text=False)
    assert not any(p.requires_grad for n, p in model.clip.named_parameters() if n.startswith("transformer."))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backbone": "ViT-B-33"}, "not an open_clip model; similar: ['ViT-B-32'"),
        ({"text_tower": "half"}, "text_tower='half' is not one of"),
        ({"loss": "siglip"}, "loss='siglip' is not one of"),
        ({"prompts": "weird"}, "neither a prompt set"),
        ({"loss": "contrastive", "aug": {"cutmix": 0.5}}, "set aug.cutmix=0"),
        ({"epochs": -1}, "epochs=-1 must be an integer >= 0"),
        ({"model": "ViT-B-32"}, "unknown config key"),
    ],
)
def test_bad_config_says_what_is_wrong(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        create_trainable("clip").resolve(overrides)
    assert message in str(info.value)


@pytest.mark.slow
def test_clip_space_runs_a_tiny_search_under_ray(tiny_data: Path, ray_session: Any) -> None:
    """spaces/clip.yaml under search.run with test-clip: CE and contrastive trials, zero-shot epoch 0 reported."""
    import pandas as pd

    from common.io import runs_dir
    from search.records import search_dir
    from search.run import main

    argv = [
        "space=clip",
        f"data={tiny_data}",
        "experiment=clip-tiny",
        "trainable.backbone=test-clip",
        "trainable.pretrained=null",
        "trainable.image_size=32",
        "trainable.epochs=1",
        "trainable.batch_size=32",
        "trainable.num_workers=0",
        "trainable.text_tower=frozen",
        "trainable.prompts=single",
        "trainable.lr=1.0e-3",
        "mlflow.enabled=false",
        "verbose=0",
    ]
    assert main(argv) == 0
    board = pd.read_csv(search_dir(runs_dir(), "clip-tiny") / "leaderboard.csv")
    assert len(board) == 2 and set(board["loss"]) == {"ce", "contrastive"}
    assert (board["status"] == "done").all()
    results = sorted((runs_dir() / "ray").glob("clip-tiny*/**/result.json"))
    assert len(results) == 2
    for result in results:
        epochs = [json.loads(line)["epoch"] for line in result.read_text().splitlines() if line.strip()]
        assert epochs == [0, 1]
    checkpoints = sorted((runs_dir() / "ray").glob("clip-tiny*/**/checkpoint_*/meta.json"))
    probs = create_trainable("clip").predict(None, checkpoints[-1].parent, split="test")
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

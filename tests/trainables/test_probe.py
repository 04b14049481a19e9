"""head_init=probe (trainables.probe): the classifier starts as a linear probe of the fold's training rows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.trainables.conftest import tiny_config
from trainables import create_trainable
from trainables.config import BASE_DEFAULTS, resolve_config
from trainables.features import feature_stats
from trainables.probe import fit_probe, pooled_features
from trainables.runtime import resolve_runtime, seed_everything
from trainables.trialkit import load_trial_data


def _built(data: Path, **overrides: Any) -> Any:
    """A timm trial as ``fit`` builds it (model, loaders, head), before any update."""
    t = create_trainable("timm")
    cfg = t.resolve(tiny_config(data, **overrides))
    seed_everything(int(cfg["seed"]))
    return t.build(cfg, resolve_runtime(cfg), load_trial_data(cfg)), cfg


def _rows(trial: Any) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The fold's own training rows' pooled features (both views) and labels, and its validation positions."""
    from trainables.models import normalization

    features = pooled_features(trial.model, trial.data.ds, trial.config, *normalization(trial.model))
    rows = trial.data.rows
    own = rows.train_kinds == 0
    x = torch.from_numpy(np.asarray(features[rows.train_rows[own]], np.float32).reshape(-1, features.shape[-1]))
    y = torch.from_numpy(np.repeat(rows.train_labels[own], 2))
    return x, y, rows.val_rows


def test_the_head_is_a_logistic_regression_of_the_training_rows_alone(tiny_data: Path) -> None:
    trial, _ = _built(tiny_data, head_init="probe", seed=31)
    x, y, val_rows = _rows(trial)
    head = trial.model.get_classifier()
    weight, bias = fit_probe(x, y, head.out_features)
    assert torch.allclose(head.weight, weight, atol=1e-5) and torch.allclose(head.bias, bias, atol=1e-5)
    assert len(val_rows) > 0 and not np.isin(val_rows, trial.data.rows.train_rows).any()
    # it learnt from what it saw (a random network's features): below a uniform guess's loss
    classes = head.out_features
    loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y).item()
    assert loss < math.log(classes)
    assert ((x @ weight.T + bias).argmax(1) == y).float().mean().item() > 1 / classes


def test_auto_probes_only_pretrained_weights_and_random_keeps_timms_head(tiny_data: Path) -> None:
    probed, _ = _built(tiny_data, head_init="probe", seed=32)
    auto, _ = _built(tiny_data, head_init="auto", seed=32)  # pretrained=false: a random network
    random, _ = _built(tiny_data, head_init="random", seed=32)
    assert torch.equal(auto.model.get_classifier().weight, random.model.get_classifier().weight)
    assert not torch.equal(probed.model.get_classifier().weight, random.model.get_classifier().weight)


def test_every_trial_and_fold_reads_the_pooled_features_the_first_built(tiny_data: Path) -> None:
    before = feature_stats()
    _built(tiny_data, head_init="probe", seed=33, fold=0)
    built = feature_stats()
    assert built["builds"] == before["builds"] + 1
    _built(tiny_data, head_init="probe", seed=33, fold=1, lr=1e-2)  # another fold and config: the same weights
    after = feature_stats()
    assert after["builds"] == built["builds"] and after["computed"] == built["computed"]


def test_a_pretrained_backbone_starts_from_a_head_that_already_classifies(tiny_data: Path) -> None:
    """Lite0's offline ImageNet weights: before any update, the probed head is far above chance on
    validation rows it never saw, and its validation loss far below a random head's."""
    common = {"backbone": "tf_efficientnet_lite0", "pretrained": True, "image_size": 64, "seed": 34}
    probed, _ = _built(tiny_data, head_init="auto", **common)
    random, _ = _built(tiny_data, head_init="random", **common)
    p, r = probed.evaluate(), random.evaluate()
    classes = len(probed.data.classes)
    assert p["val_acc"] > 3 / classes and p["val_acc"] > r["val_acc"] + 0.2
    assert p["val_loss"] < r["val_loss"]


def test_a_probe_is_refused_where_it_has_no_meaning(tiny_data: Path) -> None:
    t = create_trainable("timm")
    with pytest.raises(ValueError, match="head_init='bogus' is not one of"):
        t.resolve(tiny_config(tiny_data, head_init="bogus"))
    factors = {"targets.factors": ["mask", "gender"], "targets.sep": "_"}  # a head per factor
    with pytest.raises(ValueError, match="head_init=probe fits one softmax"):
        resolve_config(BASE_DEFAULTS, {**factors, "head_init": "probe"})
    resolve_config(BASE_DEFAULTS, {**factors, "head_init": "auto"})  # auto keeps timm's init there

"""Any timm backbone builds with the trial's options: timm's test models train a step, the reference list builds."""

from __future__ import annotations

import logging
import re

import pytest
import timm
import torch

from trainables.models import create_model, normalization

REFERENCE = [
    "resnet18",
    "resnet50",
    "resnet101",
    "densenet121",
    "mobilenetv2_100",
    "vit_base_patch16_224",
    "efficientnet_b1",
    "convnext_tiny",
    "coatnet_0_rw_224",
]


@pytest.mark.parametrize("backbone", timm.list_models("test_*"))
def test_test_models_take_every_option_and_train_a_step(backbone: str) -> None:
    torch.manual_seed(0)
    model = create_model(backbone, 5, drop_rate=0.2, drop_path_rate=0.1, image_size=32)
    mean, std = normalization(model)
    assert len(mean) == len(std) == 3
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("backbone", REFERENCE)
def test_reference_backbones_build_for_500_classes_at_128px(
    backbone: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        model = create_model(backbone, 500, drop_rate=0.2, drop_path_rate=0.1, image_size=128).eval()
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 500)
    if backbone == "densenet121":  # no stochastic depth in timm's DenseNet: said, not fatal
        assert "drop_path_rate=0.1 ignored" in caplog.text


@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_convnext", "test_resnet"])
def test_freeze_stages_freezes_the_stem_and_early_stages_and_never_the_head(backbone: str) -> None:
    model = create_model(backbone, 5, freeze_stages=1)
    trains = {name for name, p in model.named_parameters() if p.requires_grad}
    head = model.get_classifier()
    assert {id(p) for p in head.parameters()} <= {id(p) for p in model.parameters() if p.requires_grad}
    stem = next(iter(model.group_matcher(coarse=True).values()))  # timm's regex of the stem
    stem_params = [name for name, _ in model.named_parameters() if re.match(stem, name)]
    assert stem_params and not set(stem_params) & trains
    assert 0 < len(trains) < len(list(model.parameters()))


def test_frozen_batch_norms_keep_their_statistics_in_train_mode() -> None:
    model = create_model("test_efficientnet", 5, freeze_stages=1).train()
    stem = torch.nn.Sequential(model.conv_stem, model.bn1)
    x = torch.randn(4, 3, 32, 32)
    before = stem(x).detach()
    stem(torch.randn(8, 3, 32, 32) * 5 + 3)  # a training batch of other statistics
    assert torch.equal(stem(x).detach(), before)


def test_freeze_stages_beyond_the_network_says_how_many_it_has() -> None:
    with pytest.raises(ValueError, match=r"freeze_stages=99: .* use 0 to \d+"):
        create_model("test_resnet", 5, freeze_stages=99)

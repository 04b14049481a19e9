"""One epoch of training and one pass of evaluation, device- and precision-aware, no Ray, no data layer."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from trainables.loader import to_device
from trainables.optim import LRSchedule
from trainables.runtime import Runtime

if TYPE_CHECKING:
    from trainables.factors import Factorisation


@dataclass
class Batcher:
    """Turns a loader batch into model inputs on the device."""

    runtime: Runtime
    mean: Sequence[float]
    std: Sequence[float]
    channels_last: bool = True

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float batch on the device."""
        return to_device(images, self.runtime, self.mean, self.std, self.channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA when the runtime has an AMP dtype, else a no-op."""
        if self.runtime.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.runtime.device.type, dtype=self.runtime.amp_dtype)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: Optimizer,
    scheduler: LRSchedule | None,
    scaler: torch.amp.GradScaler,
    batcher: Batcher,
    num_classes: int,
    label_smoothing: float,
    mixer: Mixup | None,
    num_updates: int,
    factors: Factorisation | None = None,
) -> dict[str, float]:
    """Train over ``loader`` once.

    Hard targets use cross-entropy with label smoothing; with a mixer, targets are soft (mixed
    and smoothed by timm ``Mixup``) and the loss is ``SoftTargetCrossEntropy``. An odd-sized
    batch cannot be mixed pairwise; it trains unmixed on smoothed soft targets. With
    ``factors`` the labels are ``(B, heads)`` and the loss is the weighted sum of the heads'
    losses (:meth:`Factorisation.loss`); the mixer must then be a ``FactorMixup``.

    Args:
        model: The model, already on the device.
        loader: Training batches of uint8 images and int labels.
        optimizer: Its optimizer.
        scheduler: Stepped per update (``step_update``); epoch steps are the caller's.
        scaler: GradScaler (disabled unless fp16).
        batcher: Device transfer and autocast.
        num_classes: Classes of the head.
        label_smoothing: Smoothing of hard targets.
        mixer: CutMix/MixUp, or None.
        num_updates: Optimizer updates done before this epoch.
        factors: Multi-task heads, or None for one softmax over ``num_classes``.

    Returns:
        ``train_loss`` (mean per image), ``lr`` (of the last update), ``img_per_s``, ``num_updates``.
    """
    model.train()
    hard_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    soft_loss = SoftTargetCrossEntropy()
    device = batcher.runtime.device
    total = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    for images, labels in loader:
        x = batcher.images(images)
        y = labels.to(device, non_blocking=batcher.runtime.pin_memory)
        if mixer is not None and len(x) % 2 == 0:
            x, target = mixer(x, y)
        elif mixer is not None and factors is not None:
            target = mixer.targets(y)
        elif mixer is not None:
            target = mixup_target(y, num_classes, lam=1.0, smoothing=label_smoothing)
        else:
            target = y
        with batcher.autocast():
            logits = model(x)
        if factors is not None:
            loss = factors.loss(logits, target, label_smoothing)
        else:
            loss = (soft_loss if target.dtype.is_floating_point else hard_loss)(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        num_updates += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=num_updates)
        total += loss.detach() * len(x)
        seen += len(x)
    if batcher.runtime.cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    train_loss = float(total.item()) / max(seen, 1)
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"training loss is {train_loss}; lower lr (now {optimizer.param_groups[0]['lr']:.3g})"
        )
    return {
        "train_loss": train_loss,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "img_per_s": seen / elapsed if elapsed > 0 else float("nan"),
        "num_updates": num_updates,
    }


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    loader: DataLoader,
    batcher: Batcher,
    tta_flip: bool = False,
    factors: Factorisation | None = None,
) -> np.ndarray:
    """Softmax probabilities over ``loader``, in loader order, optionally averaged with the flipped view.

    Args:
        model: The model, on the device.
        loader: Batches of uint8 images (labels ignored).
        batcher: Device transfer and autocast.
        tta_flip: Average with the horizontally flipped view.
        factors: Multi-task heads: their outputs are recombined into class probabilities
            (:meth:`Factorisation.joint_probs`); None: one softmax over the outputs.

    Returns:
        ``(n, C)`` float32; rows sum to 1.
    """
    model.eval()
    out = [probs.cpu() for probs in _batches(model, loader, batcher, tta_flip, factors)]
    probs = torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)
    return probs / probs.sum(axis=1, keepdims=True)


def _batches(
    model: nn.Module,
    loader: DataLoader,
    batcher: Batcher,
    tta_flip: bool,
    factors: Factorisation | None = None,
) -> Iterator[torch.Tensor]:
    def to_probs(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=1) if factors is None else factors.joint_probs(logits)

    for images, _ in loader:
        x = batcher.images(images)
        with batcher.autocast():
            probs = to_probs(model(x))
            if tta_flip:
                probs = (probs + to_probs(model(x.flip(3)))) / 2
        yield probs

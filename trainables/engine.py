"""One epoch of optimisation and one pass of evaluation, device- and precision-aware, no Ray, no data layer."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from trainables.augment import FactorMixup
from trainables.loader import to_device
from trainables.optim import LRSchedule
from trainables.runtime import Runtime

if TYPE_CHECKING:
    from trainables.factors import Factorisation

LossFn = Callable[[Any, Any], torch.Tensor]


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


def device_batches(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    batcher: Batcher,
    mixer: Mixup | None = None,
    num_classes: int = 0,
    label_smoothing: float = 0.0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Loader batches as normalised device images and labels (soft targets when a mixer mixes them).

    An odd-sized batch cannot be mixed pairwise; with a mixer it gets smoothed soft targets, so
    every batch of an epoch has targets of one kind (a :class:`FactorMixup`'s per-head ones).
    """
    device = batcher.runtime.device
    on_device = (
        (batcher.images(images), labels.to(device, non_blocking=batcher.runtime.pin_memory))
        for images, labels in loader
    )
    return mixed_batches(on_device, mixer, num_classes, label_smoothing)


def mixed_batches(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    mixer: Mixup | None = None,
    num_classes: int = 0,
    label_smoothing: float = 0.0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Device batches (images, or the frozen stages' output maps) mixed by ``mixer``, as :func:`device_batches`."""
    for x, y in batches:
        if mixer is not None and len(x) % 2 == 0:
            x, y = mixer(x, y)
        elif isinstance(mixer, FactorMixup):
            y = mixer.targets(y)
        elif mixer is not None:
            y = mixup_target(y, num_classes, lam=1.0, smoothing=label_smoothing)
        yield x, y


def run_epoch(
    batches: Iterable[tuple[Any, Any]],
    loss_fn: LossFn,
    optimizer: Optimizer,
    scheduler: LRSchedule | None,
    scaler: torch.amp.GradScaler,
    batcher: Batcher,
    num_updates: int,
    on_update: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """One pass of optimisation over ``batches`` (the caller puts the model in train mode).

    Kept as one function: it is every trial's hot loop, read top to bottom.

    Args:
        batches: ``(inputs, targets)`` already on the device.
        loss_fn: ``(inputs, targets) -> scalar loss``, run under the batcher's autocast.
        optimizer: The trial's optimizer.
        scheduler: Stepped after every update (None: a constant lr).
        scaler: GradScaler (enabled for fp16 only).
        batcher: Device and autocast.
        num_updates: Updates before this epoch.
        on_update: Called with the number of updates done in this epoch after each one (progress).

    Returns:
        ``train_loss`` (mean per sample), ``lr``, ``img_per_s`` (samples per second, loading
        included), ``num_updates``.

    Raises:
        FloatingPointError: The loss diverged; the message suggests a lower lr.
    """
    device = batcher.runtime.device
    total = torch.zeros((), device=device)
    seen, first = 0, num_updates
    start = time.perf_counter()
    for x, y in batches:
        with batcher.autocast():
            loss = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        num_updates += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=num_updates)
        total += loss.detach().float() * len(x)
        seen += len(x)
        if on_update is not None:
            on_update(num_updates - first)
    if batcher.runtime.cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    train_loss = float(total.item()) / max(seen, 1)
    if seen and not math.isfinite(train_loss):
        raise FloatingPointError(
            f"training loss is {train_loss}; lower lr (now {optimizer.param_groups[0]['lr']:.3g})"
        )
    return {
        "train_loss": train_loss if seen else float("nan"),
        "lr": float(optimizer.param_groups[0]["lr"]),
        "img_per_s": seen / elapsed if elapsed > 0 and seen else float("nan"),
        "num_updates": num_updates,
    }


def soft_or_hard_ce(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy against class indices (label-smoothed) or against soft targets (already smoothed)."""
    logits = logits.float()
    if target.dtype.is_floating_point:
        return torch.sum(-target * logits.log_softmax(dim=-1), dim=-1).mean()
    return nn.functional.cross_entropy(logits, target, label_smoothing=label_smoothing)


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

"""Shared scaffolding of the trainables (timm, CLIP, DINO): a trial's data, loaders, checkpoints, checks.

One contract for all of them: rows from the folds table (:func:`trainables.split.trial_rows`,
plus any pseudo-labels), the decoded memmap cache through :class:`trainables.loader.CachedImages`,
one checkpoint per epoch with ``meta.json`` holding the resolved config, classes, data fingerprint
and folds hash, and the same resume and predict checks. What differs per trainable (the model,
its loss, what is frozen, the timm trainable's mixing and factor heads) stays in its module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data.mixup import mixup_target
from torch import nn
from torch.optim import Optimizer

from trainables.augment import ORIGINAL, SampleTransform
from trainables.checkpoint import new_checkpoint_dir, save_checkpoint
from trainables.config import merge_config
from trainables.engine import Batcher
from trainables.loader import CachedImages, EpochSampler, StackedImages, make_loader
from trainables.optim import LRSchedule
from trainables.runtime import Runtime
from trainables.session import Session
from trainables.split import TrialRows, trial_rows, with_pseudo_labels

# Keys that may differ between the run that wrote a checkpoint and one resuming or predicting from it.
RUNTIME_KEYS = ("data", "batch_size", "num_workers", "amp", "device", "tta_flip")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrialData:
    """A trial's dataset, rows and decoded training images.

    Attributes:
        ds: The loaded dataset.
        rows: Training/validation positions and labels of this fold (pseudo-labelled test rows,
            if any, on the training side at positions after the train split's).
        images: The decoded train split, ``(N, S, S, 3)`` uint8 memmap, stacked with the test
            split's when the config has ``pseudo_labels``.
        folds_hash: Hash of the fold assignment (checked on resume).
    """

    ds: Any
    rows: TrialRows
    images: np.ndarray | StackedImages
    folds_hash: str

    @property
    def classes(self) -> list[str]:
        """Class names in target order."""
        return list(self.ds.classes)

    @property
    def n_train(self) -> int:
        """Original (not fill-copy) training rows, pseudo-labelled ones included."""
        return int((self.rows.train_kinds == 0).sum())


def load_trial_data(cfg: Mapping[str, Any]) -> TrialData:
    """Load the dataset, its folds, this fold's rows (plus any pseudo-labels) and the decoded images."""
    from trainables.data import decoded_images, folds_for, load_dataset, with_object_crops

    ds = load_dataset(cfg["data"])
    folds = folds_for(
        ds,
        k=int(cfg["k"]),
        seed=int(cfg["folds_seed"]),
        group_pattern=cfg["group_pattern"],
        group_column=cfg["group_column"],
    )
    rows = with_pseudo_labels(dict(cfg), ds, trial_rows(dict(cfg), folds))
    images = decoded_images(ds, "train", size=int(cfg["image_size"]))
    if cfg.get("pseudo_labels"):
        images = StackedImages([images, decoded_images(ds, "test", size=int(cfg["image_size"]))])
    if cfg["aug"]["object_split"]:  # objects of multi-object training sketches, after every other row
        crops, rows = with_object_crops(ds, rows, len(images), int(cfg["image_size"]), kind=ORIGINAL)
        images = StackedImages([*getattr(images, "parts", [images]), crops])
    return TrialData(ds=ds, rows=rows, images=images, folds_hash=str(folds.attrs.get("hash", "")))


def image_loaders(
    data: TrialData, cfg: Mapping[str, Any], runtime: Runtime, train_labels: np.ndarray | None = None
) -> tuple[torch.utils.data.DataLoader, EpochSampler, torch.utils.data.DataLoader | None]:
    """The training loader (augmented, balanced, seeded per epoch) and the validation loader (or None).

    ``train_labels`` replaces the rows' class targets (a multi-task model's per-head labels).
    """
    size, batch, seed = int(cfg["image_size"]), int(cfg["batch_size"]), int(cfg["seed"])
    rows = data.rows
    train_set = CachedImages(
        data.images, rows.train_rows, rows.train_labels if train_labels is None else train_labels,
        SampleTransform(cfg["aug"], size, train=True),
        rows.train_kinds, seed=seed,
    )  # fmt: skip
    sampler = EpochSampler(len(train_set), seed=seed)
    train_loader = make_loader(train_set, batch, runtime, sampler, drop_last=len(train_set) > batch)
    val_loader = None
    if len(rows.val_rows):
        val_set = CachedImages(
            data.images, rows.val_rows, rows.val_labels, SampleTransform(cfg["aug"], size, train=False)
        )
        val_loader = make_loader(val_set, 2 * batch, runtime)
    return train_loader, sampler, val_loader


def split_images(
    cfg: Mapping[str, Any],
    classes: Sequence[str],
    split: str,
    rows: np.ndarray | None,
    checkpoint: str | Path,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The dataset, decoded images and row positions a ``predict`` call reads, checked against the classes.

    Raises:
        ValueError: The dataset's classes differ from the checkpoint's, or rows are out of range.
    """
    from trainables.data import decoded_images, load_dataset

    ds = load_dataset(cfg["data"])
    if list(ds.classes) != list(classes):
        raise ValueError(
            f"dataset {cfg['data']!r} has {len(ds.classes)} classes, not the {len(classes)} "
            f"the checkpoint {checkpoint} was trained on (or in another order)"
        )
    images = decoded_images(ds, split, size=int(cfg["image_size"]))
    positions = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(positions) and (positions.min() < 0 or positions.max() >= len(images)):
        raise ValueError(f"rows out of range for the {split} split of {len(images)} rows")
    return ds, images, positions


def device_batches(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    batcher: Batcher,
    mixer: Any | None = None,
    num_classes: int = 0,
    label_smoothing: float = 0.0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Loader batches as normalised device images and labels (soft targets when a mixer mixes them).

    An odd-sized batch cannot be mixed pairwise; with a mixer it gets smoothed soft targets, so
    every batch of an epoch has targets of one kind.
    """
    device = batcher.runtime.device
    for images, labels in loader:
        x = batcher.images(images)
        y = labels.to(device, non_blocking=batcher.runtime.pin_memory)
        if mixer is not None and len(x) % 2 == 0:
            x, y = mixer(x, y)
        elif mixer is not None:
            y = mixup_target(y, num_classes, lam=1.0, smoothing=label_smoothing)
        yield x, y


def fit_epoch(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    optimizer: Optimizer,
    scheduler: LRSchedule,
    scaler: torch.amp.GradScaler,
    batcher: Batcher,
    num_updates: int,
) -> dict[str, float]:
    """One pass of optimisation over ``batches`` (the caller puts the model in train/eval modes).

    Args:
        batches: ``(inputs, targets)`` already on the device.
        loss_fn: ``(inputs, targets) -> scalar loss``, run under the batcher's autocast.
        optimizer: The trial's optimizer.
        scheduler: Stepped after every update.
        scaler: GradScaler (enabled for fp16 only).
        batcher: Device and autocast.
        num_updates: Updates before this epoch.

    Returns:
        ``train_loss`` (mean per sample), ``lr``, ``img_per_s`` (samples per second, loading
        included), ``num_updates``.

    Raises:
        FloatingPointError: The loss diverged; the message suggests a lower lr.
    """
    device = batcher.runtime.device
    total = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    for x, y in batches:
        with batcher.autocast():
            loss = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        num_updates += 1
        scheduler.step_update(num_updates=num_updates)
        total += loss.detach().float() * len(x)
        seen += len(x)
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


def train_state(
    epoch: int,
    num_updates: int,
    optimizer: Optimizer,
    scheduler: LRSchedule,
    scaler: torch.amp.GradScaler,
    sampler_state: dict[str, int] | None,
    rng: dict[str, Any],
) -> dict[str, Any]:
    """What ``train_state.pt`` holds (the layout of ``trainables.checkpoint``)."""
    return {
        "epoch": epoch,
        "num_updates": num_updates,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "sampler": sampler_state or {},
        "rng": rng,
    }


def report_epoch(
    session: Session, model: nn.Module, state: dict[str, Any], meta: dict[str, Any], metrics: dict[str, Any]
) -> None:
    """Write a checkpoint for this epoch and report it with the metrics."""
    ckpt = new_checkpoint_dir(getattr(session, "scratch_dir", None))
    save_checkpoint(ckpt, model, state, meta)
    session.report(metrics, checkpoint_dir=str(ckpt))


def check_resumable(
    meta: Mapping[str, Any],
    cfg: Mapping[str, Any],
    fingerprint: str,
    folds_hash: str,
    defaults: Mapping[str, Any],
) -> None:
    """Refuse to resume a checkpoint of another config, dataset or fold split.

    Runtime keys (:data:`RUNTIME_KEYS`) and ``epochs`` may change. A key newer than the
    checkpoint (absent from its config) had its value in ``defaults`` there.

    Raises:
        ValueError: What differs, and what to do.
    """
    saved = meta.get("config", {})
    old = {k: saved[k] if k in saved else defaults.get(k) for k in cfg}
    changed = sorted(k for k in cfg if k not in RUNTIME_KEYS and k != "epochs" and old[k] != cfg[k])
    if changed:
        raise ValueError(
            f"cannot resume: the checkpoint was trained with other values of {changed} "
            f"(e.g. {changed[0]}={old[changed[0]]!r}, now {cfg[changed[0]]!r}); use a new output directory"
        )
    for key, now in (("data_fingerprint", fingerprint), ("folds_hash", folds_hash)):
        if meta.get(key) and meta[key] != now:
            raise ValueError(
                f"cannot resume: the checkpoint's {key} {meta[key]} differs from this run's {now}"
            )


def predict_config(
    resolve: Callable[[Mapping[str, Any] | None], dict[str, Any]],
    meta: Mapping[str, Any],
    config: Mapping[str, Any],
    arch_keys: Sequence[str],
) -> dict[str, Any]:
    """The checkpoint's config with the caller's runtime keys; other keys must agree with it.

    Args:
        resolve: The trainable's ``resolve_config`` over its defaults.
        meta: The checkpoint's ``meta.json``.
        config: The caller's config (a subset is fine).
        arch_keys: Keys (dotted for ``aug.*``) that fix the network and its input.

    Raises:
        ValueError: The caller's config contradicts the checkpoint on an architecture key.
    """
    base = resolve(meta["config"])
    asked = resolve(merge_config(base, config))  # the caller's keys over the checkpoint's, validated
    for key in arch_keys:
        head, _, rest = key.partition(".")
        mine, theirs = (asked[head][rest], base[head][rest]) if rest else (asked[key], base[key])
        if mine != theirs:
            raise ValueError(f"config {key}={mine!r} but the checkpoint was trained with {theirs!r}")
    return {**base, **{k: asked[k] for k in RUNTIME_KEYS}}


def final_metrics(history: list[dict[str, Any]], n_train: int, n_dropped: int) -> dict[str, Any]:
    """The last epoch's metrics plus ``best_val_acc``, ``best_epoch``, ``n_train``, ``n_dropped``."""
    if not history:
        return {"epoch": 0, "n_train": n_train, "n_dropped": n_dropped}
    accs = [h["val_acc"] for h in history]
    best = int(np.nanargmax(accs)) if not np.all(np.isnan(accs)) else len(history) - 1
    return {
        **history[-1],
        "best_val_acc": float(accs[best]),
        "best_epoch": int(history[best]["epoch"]),
        "n_train": n_train,
        "n_dropped": n_dropped,
    }


def make_group_optimizer(cfg: Mapping[str, Any], parts: Sequence[tuple[nn.Module, float]]) -> Optimizer:
    """AdamW or SGD over several modules, each at ``lr * scale``; 1-d parameters (norms, biases) get no decay.

    Args:
        cfg: Resolved config (``optimizer``, ``lr``, ``weight_decay``, ``momentum``).
        parts: ``(module, lr_scale)``; frozen parameters (``requires_grad=False``) are left out.

    Raises:
        ValueError: Nothing to train.
    """
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])

    def groups(_: nn.Module) -> list[dict[str, Any]]:
        out = []
        for module, scale in parts:
            skip = getattr(module, "no_weight_decay", lambda: set())()
            for group in param_groups_weight_decay(module, wd, no_weight_decay_list=skip):
                if group["params"]:
                    out.append({**group, "lr": lr * scale})
        if not out:
            raise ValueError("nothing to train: every parameter is frozen")
        return out

    kwargs: dict[str, Any] = {"momentum": float(cfg["momentum"])} if cfg["optimizer"] == "sgd" else {}
    holder = nn.ModuleList([m for m, _ in parts])
    return create_optimizer_v2(
        holder, opt=cfg["optimizer"], lr=lr, weight_decay=wd, param_group_fn=groups, **kwargs
    )


def predict_elsewhere(
    name: str,
    meta: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    checkpoint: str | Path,
    split: str,
    rows: np.ndarray | None,
    tta_flip: bool | None,
) -> np.ndarray | None:
    """Predictions of a checkpoint another trainable wrote, by that trainable; None if ``name`` wrote it.

    A checkpoint names its writer in ``meta.json``; asking one trainable to predict from
    another's checkpoint then gives that checkpoint's predictions instead of a confusing
    state-dict error.
    """
    writer = meta.get("trainable")
    if not writer or writer == name:
        return None
    from trainables.registry import create_trainable

    return create_trainable(str(writer)).predict(
        dict(config) if config else None, checkpoint, split=split, rows=rows, tta_flip=tta_flip
    )

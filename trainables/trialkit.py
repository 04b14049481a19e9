"""Data side of every trainable (timm, CLIP, DINO): a trial's rows, images and loaders, and predict's checks.

One contract for all of them: rows from the folds table (:func:`trainables.split.trial_rows`,
plus any pseudo-labels), the decoded memmap cache through :class:`trainables.loader.CachedImages`,
and the same predict checks. The training loop is :mod:`trainables.driver`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trainables.augment import ORIGINAL, SampleTransform
from trainables.config import merge_config
from trainables.engine import Batcher, predict_proba
from trainables.loader import CachedImages, EpochSampler, StackedImages, make_loader
from trainables.runtime import Runtime
from trainables.split import TrialRows, config_folds, trial_rows, with_pseudo_labels

if TYPE_CHECKING:
    from trainables.factors import Factorisation

# Keys that may differ between the run that wrote a checkpoint and one resuming or predicting from it.
RUNTIME_KEYS = ("data", "batch_size", "num_workers", "amp", "device", "tta_flip", "frozen_cache")


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
    from trainables.data import decoded_images, with_object_crops

    ds, folds = config_folds(cfg)
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

    ds = load_dataset(cfg["data"], skip_bad=bool(cfg["skip_bad"]))
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


def image_predictions(
    model: nn.Module,
    images: np.ndarray,
    positions: np.ndarray,
    cfg: Mapping[str, Any],
    batcher: Batcher,
    tta_flip: bool,
    factors: Factorisation | None = None,
) -> np.ndarray:
    """Class probabilities of ``images[positions]``, unaugmented, in ``positions`` order (``predict``'s pass)."""
    dataset = CachedImages(
        images,
        positions,
        np.full(len(positions), -1),
        SampleTransform(cfg["aug"], int(cfg["image_size"]), train=False),
    )
    loader = make_loader(dataset, 2 * int(cfg["batch_size"]), batcher.runtime)
    return predict_proba(model, loader, batcher, tta_flip=tta_flip, factors=factors)


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
    return {**base, **{k: asked[k] for k in RUNTIME_KEYS if k in asked}}  # frozen_cache is timm's alone


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

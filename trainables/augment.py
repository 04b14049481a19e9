"""Augmentations on decoded uint8 RGB images (albumentations) and batch-level mixing (timm ``Mixup``).

Each ``aug.*`` config flag maps to one piece here:

* ``hflip``: random horizontal flip. With every other flag off this is the whole pipeline: the
  decoded cache is already resized (aspect kept, white padding) to the input size.
* ``sketch_ab``: the reference team's "Sketch Albumentations": affine rotate/scale/shift,
  elastic deformation, gaussian noise, motion blur; geometric fill is white like the paper.
* ``edge``: the Canny edge map of the image, as black lines on white (so it looks like the
  sketches, and white padding stays white), replicated to 3 channels. It is a change of input
  representation, so it applies at evaluation too, before any random transform.
* ``randaug_balance``: the transform of the extra copies that fill short classes
  (:func:`randaug_copy_transform`, RandAugment-style: two random ops of fixed strong magnitude);
  without it the copies are horizontally flipped originals.
* ``cutmix`` / ``mixup`` / ``mix_alpha``: :func:`build_mixer`, per batch on the device. With
  multi-task heads (:mod:`trainables.factors`) one mix serves every head: the images are mixed
  once and each head gets its own labels mixed with the same ratio and the same partner
  (:class:`FactorMixup`), so a half-masked, half-unmasked picture is half of each for the mask
  head while the gender head sees the genders of the same two photos.

Randomness: the loader reseeds the per-sample pipelines from ``(seed, epoch, sample)``
(:meth:`SampleTransform.__call__`), so a sample's augmentation does not depend on worker count
or on a resume; the mixer draws from NumPy's global generator, which checkpoints save.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

# Copy kinds in the training index: an original row, a flipped fill copy, an augmented fill copy.
ORIGINAL, FLIP_COPY, RANDAUG_COPY = 0, 1, 2

_WHITE = 255
_CANNY_LOW, _CANNY_HIGH = 50, 150


def edge_map(image: np.ndarray) -> np.ndarray:
    """Canny edges of an RGB uint8 image: black lines on white, shape (H, W, 3) uint8.

    A light blur first keeps JPEG noise and paper texture from becoming edges.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (3, 3), 0), _CANNY_LOW, _CANNY_HIGH)
    return np.repeat((255 - edges)[:, :, None], 3, axis=2)


def sketch_ab(size: int) -> list[A.BasicTransform]:
    """The "Sketch Albumentations" transforms, scaled to an image side of ``size`` pixels."""
    white = {"border_mode": cv2.BORDER_CONSTANT, "fill": _WHITE}
    return [
        A.Affine(rotate=(-15, 15), scale=(0.85, 1.15), translate_percent=(-0.08, 0.08), p=0.7, **white),
        A.ElasticTransform(alpha=0.25 * size, sigma=0.05 * size, p=0.3, **white),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
        A.MotionBlur(blur_limit=(3, 7), p=0.3),
    ]


def train_transform(aug: dict[str, Any], size: int) -> A.Compose:
    """The random per-sample pipeline of the training rows (edge maps come before it).

    Args:
        aug: The config's ``aug`` dict.
        size: Image side in pixels.

    Returns:
        An albumentations pipeline on uint8 RGB; it may be empty.
    """
    ops: list[A.BasicTransform] = []
    if aug["hflip"]:
        ops.append(A.HorizontalFlip(p=0.5))
    if aug["sketch_ab"]:
        ops += sketch_ab(size)
    return A.Compose(ops)


def randaug_copy_transform(size: int) -> A.Compose:
    """RandAugment-style transform of the copies that fill short classes: 2 ops, strong magnitude."""
    white = {"border_mode": cv2.BORDER_CONSTANT, "fill": _WHITE}
    ops = [
        A.Affine(rotate=(-30, 30), p=1.0, **white),
        A.Affine(shear={"x": (-17, 17), "y": (0, 0)}, p=1.0, **white),
        A.Affine(shear={"x": (0, 0), "y": (-17, 17)}, p=1.0, **white),
        A.Affine(translate_percent={"x": (-0.15, 0.15), "y": (0, 0)}, p=1.0, **white),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.15, 0.15)}, p=1.0, **white),
        A.Affine(scale=(0.7, 1.2), p=1.0, **white),
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=1.0),
        A.Posterize(num_bits=(4, 6), p=1.0),
        A.Solarize(threshold_range=(0.5, 0.9), p=1.0),
        A.Equalize(p=1.0),
        A.AutoContrast(p=1.0),
        A.Sharpen(p=1.0),
        A.CoarseDropout(
            num_holes_range=(1, 3),
            hole_height_range=(0.1, 0.25),
            hole_width_range=(0.1, 0.25),
            fill=_WHITE,
            p=1.0,
        ),
    ]
    return A.Compose([A.SomeOf(ops, n=2, p=1.0)])


class SampleTransform:
    """Everything done to one training sample, reseeded per sample for reproducibility.

    Args:
        aug: The config's ``aug`` dict.
        size: Image side in pixels.
        train: Random augmentation (training) or only the deterministic part (evaluation).
    """

    def __init__(self, aug: dict[str, Any], size: int, train: bool) -> None:
        self.edge = bool(aug["edge"])
        self.train = train
        self.random = train_transform(aug, size) if train else None
        self.randaug = randaug_copy_transform(size) if train and aug["randaug_balance"] else None

    def __call__(self, image: np.ndarray, kind: int = ORIGINAL, seed: int | None = None) -> np.ndarray:
        """Transform one (H, W, 3) uint8 image; ``kind`` says whether it is a fill copy."""
        if self.edge:
            image = edge_map(image)
        if kind == FLIP_COPY:
            image = image[:, ::-1]
        elif kind == RANDAUG_COPY:
            if self.randaug is None:
                raise ValueError("an augmented fill copy needs aug.randaug_balance=true")
            self.randaug.set_random_seed(seed)
            image = self.randaug(image=np.ascontiguousarray(image))["image"]
        if self.random is not None and self.random.transforms:
            self.random.set_random_seed(seed)
            image = self.random(image=np.ascontiguousarray(image))["image"]
        out = np.ascontiguousarray(image)
        # torch wants writable memory; an untouched cache row is a read-only memmap view.
        return out if out.flags.writeable else out.copy()


class FactorMixup(Mixup):
    """timm ``Mixup`` for several heads: one mix of the images, each head's labels mixed alike.

    Args:
        head_sizes: Outputs of each head, in the order of the label columns.
        **kwargs: As for timm ``Mixup`` (``num_classes`` is ignored; each head has its own).
    """

    def __init__(self, head_sizes: list[int] | tuple[int, ...], **kwargs: Any) -> None:
        kwargs["num_classes"] = max(head_sizes)
        super().__init__(**kwargs)
        self.head_sizes = tuple(int(n) for n in head_sizes)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mix the batch ``x`` in place; ``target`` is ``(B, heads)`` hard labels.

        Returns:
            ``(x, [soft target (B, head size) per head])``, mixed with the same ratio and partner.
        """
        if len(x) % 2 != 0:
            raise ValueError("batch size should be even when using this")
        if self.mode == "elem":
            lam = self._mix_elem(x)
        elif self.mode == "pair":
            lam = self._mix_pair(x)
        else:
            lam = self._mix_batch(x)
        return x, self.targets(target, lam)

    def targets(self, target: torch.Tensor, lam: float | torch.Tensor = 1.0) -> list[torch.Tensor]:
        """Each head's labels as smoothed soft targets mixed with ratio ``lam`` (1: unmixed)."""
        if target.ndim != 2 or target.shape[1] != len(self.head_sizes):
            raise ValueError(f"expected (batch, {len(self.head_sizes)}) labels, got {tuple(target.shape)}")
        return [
            mixup_target(target[:, h], n, lam, self.label_smoothing) for h, n in enumerate(self.head_sizes)
        ]


def build_mixer(
    aug: dict[str, Any],
    num_classes: int,
    label_smoothing: float,
    head_sizes: list[int] | tuple[int, ...] | None = None,
) -> Mixup | None:
    """timm ``Mixup`` giving CutMix with probability ``aug.cutmix`` and MixUp with ``aug.mixup`` per batch.

    The two are exclusive per batch; if their sum exceeds 1 they are scaled to sum to 1. The
    targets come back soft (mixed and label-smoothed), for ``SoftTargetCrossEntropy``.

    Args:
        aug: The config's ``aug`` dict.
        num_classes: Outputs of the (single) head.
        label_smoothing: Smoothing of the targets.
        head_sizes: Several heads' sizes (multi-task labels): a :class:`FactorMixup` instead.

    Returns:
        None when both probabilities are 0.
    """
    cutmix, mixup = float(aug["cutmix"]), float(aug["mixup"])
    total = cutmix + mixup
    if total <= 0:
        return None
    alpha = float(aug["mix_alpha"])
    kwargs: dict[str, Any] = {
        "mixup_alpha": alpha if mixup > 0 else 0.0,
        "cutmix_alpha": alpha if cutmix > 0 else 0.0,
        "prob": min(1.0, total),
        "switch_prob": cutmix / total,
        "mode": "batch",
        "label_smoothing": label_smoothing,
    }
    if head_sizes:
        return FactorMixup(head_sizes, **kwargs)
    return Mixup(num_classes=num_classes, **kwargs)

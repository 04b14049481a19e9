"""The ``dino`` trainable: a head (linear, MLP, attention pooling) on a frozen self-supervised ViT.

Backbones are timm models, by default the DINO ones (``vit_small_patch16_224.dino``,
``vit_small_patch14_dinov2.lvd142m``, any ``*dinov2*``), but any timm model whose
``forward_features`` gives tokens or a feature map works for head-only training. Variants:

* ``head``: ``linear`` or ``mlp`` on pooled tokens (``pool``: class token, patch mean, or both as
  in DINO's linear evaluation), or ``attention`` (a learned query over every token).
* ``finetune_blocks``: 0 freezes the whole backbone; ``n`` also trains the last ``n``
  transformer blocks and the final norm (lr scaled by ``backbone_lr_scale``); ``n >= depth``
  fine-tunes everything.
* ``aug.*``: as the ``timm`` trainable. Random image augmentation (``sketch_ab``,
  ``randaug_balance``, CutMix/MixUp) runs the frozen part on every step.

With the frozen part seeing unaugmented inputs (horizontal flips are fine: both views are
cached), its outputs come from the feature cache (:mod:`trainables.features`): computed once per
backbone, frozen weights, layer, summary and image size, then every head trial trains on them
without running the backbone. ``feature_cache=false`` turns that off (the benchmark's baseline).

Keys beyond the ``timm`` trainable's (:mod:`trainables.config`):

=================== ================================ ==========================================================
key                 default                          meaning
=================== ================================ ==========================================================
backbone            ``"vit_small_patch16_224.dino"`` timm model name (tag included); ``pretrained_path`` for local weights
head                ``"linear"``                     ``linear``, ``mlp`` or ``attention``
pool                ``"cls_avg"``                    linear/MLP input: ``cls``, ``avg`` (patch mean) or ``cls_avg``
mlp_hidden          ``1024``                         hidden width of the MLP head
attn_heads          ``8``                            heads of the attention-pooling head (must divide the width)
finetune_blocks     ``0``                            last transformer blocks trained with the head
backbone_lr_scale   ``0.1``                          lr of the fine-tuned blocks relative to ``lr`` (the head's)
feature_cache       ``True``                         train frozen-backbone trials on cached features
=================== ================================ ==========================================================

``drop_rate`` is the head's dropout; ``drop_path_rate`` applies to fine-tuned blocks. The network
itself lives in :mod:`trainables.dino_model`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from common.metrics import classification_metrics
from trainables.augment import FLIP_COPY, build_mixer, edge_map
from trainables.base import PredictRequest, TrainableBase
from trainables.checkpoint import load_model_state
from trainables.config import COMMON_DEFAULTS
from trainables.dino_model import DinoClassifier, build_dino_model, load_backbone_file  # noqa: F401
from trainables.driver import LoaderTrial, Trial
from trainables.engine import Batcher, predict_proba, soft_or_hard_ce
from trainables.features import cached_features
from trainables.heads import HEADS, POOLS
from trainables.models import normalization
from trainables.registry import register_trainable
from trainables.runtime import Runtime, derived_seed
from trainables.trialkit import TrialData, image_loaders, image_predictions

DINO_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "backbone": "vit_small_patch16_224.dino",
    "pretrained": True,
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "image_size": 224,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "head": "linear",
    "pool": "cls_avg",
    "mlp_hidden": 1024,
    "attn_heads": 8,
    "finetune_blocks": 0,
    "backbone_lr_scale": 0.1,
    "feature_cache": True,
}

# Keys that fix the network and its input; predict refuses a config that contradicts them.
_ARCH_KEYS = (
    "backbone",
    "image_size",
    "head",
    "pool",
    "mlp_hidden",
    "attn_heads",
    "finetune_blocks",
    "aug.edge",
)
# Random per-sample image augmentation: the frozen part must then run on every step.
_IMAGE_AUGS = ("sketch_ab", "randaug_balance", "object_split")  # object crops have no cached features
_IN_MEMORY_BYTES = 2 << 30  # cached features up to this size are read into memory once per trial


@dataclass
class _DinoTrial(LoaderTrial):
    """A DINO head's fit, on cached summaries of the frozen part or on images."""

    model: DinoClassifier
    # (N, 2, ...) summaries of the train split when the cache is used, then the test split's
    # when pseudo-labelled test rows train too (positions run on, as in trainables.split).
    cached: list[np.ndarray] | None = None

    def parameter_groups(self) -> list[tuple[nn.Module, float]]:
        return [(self.model.head, 1.0), (self.model.backbone, float(self.config["backbone_lr_scale"]))]

    def updates_per_epoch(self) -> int:
        return -(-len(self.data.rows.train_rows) // int(self.config["batch_size"]))

    def batches(self, epoch: int) -> Any:
        if self.cached is not None:
            return self._feature_batches(epoch)
        return super().batches(epoch)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.model.from_summary(inputs) if self.cached is not None else self.model(inputs)
        return soft_or_hard_ce(logits, targets, float(self.config["label_smoothing"]))

    def _feature_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of cached summaries: a row's view is its mirror for flip copies and random flips."""
        cfg, rows = self.config, self.data.rows
        rng = np.random.default_rng(derived_seed(int(cfg["seed"]), epoch, 11))
        order = rng.permutation(len(rows.train_rows))
        flip = rows.train_kinds == FLIP_COPY
        if cfg["aug"]["hflip"]:
            flip = flip ^ (rng.random(len(flip)) < 0.5)
        device = self.runtime.device
        batch = int(cfg["batch_size"])
        for lo in range(0, len(order), batch):
            take = order[lo : lo + batch]
            x = _gather(self.cached, rows.train_rows[take], flip[take].astype(np.int64))
            y = torch.from_numpy(rows.train_labels[take]).to(device)
            yield torch.from_numpy(x).to(device, non_blocking=self.runtime.pin_memory), y

    def evaluate(self) -> dict[str, float]:
        rows, cfg = self.data.rows, self.config
        if not len(rows.val_rows):
            return classification_metrics(np.zeros((0, len(self.data.classes))), np.zeros(0, np.int64))
        flip = bool(cfg["tta_flip"])
        if self.cached is not None:
            batch = 2 * int(cfg["batch_size"])
            probs = _predict_cached(self.model, self.cached, rows.val_rows, self.batcher, flip, batch)
        else:
            probs = predict_proba(self.model, self.val_loader, self.batcher, tta_flip=flip)
        return classification_metrics(probs, rows.val_labels)

    def meta(self) -> dict[str, Any]:
        return {"feature_cache": self.cached is not None}


@register_trainable("dino")
class DinoTrainable(TrainableBase):
    """Heads on frozen (or partly fine-tuned) DINO/DINOv2 ViTs; see the module doc for the keys.

    Reports ``epoch, val_acc, val_f1, val_loss, train_loss, lr, img_per_s`` every epoch with a
    checkpoint, like the ``timm`` trainable; ``img_per_s`` counts training samples per second.
    Frozen-backbone checkpoints predict from the feature cache (building it on first use), so
    out-of-fold and test predictions of many head trials share one backbone pass.
    """

    name = "dino"
    defaults = DINO_DEFAULTS
    arch_keys = _ARCH_KEYS

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a complete config's values.

        Raises:
            ValueError: A value is out of range or not an allowed choice; the message names it.
        """
        super().validate_config(config)
        if config["head"] not in HEADS:
            raise ValueError(f"config head={config['head']!r} is not one of {list(HEADS)}")
        if config["pool"] not in POOLS:
            raise ValueError(f"config pool={config['pool']!r} is not one of {list(POOLS)}")
        for key in ("mlp_hidden", "attn_heads"):
            if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < 1:
                raise ValueError(f"config {key}={config[key]!r} must be a positive integer")
        ft = config["finetune_blocks"]
        if not isinstance(ft, int) or isinstance(ft, bool) or ft < 0:
            raise ValueError(f"config finetune_blocks={ft!r} must be an integer >= 0 (0: frozen backbone)")
        if not float(config["backbone_lr_scale"]) > 0:
            raise ValueError(f"config backbone_lr_scale={config['backbone_lr_scale']!r} must be > 0")
        if not isinstance(config["feature_cache"], bool):
            raise ValueError(f"config feature_cache={config['feature_cache']!r} must be true or false")

    def build(self, config: dict[str, Any], runtime: Runtime, data: TrialData) -> Trial:
        """The backbone and head, and either the cached summaries or the image loaders and mixer."""
        cfg = config
        model = build_dino_model(cfg, len(data.classes), load_pretrained=True)
        frozen_hash = model.frozen_weights_hash() if model.frozen else ""
        mean, std = normalization(model.backbone)
        model.to(runtime.device)
        batcher = Batcher(runtime, mean, std)
        trial = _DinoTrial(cfg, runtime, data, model, batcher)
        if _uses_cache(cfg, model):
            splits = ("train", "test") if cfg["pseudo_labels"] else ("train",)
            cached = [_features(data.ds, split, cfg, model, batcher, frozen_hash) for split in splits]
            if sum(part.nbytes for part in cached) <= _IN_MEMORY_BYTES:
                # One sequential read beats random reads of a memmap per batch.
                cached = [np.asarray(part) for part in cached]
            trial.cached = cached
        else:
            trial.train_loader, trial.sampler, trial.val_loader = image_loaders(data, cfg, runtime)
            trial.mixer = build_mixer(cfg["aug"], len(data.classes), float(cfg["label_smoothing"]))
        return trial

    def predict_rows(self, request: PredictRequest) -> np.ndarray:
        """The checkpoint's head on cached summaries (frozen backbones) or on the images."""
        cfg, meta = request.config, request.meta
        model = build_dino_model(cfg, len(meta["classes"]), load_pretrained=False)
        model.load_state_dict(load_model_state(request.checkpoint))
        frozen_hash = model.frozen_weights_hash() if model.frozen else ""
        model.to(request.runtime.device).eval()
        batcher = Batcher(request.runtime, meta["mean"], meta["std"])
        if _uses_cache(cfg, model, training=False):
            feats = _features(request.ds, request.split, cfg, model, batcher, frozen_hash)
            batch = 2 * int(cfg["batch_size"])
            return _predict_cached(model, feats, request.positions, batcher, request.tta_flip, batch)
        return image_predictions(model, request.images, request.positions, cfg, batcher, request.tta_flip)


def _uses_cache(cfg: Mapping[str, Any], model: DinoClassifier, training: bool = True) -> bool:
    """Whether the frozen part's outputs come from the feature cache.

    Prediction never augments, so any frozen model predicts from the cache; training does only
    when no random image augmentation has to run before the frozen part.
    """
    aug = cfg["aug"]
    augmented = any(aug[k] for k in _IMAGE_AUGS) or float(aug["cutmix"]) > 0 or float(aug["mixup"]) > 0
    return bool(cfg["feature_cache"]) and model.frozen and not (training and augmented)


def _features(
    ds: Any, split: str, cfg: Mapping[str, Any], model: DinoClassifier, batcher: Batcher, frozen_hash: str
) -> np.memmap:
    """The split's cached summaries for this model (computed on the first call, by any trial)."""
    runtime = batcher.runtime
    spec = {
        "backbone": cfg["backbone"],
        "weights": frozen_hash,
        "layer": model.layer,
        "summary": "tokens"
        if model.finetune_blocks or model.head.needs_tokens
        else f"pool:{model.head.pool}",
        "edge": bool(cfg["aug"]["edge"]),
        "mean": list(batcher.mean),
        "std": list(batcher.std),
        "precision": str(runtime.amp_dtype or "float32"),
    }

    @torch.inference_mode()
    def extract(images: np.ndarray) -> np.ndarray:
        model.eval()
        x = batcher.images(torch.from_numpy(images).permute(0, 3, 1, 2))
        with batcher.autocast():
            return model.summary(x).float().cpu().numpy()

    # Residual-stream tokens inside a ViT can exceed float16's range; final-norm outputs cannot.
    dtype = "float16" if model.layer == "final" and spec["summary"] == "tokens" else "float32"
    return cached_features(
        ds, split, int(cfg["image_size"]), spec, extract,
        preprocess=edge_map if cfg["aug"]["edge"] else None,
        batch_size=2 * int(cfg["batch_size"]), dtype=dtype,
    )  # fmt: skip


def _gather(features: np.ndarray | list[np.ndarray], rows: np.ndarray, views: np.ndarray) -> np.ndarray:
    """``features[rows, views]`` as float32, reading each memmap in row order.

    ``features`` may be a list of splits' summaries whose positions run on from one to the next.
    """
    parts = features if isinstance(features, list) else [features]
    starts = np.cumsum([0] + [len(part) for part in parts])
    if len(rows) and (rows.min() < 0 or rows.max() >= starts[-1]):
        raise IndexError(f"feature rows outside 0..{starts[-1] - 1}")
    out = np.empty((len(rows), *parts[0].shape[2:]), dtype=np.float32)
    which = np.searchsorted(starts, rows, side="right") - 1
    for i, part in enumerate(parts):
        take = np.flatnonzero(which == i)
        take = take[np.argsort(rows[take], kind="stable")]
        out[take] = part[rows[take] - starts[i], views[take]]
    return out


@torch.inference_mode()
def _predict_cached(
    model: DinoClassifier,
    features: np.ndarray | list[np.ndarray],
    rows: np.ndarray,
    batcher: Batcher,
    flip: bool,
    batch: int,
) -> np.ndarray:
    model.eval()
    device = batcher.runtime.device
    out = []
    for lo in range(0, len(rows), batch):
        take = np.asarray(rows[lo : lo + batch], dtype=np.int64)
        probs = None
        for view in (0, 1) if flip else (0,):
            x = torch.from_numpy(_gather(features, take, np.full(len(take), view))).to(device)
            with batcher.autocast():
                p = model.from_summary(x).float().softmax(dim=1)
            probs = p if probs is None else (probs + p) / 2
        out.append(probs.cpu())
    n_classes = model.head.fc.out_features
    result = torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, n_classes), np.float32)
    return result / np.clip(result.sum(axis=1, keepdims=True), 1e-12, None)

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

``drop_rate`` is the head's dropout; ``drop_path_rate`` applies to fine-tuned blocks.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.metrics import classification_metrics
from trainables.augment import FLIP_COPY, SampleTransform, build_mixer, edge_map
from trainables.checkpoint import load_model_state, load_train_state, read_meta
from trainables.config import BASE_DEFAULTS, merge_config, validate_config
from trainables.engine import Batcher, predict_proba
from trainables.features import cached_features
from trainables.heads import HEADS, POOLS, Head, as_tokens, create_head
from trainables.loader import CachedImages, make_loader
from trainables.models import create_model, normalization
from trainables.optim import LRSchedule
from trainables.registry import register_trainable
from trainables.runtime import (
    Runtime,
    derived_seed,
    resolve_runtime,
    rng_state,
    seed_everything,
    set_rng_state,
)
from trainables.session import Session
from trainables.trialkit import (
    TrialData,
    check_resumable,
    device_batches,
    final_metrics,
    fit_epoch,
    image_loaders,
    load_trial_data,
    make_group_optimizer,
    predict_config,
    predict_elsewhere,
    report_epoch,
    soft_or_hard_ce,
    split_images,
    train_state,
)
from trainables.weights import read_state_dict

log = logging.getLogger(__name__)

_SHARED_KEYS = (
    "data", "fold", "k", "folds_seed", "group_pattern", "group_column", "pseudo_labels", "backbone", "pretrained",
    "pretrained_path", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "schedule",
    "warmup_epochs", "step_size", "gamma", "drop_rate", "drop_path_rate", "label_smoothing", "seed",
    "num_workers", "amp", "device", "tta_flip", "aug",
)  # fmt: skip

DINO_DEFAULTS: dict[str, Any] = {
    **{k: copy.deepcopy(BASE_DEFAULTS[k]) for k in _SHARED_KEYS},
    "backbone": "vit_small_patch16_224.dino",
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
_IMAGE_AUGS = ("sketch_ab", "randaug_balance")
_IN_MEMORY_BYTES = 2 << 30  # cached features up to this size are read into memory once per trial


class DinoClassifier(nn.Module):
    """A timm backbone, partly or wholly frozen, and a :class:`~trainables.heads.Head`.

    The forward pass is ``from_summary(summary(x))``: ``summary`` is the frozen computation
    (backbone tokens pooled as the head wants, or the tokens entering the first fine-tuned
    block), ``from_summary`` the trained one. A feature cache stores ``summary``.

    Args:
        backbone: timm model built with ``num_classes=0``.
        head: The classifier head.
        finetune_blocks: Trained transformer blocks at the end of the backbone (0: frozen).
    """

    def __init__(self, backbone: nn.Module, head: Head, finetune_blocks: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        blocks = getattr(backbone, "blocks", None)
        depth = len(blocks) if isinstance(blocks, (nn.Sequential, nn.ModuleList)) else 0
        self.finetune_blocks = int(finetune_blocks)
        self.full = self.finetune_blocks > 0 and self.finetune_blocks >= depth
        self.split = depth - self.finetune_blocks  # index of the first trained block (partial fine-tuning)
        if 0 < self.finetune_blocks < depth and not hasattr(backbone, "forward_intermediates"):
            raise ValueError(
                f"finetune_blocks={finetune_blocks} needs a ViT-style backbone (blocks + forward_intermediates); "
                f"{type(backbone).__name__} has none: use 0 or >= its depth"
            )
        for p in backbone.parameters():
            p.requires_grad = self.full
        for module in self._trained_backbone_modules():
            for p in module.parameters():
                p.requires_grad = True

    @property
    def frozen(self) -> bool:
        """Whether part of the backbone is frozen (then a summary is cacheable)."""
        return not self.full

    @property
    def layer(self) -> str:
        """Where the summary is taken: ``final`` (after the backbone's last norm) or ``block<i>`` (its input)."""
        return "final" if self.finetune_blocks == 0 else f"block{self.split}"

    def _trained_backbone_modules(self) -> list[nn.Module]:
        if self.full or self.finetune_blocks == 0:
            return []
        return [*self.backbone.blocks[self.split :], self.backbone.norm]

    def train(self, mode: bool = True) -> DinoClassifier:
        """Train mode for the trained parts only: frozen layers keep dropout and drop-path off."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
            for module in self._trained_backbone_modules():
                module.train(mode)
        return self

    def summary(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen computation on a normalised image batch (no gradient)."""
        with torch.no_grad():
            if self.finetune_blocks == 0:
                return self.head.summarize(as_tokens(self.backbone.forward_features(x)))
            (spatial, prefix), = self.backbone.forward_intermediates(
                x, indices=[self.split - 1], return_prefix_tokens=True, norm=False, stop_early=True,
                output_fmt="NLC", intermediates_only=True,
            )  # fmt: skip
            return spatial if prefix is None else torch.cat([prefix, spatial], dim=1)

    def from_summary(self, summary: torch.Tensor) -> torch.Tensor:
        """Logits from a summary (what is trained)."""
        if self.finetune_blocks == 0:
            return self.head.classify(summary.to(self.head_dtype))
        tokens = summary.to(self.head_dtype)
        for block in self.backbone.blocks[self.split :]:
            tokens = block(tokens)
        return self.head(self.backbone.norm(tokens))

    @property
    def head_dtype(self) -> torch.dtype:
        """The parameters' dtype (cached summaries may be stored as float16)."""
        return next(self.head.parameters()).dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised image batch."""
        if self.full:
            return self.head(as_tokens(self.backbone.forward_features(x)))
        return self.from_summary(self.summary(x))

    def frozen_weights_hash(self) -> str:
        """A hash of the frozen backbone weights: the weights identity of cached summaries."""
        trained = {n for n, p in self.backbone.named_parameters() if p.requires_grad}
        h = hashlib.blake2b(digest_size=16)
        for name, tensor in self.backbone.state_dict().items():
            if name in trained:
                continue
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


@dataclass
class _Trial:
    config: dict[str, Any]
    runtime: Runtime
    data: TrialData
    model: DinoClassifier
    batcher: Batcher
    # (N, 2, ...) summaries of the train split when the cache is used, then the test split's
    # when pseudo-labelled test rows train too (positions run on, as in trainables.split).
    cached: list[np.ndarray] | None


@register_trainable("dino")
class DinoTrainable:
    """Heads on frozen (or partly fine-tuned) DINO/DINOv2 ViTs; see the module doc for the keys.

    Reports ``epoch, val_acc, val_f1, val_loss, train_loss, lr, img_per_s`` every epoch with a
    checkpoint, like the ``timm`` trainable; ``img_per_s`` counts training samples per second.
    """

    name = "dino"

    def default_config(self) -> dict[str, Any]:
        """Every accepted key with its default (a fresh copy)."""
        return copy.deepcopy(DINO_DEFAULTS)

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a complete config's values.

        Raises:
            ValueError: A value is out of range or not an allowed choice; the message names it.
        """
        validate_config({**copy.deepcopy(BASE_DEFAULTS), **dict(config)})
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

    def resolve(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults, then ``overrides`` (nested or dotted ``aug.*``), validated."""
        cfg = merge_config(self.default_config(), overrides)
        self.validate_config(cfg)
        return cfg

    def fit(self, config: dict[str, Any], session: Session) -> dict[str, Any]:
        """Train the head (and any fine-tuned blocks) on one fold, resuming from the session's checkpoint.

        Args:
            config: Overrides of :meth:`default_config`.
            session: Receives metrics and a checkpoint after every epoch.

        Returns:
            The last epoch's metrics plus ``best_val_acc``, ``best_epoch``, ``n_train``, ``n_dropped``.
        """
        trial = self._setup(self.resolve(config))
        cfg, model, data = trial.config, trial.model, trial.data
        rows = data.rows
        n_batches = -(-len(rows.train_rows) // int(cfg["batch_size"]))
        optimizer = make_group_optimizer(
            cfg, [(model.head, 1.0), (model.backbone, float(cfg["backbone_lr_scale"]))]
        )
        scheduler = LRSchedule(optimizer, cfg, n_batches)
        scaler = torch.amp.GradScaler(trial.runtime.device.type, enabled=trial.runtime.use_scaler)
        label_smoothing = float(cfg["label_smoothing"])
        mixer = (
            None if trial.cached is not None else build_mixer(cfg["aug"], len(data.classes), label_smoothing)
        )
        loaders = None if trial.cached is not None else image_loaders(data, cfg, trial.runtime)

        history: list[dict[str, Any]] = []
        start_epoch, num_updates = 0, 0
        resume_dir = session.latest_checkpoint()
        if resume_dir:
            meta = read_meta(resume_dir)
            check_resumable(meta, cfg, str(data.ds.fingerprint), data.folds_hash, self.default_config())
            model.load_state_dict(load_model_state(resume_dir))
            state = load_train_state(resume_dir)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            start_epoch, num_updates, history = state["epoch"] + 1, state["num_updates"], meta["history"]

        def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = model.from_summary(x) if trial.cached is not None else model(x)
            return soft_or_hard_ce(logits, y, label_smoothing)

        for epoch in range(start_epoch, int(cfg["epochs"])):
            model.train()
            if trial.cached is not None:
                batches: Any = self._feature_batches(trial, epoch)
            else:
                train_loader, sampler, _ = loaders
                sampler.set_epoch(epoch)
                batches = device_batches(
                    train_loader, trial.batcher, mixer, len(data.classes), label_smoothing
                )
            train = fit_epoch(batches, loss_fn, optimizer, scheduler, scaler, trial.batcher, num_updates)
            num_updates = int(train.pop("num_updates"))
            val = self._validate(trial, loaders)
            scheduler.step_epoch(epoch, train["train_loss"] if not len(rows.val_rows) else val["val_loss"])
            metrics = {"epoch": epoch + 1, **val, **train}
            history.append(metrics)
            state = train_state(
                epoch, num_updates, optimizer, scheduler, scaler,
                {"seed": int(cfg["seed"]), "epoch": epoch}, rng_state(),
            )  # fmt: skip
            report_epoch(session, model, state, self._meta(trial, history), metrics)
        return final_metrics(history, data.n_train, len(rows.dropped_duplicates))

    def predict(
        self,
        config: dict[str, Any] | None,
        checkpoint: str | Path,
        split: str = "test",
        rows: np.ndarray | None = None,
        tta_flip: bool | None = None,
    ) -> np.ndarray:
        """Class probabilities for rows of a split from a checkpoint written by :meth:`fit`.

        Frozen-backbone checkpoints read the feature cache (building it on first use), so
        out-of-fold and test predictions of many head trials share one backbone pass.

        Args:
            config: The fit's config, a subset, or None; only runtime keys (``data``,
                ``batch_size``, ``num_workers``, ``amp``, ``device``, ``tta_flip``) may differ.
            checkpoint: A checkpoint directory.
            split: ``"train"`` or ``"test"``.
            rows: Positions in the split; None for all.
            tta_flip: Average with the mirrored view; None takes the config's.

        Returns:
            ``(len(rows), C)`` float32 probabilities in the checkpoint's class order. A checkpoint
            another trainable wrote (``meta.json``'s ``trainable``) is predicted by that trainable.
        """
        meta = read_meta(checkpoint)
        other = predict_elsewhere(self.name, meta, config, checkpoint, split, rows, tta_flip)
        if other is not None:
            return other
        cfg = predict_config(self.resolve, meta, config or {}, _ARCH_KEYS)
        runtime = resolve_runtime(cfg)
        ds, images, positions = split_images(cfg, meta["classes"], split, rows, checkpoint)
        model = _build_model(cfg, len(meta["classes"]), load_pretrained=False)
        model.load_state_dict(load_model_state(checkpoint))
        frozen_hash = model.frozen_weights_hash() if model.frozen else ""
        model.to(runtime.device).eval()
        batcher = Batcher(runtime, meta["mean"], meta["std"])
        flip = bool(cfg["tta_flip"]) if tta_flip is None else bool(tta_flip)
        if _uses_cache(cfg, model, training=False):
            feats = _features(ds, split, cfg, model, batcher, frozen_hash)
            return _predict_cached(model, feats, positions, batcher, flip, 2 * int(cfg["batch_size"]))
        dataset = CachedImages(
            images,
            positions,
            np.full(len(positions), -1),
            SampleTransform(cfg["aug"], cfg["image_size"], False),
        )
        loader = make_loader(dataset, 2 * int(cfg["batch_size"]), runtime)
        return predict_proba(model, loader, batcher, tta_flip=flip).reshape(
            len(positions), len(meta["classes"])
        )

    def _setup(self, cfg: dict[str, Any]) -> _Trial:
        runtime = resolve_runtime(cfg)
        seed_everything(int(cfg["seed"]))
        data = load_trial_data(cfg)
        model = _build_model(cfg, len(data.classes), load_pretrained=True)
        frozen_hash = model.frozen_weights_hash() if model.frozen else ""
        mean, std = normalization(model.backbone)
        model.to(runtime.device)
        batcher = Batcher(runtime, mean, std)
        cached = None
        if _uses_cache(cfg, model):
            splits = ("train", "test") if cfg["pseudo_labels"] else ("train",)
            cached = [_features(data.ds, split, cfg, model, batcher, frozen_hash) for split in splits]
            if sum(part.nbytes for part in cached) <= _IN_MEMORY_BYTES:
                # One sequential read beats random reads of a memmap per batch.
                cached = [np.asarray(part) for part in cached]
        return _Trial(cfg, runtime, data, model, batcher, cached)

    def _feature_batches(self, trial: _Trial, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of cached summaries: a row's view is its mirror for flip copies and random flips."""
        cfg, rows = trial.config, trial.data.rows
        rng = np.random.default_rng(derived_seed(int(cfg["seed"]), epoch, 11))
        order = rng.permutation(len(rows.train_rows))
        flip = rows.train_kinds == FLIP_COPY
        if cfg["aug"]["hflip"]:
            flip = flip ^ (rng.random(len(flip)) < 0.5)
        device = trial.runtime.device
        batch = int(cfg["batch_size"])
        for lo in range(0, len(order), batch):
            take = order[lo : lo + batch]
            x = _gather(trial.cached, rows.train_rows[take], flip[take].astype(np.int64))
            y = torch.from_numpy(rows.train_labels[take]).to(device)
            yield torch.from_numpy(x).to(device, non_blocking=trial.runtime.pin_memory), y

    def _validate(self, trial: _Trial, loaders: Any) -> dict[str, float]:
        rows, cfg = trial.data.rows, trial.config
        if not len(rows.val_rows):
            return classification_metrics(np.zeros((0, len(trial.data.classes))), np.zeros(0, np.int64))
        flip = bool(cfg["tta_flip"])
        if trial.cached is not None:
            probs = _predict_cached(
                trial.model, trial.cached, rows.val_rows, trial.batcher, flip, 2 * int(cfg["batch_size"])
            )
        else:
            probs = predict_proba(trial.model, loaders[2], trial.batcher, tta_flip=flip)
        return classification_metrics(probs, rows.val_labels)

    def _meta(self, trial: _Trial, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "trainable": self.name,
            "config": trial.config,
            "classes": trial.data.classes,
            "mean": list(trial.batcher.mean),
            "std": list(trial.batcher.std),
            "data_fingerprint": str(trial.data.ds.fingerprint),
            "folds_hash": trial.data.folds_hash,
            "feature_cache": trial.cached is not None,
            "epoch": history[-1]["epoch"],
            "history": history,
        }


def _build_model(cfg: Mapping[str, Any], num_classes: int, load_pretrained: bool) -> DinoClassifier:
    """Backbone (weights from ``pretrained_path``, builtin/hub ``pretrained``, or random) plus a new head."""
    path = cfg["pretrained_path"] if load_pretrained else None
    backbone = create_model(
        cfg["backbone"],
        0,
        pretrained=bool(cfg["pretrained"]) and load_pretrained and not path,
        drop_path_rate=float(cfg["drop_path_rate"]) if cfg["finetune_blocks"] > 0 else 0.0,
        image_size=int(cfg["image_size"]),
    )
    if path:
        load_backbone_file(backbone, path)
    dim = int(getattr(backbone, "embed_dim", 0) or backbone.num_features)
    head = create_head(
        cfg["head"], dim, num_classes,
        num_prefix=int(getattr(backbone, "num_prefix_tokens", 0)), pool=cfg["pool"],
        hidden=int(cfg["mlp_hidden"]), num_heads=int(cfg["attn_heads"]), drop=float(cfg["drop_rate"]),
    )  # fmt: skip
    return DinoClassifier(backbone, head, int(cfg["finetune_blocks"]))


def load_backbone_file(backbone: nn.Module, path: str | Path) -> None:
    """Load local weights into a headless timm backbone, every backbone tensor exactly.

    Accepts timm/DINO/DINOv2 weight files (converted and position embeddings resampled by timm's
    ViT checkpoint filter) and ``dino`` trainable checkpoint directories (their ``backbone.*``).
    Classifier tensors in the file are ignored.

    Raises:
        ValueError: Backbone tensors are missing, unexpected or of another shape.
    """
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if isinstance(backbone, VisionTransformer):
        state = checkpoint_filter_fn(state, backbone)
    target = backbone.state_dict()
    state = {
        k: v for k, v in state.items() if k in target or not k.startswith(("head.", "fc.", "classifier."))
    }
    wrong = [k for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if wrong or missing or unexpected:
        raise ValueError(
            f"weights at {path} do not fit backbone {type(backbone).__name__}: shape mismatches {wrong[:5]}, "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}. Is pretrained_path for this backbone?"
        )
    backbone.load_state_dict(state, strict=True)


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

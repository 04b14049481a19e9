"""The ``clip`` trainable: fine-tune an open_clip image tower against class-name text embeddings.

The classifier is the text tower itself: class ``c``'s weight is the (unit) text embedding of
its prompts, logits are ``logit_scale * cos(image, text)``. So the model starts as CLIP's
zero-shot classifier, whose validation scores are reported as epoch 0, and fine-tuning moves the
image tower (and, with ``text_tower=trained``, the text tower) from there. Variants:

* ``text_tower``: ``frozen`` (class embeddings computed once) or ``trained`` (re-encoded every
  step from one prompt template drawn at random, and from every template at evaluation).
* ``prompts``: a set from :mod:`trainables.prompts` (``single``, ``sketch``, ``imagenet`` = the
  80 CLIP ImageNet templates, ``photo``) or one custom template; a set's embeddings are averaged.
* ``loss``: ``ce`` (cross-entropy over every class's text) or ``contrastive`` (CLIP's symmetric
  image-text loss over the classes in the batch; images of one class are all positives of its text).

Weights: ``backbone`` is an open_clip architecture (``ViT-B-32``), ``pretrained`` an open_clip tag
(``laion2b_s34b_b79k``, fetched by open_clip where there is network) or null, and
``pretrained_path`` a local open_clip/OpenAI checkpoint file or a ``clip`` checkpoint dir, which
wins. ``test-clip`` is a tiny registered architecture for tests (:func:`register_clip_config`).

=================== ========================== ================================================================
key                 default                    meaning
=================== ========================== ================================================================
backbone            ``"ViT-B-32"``             open_clip model name, ``hf-hub:``/``local-dir:`` id, or a registered config
pretrained          ``"laion2b_s34b_b79k"``    open_clip pretrained tag; null for random initialisation
pretrained_path     ``None``                   local weights file or ``clip`` checkpoint dir (wins over ``pretrained``)
text_tower          ``"frozen"``               ``frozen`` or ``trained``
prompts             ``"sketch"``               prompt set name or one template with ``{}``
loss                ``"ce"``                   ``ce`` or ``contrastive``
image_size          ``224``                    decoded cache side and network input (position embeddings resized)
lr                  ``1e-5``                   peak learning rate (every trained tower)
weight_decay        ``0.1``                    AdamW decoupled decay; norms, biases, logit scale exempt
epochs              ``5``                      fine-tuning epochs after the zero-shot epoch 0 (0: zero-shot only)
=================== ========================== ================================================================

The other keys (data, fold, k, folds_seed, group_pattern, batch_size, optimizer, momentum,
schedule, warmup_epochs, step_size, gamma, label_smoothing, seed, num_workers, amp, device,
tta_flip, aug.*) mean what they mean for the ``timm`` trainable (:mod:`trainables.config`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.metrics import classification_metrics
from trainables.augment import SampleTransform, build_mixer
from trainables.checkpoint import load_model_state, load_train_state, read_meta
from trainables.config import BASE_DEFAULTS, merge_config, validate_config
from trainables.engine import Batcher, predict_proba
from trainables.loader import CachedImages, make_loader
from trainables.optim import LRSchedule
from trainables.prompts import class_prompts, prompt_templates
from trainables.registry import register_trainable
from trainables.runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state
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
    "data", "fold", "k", "folds_seed", "group_pattern", "group_column", "pseudo_labels", "pretrained_path",
    "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "schedule",
    "warmup_epochs", "step_size", "gamma", "label_smoothing", "seed", "num_workers", "amp", "device",
    "tta_flip", "aug",
)  # fmt: skip

CLIP_DEFAULTS: dict[str, Any] = {
    **{k: copy.deepcopy(BASE_DEFAULTS[k]) for k in _SHARED_KEYS},
    "backbone": "ViT-B-32",
    "pretrained": "laion2b_s34b_b79k",
    "text_tower": "frozen",
    "prompts": "sketch",
    "loss": "ce",
    "image_size": 224,
    "lr": 1e-5,
    "weight_decay": 0.1,
    "epochs": 5,
}

TEXT_TOWERS = ("frozen", "trained")
LOSSES = ("ce", "contrastive")
# Keys that fix the network, its classifier and its input; predict refuses a config contradicting them.
_ARCH_KEYS = ("backbone", "image_size", "prompts", "text_tower", "aug.edge")
_TEXT_CHUNK = 1024  # prompts encoded per forward when building a classifier
_MAX_LOGIT_SCALE = 100.0  # CLIP's clamp of exp(logit_scale)

# Architectures open_clip does not ship, by name: (tiny) configs in open_clip's model-config format.
_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "test-clip": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    # The same text tower with a tiny ModifiedResNet image tower: a CNN learns the built-in set from
    # scratch in a few epochs at 32 px, where a ViT that small does not (tests that need learning).
    "test-clip-rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
}


def register_clip_config(name: str, config: Mapping[str, Any]) -> None:
    """Make an open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) usable as ``backbone=name``.

    Args:
        name: The name configs and spaces use.
        config: A dict in open_clip's ``model_configs/*.json`` format (a plain CLIP text tower).

    Raises:
        ValueError: The dict lacks one of the three sections.
    """
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ValueError(f"open_clip model config {name!r} lacks {missing}")
    _CLIP_CONFIGS[name] = copy.deepcopy(dict(config))


def clip_model_names() -> list[str]:
    """Architectures ``backbone`` accepts: open_clip's built-ins and the registered configs."""
    import open_clip

    return sorted(set(open_clip.list_models()) | set(_CLIP_CONFIGS))


def create_clip(
    model: str,
    pretrained: str | None = None,
    pretrained_path: str | Path | None = None,
    image_size: int = 224,
) -> tuple[nn.Module, Any]:
    """An open_clip model and its tokenizer, weights from the first source that applies.

    1. ``pretrained_path``: a local checkpoint (open_clip, OpenAI or a ``clip`` trainable dir).
    2. ``pretrained``: an open_clip tag (downloaded by open_clip; needs network or its cache).
    3. Random initialisation.

    Args:
        model: open_clip name, ``hf-hub:``/``local-dir:`` id, or a :func:`register_clip_config` name.
        pretrained: open_clip pretrained tag.
        pretrained_path: Local weights; wins over ``pretrained``.
        image_size: Input side; position embeddings of loaded weights are resized to it.

    Returns:
        ``(model, tokenizer)``; the model on CPU in fp32.

    Raises:
        ValueError: Unknown model or weights that do not fit it.
        RuntimeError: A pretrained tag could not be fetched (offline).
    """
    import open_clip
    from open_clip.transform import PreprocessCfg

    if model in _CLIP_CONFIGS:
        cfg = copy.deepcopy(_CLIP_CONFIGS[model])
        cfg["vision_cfg"]["image_size"] = int(image_size)
        clip = open_clip.CLIP(**cfg)
        open_clip.set_model_preprocess_cfg(clip, {**vars(PreprocessCfg()), "size": int(image_size)})
        tokenizer = open_clip.SimpleTokenizer(context_length=int(cfg["text_cfg"].get("context_length", 77)))
        if pretrained and not pretrained_path:
            raise ValueError(
                f"model {model!r} is a registered config without pretrained tags: use pretrained_path"
            )
    else:
        tag = None if pretrained_path else (pretrained or None)
        try:
            clip = open_clip.create_model(model, pretrained=tag, force_image_size=int(image_size))
        except RuntimeError as err:
            if tag is None:
                raise ValueError(f"cannot build open_clip model {model!r}: {err}") from err
            raise RuntimeError(
                f"could not get open_clip weights {model}/{tag} ({err}). Offline? Pass pretrained_path=<file> "
                f"(an open_clip or OpenAI checkpoint) or pretrained=null for random weights"
            ) from err
        tokenizer = open_clip.get_tokenizer(model)
    if pretrained_path:
        load_clip_file(clip, pretrained_path)
    return clip, tokenizer


def load_clip_file(clip: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint into an open_clip model, strictly (every tensor, every shape).

    Files go through open_clip's own loader (wrapped state dicts, OpenAI JIT archives,
    safetensors, position-embedding resizing); a ``clip`` trainable checkpoint dir gives its
    ``clip.*`` tensors.

    Raises:
        ValueError: The weights do not fit the model; the message says which.
    """
    import open_clip
    from open_clip.model import resize_pos_embed

    path = Path(path).expanduser()
    try:
        if path.is_dir():
            state = read_state_dict(path)
            if any(k.startswith("clip.") for k in state):
                state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
            resize_pos_embed(state, clip)
            clip.load_state_dict(state, strict=True)
        elif path.is_file():
            open_clip.load_checkpoint(clip, str(path), strict=True)
        else:
            raise FileNotFoundError(
                f"pretrained_path {path} not found: give a weights file or a checkpoint dir"
            )
    except RuntimeError as err:
        raise ValueError(f"weights at {path} do not fit this open_clip model: {err}") from err


class ClipClassifier(nn.Module):
    """An open_clip model whose classifier is its own text embeddings of the class prompts.

    ``classifier`` (a saved buffer) holds the evaluation classifier: per class, the renormalised
    mean of its prompts' unit text embeddings. ``forward`` (evaluation and ``loss=ce`` with a
    frozen text tower) reads it; training with a trained text tower encodes prompts afresh.

    Args:
        clip: The open_clip model.
        prompt_tokens: ``(C, T, L)`` token ids of T prompts per class, or None (prediction only).
        train_text: Whether the text tower trains (else it is locked).
    """

    def __init__(
        self, clip: nn.Module, prompt_tokens: torch.Tensor | None, num_classes: int, train_text: bool
    ) -> None:
        super().__init__()
        self.clip = clip
        self.train_text = train_text
        if not train_text:
            clip.lock_text_tower()
        self.register_buffer("prompt_tokens", prompt_tokens, persistent=False)
        dim = (
            int(clip.text_projection.shape[1])
            if hasattr(clip, "text_projection")
            else int(clip.visual.output_dim)
        )
        self.register_buffer("classifier", torch.zeros(num_classes, dim))

    def logit_scale(self) -> torch.Tensor:
        """``exp(logit_scale)``, clamped as CLIP does."""
        return self.clip.logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings of a normalised batch."""
        return self.clip.encode_image(x, normalize=True)

    def class_embeddings(
        self, classes: torch.Tensor | None = None, template: int | None = None
    ) -> torch.Tensor:
        """Unit text embeddings of ``classes`` (all if None) from one template, or all templates averaged."""
        tokens = self.prompt_tokens if classes is None else self.prompt_tokens[classes]
        n, t, length = tokens.shape
        if template is not None:
            return self.clip.encode_text(tokens[:, template], normalize=True)
        flat = tokens.reshape(n * t, length)
        parts = [
            self.clip.encode_text(flat[i : i + _TEXT_CHUNK], normalize=True)
            for i in range(0, len(flat), _TEXT_CHUNK)
        ]
        mean = torch.cat(parts).reshape(n, t, -1).float().mean(dim=1)
        return nn.functional.normalize(mean, dim=-1)

    @torch.no_grad()
    def refresh_classifier(self) -> None:
        """Recompute the evaluation classifier from every prompt of every class."""
        was_training = self.training
        self.eval()
        self.classifier.copy_(self.class_embeddings().to(self.classifier.dtype))
        self.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits against the stored classifier."""
        image = self.image_features(x)
        return self.logit_scale() * image.float() @ self.classifier.float().T


@dataclass
class _Trial:
    config: dict[str, Any]
    runtime: Runtime
    data: TrialData
    model: ClipClassifier
    batcher: Batcher


@register_trainable("clip")
class ClipTrainable:
    """Fine-tunes CLIP with its text embeddings as the classifier; see the module doc for the keys.

    Reports epoch 0 (zero-shot: ``train_loss``, ``lr`` and ``img_per_s`` NaN) and then every
    fine-tuning epoch, each with a checkpoint, so ``epochs=0`` is a valid zero-shot "fit".
    """

    name = "clip"

    def default_config(self) -> dict[str, Any]:
        """Every accepted key with its default (a fresh copy)."""
        return copy.deepcopy(CLIP_DEFAULTS)

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a complete config's values.

        Raises:
            ValueError: A value is out of range or not an allowed choice; the message names it.
        """
        epochs = config["epochs"]
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            raise ValueError(f"config epochs={epochs!r} must be an integer >= 0 (0: zero-shot only)")
        validate_config({**copy.deepcopy(BASE_DEFAULTS), **dict(config), "epochs": max(1, epochs)})
        name = str(config["backbone"])
        if not name.startswith(("hf-hub:", "local-dir:")) and name not in clip_model_names():
            import difflib

            close = difflib.get_close_matches(name, clip_model_names(), n=6, cutoff=0.5)
            raise ValueError(f"config backbone={name!r} is not an open_clip model; similar: {close}")
        if config["text_tower"] not in TEXT_TOWERS:
            raise ValueError(f"config text_tower={config['text_tower']!r} is not one of {list(TEXT_TOWERS)}")
        if config["loss"] not in LOSSES:
            raise ValueError(f"config loss={config['loss']!r} is not one of {list(LOSSES)}")
        prompt_templates(config["prompts"])
        aug = config["aug"]
        if config["loss"] == "contrastive" and (float(aug["cutmix"]) > 0 or float(aug["mixup"]) > 0):
            raise ValueError(
                "loss=contrastive pairs each image with its class text: set aug.cutmix=0 and aug.mixup=0"
            )

    def resolve(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults, then ``overrides`` (nested or dotted ``aug.*``), validated."""
        cfg = merge_config(self.default_config(), overrides)
        self.validate_config(cfg)
        return cfg

    def fit(self, config: dict[str, Any], session: Session) -> dict[str, Any]:
        """Report zero-shot scores (epoch 0), then fine-tune on one fold, resuming from the session's checkpoint.

        Args:
            config: Overrides of :meth:`default_config`.
            session: Receives metrics and a checkpoint for epoch 0 and after every epoch.

        Returns:
            The last epoch's metrics plus ``best_val_acc``, ``best_epoch`` (0: zero-shot was best),
            ``n_train``, ``n_dropped``.
        """
        trial = self._setup(self.resolve(config))
        cfg, model, data = trial.config, trial.model, trial.data
        label_smoothing = float(cfg["label_smoothing"])
        train_loader, sampler, val_loader = image_loaders(data, cfg, trial.runtime)
        optimizer = make_group_optimizer(cfg, [(model.clip, 1.0)])
        scheduler = LRSchedule(optimizer, cfg, len(train_loader))
        scaler = torch.amp.GradScaler(trial.runtime.device.type, enabled=trial.runtime.use_scaler)
        mixer = build_mixer(cfg["aug"], len(data.classes), label_smoothing)

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
        else:
            model.refresh_classifier()
            nan = float("nan")
            metrics = {
                "epoch": 0,
                **self._validate(trial, val_loader),
                "train_loss": nan,
                "lr": nan,
                "img_per_s": nan,
            }
            history.append(metrics)
            state = train_state(-1, 0, optimizer, scheduler, scaler, None, rng_state())
            report_epoch(session, model, state, self._meta(trial, history), metrics)

        loss_fn = self._loss(trial)
        for epoch in range(start_epoch, int(cfg["epochs"])):
            model.train()
            sampler.set_epoch(epoch)
            batches = device_batches(train_loader, trial.batcher, mixer, len(data.classes), label_smoothing)
            train = fit_epoch(batches, loss_fn, optimizer, scheduler, scaler, trial.batcher, num_updates)
            num_updates = int(train.pop("num_updates"))
            if model.train_text:
                model.refresh_classifier()
            val = self._validate(trial, val_loader)
            scheduler.step_epoch(epoch, train["train_loss"] if val_loader is None else val["val_loss"])
            metrics = {"epoch": epoch + 1, **val, **train}
            history.append(metrics)
            state = train_state(
                epoch, num_updates, optimizer, scheduler, scaler, sampler.state_dict(), rng_state()
            )
            report_epoch(session, model, state, self._meta(trial, history), metrics)
        return final_metrics(history, data.n_train, len(data.rows.dropped_duplicates))

    def predict(
        self,
        config: dict[str, Any] | None,
        checkpoint: str | Path,
        split: str = "test",
        rows: np.ndarray | None = None,
        tta_flip: bool | None = None,
    ) -> np.ndarray:
        """Class probabilities for rows of a split from a checkpoint written by :meth:`fit`.

        The classifier (text embeddings) is the checkpoint's: no text is encoded here.

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
        _, images, positions = split_images(cfg, meta["classes"], split, rows, checkpoint)
        clip, _ = create_clip(cfg["backbone"], None, None, int(cfg["image_size"]))
        model = ClipClassifier(clip, None, len(meta["classes"]), train_text=cfg["text_tower"] == "trained")
        model.load_state_dict(load_model_state(checkpoint))
        model.to(runtime.device).eval()
        dataset = CachedImages(
            images,
            positions,
            np.full(len(positions), -1),
            SampleTransform(cfg["aug"], cfg["image_size"], False),
        )
        loader = make_loader(dataset, 2 * int(cfg["batch_size"]), runtime)
        batcher = Batcher(runtime, meta["mean"], meta["std"], channels_last=False)
        flip = bool(cfg["tta_flip"]) if tta_flip is None else bool(tta_flip)
        return predict_proba(model, loader, batcher, tta_flip=flip).reshape(
            len(positions), len(meta["classes"])
        )

    def _setup(self, cfg: dict[str, Any]) -> _Trial:
        import open_clip

        runtime = resolve_runtime(cfg)
        seed_everything(int(cfg["seed"]))
        data = load_trial_data(cfg)
        clip, tokenizer = create_clip(
            cfg["backbone"], cfg["pretrained"], cfg["pretrained_path"], int(cfg["image_size"])
        )
        tokens = prompt_tokens(tokenizer, data.classes, prompt_templates(cfg["prompts"]))
        model = ClipClassifier(clip, tokens, len(data.classes), train_text=cfg["text_tower"] == "trained")
        preprocess = open_clip.get_model_preprocess_cfg(clip)
        model.to(runtime.device)
        batcher = Batcher(runtime, tuple(preprocess["mean"]), tuple(preprocess["std"]), channels_last=False)
        return _Trial(cfg, runtime, data, model, batcher)

    def _loss(self, trial: _Trial) -> Any:
        """The training loss ``(images, targets) -> scalar`` of the configured variant."""
        model, cfg = trial.model, trial.config
        label_smoothing = float(cfg["label_smoothing"])
        n_templates = int(model.prompt_tokens.shape[1])

        def text(classes: torch.Tensor | None) -> torch.Tensor:
            if not model.train_text:
                return model.classifier if classes is None else model.classifier[classes]
            # One template per step (drawn from the checkpointed global RNG): every class's text
            # gets a gradient without encoding C x T prompts per step.
            return model.class_embeddings(classes, template=int(np.random.randint(n_templates)))

        def ce(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = model.logit_scale() * model.image_features(x).float() @ text(None).float().T
            return soft_or_hard_ce(logits, y, label_smoothing)

        def contrastive(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            classes, owner = torch.unique(y, return_inverse=True)
            logits = model.logit_scale() * model.image_features(x).float() @ text(classes).float().T
            image_loss = nn.functional.cross_entropy(logits, owner, label_smoothing=label_smoothing)
            # Each class text's positives are all the batch's images of that class.
            positives = (owner[None, :] == torch.arange(len(classes), device=y.device)[:, None]).float()
            text_loss = soft_or_hard_ce(logits.T, positives / positives.sum(dim=1, keepdim=True), 0.0)
            return (image_loss + text_loss) / 2

        return ce if cfg["loss"] == "ce" else contrastive

    def _validate(self, trial: _Trial, loader: Any) -> dict[str, float]:
        if loader is None:
            return classification_metrics(np.zeros((0, len(trial.data.classes))), np.zeros(0, np.int64))
        probs = predict_proba(trial.model, loader, trial.batcher, tta_flip=bool(trial.config["tta_flip"]))
        return classification_metrics(probs, trial.data.rows.val_labels)

    def _meta(self, trial: _Trial, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "trainable": self.name,
            "config": trial.config,
            "classes": trial.data.classes,
            "templates": list(prompt_templates(trial.config["prompts"])),
            "mean": list(trial.batcher.mean),
            "std": list(trial.batcher.std),
            "data_fingerprint": str(trial.data.ds.fingerprint),
            "folds_hash": trial.data.folds_hash,
            "epoch": history[-1]["epoch"],
            "history": history,
        }


def prompt_tokens(tokenizer: Any, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """``(C, T, L)`` token ids of every template filled with every class name."""
    texts = [p for name in classes for p in class_prompts(tuple(templates), name)]
    tokens = tokenizer(texts)
    return tokens.reshape(len(classes), len(templates), -1)

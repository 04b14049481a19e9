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

The other keys (:data:`trainables.config.COMMON_DEFAULTS`) mean what they mean for the ``timm``
trainable (:mod:`trainables.config`). The network itself lives in :mod:`trainables.clip_model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from common.metrics import classification_metrics
from trainables.augment import build_mixer
from trainables.base import PredictRequest, TrainableBase
from trainables.checkpoint import load_model_state

# The network's names, importable from here as before.
from trainables.clip_model import (  # noqa: E402,F401
    ClipClassifier,
    clip_model_names,
    create_clip,
    load_clip_file,
    prompt_tokens,
    register_clip_config,
)
from trainables.config import COMMON_DEFAULTS
from trainables.driver import LoaderTrial, Trial
from trainables.engine import Batcher, predict_proba, soft_or_hard_ce
from trainables.prompts import prompt_templates
from trainables.registry import register_trainable
from trainables.runtime import Runtime
from trainables.trialkit import TrialData, image_loaders, image_predictions

CLIP_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
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


@dataclass
class _ClipTrial(LoaderTrial):
    """A CLIP fit: zero-shot epoch 0, then the image (and maybe text) tower against class texts."""

    model: ClipClassifier

    def parameter_groups(self) -> list[tuple[nn.Module, float]]:
        return [(self.model.clip, 1.0)]

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        smoothing = float(self.config["label_smoothing"])
        if self.config["loss"] == "ce":
            logits = (
                self.model.logit_scale()
                * self.model.image_features(inputs).float()
                @ self._text(None).float().T
            )
            return soft_or_hard_ce(logits, targets, smoothing)
        return self._contrastive(inputs, targets, smoothing)

    def _text(self, classes: torch.Tensor | None) -> torch.Tensor:
        model = self.model
        if not model.train_text:
            return model.classifier if classes is None else model.classifier[classes]
        # One template per step (drawn from the checkpointed global RNG): every class's text
        # gets a gradient without encoding C x T prompts per step.
        n_templates = int(model.prompt_tokens.shape[1])
        return model.class_embeddings(classes, template=int(np.random.randint(n_templates)))

    def _contrastive(self, x: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
        """CLIP's symmetric image-text loss over the classes in the batch."""
        classes, owner = torch.unique(y, return_inverse=True)
        logits = (
            self.model.logit_scale() * self.model.image_features(x).float() @ self._text(classes).float().T
        )
        image_loss = nn.functional.cross_entropy(logits, owner, label_smoothing=smoothing)
        # Each class text's positives are all the batch's images of that class.
        positives = (owner[None, :] == torch.arange(len(classes), device=y.device)[:, None]).float()
        text_loss = soft_or_hard_ce(logits.T, positives / positives.sum(dim=1, keepdim=True), 0.0)
        return (image_loss + text_loss) / 2

    def evaluate(self) -> dict[str, float]:
        if self.val_loader is None:
            return classification_metrics(np.zeros((0, len(self.data.classes))), np.zeros(0, np.int64))
        flip = bool(self.config["tta_flip"])
        probs = predict_proba(self.model, self.val_loader, self.batcher, tta_flip=flip)
        return classification_metrics(probs, self.data.rows.val_labels)

    def zero_shot(self) -> dict[str, float]:
        self.model.refresh_classifier()
        return self.evaluate()

    def after_epoch(self) -> None:
        if self.model.train_text:
            self.model.refresh_classifier()

    def meta(self) -> dict[str, Any]:
        return {"templates": list(prompt_templates(self.config["prompts"]))}


@register_trainable("clip")
class ClipTrainable(TrainableBase):
    """Fine-tunes CLIP with its text embeddings as the classifier; see the module doc for the keys.

    Reports epoch 0 (zero-shot: ``train_loss``, ``lr`` and ``img_per_s`` NaN) and then every
    fine-tuning epoch, each with a checkpoint, so ``epochs=0`` is a valid zero-shot "fit"
    (``best_epoch`` 0: zero-shot was best).
    """

    name = "clip"
    defaults = CLIP_DEFAULTS
    arch_keys = _ARCH_KEYS

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a complete config's values.

        Raises:
            ValueError: A value is out of range or not an allowed choice; the message names it.
        """
        epochs = config["epochs"]
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            raise ValueError(f"config epochs={epochs!r} must be an integer >= 0 (0: zero-shot only)")
        super().validate_config({**dict(config), "epochs": max(1, epochs)})
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

    def build(self, config: dict[str, Any], runtime: Runtime, data: TrialData) -> Trial:
        """The CLIP classifier over this dataset's class prompts, loaders and mixer."""
        import open_clip

        cfg = config
        clip, tokenizer = create_clip(
            cfg["backbone"], cfg["pretrained"], cfg["pretrained_path"], int(cfg["image_size"])
        )
        tokens = prompt_tokens(tokenizer, data.classes, prompt_templates(cfg["prompts"]))
        model = ClipClassifier(clip, tokens, len(data.classes), train_text=cfg["text_tower"] == "trained")
        preprocess = open_clip.get_model_preprocess_cfg(clip)
        model.to(runtime.device)
        batcher = Batcher(runtime, tuple(preprocess["mean"]), tuple(preprocess["std"]), channels_last=False)
        train_loader, sampler, val_loader = image_loaders(data, cfg, runtime)
        mixer = build_mixer(cfg["aug"], len(data.classes), float(cfg["label_smoothing"]))
        return _ClipTrial(
            cfg, runtime, data, model, batcher,
            train_loader=train_loader, sampler=sampler, val_loader=val_loader, mixer=mixer,
        )  # fmt: skip

    def predict_rows(self, request: PredictRequest) -> np.ndarray:
        """The checkpoint's classifier (its stored text embeddings: no text is encoded here) on the rows."""
        cfg, meta = request.config, request.meta
        clip, _ = create_clip(cfg["backbone"], None, None, int(cfg["image_size"]))
        model = ClipClassifier(clip, None, len(meta["classes"]), train_text=cfg["text_tower"] == "trained")
        model.load_state_dict(load_model_state(request.checkpoint))
        model.to(request.runtime.device).eval()
        batcher = Batcher(request.runtime, meta["mean"], meta["std"], channels_last=False)
        return image_predictions(model, request.images, request.positions, cfg, batcher, request.tta_flip)

"""The CLIP network of the ``clip`` trainable: open_clip models, local weights, the text-embedding classifier.

``test-clip`` and ``test-clip-rn`` are tiny registered architectures for tests
(:func:`register_clip_config` adds more).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.prompts import class_prompts
from trainables.weights import read_state_dict

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


def prompt_tokens(tokenizer: Any, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """``(C, T, L)`` token ids of every template filled with every class name."""
    texts = [p for name in classes for p in class_prompts(tuple(templates), name)]
    tokens = tokenizer(texts)
    return tokens.reshape(len(classes), len(templates), -1)

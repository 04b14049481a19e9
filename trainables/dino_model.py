"""The DINO network of the ``dino`` trainable: a timm backbone, partly or wholly frozen, and a head.

:func:`build_dino_model` builds it from a config; :func:`load_backbone_file` loads local weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.heads import Head, as_tokens, create_head
from trainables.models import create_model
from trainables.weights import read_state_dict


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


def build_dino_model(cfg: Mapping[str, Any], num_classes: int, load_pretrained: bool) -> DinoClassifier:
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

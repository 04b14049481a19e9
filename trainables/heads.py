"""Classifier heads over a backbone's token sequence: linear, MLP, attention pooling.

Every head splits into a parameter-free :meth:`Head.summarize` (tokens -> what the head reads:
a pooled vector for linear/MLP, the tokens themselves for attention pooling) and a learned
:meth:`Head.classify` (summary -> logits). The split is what lets a frozen backbone's summaries be
computed once and cached on disk (:mod:`trainables.features`): a head trial then trains
``classify`` on cached summaries without ever running the backbone.

Tokens are ``(B, N, D)`` with ``num_prefix`` leading class/register tokens (a ViT's
``forward_features`` output); a CNN feature map ``(B, D, H, W)`` is read as ``H*W`` tokens with
no prefix.
"""

from __future__ import annotations

import torch
from timm.layers import AttentionPoolLatent
from torch import nn

HEADS = ("linear", "mlp", "attention")
POOLS = ("cls_avg", "cls", "avg")


def as_tokens(features: torch.Tensor) -> torch.Tensor:
    """``(B, N, D)`` tokens from a ViT's ``(B, N, D)`` or a CNN's ``(B, D, H, W)`` features."""
    if features.ndim == 4:
        return features.flatten(2).transpose(1, 2)
    if features.ndim != 3:
        raise ValueError(
            f"expected (B, N, D) tokens or a (B, D, H, W) map, got shape {tuple(features.shape)}"
        )
    return features


def pool_tokens(tokens: torch.Tensor, num_prefix: int, pool: str) -> torch.Tensor:
    """Pool tokens to one vector per image.

    Args:
        tokens: ``(B, N, D)``.
        num_prefix: Leading class/register tokens (the first is the class token).
        pool: ``cls`` (class token), ``avg`` (mean of the patch tokens) or ``cls_avg`` (both,
            concatenated: DINO's linear-evaluation features).

    Returns:
        ``(B, D)`` or ``(B, 2D)`` for ``cls_avg``.
    """
    if pool in ("cls", "cls_avg") and num_prefix < 1:
        raise ValueError(
            f"pool={pool!r} needs a backbone with a class token; this one has none: use pool=avg"
        )
    patches = tokens[:, num_prefix:] if tokens.shape[1] > num_prefix else tokens
    if pool == "cls":
        return tokens[:, 0]
    if pool == "avg":
        return patches.mean(dim=1)
    if pool == "cls_avg":
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=1)
    raise ValueError(f"pool={pool!r} is not one of {list(POOLS)}")


class Head(nn.Module):
    """A classifier over tokens: ``forward(tokens) == classify(summarize(tokens))``.

    Attributes:
        needs_tokens: Whether :meth:`summarize` keeps the whole token sequence (attention) rather
            than a pooled vector.
    """

    needs_tokens = False

    def __init__(self, num_prefix: int) -> None:
        super().__init__()
        self.num_prefix = num_prefix

    def summarize(self, tokens: torch.Tensor) -> torch.Tensor:
        """What :meth:`classify` reads, computed without parameters (cacheable)."""
        raise NotImplementedError

    def classify(self, summary: torch.Tensor) -> torch.Tensor:
        """Logits from a summary."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` from tokens ``(B, N, D)``."""
        return self.classify(self.summarize(tokens))


class LinearHead(Head):
    """A linear classifier on pooled tokens (linear probing)."""

    def __init__(self, dim: int, num_classes: int, num_prefix: int, pool: str, drop: float = 0.0) -> None:
        super().__init__(num_prefix)
        self.pool = pool
        in_dim = 2 * dim if pool == "cls_avg" else dim
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def summarize(self, tokens: torch.Tensor) -> torch.Tensor:
        return pool_tokens(tokens, self.num_prefix, self.pool)

    def classify(self, summary: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(summary))


class MLPHead(LinearHead):
    """LayerNorm, one hidden GELU layer, dropout, linear: a small non-linear probe on pooled tokens."""

    def __init__(
        self, dim: int, num_classes: int, num_prefix: int, pool: str, hidden: int, drop: float = 0.0
    ) -> None:
        super().__init__(dim, num_classes, num_prefix, pool, drop)
        in_dim = 2 * dim if pool == "cls_avg" else dim
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(drop))
        self.fc = nn.Linear(hidden, num_classes)

    def classify(self, summary: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mlp(summary))


class AttentionHead(Head):
    """A learned query attending over every token (timm's ``AttentionPoolLatent``), then a linear layer."""

    needs_tokens = True

    def __init__(
        self, dim: int, num_classes: int, num_prefix: int, num_heads: int, drop: float = 0.0
    ) -> None:
        super().__init__(num_prefix)
        if dim % num_heads:
            raise ValueError(f"attn_heads={num_heads} must divide the backbone's width {dim}")
        self.pool = AttentionPoolLatent(dim, num_heads=num_heads, norm_layer=nn.LayerNorm, drop=drop)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes)

    def summarize(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def classify(self, summary: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.norm(self.pool(summary))))


def create_head(
    kind: str,
    dim: int,
    num_classes: int,
    *,
    num_prefix: int,
    pool: str = "cls_avg",
    hidden: int = 1024,
    num_heads: int = 8,
    drop: float = 0.0,
) -> Head:
    """Build a head by name.

    Args:
        kind: ``linear``, ``mlp`` or ``attention``.
        dim: Token width of the backbone.
        num_classes: Outputs.
        num_prefix: Class/register tokens at the start of the sequence.
        pool: Pooling of linear/MLP heads (see :func:`pool_tokens`).
        hidden: Hidden width of the MLP head.
        num_heads: Attention heads of the attention head.
        drop: Dropout before the classifier.

    Returns:
        The head, randomly initialised.

    Raises:
        ValueError: Unknown kind or pool, or a pool the backbone cannot give.
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {list(POOLS)}")
    if pool != "avg" and num_prefix < 1 and kind != "attention":
        raise ValueError(
            f"pool={pool!r} needs a backbone with a class token; this one has none: use pool=avg"
        )
    if kind == "linear":
        return LinearHead(dim, num_classes, num_prefix, pool, drop)
    if kind == "mlp":
        return MLPHead(dim, num_classes, num_prefix, pool, hidden, drop)
    if kind == "attention":
        return AttentionHead(dim, num_classes, num_prefix, num_heads, drop)
    raise ValueError(f"head={kind!r} is not one of {list(HEADS)}")

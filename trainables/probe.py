"""``head_init=probe``: start fine-tuning from a linear probe, not from a random head (LP-FT).

A pretrained backbone's new classifier starts random, so the first updates of a short fine-tune
push large, noisy gradients from a head that knows nothing back into features that already work
(Kumar et al., "Fine-Tuning can Distort Pretrained Features", ICLR 2022). Here the head starts as a
logistic regression on the pretrained network's pooled features of the fold's own training rows
(and their mirrors), fitted in a few seconds with L-BFGS; then the whole trainable network is
fine-tuned as before. On sketchy125 (Lite0, 192 px, 3 stages frozen, 6 epochs, fold 0) it scored
0.552 and 0.523 against 0.494 and 0.494 from a random head, with training seeds 0 and 1.

The pooled features depend only on the pretrained weights, the image size and the edge-map
preprocessing, so they are computed once per data set (both views, through
:func:`trainables.features.cached_features`) and read by every later trial and fold. Validation
rows are never read: the probe sees what the fold trains on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.augment import ORIGINAL, edge_map
from trainables.features import cached_features, weights_digest
from trainables.loader import normalize

log = logging.getLogger(__name__)

# L2 on the probe's weights (the mean loss's scale): a head that fits its rows but not to certainty
# (96.6% of sketchy125's training rows, weight norm 12) leaves the fine-tune gradients to learn
# from. 1e-3 (100%, norm 22) also helped on fold 0, by less: 0.543 and 0.512 against 0.552 and 0.523.
L2 = 1e-2
# L-BFGS iterations: a regularised logistic regression converges in well under this; the cap keeps a
# large data set's probe (rows x classes x feature width per iteration) to seconds, not minutes.
MAX_ITER = 100


def probes(cfg: Mapping[str, Any]) -> bool:
    """Whether a trial of this resolved ``timm`` config starts its head as a linear probe:
    ``head_init=probe``, or ``auto`` with the backbone's ``pretrained`` weights (a random network's
    features have nothing to probe; ``pretrained_path`` may bring a trained head, which is kept)."""
    mode = cfg.get("head_init", "auto")
    return mode == "probe" or (mode == "auto" and bool(cfg.get("pretrained")) and not cfg.get("pretrained_path"))


def init_head(model: nn.Module, data: Any, cfg: Mapping[str, Any], mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Set ``model``'s classifier to a linear probe fitted on the fold's training rows.

    Args:
        model: A timm classifier with its pretrained weights and a fresh head (any device).
        data: The trial's :class:`~trainables.trialkit.TrialData`.
        cfg: The resolved trial config (``image_size``, ``aug.edge``).
        mean: Input normalisation of the model.
        std: Input normalisation of the model.
    """
    start = time.perf_counter()
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        if cfg.get("head_init") == "probe":
            raise ValueError(
                f"head_init=probe needs a linear classifier; {type(model).__name__} has {type(head).__name__}: "
                "set trainable.head_init=auto or random"
            )
        log.info("head_init=auto: %s's classifier is not linear; it keeps timm's init", type(model).__name__)
        return
    features = pooled_features(model, data.ds, cfg, mean, std)
    rows = data.rows
    # The fold's own training images: not the copies that fill short classes (the flipped view
    # stands for them), pseudo-labelled test rows or object crops, which the split's cache lacks.
    own = (rows.train_kinds == ORIGINAL) & (rows.train_rows < len(data.ds.train))
    positions = rows.train_rows[own]
    x = torch.from_numpy(np.asarray(features[positions], np.float32).reshape(-1, features.shape[-1]))
    y = torch.from_numpy(np.repeat(np.asarray(rows.train_labels[own], np.int64), features.shape[1]))
    weight, bias = fit_probe(x, y, head.out_features)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
    log.info(
        "head_init=probe: linear probe on %d training rows (both views) in %.1fs", len(positions), time.perf_counter() - start
    )


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = L2) -> tuple[torch.Tensor, torch.Tensor]:
    """A multinomial logistic regression ``x @ weight.T + bias`` by L-BFGS, L2 on the weights.

    Returns:
        ``(weight (num_classes, D), bias (num_classes,))``.
    """
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(x @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach().T.contiguous(), bias.detach()


def pooled_features(
    model: nn.Module, ds: Any, cfg: Mapping[str, Any], mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """The train split's pooled features (the classifier's input) through ``model`` as it is now,
    ``(N, 2, D)``: each image and its mirror, cached on disk for every trial with the same weights."""
    device = next(model.parameters()).device

    @torch.inference_mode()
    def extract(images: np.ndarray) -> np.ndarray:
        training = model.training
        model.eval()
        x = normalize(torch.from_numpy(images).to(device).permute(0, 3, 1, 2), mean, std)
        out = model.forward_head(model.forward_features(x), pre_logits=True)
        model.train(training)
        return out.float().cpu().numpy()

    edge = bool(cfg["aug"]["edge"])
    # Every weight but the classifier's: a fresh head is random, and the probe replaces it.
    head = str(model.pretrained_cfg.get("classifier", "classifier")) + "."
    weights = weights_digest(model.state_dict(), skip=head)
    spec = {"kind": "pooled", "model": type(model).__name__, "weights": weights, "edge": edge}
    return cached_features(ds, "train", int(cfg["image_size"]), spec, extract, preprocess=edge_map if edge else None)

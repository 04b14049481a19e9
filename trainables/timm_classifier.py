"""The ``timm`` trainable: fine-tune any timm backbone on one fold of a dataset, and predict from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from common.metrics import classification_metrics
from trainables.augment import build_mixer
from trainables.base import PredictRequest, TrainableBase
from trainables.checkpoint import load_model_state
from trainables.config import BASE_DEFAULTS, factor_heads, uses_factors
from trainables.driver import LoaderTrial, Trial
from trainables.engine import Batcher, mixed_batches, predict_proba, soft_or_hard_ce
from trainables.factor_build import build_factorisation
from trainables.factors import Factorisation
from trainables.frozen import (
    EpochFeatures,
    FrozenSplit,
    cache_refusal,
    log_refusal,
    predicts_from_cache,
    test_predictions,
)
from trainables.models import create_model, normalization
from trainables.probe import init_head, probes
from trainables.registry import register_trainable
from trainables.runtime import Runtime
from trainables.trialkit import TrialData, image_loaders, image_predictions

# Keys that fix the network and its input; predict refuses a config that contradicts them.
_ARCH_KEYS = ("backbone", "image_size", "targets", "aug.edge", "freeze_stages")


@dataclass
class _TimmTrial(LoaderTrial):
    """A timm classifier's fit: one softmax over the classes, or one head per factor."""

    factors: Factorisation | None = None  # the network's factor heads
    decomposition: Factorisation | None = None  # the classes as factors, for per-factor metrics
    frozen: EpochFeatures | None = None  # training reads the frozen stages' outputs (trainables.frozen)

    def batches(self, epoch: int) -> Any:
        if self.frozen is None:
            return super().batches(epoch)
        self.sampler.set_epoch(epoch)
        loader = self.train_loader
        features = self.frozen.batches(
            list(self.sampler), loader.dataset.labels, int(loader.batch_size), bool(loader.drop_last), epoch
        )
        smoothing = float(self.config["label_smoothing"])
        return mixed_batches(features, self.mixer, len(self.data.classes), smoothing)

    def loss(self, inputs: torch.Tensor, targets: Any) -> torch.Tensor:
        logits = self.model(inputs) if self.frozen is None else self.frozen.split.rest(inputs)
        smoothing = float(self.config["label_smoothing"])
        if self.factors is not None:
            return self.factors.loss(logits, targets, smoothing)
        return soft_or_hard_ce(logits, targets, smoothing)

    def evaluate(self) -> dict[str, float]:
        if self.val_loader is None:
            probs, labels = np.zeros((0, len(self.data.classes))), np.zeros(0, np.int64)
        else:
            flip = bool(self.config["tta_flip"])
            probs = predict_proba(
                self.model, self.val_loader, self.batcher, tta_flip=flip, factors=self.factors
            )
            labels = self.data.rows.val_labels
        metrics = classification_metrics(probs, labels)
        if self.decomposition is not None:
            metrics.update(self.decomposition.metrics(probs, labels))
        return metrics

    def meta(self) -> dict[str, Any]:
        return {"factors": self.factors.to_meta()} if self.factors is not None else {}


@register_trainable("timm")
class TimmClassifier(TrainableBase):
    """Fine-tunes a timm backbone with the reference augmentations; see :mod:`trainables.config`.

    ``fit`` reports after every epoch: ``epoch`` (epochs completed), ``val_acc``, ``val_f1``,
    ``val_loss``, ``train_loss``, ``lr``, ``img_per_s`` (training images per second, loading
    included), with a checkpoint. With ``fold=-1`` the val metrics are NaN (no validation rows).

    With ``targets.factors`` (:mod:`trainables.factors`) the network has one head per factor and
    the loss sums theirs; the val metrics above are still on the classes (the heads recombined),
    so searches compare the two kinds of model directly, plus ``val_acc_<factor>`` per factor
    (also reported by a one-softmax model when ``targets.heads=classes``). ``predict`` returns
    class probabilities either way.
    """

    name = "timm"
    defaults = BASE_DEFAULTS
    arch_keys = _ARCH_KEYS

    def build(self, config: dict[str, Any], runtime: Runtime, data: TrialData) -> Trial:
        """The model (one head per factor with ``targets.factors``), loaders and mixer."""
        cfg = config
        factors, decomposition, train_labels = None, None, None
        if uses_factors(cfg):
            heads = factor_heads(cfg)
            targets = {**cfg["targets"], "fine": bool(cfg["targets"]["fine"]) and heads}
            decomposition, head_labels = build_factorisation(targets, data.ds.classes, data.ds.train)
            if heads:
                factors, train_labels = decomposition, _head_labels(decomposition, head_labels, data)
        model = create_model(
            cfg["backbone"],
            len(data.classes) if factors is None else factors.num_outputs,
            pretrained=bool(cfg["pretrained"]),
            pretrained_path=cfg["pretrained_path"],
            drop_rate=float(cfg["drop_rate"]),
            drop_path_rate=float(cfg["drop_path_rate"]),
            image_size=int(cfg["image_size"]),
            freeze_stages=int(cfg["freeze_stages"]),
        )
        mean, std = normalization(model)
        model.to(runtime.device, memory_format=torch.channels_last)
        if factors is None and probes(cfg):  # a head per factor keeps timm's init (validate_config)
            init_head(model, data, cfg, mean, std)
        train_loader, sampler, val_loader = image_loaders(data, cfg, runtime, train_labels)
        head_sizes = factors.head_sizes if factors is not None else None
        mixer = build_mixer(cfg["aug"], len(data.classes), float(cfg["label_smoothing"]), head_sizes)
        refusal = cache_refusal(cfg, model, runtime.device)
        log_refusal(cfg, refusal)
        frozen = None
        if refusal is None:
            frozen = EpochFeatures(data, cfg, FrozenSplit(model, int(cfg["freeze_stages"])), mean, std)
        return _TimmTrial(
            cfg, runtime, data, model, Batcher(runtime, mean, std),
            train_loader=train_loader, sampler=sampler, val_loader=val_loader, mixer=mixer,
            factors=factors, decomposition=decomposition, frozen=frozen,
        )  # fmt: skip

    def predict_rows(self, request: PredictRequest) -> np.ndarray:
        """The checkpoint's network (a multi-task one's heads recombined into the classes) on the rows."""
        cfg, meta = request.config, request.meta
        factors = Factorisation.from_meta(meta["factors"]) if meta.get("factors") else None
        outputs = factors.num_outputs if factors is not None else len(meta["classes"])
        model = create_model(
            cfg["backbone"], outputs, pretrained=False, image_size=cfg["image_size"],
            freeze_stages=int(cfg["freeze_stages"]),  # the frozen layout the checkpoint was saved in
        )  # fmt: skip
        model.load_state_dict(load_model_state(request.checkpoint))
        model.to(request.runtime.device, memory_format=torch.channels_last)
        # Every fold of every model predicts the test split: its frozen stages run once for all.
        if request.split == "test" and predicts_from_cache(cfg, model, request.runtime.device):
            split = FrozenSplit(model, int(cfg["freeze_stages"]))
            return test_predictions(
                split, request.ds, cfg, request.positions, meta["mean"], meta["std"], request.tta_flip, factors
            )
        batcher = Batcher(request.runtime, meta["mean"], meta["std"])
        return image_predictions(
            model, request.images, request.positions, cfg, batcher, request.tta_flip, factors
        )


def _head_labels(factors: Factorisation, train_head_labels: np.ndarray, data: TrialData) -> np.ndarray:
    """Each training row's per-head labels, rows balanced by class (``trial_rows``) included.

    A pseudo-labelled test row has a class only: its heads' labels are that class's factor values,
    which exist unless a head trains on finer bins read from a train.csv column.

    Raises:
        ValueError: Pseudo-labels with a head on finer bins.
    """
    rows, n_train_split = data.rows, len(data.ds.train)
    own = rows.train_rows < n_train_split
    if own.all():
        return train_head_labels[rows.train_rows]
    binned = [f.name for f in factors.factors if f.bins]
    if binned:
        raise ValueError(
            f"pseudo_labels cannot train the finer-bin head(s) {binned}: a test row's class says nothing "
            f"of its {binned[0]} bin; set targets.fine=false or targets.heads=classes, or drop pseudo_labels"
        )
    labels = np.empty((len(rows.train_rows), len(factors.factors)), dtype=np.int64)
    labels[own] = train_head_labels[rows.train_rows[own]]
    labels[~own] = factors.codes[rows.train_labels[~own]]
    return labels

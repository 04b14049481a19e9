"""The ``timm`` trainable: fine-tune any timm backbone on one fold of a dataset, and predict from it."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.metrics import classification_metrics
from trainables.augment import SampleTransform, build_mixer
from trainables.checkpoint import load_model_state, load_train_state, read_meta
from trainables.config import BASE_DEFAULTS, factor_heads, resolve_config, uses_factors
from trainables.engine import Batcher, predict_proba, train_one_epoch
from trainables.factors import Factorisation, build_factorisation
from trainables.loader import CachedImages, EpochSampler, make_loader
from trainables.models import create_model, normalization
from trainables.optim import LRSchedule, make_optimizer
from trainables.registry import register_trainable
from trainables.runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state
from trainables.session import Session
from trainables.trialkit import (
    TrialData,
    check_resumable,
    final_metrics,
    image_loaders,
    load_trial_data,
    predict_config,
    predict_elsewhere,
    report_epoch,
    split_images,
    train_state,
)

log = logging.getLogger(__name__)

# Keys that fix the network and its input; predict refuses a config that contradicts them.
_ARCH_KEYS = ("backbone", "image_size", "targets", "aug.edge")
# Keys newer than the checkpoint format, saved only when set: a flat checkpoint's config reads as
# before, for older code and for trainables that share the base keys but not these.
_SAVED_IF_SET = ("group_column", "targets", "pseudo_labels")


@dataclass
class _Trial:
    """Everything built for one fit before its first epoch."""

    config: dict[str, Any]
    runtime: Runtime
    data: TrialData
    model: nn.Module
    batcher: Batcher
    train_loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    val_loader: torch.utils.data.DataLoader | None
    factors: Factorisation | None = None  # the network's factor heads
    decomposition: Factorisation | None = None  # the classes as factors, for per-factor metrics


@register_trainable("timm")
class TimmClassifier:
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

    def default_config(self) -> dict[str, Any]:
        """Every accepted key with its default (a fresh copy)."""
        return copy.deepcopy(BASE_DEFAULTS)

    def fit(self, config: dict[str, Any], session: Session) -> dict[str, Any]:
        """Train one config on one fold, resuming from ``session.latest_checkpoint()`` if it has one.

        Args:
            config: Overrides of :meth:`default_config` (nested or dotted ``aug.*`` keys).
            session: Receives the metrics and a checkpoint directory after every epoch.

        Returns:
            The last epoch's metrics plus ``best_val_acc``, ``best_epoch``, ``n_train``, ``n_dropped``.
        """
        trial = self._setup(resolve_config(self.default_config(), config))
        cfg, model, data = trial.config, trial.model, trial.data
        optimizer = make_optimizer(model, cfg)
        scheduler = LRSchedule(optimizer, cfg, len(trial.train_loader))
        scaler = torch.amp.GradScaler(trial.runtime.device.type, enabled=trial.runtime.use_scaler)
        head_sizes = trial.factors.head_sizes if trial.factors is not None else None
        mixer = build_mixer(cfg["aug"], len(data.classes), float(cfg["label_smoothing"]), head_sizes)

        history: list[dict[str, Any]] = []
        start_epoch, num_updates = 0, 0
        resume_dir = session.latest_checkpoint()
        if resume_dir:
            meta = read_meta(resume_dir)
            check_resumable(meta, cfg, str(data.ds.fingerprint), data.folds_hash, BASE_DEFAULTS)
            model.load_state_dict(load_model_state(resume_dir))
            state = load_train_state(resume_dir)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            start_epoch, num_updates, history = state["epoch"] + 1, state["num_updates"], meta["history"]
            log.info("resuming %s from %s at epoch %d", cfg["backbone"], resume_dir, start_epoch + 1)

        for epoch in range(start_epoch, int(cfg["epochs"])):
            trial.sampler.set_epoch(epoch)
            train = train_one_epoch(
                model, trial.train_loader, optimizer, scheduler, scaler, trial.batcher,
                len(data.classes), float(cfg["label_smoothing"]), mixer, num_updates, trial.factors,
            )  # fmt: skip
            num_updates = int(train.pop("num_updates"))
            val = self._validate(trial)
            scheduler.step_epoch(epoch, train["train_loss"] if trial.val_loader is None else val["val_loss"])
            metrics = {"epoch": epoch + 1, **val, **train}
            history.append(metrics)
            state = train_state(
                epoch, num_updates, optimizer, scheduler, scaler, trial.sampler.state_dict(), rng_state()
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

        The network (backbone, image size, edge maps, classes) is the checkpoint's; ``config``
        may change only where the data lives and how to run (``data``, ``batch_size``,
        ``num_workers``, ``amp``, ``device``, ``tta_flip``); its other keys must match or be absent.

        Args:
            config: The fit's config, a subset of it, or None for the checkpoint's own.
            checkpoint: A checkpoint directory.
            split: ``"train"`` (e.g. a fold's validation rows, for out-of-fold predictions) or ``"test"``.
            rows: Positions in the split (train.csv / test.csv order); None for every row.
            tta_flip: Average with the horizontally flipped view; None takes the config's ``tta_flip``.

        Returns:
            ``(len(rows), C)`` float32 probabilities in the checkpoint's class order; rows sum to 1
            (a multi-task checkpoint's heads recombined into the classes). A checkpoint another
            trainable wrote (``meta.json``'s ``trainable``) is predicted by that trainable.

        Raises:
            ValueError: The config contradicts the checkpoint, or the dataset's classes differ.
        """
        meta = read_meta(checkpoint)
        other = predict_elsewhere(self.name, meta, config, checkpoint, split, rows, tta_flip)
        if other is not None:
            return other
        cfg = predict_config(self._resolve, meta, config or {}, _ARCH_KEYS)
        runtime = resolve_runtime(cfg)
        _, images, positions = split_images(cfg, meta["classes"], split, rows, checkpoint)
        factors = Factorisation.from_meta(meta["factors"]) if meta.get("factors") else None
        outputs = factors.num_outputs if factors is not None else len(meta["classes"])
        model = create_model(cfg["backbone"], outputs, pretrained=False, image_size=cfg["image_size"])
        model.load_state_dict(load_model_state(checkpoint))
        model.to(runtime.device, memory_format=torch.channels_last)
        dataset = CachedImages(
            images,
            positions,
            np.full(len(positions), -1),
            SampleTransform(cfg["aug"], cfg["image_size"], train=False),
        )
        loader = make_loader(dataset, 2 * int(cfg["batch_size"]), runtime)
        batcher = Batcher(runtime, meta["mean"], meta["std"])
        flip = bool(cfg["tta_flip"]) if tta_flip is None else bool(tta_flip)
        probs = predict_proba(model, loader, batcher, tta_flip=flip, factors=factors)
        return probs.reshape(len(positions), len(meta["classes"]))

    def _resolve(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        return resolve_config(self.default_config(), overrides)

    def _setup(self, cfg: dict[str, Any]) -> _Trial:
        runtime = resolve_runtime(cfg)
        seed_everything(int(cfg["seed"]))
        data = load_trial_data(cfg)
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
        )
        mean, std = normalization(model)
        model.to(runtime.device, memory_format=torch.channels_last)
        train_loader, sampler, val_loader = image_loaders(data, cfg, runtime, train_labels)
        return _Trial(
            config=cfg,
            runtime=runtime,
            data=data,
            model=model,
            batcher=Batcher(runtime, mean, std),
            train_loader=train_loader,
            sampler=sampler,
            val_loader=val_loader,
            factors=factors,
            decomposition=decomposition,
        )

    def _validate(self, trial: _Trial) -> dict[str, float]:
        if trial.val_loader is None:
            probs, labels = np.zeros((0, len(trial.data.classes))), np.zeros(0, np.int64)
        else:
            probs = predict_proba(
                trial.model,
                trial.val_loader,
                trial.batcher,
                tta_flip=bool(trial.config["tta_flip"]),
                factors=trial.factors,
            )
            labels = trial.data.rows.val_labels
        metrics = classification_metrics(probs, labels)
        if trial.decomposition is not None:
            metrics.update(trial.decomposition.metrics(probs, labels))
        return metrics

    def _meta(self, trial: _Trial, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "trainable": self.name,
            "config": _saved_config(trial.config),
            "classes": trial.data.classes,
            "mean": list(trial.batcher.mean),
            "std": list(trial.batcher.std),
            "data_fingerprint": str(trial.data.ds.fingerprint),
            "folds_hash": trial.data.folds_hash,
            "epoch": history[-1]["epoch"],
            "history": history,
            **({"factors": trial.factors.to_meta()} if trial.factors is not None else {}),
        }


def _saved_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as a checkpoint stores it: :data:`_SAVED_IF_SET` keys only when not at their default."""
    return {k: v for k, v in config.items() if k not in _SAVED_IF_SET or v != BASE_DEFAULTS[k]}


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

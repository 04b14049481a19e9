"""The ``timm`` trainable: fine-tune any timm backbone on one fold of a dataset, and predict from it."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.augment import SampleTransform, build_mixer
from trainables.checkpoint import (
    load_model_state,
    load_train_state,
    new_checkpoint_dir,
    read_meta,
    save_checkpoint,
)
from trainables.config import BASE_DEFAULTS, factor_heads, resolve_config, uses_factors
from trainables.engine import Batcher, classification_metrics, predict_proba, train_one_epoch
from trainables.factors import Factorisation, build_factorisation
from trainables.loader import CachedImages, EpochSampler, StackedImages, make_loader
from trainables.models import create_model, normalization
from trainables.optim import LRSchedule, make_optimizer
from trainables.registry import register_trainable
from trainables.runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state
from trainables.session import Session
from trainables.split import trial_rows, with_pseudo_labels

log = logging.getLogger(__name__)

# Keys that may differ between the run that wrote a checkpoint and the one reading it.
_RUNTIME_KEYS = ("data", "batch_size", "num_workers", "amp", "device", "tta_flip")
# Keys that fix the network and its input; predict refuses a config that contradicts them.
_ARCH_KEYS = ("backbone", "image_size", "targets")
# Keys newer than the checkpoint format, saved only when set: a flat checkpoint's config reads as
# before, for older code and for trainables that share the base keys but not these.
_SAVED_IF_SET = ("group_column", "targets", "pseudo_labels")


@dataclass
class _Trial:
    """Everything built for one fit before its first epoch."""

    config: dict[str, Any]
    runtime: Runtime
    model: nn.Module
    batcher: Batcher
    classes: list[str]
    fingerprint: str
    folds_hash: str
    train_loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    val_loader: torch.utils.data.DataLoader | None
    val_labels: np.ndarray
    n_train: int
    n_dropped: int
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
        cfg, model = trial.config, trial.model
        optimizer = make_optimizer(model, cfg)
        scheduler = LRSchedule(optimizer, cfg, len(trial.train_loader))
        scaler = torch.amp.GradScaler(trial.runtime.device.type, enabled=trial.runtime.use_scaler)
        head_sizes = trial.factors.head_sizes if trial.factors is not None else None
        mixer = build_mixer(cfg["aug"], len(trial.classes), float(cfg["label_smoothing"]), head_sizes)

        history: list[dict[str, Any]] = []
        start_epoch, num_updates = 0, 0
        resume_dir = session.latest_checkpoint()
        if resume_dir:
            meta = read_meta(resume_dir)
            _check_resumable(meta, trial)
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
                len(trial.classes), float(cfg["label_smoothing"]), mixer, num_updates, trial.factors,
            )  # fmt: skip
            num_updates = int(train.pop("num_updates"))
            val = self._validate(trial)
            scheduler.step_epoch(epoch, train["train_loss"] if trial.val_loader is None else val["val_loss"])
            metrics = {"epoch": epoch + 1, **val, **train}
            history.append(metrics)
            train_state = {
                "epoch": epoch,
                "num_updates": num_updates,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "sampler": trial.sampler.state_dict(),
                "rng": rng_state(),
            }
            ckpt = new_checkpoint_dir(getattr(session, "scratch_dir", None))
            save_checkpoint(ckpt, model, train_state, self._meta(trial, history))
            session.report(metrics, checkpoint_dir=str(ckpt))
        return _final(history, trial)

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
            (a multi-task checkpoint's heads recombined into the classes).

        Raises:
            ValueError: The config contradicts the checkpoint, or the dataset's classes differ.
        """
        from trainables.data import decoded_images, load_dataset

        meta = read_meta(checkpoint)
        cfg = _predict_config(self.default_config(), meta, config or {})
        runtime = resolve_runtime(cfg)
        ds = load_dataset(cfg["data"])
        if list(ds.classes) != list(meta["classes"]):
            raise ValueError(
                f"dataset {cfg['data']!r} has {len(ds.classes)} classes, not the {len(meta['classes'])} "
                f"the checkpoint {checkpoint} was trained on (or in another order)"
            )
        images = decoded_images(ds, split, size=int(cfg["image_size"]))
        positions = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(images)):
            raise ValueError(f"rows out of range for the {split} split of {len(images)} rows")
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

    def _setup(self, cfg: dict[str, Any]) -> _Trial:
        from trainables.data import decoded_images, folds_for, load_dataset

        runtime = resolve_runtime(cfg)
        seed_everything(int(cfg["seed"]))
        ds = load_dataset(cfg["data"])
        folds = folds_for(
            ds,
            k=int(cfg["k"]),
            seed=int(cfg["folds_seed"]),
            group_pattern=cfg["group_pattern"],
            group_column=cfg["group_column"],
        )
        rows = trial_rows(cfg, folds)
        factors, decomposition, head_labels = None, None, None
        if uses_factors(cfg):
            heads = factor_heads(cfg)
            targets = {**cfg["targets"], "fine": bool(cfg["targets"]["fine"]) and heads}
            decomposition, head_labels = build_factorisation(targets, ds.classes, ds.train)
            factors = decomposition if heads else None
        size = int(cfg["image_size"])
        images = decoded_images(ds, "train", size=size)
        if cfg["pseudo_labels"]:
            if factors is not None:
                raise ValueError(
                    "pseudo_labels with factor heads is not supported; use targets.heads=classes"
                )
            rows = with_pseudo_labels(cfg, ds, rows)
            images = StackedImages([images, decoded_images(ds, "test", size=size)])
        # Rows are balanced by class (trial_rows); with factor heads each carries its own head labels.
        train_labels = rows.train_labels if factors is None else head_labels[rows.train_rows]
        model = create_model(
            cfg["backbone"],
            len(ds.classes) if factors is None else factors.num_outputs,
            pretrained=bool(cfg["pretrained"]),
            pretrained_path=cfg["pretrained_path"],
            drop_rate=float(cfg["drop_rate"]),
            drop_path_rate=float(cfg["drop_path_rate"]),
            image_size=size,
        )
        mean, std = normalization(model)
        model.to(runtime.device, memory_format=torch.channels_last)
        train_set = CachedImages(
            images, rows.train_rows, train_labels, SampleTransform(cfg["aug"], size, train=True),
            rows.train_kinds, seed=int(cfg["seed"]),
        )  # fmt: skip
        sampler = EpochSampler(len(train_set), seed=int(cfg["seed"]))
        batch = int(cfg["batch_size"])
        # Full batches only (BatchNorm cannot train on a batch of one), unless there are too few rows.
        train_loader = make_loader(train_set, batch, runtime, sampler, drop_last=len(train_set) > batch)
        val_loader = None
        if len(rows.val_rows):
            val_set = CachedImages(
                images, rows.val_rows, rows.val_labels, SampleTransform(cfg["aug"], size, train=False)
            )
            val_loader = make_loader(val_set, 2 * batch, runtime)
        return _Trial(
            config=cfg,
            runtime=runtime,
            model=model,
            batcher=Batcher(runtime, mean, std),
            classes=list(ds.classes),
            fingerprint=str(ds.fingerprint),
            folds_hash=str(folds.attrs.get("hash", "")),
            train_loader=train_loader,
            sampler=sampler,
            val_loader=val_loader,
            val_labels=rows.val_labels,
            n_train=int((rows.train_kinds == 0).sum()),
            n_dropped=len(rows.dropped_duplicates),
            factors=factors,
            decomposition=decomposition,
        )

    def _validate(self, trial: _Trial) -> dict[str, float]:
        if trial.val_loader is None:
            probs, labels = np.zeros((0, len(trial.classes))), np.zeros(0, np.int64)
        else:
            probs = predict_proba(
                trial.model,
                trial.val_loader,
                trial.batcher,
                tta_flip=bool(trial.config["tta_flip"]),
                factors=trial.factors,
            )
            labels = trial.val_labels
        metrics = classification_metrics(probs, labels)
        if trial.decomposition is not None:
            metrics.update(trial.decomposition.metrics(probs, labels))
        return metrics

    def _meta(self, trial: _Trial, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "trainable": self.name,
            "config": _saved_config(trial.config),
            "classes": trial.classes,
            "mean": list(trial.batcher.mean),
            "std": list(trial.batcher.std),
            "data_fingerprint": trial.fingerprint,
            "folds_hash": trial.folds_hash,
            "epoch": history[-1]["epoch"],
            "history": history,
            **({"factors": trial.factors.to_meta()} if trial.factors is not None else {}),
        }


def _saved_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as a checkpoint stores it: :data:`_SAVED_IF_SET` keys only when not at their default."""
    return {k: v for k, v in config.items() if k not in _SAVED_IF_SET or v != BASE_DEFAULTS[k]}


def _check_resumable(meta: dict[str, Any], trial: _Trial) -> None:
    """Refuse to resume a checkpoint of another config, dataset or fold split.

    Runtime keys (``_RUNTIME_KEYS``) may change, and so may ``epochs`` (the saved schedule then
    goes on as it was built).
    """
    cfg, saved = trial.config, meta.get("config", {})
    # A key newer than the checkpoint had its default value there.
    old = {k: saved[k] if k in saved else BASE_DEFAULTS.get(k) for k in cfg}
    changed = sorted(k for k in cfg if k not in _RUNTIME_KEYS and k != "epochs" and old[k] != cfg[k])
    if changed:
        raise ValueError(
            f"cannot resume: the checkpoint was trained with other values of {changed} "
            f"(e.g. {changed[0]}={old.get(changed[0])!r}, now {cfg[changed[0]]!r}); use a new output directory"
        )
    for key, now in (("data_fingerprint", trial.fingerprint), ("folds_hash", trial.folds_hash)):
        if meta.get(key) and meta[key] != now:
            raise ValueError(
                f"cannot resume: the checkpoint's {key} {meta[key]} differs from this run's {now}"
            )


def _predict_config(defaults: dict[str, Any], meta: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    base = resolve_config(defaults, meta["config"])
    asked = resolve_config(base, config)  # validates the caller's keys too
    for key in _ARCH_KEYS:
        if asked[key] != base[key]:
            raise ValueError(f"config {key}={asked[key]!r} but the checkpoint was trained with {base[key]!r}")
    if asked["aug"]["edge"] != base["aug"]["edge"]:
        raise ValueError(
            f"config aug.edge={asked['aug']['edge']} but the checkpoint was trained with {base['aug']['edge']}"
        )
    return {**base, **{k: asked[k] for k in _RUNTIME_KEYS}}


def _final(history: list[dict[str, Any]], trial: _Trial) -> dict[str, Any]:
    if not history:
        return {"epoch": 0, "n_train": trial.n_train, "n_dropped": trial.n_dropped}
    accs = [h["val_acc"] for h in history]
    best = int(np.nanargmax(accs)) if not np.all(np.isnan(accs)) else len(history) - 1
    return {
        **history[-1],
        "best_val_acc": float(accs[best]),
        "best_epoch": int(history[best]["epoch"]),
        "n_train": trial.n_train,
        "n_dropped": trial.n_dropped,
    }

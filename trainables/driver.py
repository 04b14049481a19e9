"""The one training driver: epochs, AMP, resume, reporting and checkpoints for every trainable.

A trainable builds a :class:`Trial` (its model, parameter groups, loss, batches and validation);
:func:`train` runs it. Everything subtle about a fit lives here once: the optimizer and the
schedule (:mod:`trainables.optim`), the GradScaler, a checkpoint per epoch holding what an exact
resume needs (optimizer, scheduler, scaler, the global RNG states, the sampler's epoch), the checks
that a checkpoint belongs to this config, dataset and fold split, and the metrics reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from trainables.checkpoint import (
    load_model_state,
    load_train_state,
    new_checkpoint_dir,
    read_meta,
    save_checkpoint,
)
from trainables.config import saved_config
from trainables.engine import Batcher, device_batches, run_epoch
from trainables.loader import EpochSampler
from trainables.optim import LRSchedule, make_optimizer
from trainables.runtime import Runtime, rng_state, set_rng_state
from trainables.session import Session
from trainables.trialkit import RUNTIME_KEYS, TrialData

log = logging.getLogger(__name__)


@dataclass
class Trial:
    """What one trainable supplies for one fit; subclasses override the hooks below.

    Attributes:
        config: The resolved config.
        runtime: Device, precision, workers.
        data: The fold's rows and images.
        model: The network, on the device.
        batcher: Device transfer, normalisation and autocast.
    """

    config: dict[str, Any]
    runtime: Runtime
    data: TrialData
    model: nn.Module
    batcher: Batcher

    def parameter_groups(self) -> list[tuple[nn.Module, float]]:
        """``(module, lr_scale)`` pairs the optimizer trains (frozen parameters are left out)."""
        return [(self.model, 1.0)]

    def updates_per_epoch(self) -> int:
        """Optimizer updates in one epoch (the schedule's unit)."""
        raise NotImplementedError

    def batches(self, epoch: int) -> Iterable[tuple[Any, Any]]:
        """The epoch's ``(inputs, targets)`` on the device, seeded by ``epoch``."""
        raise NotImplementedError

    def loss(self, inputs: Any, targets: Any) -> torch.Tensor:
        """The training loss of one batch (run under autocast)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (``val_acc``, ``val_f1``, ``val_loss``, ...; NaN without validation rows)."""
        raise NotImplementedError

    def sampler_state(self, epoch: int) -> dict[str, int]:
        """What the data order of 0-based ``epoch`` was drawn from (saved in the checkpoint)."""
        return {"seed": int(self.config["seed"]), "epoch": epoch}

    def meta(self) -> dict[str, Any]:
        """Keys this trainable adds to ``meta.json`` (what its ``predict`` needs)."""
        return {}

    def zero_shot(self) -> dict[str, float] | None:
        """Validation metrics before any training, reported as epoch 0; None to report none."""
        return None

    def after_epoch(self) -> None:
        """Called after each epoch's updates, before validation."""


@dataclass
class LoaderTrial(Trial):
    """A trial that trains from ``trialkit.image_loaders``: one sampler-seeded pass over the loader
    per epoch, mixed (CutMix/MixUp) and label-smoothed on the device. The timm, CLIP and DINO
    trials share it; each adds its model's loss and validation.
    """

    train_loader: torch.utils.data.DataLoader | None = None
    sampler: EpochSampler | None = None
    val_loader: torch.utils.data.DataLoader | None = None
    mixer: Any = None

    def updates_per_epoch(self) -> int:
        return len(self.train_loader)

    def batches(self, epoch: int) -> Iterable[tuple[Any, Any]]:
        self.sampler.set_epoch(epoch)
        smoothing = float(self.config["label_smoothing"])
        return device_batches(self.train_loader, self.batcher, self.mixer, len(self.data.classes), smoothing)


@dataclass
class _Optimisation:
    optimizer: Optimizer
    scheduler: LRSchedule
    scaler: torch.amp.GradScaler

    def state(self, epoch: int, num_updates: int, sampler: Mapping[str, int] | None) -> dict[str, Any]:
        """What ``train_state.pt`` holds (the layout of ``trainables.checkpoint``)."""
        return {
            "epoch": epoch,
            "num_updates": num_updates,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": dict(sampler or {}),
            "rng": rng_state(),
        }


def train(trial: Trial, session: Session, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Fit ``trial`` for ``config["epochs"]``, resuming from ``session.latest_checkpoint()`` if it has one.

    Args:
        trial: The trainable's parts.
        session: Receives the metrics and a checkpoint after every epoch.
        name: The trainable's registered name (``meta.json``'s ``trainable``).
        defaults: The trainable's default config (what a key absent from an older checkpoint meant).

    Returns:
        The last epoch's metrics plus ``best_val_acc``, ``best_epoch``, ``n_train``, ``n_dropped``
        and ``resumed_from_epoch`` (the checkpoint's epoch this fit continued from; 0: from scratch).
    """
    cfg = trial.config
    optimizer = make_optimizer(cfg, trial.parameter_groups())
    opt = _Optimisation(
        optimizer,
        LRSchedule(optimizer, cfg, trial.updates_per_epoch()),
        torch.amp.GradScaler(trial.runtime.device.type, enabled=trial.runtime.use_scaler),
    )
    history: list[dict[str, Any]] = []
    start_epoch, num_updates = 0, 0
    resume_dir = session.latest_checkpoint()
    if resume_dir:
        start_epoch, num_updates, history = _resume(resume_dir, trial, opt, defaults)
    elif (zero := trial.zero_shot()) is not None:
        nan = float("nan")
        history.append({"epoch": 0, **zero, "train_loss": nan, "lr": nan, "img_per_s": nan})
        _report(session, trial, name, defaults, history, opt.state(-1, 0, None))
    n_val = len(trial.data.rows.val_rows)
    has_val = n_val > 0
    last = int(cfg["epochs"]) - 1
    # A session may want only the last epoch validated (a fold fit, scored by its predictions);
    # ``plateau`` decays on the validation loss, so it validates every epoch whatever is asked.
    every = getattr(session, "validate_every_epoch", True) or cfg.get("schedule") == "plateau"
    for epoch in range(start_epoch, int(cfg["epochs"])):
        trial.model.train()
        fit = run_epoch(
            trial.batches(epoch),
            trial.loss,
            opt.optimizer,
            opt.scheduler,
            opt.scaler,
            trial.batcher,
            num_updates,
            _progress(session, epoch + 1, trial.updates_per_epoch()),
        )
        num_updates = int(fit.pop("num_updates"))
        trial.after_epoch()
        validated = has_val and (every or epoch == last)
        val = trial.evaluate() if validated or not has_val else {}
        opt.scheduler.step_epoch(epoch, val["val_loss"] if validated else fit["train_loss"])
        # n_val: how many rows the score rests on (the search's scheduler weighs differences by it)
        history.append({"epoch": epoch + 1, **val, **fit, **({"n_val": n_val} if validated else {})})
        _report(
            session, trial, name, defaults, history, opt.state(epoch, num_updates, trial.sampler_state(epoch))
        )
    final = final_metrics(history, trial.data.n_train, len(trial.data.rows.dropped_duplicates))
    return {**final, "resumed_from_epoch": start_epoch}


def _progress(session: Session, epoch: int, updates: int) -> Callable[[int], None] | None:
    """The session's progress callback for this epoch, when it shows progress inside epochs."""
    show = getattr(session, "progress", None)
    return None if show is None else lambda done: show(epoch, done, updates)


def _resume(
    directory: str, trial: Trial, opt: _Optimisation, defaults: Mapping[str, Any]
) -> tuple[int, int, list[dict[str, Any]]]:
    """Restore weights, optimizer, scheduler, scaler and RNG; the next epoch, updates so far, history."""
    meta = read_meta(directory)
    data = trial.data
    check_resumable(meta, trial.config, str(data.ds.fingerprint), data.folds_hash, defaults)
    trial.model.load_state_dict(load_model_state(directory))
    state = load_train_state(directory)
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    opt.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log.info("resuming %s from %s at epoch %d", trial.config.get("backbone"), directory, state["epoch"] + 2)
    return int(state["epoch"]) + 1, int(state["num_updates"]), list(meta["history"])


def _report(
    session: Session,
    trial: Trial,
    name: str,
    defaults: Mapping[str, Any],
    history: list[dict[str, Any]],
    state: dict[str, Any],
) -> None:
    """Write this epoch's checkpoint and report it with the epoch's metrics."""
    data, batcher = trial.data, trial.batcher
    meta = {
        "trainable": name,
        "config": saved_config(trial.config, defaults),
        "classes": data.classes,
        "mean": list(batcher.mean),
        "std": list(batcher.std),
        "data_fingerprint": str(data.ds.fingerprint),
        "folds_hash": data.folds_hash,
        **trial.meta(),
        "epoch": history[-1]["epoch"],
        "history": history,
    }
    ckpt = new_checkpoint_dir(getattr(session, "scratch_dir", None))
    save_checkpoint(ckpt, trial.model, state, meta)
    session.report(history[-1], checkpoint_dir=str(ckpt))


def check_resumable(
    meta: Mapping[str, Any],
    cfg: Mapping[str, Any],
    fingerprint: str,
    folds_hash: str,
    defaults: Mapping[str, Any],
) -> None:
    """Refuse to resume a checkpoint of another config, dataset or fold split.

    Runtime keys (:data:`~trainables.trialkit.RUNTIME_KEYS`) and ``epochs`` may change. A key
    newer than the checkpoint (absent from its config) had its value in ``defaults`` there.

    Raises:
        ValueError: What differs, and what to do.
    """
    saved = meta.get("config", {})
    old = {k: saved[k] if k in saved else defaults.get(k) for k in cfg}
    changed = sorted(k for k in cfg if k not in RUNTIME_KEYS and k != "epochs" and old[k] != cfg[k])
    if changed:
        raise ValueError(
            f"cannot resume: the checkpoint was trained with other values of {changed} "
            f"(e.g. {changed[0]}={old[changed[0]]!r}, now {cfg[changed[0]]!r}); use a new output directory"
        )
    for key, now in (("data_fingerprint", fingerprint), ("folds_hash", folds_hash)):
        if meta.get(key) and meta[key] != now:
            raise ValueError(
                f"cannot resume: the checkpoint's {key} {meta[key]} differs from this run's {now}"
            )


def final_metrics(history: list[dict[str, Any]], n_train: int, n_dropped: int) -> dict[str, Any]:
    """The last epoch's metrics plus ``best_val_acc``, ``best_epoch``, ``n_train``, ``n_dropped``."""
    if not history:
        return {"epoch": 0, "n_train": n_train, "n_dropped": n_dropped}
    accs = [h.get("val_acc", math.nan) for h in history]  # an epoch left unvalidated has none
    best = int(np.nanargmax(accs)) if not np.all(np.isnan(accs)) else len(history) - 1
    return {
        **history[-1],
        "best_val_acc": float(accs[best]),
        "best_epoch": int(history[best]["epoch"]),
        "n_train": n_train,
        "n_dropped": n_dropped,
    }

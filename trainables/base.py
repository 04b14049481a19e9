"""The base every trainable derives from: the :class:`~trainables.registry.Trainable` protocol, once.

A trainable says what is its own: its defaults and their checks (:meth:`TrainableBase.validate_config`),
the parts of a fit (:meth:`TrainableBase.build`, a :class:`~trainables.driver.Trial`) and how a
checkpoint turns into probabilities (:meth:`TrainableBase.predict_rows`). Config resolution,
the training driver, and predict's checks (another trainable's checkpoint, a contradicting config,
the dataset's classes) are here and in :mod:`trainables.driver`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trainables.checkpoint import read_meta
from trainables.config import resolve_config, validate_config
from trainables.driver import Trial, train
from trainables.runtime import Runtime, resolve_runtime, seed_everything
from trainables.session import Session
from trainables.trialkit import TrialData, load_trial_data, predict_config, predict_elsewhere, split_images


@dataclass
class PredictRequest:
    """One ``predict`` call, checked: the config to use and the rows to score.

    Attributes:
        config: The checkpoint's config with the caller's runtime keys.
        meta: The checkpoint's ``meta.json``.
        checkpoint: The checkpoint directory.
        runtime: Device and precision.
        ds: The dataset.
        split: ``"train"`` or ``"test"``.
        images: The split's decoded images.
        positions: Rows of the split to score.
        tta_flip: Whether to average with the mirrored view.
    """

    config: dict[str, Any]
    meta: dict[str, Any]
    checkpoint: Path
    runtime: Runtime
    ds: Any
    split: str
    images: np.ndarray
    positions: np.ndarray
    tta_flip: bool


class TrainableBase:
    """Config, fit and predict of a trainable; subclasses set the class attributes and two hooks.

    Attributes:
        name: The registered name (``meta.json``'s ``trainable``).
        defaults: Every accepted key with its default.
        arch_keys: Keys (dotted for ``aug.*``) that fix the network; predict refuses a config
            contradicting the checkpoint on them.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    arch_keys: ClassVar[tuple[str, ...]]

    def default_config(self) -> dict[str, Any]:
        """Every accepted key with its default (a fresh copy)."""
        return copy.deepcopy(self.defaults)

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a complete config's values (the shared keys here; subclasses add their own).

        Raises:
            ValueError: A value is out of range or not an allowed choice; the message names it.
        """
        validate_config(config)

    def resolve(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults, then ``overrides`` (nested or dotted ``aug.*``), validated.

        Raises:
            ValueError: An unknown key (the message lists the valid ones) or an invalid value.
        """
        return resolve_config(self.default_config(), overrides, self.validate_config)

    def fit(self, config: dict[str, Any], session: Session) -> dict[str, Any]:
        """Train one config on one fold, resuming from ``session.latest_checkpoint()`` if it has one.

        Args:
            config: Overrides of :meth:`default_config` (nested or dotted ``aug.*`` keys).
            session: Receives the metrics and a checkpoint directory after every epoch.

        Returns:
            The last epoch's metrics plus ``best_val_acc``, ``best_epoch``, ``n_train``, ``n_dropped``
            and ``resumed_from_epoch`` (0 unless it continued from a checkpoint).
        """
        cfg = self.resolve(config)
        runtime = resolve_runtime(cfg)
        seed_everything(int(cfg["seed"]))
        trial = self.build(cfg, runtime, load_trial_data(cfg))
        return train(trial, session, self.name, self.defaults)

    def build(self, config: dict[str, Any], runtime: Runtime, data: TrialData) -> Trial:
        """The parts of one fit: model on the device, loss, batches, validation."""
        raise NotImplementedError

    def predict(
        self,
        config: dict[str, Any] | None,
        checkpoint: str | Path,
        split: str = "test",
        rows: np.ndarray | None = None,
        tta_flip: bool | None = None,
    ) -> np.ndarray:
        """Class probabilities for rows of a split from a checkpoint written by :meth:`fit`.

        The network is the checkpoint's; ``config`` may change only where the data lives and
        how to run (``data``, ``batch_size``, ``num_workers``, ``amp``, ``device``,
        ``tta_flip``); its other keys must match the checkpoint's or be absent.

        Args:
            config: The fit's config, a subset of it, or None for the checkpoint's own.
            checkpoint: A checkpoint directory.
            split: ``"train"`` (e.g. a fold's validation rows, for out-of-fold predictions) or ``"test"``.
            rows: Positions in the split (train.csv / test.csv order); None for every row.
            tta_flip: Average with the horizontally flipped view; None takes the config's ``tta_flip``.

        Returns:
            ``(len(rows), C)`` float32 probabilities in the checkpoint's class order; rows sum to 1.
            A checkpoint another trainable wrote (``meta.json``'s ``trainable``) is predicted by
            that trainable.

        Raises:
            ValueError: The config contradicts the checkpoint, or the dataset's classes differ.
        """
        meta = read_meta(checkpoint)
        other = predict_elsewhere(self.name, meta, config, checkpoint, split, rows, tta_flip)
        if other is not None:
            return other
        cfg = predict_config(self.resolve, meta, config or {}, self.arch_keys)
        ds, images, positions = split_images(cfg, meta["classes"], split, rows, checkpoint)
        flip = bool(cfg["tta_flip"]) if tta_flip is None else bool(tta_flip)
        request = PredictRequest(
            cfg, meta, Path(checkpoint), resolve_runtime(cfg), ds, split, images, positions, flip
        )
        return self.predict_rows(request).reshape(len(positions), len(meta["classes"]))

    def predict_rows(self, request: PredictRequest) -> np.ndarray:
        """``(len(positions), C)`` probabilities of a checked request."""
        raise NotImplementedError

"""Checkpoint directories: everything to resume a trial at the next epoch, and to predict from it.

Layout of one directory:

* ``model.pt``: the model's state dict only (what ``predict`` and ``pretrained_path`` read).
* ``train_state.pt``: optimizer, scheduler, GradScaler, the epoch just finished, the global RNG
  states (python, numpy, torch, cuda) and the data sampler's ``(seed, epoch)``.
* ``meta.json``: the resolved config, class names, normalisation, data fingerprint and the
  metric history, readable without torch.

A directory is written under a temporary name next to where it will live and renamed by the
session, so it is whole or absent; each file inside is also written atomically
(:func:`common.io.atomic_path`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.io import atomic_path, atomic_write_json

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"


def new_checkpoint_dir(scratch: str | os.PathLike[str] | None = None) -> Path:
    """An empty temporary directory for the next checkpoint (in ``scratch`` to allow a rename)."""
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".ckpt-", dir=scratch))


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module,
    train_state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write model weights, training state and metadata into ``directory``.

    Args:
        directory: An existing (normally new, empty) directory.
        model: Its ``state_dict`` goes to ``model.pt``.
        train_state: Optimizer/scheduler/scaler states, epoch, RNG; goes to ``train_state.pt``.
        meta: JSON-serialisable description; goes to ``meta.json``.

    Returns:
        ``directory`` as a Path.
    """
    directory = Path(directory)
    with atomic_path(directory / MODEL_FILE) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    with atomic_path(directory / STATE_FILE) as tmp:
        torch.save(train_state, tmp)
    atomic_write_json(directory / META_FILE, meta, indent=1, sort_keys=False, allow_nan=True)
    return directory


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of a checkpoint directory.

    Raises:
        FileNotFoundError: ``directory`` is not a trainable checkpoint.
    """
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a trainable checkpoint directory (no {META_FILE})")
    return json.loads(path.read_text())


def load_model_state(directory: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model weights saved in a checkpoint directory (CPU tensors)."""
    return torch.load(Path(directory) / MODEL_FILE, map_location="cpu", weights_only=True)


def load_train_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The optimizer/scheduler/scaler/epoch/RNG state saved in a checkpoint directory."""
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)

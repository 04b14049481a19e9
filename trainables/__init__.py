"""Trainables: one fit of one config on one fold, inline or as a Ray Tune trial.

Example:
    >>> from trainables import create_trainable
    >>> from trainables.session import InlineSession
    >>> t = create_trainable("timm")
    >>> metrics = t.fit({"backbone": "test_efficientnet", "epochs": 2, "image_size": 64}, InlineSession("runs/x"))
    >>> probs = t.predict(None, InlineSession("runs/x").latest_checkpoint(), split="test")

The config keys and their defaults are documented in :mod:`trainables.config`; the inline CLI is
``python -m trainables.run key=value ...``.

Names are imported on first use: ``trainables.data`` (numpy only) is a subpackage, and importing it
must not pull in torch, timm and albumentations through this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AUG_DEFAULTS": "trainables.config",
    "BASE_DEFAULTS": "trainables.config",
    "resolve_config": "trainables.config",
    "Trainable": "trainables.registry",
    "create_trainable": "trainables.registry",
    "default_config": "trainables.registry",
    "list_trainables": "trainables.registry",
    "register_trainable": "trainables.registry",
    "InlineSession": "trainables.session",
    "RaySession": "trainables.session",
    "Session": "trainables.session",
    "ray_trainable": "trainables.raytrial",
    "create_model": "trainables.models",
    "builtin_weights": "trainables.weights",
    "register_weights": "trainables.weights",
}

__all__ = [
    "AUG_DEFAULTS",
    "BASE_DEFAULTS",
    "InlineSession",
    "RaySession",
    "Session",
    "Trainable",
    "builtin_weights",
    "create_model",
    "create_trainable",
    "default_config",
    "list_trainables",
    "ray_trainable",
    "register_trainable",
    "register_weights",
    "resolve_config",
]

if TYPE_CHECKING:
    from trainables.config import AUG_DEFAULTS, BASE_DEFAULTS, resolve_config
    from trainables.models import create_model
    from trainables.raytrial import ray_trainable
    from trainables.registry import (
        Trainable,
        create_trainable,
        default_config,
        list_trainables,
        register_trainable,
    )
    from trainables.session import InlineSession, RaySession, Session
    from trainables.weights import builtin_weights, register_weights


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""Trainable registry: ``@register_trainable(name)`` on a class, ``create_trainable(name)`` to build one.

A trainable is an object with ``default_config()``, ``validate_config(config)``,
``resolve(overrides)``, ``fit(config, session) -> dict`` and
``predict(config, checkpoint, split, rows, tta_flip) -> np.ndarray``; see :class:`Trainable`.
The built-in ones derive from :class:`trainables.base.TrainableBase`, which implements it around
the one training driver (:mod:`trainables.driver`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from trainables.session import Session


@runtime_checkable
class Trainable(Protocol):
    """What ``search`` and the OOF stage rely on; one fit of one config on one fold."""

    def default_config(self) -> dict[str, Any]:
        """Every key this trainable accepts, with its default value."""
        ...

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Check a complete config's values; raise ``ValueError`` naming the key and what is allowed."""
        ...

    def resolve(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """The defaults with ``overrides`` applied (nested or dotted keys), validated."""
        ...

    def fit(self, config: dict[str, Any], session: Session) -> dict[str, Any]:
        """Train, reporting metrics (and a checkpoint) every epoch; returns the final metrics."""
        ...

    def predict(
        self,
        config: dict[str, Any] | None,
        checkpoint: str | Path,
        split: str = "test",
        rows: np.ndarray | None = None,
        tta_flip: bool | None = None,
    ) -> np.ndarray:
        """Class probabilities (n, C) float32 for ``rows`` of ``split`` from a checkpoint dir."""
        ...


T = TypeVar("T")
_REGISTRY: dict[str, Callable[..., Any]] = {}
# Imported on first lookup, so that importing the package stays light (no torch until needed).
_BUILTIN_MODULES = ("trainables.timm_classifier", "trainables.clip", "trainables.dino")


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def register_trainable(name: str) -> Callable[[T], T]:
    """Class decorator registering a trainable factory under ``name``.

    Args:
        name: The name ``create_trainable`` and search spaces use.

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        ValueError: ``name`` is already registered to something else.
    """

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"trainable {name!r} is already registered to {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def list_trainables() -> list[str]:
    """Names of the registered trainables, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def create_trainable(name: str, **kwargs: Any) -> Trainable:
    """Build the trainable registered under ``name``.

    Args:
        name: A name from :func:`list_trainables`.
        **kwargs: Passed to the trainable's constructor.

    Returns:
        A new trainable instance.

    Raises:
        ValueError: ``name`` is unknown; the message lists the valid names.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown trainable {name!r}; valid names: {list_trainables()}")
    return _REGISTRY[name](**kwargs)


def default_config(name: str) -> dict[str, Any]:
    """The complete default config of the trainable ``name`` (a fresh copy).

    Args:
        name: A name from :func:`list_trainables`.

    Returns:
        Every accepted key with its default value; ``aug`` is a nested dict.
    """
    return create_trainable(name).default_config()

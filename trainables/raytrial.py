"""Ray Tune's face of a trainable: a function of the config that reports through a :class:`RaySession`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainables.registry import create_trainable
from trainables.session import RaySession


def ray_trainable(name: str) -> Callable[[dict[str, Any]], None]:
    """A function trainable for ``ray.tune.Tuner`` that fits the registered trainable ``name``.

    Each epoch goes to ``ray.tune.report`` with a checkpoint; a restored trial resumes from
    ``ray.tune.get_checkpoint()`` at the next epoch. Give trials CPUs (and a GPU) with
    ``tune.with_resources``: the loader workers and torch threads are sized from that share.

    Args:
        name: A name from ``list_trainables()``; checked now, not inside the first trial.

    Returns:
        ``fn(config) -> None``.

    Example:
        >>> tuner = ray.tune.Tuner(tune.with_resources(ray_trainable("timm"), {"cpu": 2}), param_space=space)
    """
    create_trainable(name)  # unknown name: fail in the driver, listing the valid ones

    def train(config: dict[str, Any]) -> None:
        create_trainable(name).fit(dict(config), RaySession())

    train.__name__ = train.__qualname__ = f"{name}_trainable"
    return train

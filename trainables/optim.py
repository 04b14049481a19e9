"""Optimizer (timm's factory) and learning-rate schedule (torch's schedulers) of a trial, resumable."""

from __future__ import annotations

from typing import Any

from timm.optim import create_optimizer_v2
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

_WARMUP_START = 0.01  # warmup starts at lr / 100
_FLOOR = 0.01  # cosine and plateau stop at lr / 100


def make_optimizer(model: nn.Module, config: dict[str, Any]) -> Optimizer:
    """AdamW or nesterov-momentum SGD; norm and bias parameters get no weight decay (timm's default)."""
    kwargs: dict[str, Any] = {}
    if config["optimizer"] == "sgd":
        kwargs["momentum"] = float(config["momentum"])
    return create_optimizer_v2(
        model,
        opt=config["optimizer"],
        lr=float(config["lr"]),
        weight_decay=float(config["weight_decay"]),
        **kwargs,
    )


class LRSchedule:
    """Linear warmup over ``warmup_epochs``, then ``cosine``, ``step``, ``plateau`` or ``none``.

    Everything moves per optimizer update (:meth:`step_update`), so a warmup or a cosine is smooth
    even over a few epochs; ``step`` decays by ``gamma`` every ``step_size`` epochs after warmup;
    ``plateau`` is torch's ``ReduceLROnPlateau`` on the epoch's loss (:meth:`step_epoch`), factor
    ``gamma``, patience ``step_size``. Built from torch's schedulers, whose state dicts hold all
    their state, so a resumed run continues exactly.

    Args:
        optimizer: The trial's optimizer.
        config: Resolved config (``schedule``, ``epochs``, ``warmup_epochs``, ``step_size``, ``gamma``, ``lr``).
        updates_per_epoch: Optimizer updates per epoch.
    """

    def __init__(self, optimizer: Optimizer, config: dict[str, Any], updates_per_epoch: int) -> None:
        upe = max(1, int(updates_per_epoch))
        name = config["schedule"]
        lr = float(config["lr"])
        self.warmup_epochs = int(config["warmup_epochs"])
        warm = self.warmup_epochs * upe
        total = int(config["epochs"]) * upe
        main: LRScheduler | None = None
        self.plateau: ReduceLROnPlateau | None = None
        if name == "cosine":
            main = CosineAnnealingLR(optimizer, T_max=max(1, total - warm), eta_min=lr * _FLOOR)
        elif name == "step":
            main = StepLR(
                optimizer, step_size=max(1, int(config["step_size"]) * upe), gamma=float(config["gamma"])
            )
        elif name == "none":
            main = ConstantLR(optimizer, factor=1.0, total_iters=0)
        elif name == "plateau":
            self.plateau = ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=float(config["gamma"]),
                patience=int(config["step_size"]),
                min_lr=lr * _FLOOR,
            )
        else:
            raise ValueError(f"unknown schedule {name!r}; use cosine, step, plateau or none")
        warmup = LinearLR(optimizer, start_factor=_WARMUP_START, total_iters=warm) if warm else None
        if warmup is not None and main is not None:
            self.per_update: LRScheduler | None = SequentialLR(optimizer, [warmup, main], milestones=[warm])
        else:
            self.per_update = warmup or main

    def step_update(self, num_updates: int) -> None:
        """After each optimizer update (``num_updates`` counts them; kept for a timm-like call)."""
        if self.per_update is not None:
            self.per_update.step()

    def step_epoch(self, epoch: int, loss: float) -> None:
        """After 0-based ``epoch``; ``loss`` (validation, or training without it) drives ``plateau``."""
        if self.plateau is not None and epoch + 1 >= self.warmup_epochs:
            self.plateau.step(loss)

    def state_dict(self) -> dict[str, Any]:
        """Every sub-scheduler's state."""
        return {
            "per_update": self.per_update.state_dict() if self.per_update is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        if self.per_update is not None:
            self.per_update.load_state_dict(state["per_update"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])

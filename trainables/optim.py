"""Optimizer (timm's factory) and learning-rate schedule (timm's schedulers) of a trial, resumable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

_WARMUP_START = 0.01  # warmup starts at lr / 100
_FLOOR = 0.01  # cosine and plateau stop at lr / 100


def make_optimizer(cfg: Mapping[str, Any], parts: Sequence[tuple[nn.Module, float]]) -> Optimizer:
    """AdamW or nesterov-momentum SGD over modules, each at ``lr * scale``; norms and biases get no decay.

    Args:
        cfg: Resolved config (``optimizer``, ``lr``, ``weight_decay``, ``momentum``).
        parts: ``(module, lr_scale)``; frozen parameters (``requires_grad=False``) are left out.

    Raises:
        ValueError: Nothing to train.
    """
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])

    def groups(_: nn.Module) -> list[dict[str, Any]]:
        out = []
        for module, scale in parts:
            skip = getattr(module, "no_weight_decay", lambda: set())()
            for group in param_groups_weight_decay(module, wd, no_weight_decay_list=skip):
                if group["params"]:
                    out.append({**group, "lr": lr * scale})
        if not out:
            raise ValueError("nothing to train: every parameter is frozen")
        return out

    kwargs: dict[str, Any] = {"momentum": float(cfg["momentum"])} if cfg["optimizer"] == "sgd" else {}
    holder = nn.ModuleList([m for m, _ in parts])
    return create_optimizer_v2(
        holder, opt=cfg["optimizer"], lr=lr, weight_decay=wd, param_group_fn=groups, **kwargs
    )


class LRSchedule:
    """Linear warmup over ``warmup_epochs`` from ``lr / 100``, then ``cosine``, ``step``, ``plateau`` or ``none``.

    Everything moves per optimizer update (:meth:`step_update`), so a warmup or a cosine is smooth
    even over a few epochs. ``cosine`` (to ``lr / 100``) and ``step`` (``gamma`` every ``step_size``
    epochs after warmup; ``none`` is a step of factor 1) are timm's ``CosineLRScheduler`` and
    ``StepLRScheduler`` counted in updates, pure functions of the update count. ``plateau`` is
    torch's ``ReduceLROnPlateau`` on the epoch's loss (:meth:`step_epoch`), factor ``gamma``,
    patience ``step_size``, after timm's warmup: timm's own plateau scheduler does not save its
    patience counters, so it could not resume exactly.

    The warmup start ``lr / 100`` is absolute (timm's ``warmup_lr_init``): a parameter group at a
    scaled lr (a DINO backbone's ``backbone_lr_scale``) warms from there to its own lr.

    Args:
        optimizer: The trial's optimizer.
        config: Resolved config (``schedule``, ``epochs``, ``warmup_epochs``, ``step_size``, ``gamma``, ``lr``).
        updates_per_epoch: Optimizer updates per epoch.
    """

    def __init__(self, optimizer: Optimizer, config: Mapping[str, Any], updates_per_epoch: int) -> None:
        upe = max(1, int(updates_per_epoch))
        name = config["schedule"]
        lr = float(config["lr"])
        self.warmup_epochs = float(config["warmup_epochs"])
        self.warmup_updates = round(self.warmup_epochs * upe)
        total = int(config["epochs"]) * upe
        warmup = {"warmup_t": self.warmup_updates, "warmup_lr_init": lr * _WARMUP_START, "t_in_epochs": False}
        self.plateau: ReduceLROnPlateau | None = None
        self.per_update: Scheduler
        if name == "cosine":
            t_initial = max(1, total - self.warmup_updates)
            self.per_update = CosineLRScheduler(
                optimizer, t_initial=t_initial, lr_min=lr * _FLOOR, warmup_prefix=True, **warmup
            )
        elif name in ("step", "none", "plateau"):
            # "none" and "plateau" use a step of factor 1: the warmup, then the lr as it is.
            decay_t = max(1, int(config["step_size"]) * upe) if name == "step" else max(1, total)
            rate = float(config["gamma"]) if name == "step" else 1.0
            self.per_update = StepLRScheduler(
                optimizer, decay_t=decay_t, decay_rate=rate, warmup_prefix=True, **warmup
            )
        else:
            raise ValueError(f"unknown schedule {name!r}; use cosine, step, plateau or none")
        if name == "plateau":
            self.plateau = ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=float(config["gamma"]),
                patience=int(config["step_size"]),
                min_lr=lr * _FLOOR,
            )

    def step_update(self, num_updates: int) -> None:
        """After each optimizer update; ``num_updates`` counts them from the start of training."""
        if self.plateau is not None and num_updates > self.warmup_updates:
            return  # past warmup the plateau scheduler owns the lr
        self.per_update.step_update(num_updates=num_updates)

    def step_epoch(self, epoch: int, loss: float) -> None:
        """After 0-based ``epoch``; ``loss`` (validation, or training without it) drives ``plateau``."""
        if self.plateau is not None and epoch + 1 >= self.warmup_epochs:
            self.plateau.step(loss)

    def state_dict(self) -> dict[str, Any]:
        """Every sub-scheduler's state."""
        return {
            "per_update": self.per_update.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.per_update.load_state_dict(state["per_update"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])

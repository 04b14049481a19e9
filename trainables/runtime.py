"""The machine a trial runs on: device, mixed precision, CPU share, loader workers, seeding."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Runtime:
    """Resolved device settings of one trial.

    Attributes:
        device: Where the model runs.
        amp_dtype: ``torch.bfloat16``/``torch.float16`` under autocast, or None for full precision.
        use_scaler: Whether fp16 needs a ``GradScaler``.
        cpu_share: CPU cores this trial may use.
        num_workers: DataLoader worker processes.
        pin_memory: Page-locked host batches for asynchronous copies to the GPU.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    use_scaler: bool
    cpu_share: int
    num_workers: int
    pin_memory: bool

    @property
    def cuda(self) -> bool:
        """Whether the device is a CUDA GPU."""
        return self.device.type == "cuda"


def cpu_share() -> int:
    """CPU cores this process may use: the Ray trial's CPU resources, else the affinity mask.

    Returns:
        At least 1.
    """
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except Exception:  # noqa: BLE001  (outside a Ray worker there is simply no assignment)
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_runtime(config: dict[str, Any]) -> Runtime:
    """Pick device, AMP, workers and threads from the config's ``device``/``amp``/``num_workers``.

    On CUDA: bf16 autocast where supported, else fp16 with a GradScaler; workers fill the CPU
    share but one core, which feeds the GPU. On CPU: no AMP, torch uses the CPU share as
    threads (capped by the process's current thread setting), and ``auto`` gives a quarter of
    the share to loader workers.

    Args:
        config: A resolved trial config.

    Returns:
        The runtime; ``torch.set_num_threads`` has been applied.

    Raises:
        ValueError: CUDA was asked for but is not available, or AMP was asked for on CPU.
    """
    name = str(config.get("device", "auto"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config device={name!r} but CUDA is not available here; use device=auto or cpu")
    share = cpu_share()
    amp = config.get("amp", "auto")
    amp_dtype: torch.dtype | None = None
    if device.type == "cuda" and amp in ("auto", True):
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif amp in ("bf16", "fp16"):
        if device.type != "cuda":
            raise ValueError(f"config amp={amp!r} needs a CUDA device; use amp=auto or false on CPU")
        amp_dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    workers = config.get("num_workers", "auto")
    if workers == "auto":
        workers = min(16, share - 1) if device.type == "cuda" else share // 4
    if device.type == "cpu":
        # Never above the process's own setting (OMP_NUM_THREADS, which Ray sets per trial, or a
        # caller's torch.set_num_threads): oversubscribed OpenMP threads collapse throughput.
        torch.set_num_threads(max(1, min(share, torch.get_num_threads())))
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(
        device=device,
        amp_dtype=amp_dtype,
        use_scaler=amp_dtype == torch.float16,
        cpu_share=share,
        num_workers=max(0, int(workers)),
        pin_memory=device.type == "cuda",
    )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers, e.g. ``(seed, epoch, index)``: independent streams per tuple."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])


def rng_state() -> dict[str, Any]:
    """The global generators' states, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

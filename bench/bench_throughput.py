"""Training throughput at the limit: a trial's epoch against a minimal timm training loop, on CPU.

    python bench/bench_throughput.py                       # Lite0 @ 64 px, batch 32, 1 core (~3 min)
    python bench/bench_throughput.py --cpus 2 --size 128

Both sides train the same network (``timm.create_model``) on the same decoded images with the same
per-sample augmentation (the trial config's :class:`~trainables.augment.SampleTransform` and
mixer), batch size, loader workers, thread count (the CPU share) and channels_last input; the
minimal loop is what a user would write by hand: DataLoader -> normalise -> forward -> loss ->
backward -> AdamW step. They alternate, ``--repeats`` times each, in one process, so a busy
machine slows both alike. The trial's figure is its own ``img_per_s`` of the last epoch (the first
includes starting the loader workers); the loop's is images over the same last epoch. Target: the
trial within 10% of the loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from trainables import create_trainable  # noqa: E402
from trainables.augment import SampleTransform, build_mixer  # noqa: E402
from trainables.engine import soft_or_hard_ce  # noqa: E402
from trainables.runtime import resolve_runtime  # noqa: E402
from trainables.session import InlineSession  # noqa: E402
from trainables.trialkit import load_trial_data  # noqa: E402


class _Plain(Dataset):
    """The training rows through the trial's transform, seeded per sample (no balancing copies)."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, transform: SampleTransform):
        self.images, self.rows, self.labels, self.transform = images, rows, labels, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.transform(self.images[self.rows[i]], 0, i)
        return torch.from_numpy(image).permute(2, 0, 1), int(self.labels[i])


def minimal_loop(cfg: dict[str, Any], epochs: int) -> float:
    """Images per second of the last epoch of a hand-written timm loop on the trial's data."""
    runtime = resolve_runtime(cfg)
    data = load_trial_data(cfg)
    rows = data.rows
    dataset = _Plain(
        data.images, rows.train_rows, rows.train_labels, SampleTransform(cfg["aug"], cfg["image_size"], True)
    )
    workers = runtime.num_workers
    loader = DataLoader(
        dataset, batch_size=int(cfg["batch_size"]), shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, multiprocessing_context="forkserver" if workers else None,
    )  # fmt: skip
    model = timm.create_model(cfg["backbone"], num_classes=len(data.classes), pretrained=False)
    model = model.to(memory_format=torch.channels_last).train()
    config = model.pretrained_cfg
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(config["std"]).view(1, 3, 1, 1) * 255
    mixer = build_mixer(cfg["aug"], len(data.classes), float(cfg["label_smoothing"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]))
    rate = float("nan")
    for _ in range(epochs):
        seen, start = 0, time.perf_counter()
        for images, labels in loader:
            x = images.contiguous(memory_format=torch.channels_last).float().sub_(mean).div_(std)
            y = labels
            if mixer is not None:
                x, y = mixer(x, y)
            loss = soft_or_hard_ce(model(x), y, float(cfg["label_smoothing"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(x)
        rate = seen / (time.perf_counter() - start)
    return rate


def trial_rate(config: dict[str, Any]) -> float:
    """The trial's own ``img_per_s`` of its last epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        session = InlineSession(tmp, verbose=False)
        create_trainable("timm").fit(config, session)
    return float(session.history[-1]["img_per_s"])


def main(argv: list[str] | None = None) -> int:
    """Alternate the two, print each rate and the ratio."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--cpus", type=int, default=1, help="the trial's CPU share (affinity and threads)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", default="synthetic")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    torch.set_num_threads(args.cpus)
    config = {
        "data": args.data, "backbone": args.backbone, "pretrained": False, "image_size": args.size,
        "batch_size": args.batch, "epochs": args.epochs, "lr": 1e-3,
    }  # fmt: skip
    cfg = create_trainable("timm").resolve(config)
    trial, loop = [], []
    for _ in range(args.repeats):
        trial.append(trial_rate(config))
        loop.append(minimal_loop(cfg, args.epochs))
        print(f"trial {trial[-1]:.1f} img/s, minimal loop {loop[-1]:.1f} img/s", flush=True)
    t, m = statistics.median(trial), statistics.median(loop)
    print(
        f"{args.backbone} @ {args.size}px, batch {args.batch}, {args.cpus} CPU, {torch.get_num_threads()} threads: "
        f"trial {t:.1f} img/s vs minimal timm loop {m:.1f} img/s = {t / m:.2f}x (target >= 0.90)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

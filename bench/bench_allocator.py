"""What glibc's allocator costs a CPU trial, with its defaults and with the memory kept (common.allocator).

    python bench/bench_allocator.py              # ~2 min on one core; Lite0, the compete and plain shapes
    python bench/bench_allocator.py --reps 2     # quicker, noisier

Each workload runs in two fresh processes, side by side: one with glibc's defaults (no ``MALLOC_*``
in its environment), one after :func:`common.allocator.keep_freed_memory`. Each times its work in a
thread of its own, as Tune runs a trial, on one core (a trial slot):

* ``frozen stages``: Lite0's stem and first 3 stages, 192 px, batch 64, inference (what a
  frozen-stage cache build runs, :mod:`trainables.frozen`);
* ``compete step``: a Lite0 training step at 192 px with those stages frozen, batch 32;
* ``plain step``: a Lite0 training step at 128 px, nothing frozen, batch 32 (the plain fine-tune);
* ``predict``: Lite0's forward pass at 128 px, batch 64 (fold predictions).

Reported per workload: milliseconds per image both ways, the ratio, the share of the default's time
spent in the kernel (page faults on fresh mappings), and each process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from common.allocator import ALLOCATOR_ENV, glibc  # noqa: E402

WORKLOADS = ("frozen stages", "compete step", "plain step", "predict")


def measure(workload: str, keep: bool, reps: int) -> dict[str, float]:
    """Run in a child process: one workload's seconds (wall, user, system) per image and peak memory."""
    import resource
    import threading
    import time

    if keep:
        from common.allocator import keep_freed_memory

        keep_freed_memory()
    import torch
    import torch.nn.functional as F

    from trainables.frozen import FrozenSplit
    from trainables.models import create_model

    torch.set_num_threads(1)
    cl = torch.channels_last
    size, batch, frozen = {"frozen stages": (192, 64, 3), "compete step": (192, 32, 3)}.get(workload, (128, 32, 0))
    if workload == "predict":
        batch = 64
    model = create_model("tf_efficientnet_lite0", 125, image_size=size, freeze_stages=frozen).to(memory_format=cl)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=cl)
    labels = torch.randint(0, 125, (batch,))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    prefix = FrozenSplit(model, 3).prefix.eval()

    def once() -> None:
        if workload == "frozen stages":
            with torch.inference_mode():
                prefix(images)
        elif workload == "predict":
            with torch.inference_mode():
                model.eval()(images)
        else:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()

    out: dict[str, float] = {}

    def timed() -> None:  # in a thread, as Tune runs a trial
        once()  # warm
        usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(reps):
            once()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        n = reps * batch
        out.update(
            wall=wall / n, user=(after.ru_utime - usage.ru_utime) / n, system=(after.ru_stime - usage.ru_stime) / n
        )

    thread = threading.Thread(target=timed)
    thread.start()
    thread.join()
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def child(workload: str, keep: bool, reps: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}  # glibc's defaults
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    mode = "keep" if keep else "default"
    done = subprocess.run(
        [sys.executable, __file__, "--child", workload, mode, "--reps", str(reps)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=6, help="timed batches per workload and side")
    p.add_argument("--child", nargs=2, metavar=("WORKLOAD", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1] == "keep", args.reps)))
        return 0
    if not glibc():
        print("common.allocator changes nothing off glibc (Linux): nothing to compare here")
        return 0
    table = Table(title="glibc's allocator: defaults vs memory kept (one core, Lite0, ms per image)")
    for column in ("workload", "default", "kept", "speed-up", "default in kernel", "peak MB default / kept"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for workload in WORKLOADS:
        default, kept = child(workload, False, args.reps), child(workload, True, args.reps)
        table.add_row(
            workload,
            f"{default['wall'] * 1e3:.1f}",
            f"{kept['wall'] * 1e3:.1f}",
            f"{default['wall'] / kept['wall']:.2f}x",
            f"{default['system'] / max(default['user'] + default['system'], 1e-9):.0%}",
            f"{default['peak_mb']:.0f} / {kept['peak_mb']:.0f}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

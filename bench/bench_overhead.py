"""The search engine's own cost per trial: where it goes, and how much Tune adds over an inline fit.

    python bench/bench_overhead.py                 # 2 and 20 short trials on 2 slots, both ways (~10 min)
    python bench/bench_overhead.py --trials 6      # quicker, noisier

Both sides run in one process, interleaved, on the same tiny 1-epoch config (``test_efficientnet``,
synthetic data, 32 px), so a busy shared machine slows both alike:

* inline: ``create_trainable("timm").fit`` with an ``InlineSession``, on ``slots`` processes of one
  core each (warm: each fits once untimed first), with the in-fit phases timed (data open, model build,
  loaders, the epoch, validation, checkpoint write);
* Tune: the same configs as one ``search.runner.run_search`` over ``slots`` 1-CPU slots (FIFO,
  no MLflow), once with ``reuse_actors`` off (a fresh worker per trial) and once on.

The overhead is a slope, so Ray's start and the Tuner's set-up cancel out: each side runs ``small``
and ``large`` trials and ``(wall(large) - wall(small)) / ((large - small) / slots)`` is the wall
time one trial costs a slot. Per trial, the breakdown comes from the timestamps the trial records
(``SKETCHSEARCH_TRACE_PHASES``: see :func:`trainables.session.phases_path`) and a driver-side
callback's (trial start, each result, completion).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from ray import tune  # noqa: E402

from common.io import runs_dir  # noqa: E402
from search.config import load_config  # noqa: E402
from search.runner import run_search  # noqa: E402

CONFIG: dict[str, Any] = {
    "backbone": "test_efficientnet",
    "pretrained": False,
    "image_size": 32,
    "epochs": 1,
    "batch_size": 32,
    "lr": 1e-3,
}


class DriverClock(tune.Callback):
    """Wall-clock times the driver sees per trial: start, each result, completion."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events[trial.trial_id]["start"].append(time.time())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.events[trial.trial_id]["result"].append(time.time())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events[trial.trial_id]["complete"].append(time.time())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20, help="trials of the large run (the small runs 2)")
    p.add_argument("--slots", type=int, default=2, help="trials at once under Tune (1 CPU each)")
    p.add_argument("--modes", default="fresh,reuse", help="Tune runs: fresh (no actor reuse), reuse")
    return p.parse_args(argv)


def inline_trials(n: int, slots: int, seed0: int) -> tuple[float, list[dict[str, float]]]:
    """``n`` inline fits on ``slots`` processes, one core each; wall time and each fit's phases (s).

    Each process first fits once untimed (its imports and first-call costs, which a reused Ray
    worker has also paid), then its share of the ``n`` fits one after another.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cores = sorted(os.sched_getaffinity(0))
    shares = [(n // slots + (i < n % slots), seed0 + 1000 * i, cores[i % len(cores)]) for i in range(slots)]
    with ProcessPoolExecutor(slots, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_inline_slot, shares))
    return max(wall for wall, _ in done), [row for _, rows in done for row in rows]


def _inline_slot(share: tuple[int, int, int]) -> tuple[float, list[dict[str, float]]]:
    """One inline slot: a warm-up fit, then ``n`` timed fits on one core."""
    n, seed0, core = share
    import trainables.base as base
    import trainables.driver as driver
    import trainables.timm_classifier as timm_classifier
    from trainables import create_trainable
    from trainables.session import InlineSession

    phases: dict[str, float] = defaultdict(float)

    def timed(module: Any, name: str, label: str) -> Any:
        original = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                phases[label] += time.perf_counter() - start

        setattr(module, name, wrapper)
        return module, name, original

    patches = [
        timed(base, "load_trial_data", "data open"),
        timed(timm_classifier, "create_model", "model build + weights"),
        timed(timm_classifier, "image_loaders", "loaders"),
        timed(driver, "run_epoch", "train epoch (loader start incl.)"),
        timed(timm_classifier._TimmTrial, "evaluate", "validation"),
        timed(driver, "save_checkpoint", "checkpoint write"),
    ]
    os.sched_setaffinity(0, [core])  # one slot's share, as a 1-CPU trial gets
    with tempfile.TemporaryDirectory() as tmp:
        create_trainable("timm").fit({**CONFIG, "seed": seed0 - 1}, InlineSession(tmp, verbose=False))
    per_trial: list[dict[str, float]] = []
    try:
        start = time.perf_counter()
        for i in range(n):
            phases.clear()
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                create_trainable("timm").fit({**CONFIG, "seed": seed0 + i}, InlineSession(tmp, verbose=False))
                total = time.perf_counter() - t0
            per_trial.append({**phases, "total": total})
        wall = time.perf_counter() - start
    finally:
        for module, name, original in patches:
            setattr(module, name, original)
    return wall, per_trial


def tune_trials(n: int, slots: int, reuse: bool, stamp: str) -> tuple[float, DriverClock, str]:
    """``n`` trials as one FIFO search on ``slots`` 1-CPU slots; wall time, driver clock, Ray path."""
    clock = DriverClock()
    overrides = [f"trainable.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in CONFIG.items()]
    cfg = load_config(
        ["space=quick", *overrides, "search={seed: {randint: [0, 1000000]}}", "tune.points_to_evaluate=[]",
         "tune.search_alg=random", f"tune.num_samples={n}", "resources.cpu=1", "scheduler.name=fifo",
         "mlflow.enabled=false", "verbose=0", f"tune.reuse_actors={str(reuse).lower()}",
         f"tune.max_concurrent={slots}", f"experiment=bench-overhead-{'reuse' if reuse else 'fresh'}-{n}-{stamp}"]
    )  # fmt: skip
    start = time.perf_counter()
    outcome = run_search(cfg, callbacks=[clock])
    wall = time.perf_counter() - start
    if len(outcome.leaderboard) != n or (outcome.leaderboard["status"] == "error").any():
        raise RuntimeError(f"tune run of {n} trials did not finish cleanly:\n{outcome.leaderboard}")
    return wall, clock, outcome.ray_path


def trial_phases(ray_path: str, clock: DriverClock) -> list[dict[str, float]]:
    """Per trial, the gaps between the timestamps its ``phases.jsonl`` and the driver recorded (s)."""
    out = []
    for path in (runs_dir() / "phases" / Path(ray_path).name).glob("*.jsonl"):
        marks: dict[str, float] = {}
        for line in path.read_text().splitlines():
            event = json.loads(line)
            marks.setdefault(event["phase"], event["time"])  # the first of each (one epoch anyway)
        driver = clock.events.get(path.stem, {})
        if driver.get("start"):
            marks["driver: trial start"] = driver["start"][0]
        if driver.get("complete"):
            marks["driver: complete"] = driver["complete"][0]
        order = sorted(marks.items(), key=lambda kv: kv[1])
        gaps = {f"{a} -> {b}": tb - ta for (a, ta), (b, tb) in zip(order, order[1:], strict=False)}
        gaps["cold"] = float("worker process start" in marks)  # the first trial of its worker process
        out.append(gaps)
    return out


def steady_per_slot(clock: DriverClock, slots: int) -> float:
    """Wall per trial per slot once every slot is busy: the gaps between completions after the first wave."""
    done = sorted(e["complete"][0] for e in clock.events.values() if e.get("complete"))
    if len(done) <= slots:
        return float("nan")
    return (done[-1] - done[slots - 1]) * slots / (len(done) - slots)


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean (keys missing in a row are left out of its mean)."""
    keys: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for k, v in row.items():
            keys[k].append(v)
    return {k: statistics.fmean(v) for k, v in keys.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print its figures."""
    import ray

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ["RUNS_DIR"] = str(runs_dir())  # absolute, inherited by the Ray workers
    os.environ["SKETCHSEARCH_TRACE_PHASES"] = "1"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    small, large, slots = 2, args.trials, args.slots
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    from trainables.data import decoded_images, folds_for, load_dataset

    dataset = load_dataset("synthetic")  # every trial but a search's first finds the cache built
    decoded_images(dataset, "train", size=CONFIG["image_size"])
    folds_for(dataset, k=5, seed=0)
    ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=False)
    walls: dict[str, dict[int, float]] = defaultdict(dict)
    inline_rows: list[dict[str, float]] = []
    tune_rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    steady: dict[str, float] = {}
    try:
        for n in (small, large):  # interleaved: inline, then each Tune mode, at each size
            wall, rows = inline_trials(n, slots, 100_000 * n)
            walls["inline"][n] = wall
            inline_rows += rows
            print(f"inline {n}: {wall:.1f}s", flush=True)
            for mode in modes:
                wall, clock, path = tune_trials(n, slots, mode == "reuse", stamp)
                walls[mode][n] = wall
                tune_rows[mode] += trial_phases(path, clock)
                steady[mode] = steady_per_slot(clock, slots)
                print(f"tune {mode} {n}: {wall:.1f}s", flush=True)
    finally:
        ray.shutdown()
    report(walls, inline_rows, tune_rows, steady, small, large, slots)
    return 0


def report(
    walls: dict[str, dict[int, float]],
    inline_rows: list[dict[str, float]],
    tune_rows: dict[str, list[dict[str, float]]],
    steady: dict[str, float],
    small: int,
    large: int,
    slots: int,
) -> None:
    """Print the slopes, the overhead over inline and the per-trial breakdowns."""
    inline_slope = (walls["inline"][large] - walls["inline"][small]) / ((large - small) / slots)
    inline = mean_rows(inline_rows)
    print(
        f"\ninline fit: {inline_slope:.2f}s of wall per trial per slot (slope {small}->{large} trials on {slots} "
        f"processes, one core each); {inline['total']:.2f}s mean fit"
    )
    for name, phase in inline.items():
        print(f"  {name:40s} {phase:6.2f}s")
    for mode, by_n in walls.items():
        if mode == "inline":
            continue
        slope = (by_n[large] - by_n[small]) / ((large - small) / slots)
        print(
            f"\ntune {mode}: {slope:.2f}s of wall per trial per slot (slope {small}->{large} trials on {slots} "
            f"slots): +{slope - inline_slope:.2f}s over inline ({slope / inline_slope:.2f}x); steady state of "
            f"the {large}-trial run {steady[mode]:.2f}s per trial per slot: +{steady[mode] - inline['total']:.2f}s "
            f"over the inline fit ({steady[mode] / inline['total']:.2f}x)"
        )
        for kind, cold in (("cold (a new worker process)", 1.0), ("warm (a reused worker)", 0.0)):
            rows = [r for r in tune_rows[mode] if r["cold"] == cold]
            print(f"  {len(rows)} trials {kind}:")
            for name, gap in sorted(mean_rows(rows).items(), key=lambda kv: -kv[1]):
                if name != "cold":
                    print(f"    {name:55s} {gap:6.2f}s")


if __name__ == "__main__":
    raise SystemExit(main())

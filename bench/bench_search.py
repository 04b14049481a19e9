"""ASHA vs FIFO on the same space and seed, and the per-trial cost of Ray Tune over an inline fit.

    python bench/bench_search.py              # the full bench (~10 min on 2 CPU cores)
    python bench/bench_search.py --smoke      # a 1-minute check that it runs
    python bench/bench_search.py --hard       # part 1 on sketchy125: Lite0 @ 128 px, 12 configs x 6 epochs
                                              # (hours on 2 CPU cores; minutes on a GPU)

Part 1: one random search (same seed, so the very same configs) run twice, under FIFO (every
trial runs every epoch) and under ASHA. Reported: the best val accuracy each found, the
trial-epochs each spent, wall time. Target: ASHA within 1 point of FIFO's best at no more than
40% of its epochs.

Part 1 also replays ASHA on FIFO's learning curves for other grace periods and reduction
factors (the search's own ASHA scheduler, fed the recorded epochs in the order 2 slots would
produce them): a trial's epochs do not depend on the scheduler (seeded and exactly resumable), so this
shows which rung placement and reduction factor would have kept FIFO's best for fewer epochs.

Part 2: one trial of a fixed config run inline (``create_trainable("timm").fit`` with an
``InlineSession``, in this process) and as a one-trial Ray Tune search; the difference in wall
time is Tune's per-trial overhead (a fresh worker process, its imports, the placement group,
checkpoint persistence).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from common.io import runs_dir  # noqa: E402
from search.algorithms import TIME_ATTR, grace_period  # noqa: E402
from search.config import load_config  # noqa: E402
from search.runner import SearchOutcome, run_search  # noqa: E402

SKETCHY = Path(__file__).resolve().parents[2] / "shared" / "data" / "sketchy125"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (defaults: the full bench)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10, help="trials per scheduler (same configs for both)")
    p.add_argument(
        "--epochs", type=int, default=9, help="epochs of a full trial (ASHA's max_t)"
    )
    p.add_argument(
        "--backbone", default="tf_efficientnet_lite0", help="pretrained offline: learns in a few epochs"
    )
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--cpu", type=float, default=1, help="CPUs per trial")
    p.add_argument("--seed", type=int, default=0, help="the searcher's seed")
    p.add_argument("--data", default="synthetic", help="data set of part 1")
    p.add_argument("--grace-period", default="1", help="ASHA's grace period (epochs, or auto: warmup + 1)")
    p.add_argument(
        "--skip-overhead", action="store_true", help="part 1 only (bench_overhead.py measures more)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny model, 3 trials x 2 epochs: checks the bench runs"
    )
    p.add_argument(
        "--fifo-from",
        metavar="EXPERIMENT",
        help="take FIFO's side from this earlier bench-fifo-* experiment under RUNS_DIR instead of rerunning it "
        "(same options and code: FIFO's trials do not depend on the scheduler; the configs are checked to match)",
    )
    p.add_argument(
        "--val-rows", type=int, default=None,
        help="validation rows behind each score, for FIFO runs from before trials reported n_val (sketchy125 fold 0: 347)",
    )
    p.add_argument(
        "--hard",
        action="store_true",
        help="part 1 on ../shared/data/sketchy125 (its group-aware fold 0), Lite0 @ 128 px, 12 x 6 epochs",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.trials, args.epochs, args.backbone = 3, 2, "test_efficientnet"
    if args.hard:
        args.data, args.trials, args.epochs, args.image_size = str(SKETCHY), 12, 6, 128
        args.grace_period, args.skip_overhead = "auto", True
    return args


def scheduler_runs(args: argparse.Namespace, stamp: str) -> dict[str, tuple[SearchOutcome, float]]:
    """The same random search under FIFO and under ASHA."""
    common = [
        "space=quick",
        f"data={args.data}",
        f"trainable.backbone={args.backbone}",
        f"trainable.pretrained={str(args.backbone != 'test_efficientnet').lower()}",
        f"trainable.image_size={args.image_size}",
        f"trainable.epochs={args.epochs}",
        "trainable.batch_size=32",
        # wide on purpose: a search space with bad corners is where early stopping pays
        "search={lr: {loguniform: [1.0e-5, 3.0e-2]}}",
        "tune.points_to_evaluate=[]",
        "tune.search_alg=random",
        f"tune.seed={args.seed}",
        f"tune.num_samples={args.trials}",
        f"resources.cpu={args.cpu}",
        f"scheduler.grace_period={args.grace_period}",
        "mlflow.enabled=false",
        "verbose=0",
    ]
    out = {}
    for name in ("fifo", "asha"):
        cfg = load_config([*common, f"scheduler.name={name}", f"experiment=bench-{name}-{stamp}"])
        if name == "fifo" and args.fifo_from:
            out[name] = earlier_search(args.fifo_from)
            print(f"fifo: taken from {args.fifo_from}", flush=True)
        else:
            start = time.perf_counter()
            out[name] = (run_search(cfg), time.perf_counter() - start)
        outcome = out[name][0]
        print(
            f"{name}: best val_acc {outcome.best['val_acc']:.4f}, {outcome.trial_epochs} trial-epochs",
            flush=True,
        )
        if name == "fifo":
            curves = learning_curves(outcome.ray_path)
            print_replays(curves, args)
            print_orders(curves, args, grace=grace_period(cfg), n_val=validation_rows(outcome.ray_path, args))
    return out


def earlier_search(experiment: str) -> tuple[SearchOutcome, float]:
    """A finished search of this bench read back from its files, and its wall time (first start to last report)."""
    import pandas as pd

    ray_path = runs_dir() / "ray" / experiment
    board = pd.read_csv(runs_dir() / "search" / experiment / "leaderboard.csv", index_col="rank")
    curves = learning_curves(str(ray_path))
    rows = [
        json.loads(line)
        for path in ray_path.glob("trial_*/result.json")
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    wall = max(r["timestamp"] for r in rows) - min(r["timestamp"] - r["time_this_iter_s"] for r in rows)
    outcome = SearchOutcome(
        experiment, board, {}, runs_dir() / "search" / experiment, str(ray_path),
        trial_epochs=sum(len(c) for c in curves.values()),
    )  # fmt: skip
    return outcome, float(wall)


def same_configs(first: SearchOutcome, second: SearchOutcome) -> bool:
    """Whether two searches ran the same configs in the same order (trial ids differ, configs must not)."""

    def configs(outcome: SearchOutcome) -> list[str]:
        found = []
        for trial_dir in sorted(Path(outcome.ray_path).glob("trial_*")):
            config = json.loads((trial_dir / "params.json").read_text())
            found.append(json.dumps(config, sort_keys=True))
        return found

    return configs(first) == configs(second)


def learning_curves(ray_path: str) -> dict[str, list[float]]:
    """Each trial's val_acc per epoch (epoch 1 first), from Ray's saved results, in trial order."""
    curves = {}
    for trial_dir in sorted(Path(ray_path).glob("trial_*")):
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        by_epoch = {int(r[TIME_ATTR]): float(r["val_acc"]) for r in rows if "val_acc" in r and TIME_ATTR in r}
        curves[trial_dir.name] = [by_epoch[e] for e in sorted(by_epoch) if e >= 1]
    return curves


def validation_rows(ray_path: str, args: argparse.Namespace) -> int | None:
    """The validation rows behind each score (``n_val`` in the results; ``--val-rows`` for runs
    from before trials reported it)."""
    for result in sorted(Path(ray_path).glob("trial_*/result.json")):
        for line in result.read_text().splitlines():
            if line.strip() and "n_val" in (row := json.loads(line)):
                return int(row["n_val"])
    return args.val_rows


def replay_asha(
    curves: dict[str, list[float]], *, grace: int, eta: float, slots: int, provisional: bool = True,
    noise_margin: float = 0.0, n_val: int | None = None,
) -> tuple[float, int]:  # fmt: skip
    """ASHA run over recorded curves on ``slots`` slots (one epoch = one time unit, trials started
    in the curves' order); returns the best val_acc any trial reached and the epochs spent.

    ``provisional``: the search's scheduler (:class:`search.provisional_asha.ProvisionalASHA`,
    with ``noise_margin`` standard errors of an accuracy on ``n_val`` rows), else Ray's plain
    ``ASHAScheduler``.
    """
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from search.provisional_asha import ProvisionalASHA

    max_t = max(len(c) for c in curves.values())
    options = {"time_attr": TIME_ATTR, "metric": "val_acc", "mode": "max", "max_t": max_t,
               "grace_period": grace, "reduction_factor": eta}  # fmt: skip
    scheduler = ProvisionalASHA(noise_margin=noise_margin, **options) if provisional else ASHAScheduler(**options)
    pending = [SimpleNamespace(trial_id=name) for name in curves]
    running: list[tuple[float, int, Any]] = []  # (time the next epoch ends, epoch, trial)
    clock, best, spent = 0.0, 0.0, 0
    while pending or running:
        while pending and len(running) < slots:
            trial = pending.pop(0)
            scheduler.on_trial_add(None, trial)
            running.append((clock + 1, 1, trial))
        running.sort(key=lambda item: item[0])
        clock, epoch, trial = running.pop(0)
        score = curves[trial.trial_id][epoch - 1]
        best, spent = max(best, score), spent + 1
        result = {TIME_ATTR: epoch, "val_acc": score, **({"n_val": n_val} if n_val else {})}
        if epoch >= len(curves[trial.trial_id]) or scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            scheduler.on_trial_complete(None, trial, result)
        else:
            running.append((clock + 1, epoch + 1, trial))
    return best, spent


def print_orders(
    curves: dict[str, list[float]], args: argparse.Namespace, grace: int, n: int = 200, n_val: int | None = None
) -> None:
    """ASHA over ``n`` shuffled arrival orders of the same curves: what one run's order hides.

    Which trial reaches a rung first decides much of what ASHA spends (the first arrivals set the
    bar), and a real run sees one order. Plain ASHA and the search's provisional ASHA, at the
    default reduction factor and the one before it (3), without a noise margin and (with
    ``n_val`` known) with the default one.
    """
    import random

    fifo_best = max(max(c) for c in curves.values())
    fifo_epochs = sum(len(c) for c in curves.values())
    slots = max(1, int((os.cpu_count() or 2) / args.cpu))
    rng = random.Random(0)
    orders = [rng.sample(list(curves), len(curves)) for _ in range(n)]
    table = Table(title=f"ASHA (grace {grace}) over {n} shuffled arrival orders of FIFO's curves")
    for column in ("scheduler", "eta", "mean % of FIFO", "orders <= 40%", "orders > 1 point below FIFO"):
        table.add_column(column, justify="right")
    margin = float(load_config([]).scheduler.noise_margin)
    variants = [(False, 3, 0.0), (False, 4, 0.0), (True, 3, 0.0), (True, 4, 0.0)]
    variants += [(True, 3, margin), (True, 4, margin)] if n_val and margin else []
    for provisional, eta, z in variants:
        runs = [replay_asha({k: curves[k] for k in order}, grace=grace, eta=eta, slots=slots,
                            provisional=provisional, noise_margin=z, n_val=n_val) for order in orders]  # fmt: skip
        share = [spent / fifo_epochs for _, spent in runs]
        name = ("provisional" if provisional else "Ray's ASHA") + (f", margin {z:g} SE (n_val {n_val})" if z else "")
        table.add_row(
            name, str(eta), f"{100 * sum(share) / n:.1f}%",
            f"{100 * sum(s <= 0.40 for s in share) / n:.0f}%",
            f"{100 * sum(fifo_best - best > 0.01 for best, _ in runs) / n:.0f}%",
        )  # fmt: skip
    Console(width=120).print(table)


def print_replays(curves: dict[str, list[float]], args: argparse.Namespace) -> None:
    """ASHA replayed on FIFO's curves for a few rung placements and reduction factors."""
    fifo_best = max(max(c) for c in curves.values())
    fifo_epochs = sum(len(c) for c in curves.values())
    table = Table(title=f"ASHA replayed on FIFO's curves (FIFO: best {fifo_best:.4f}, {fifo_epochs} trial-epochs)")
    for column in ("grace", "eta", "best val_acc", "gap (points)", "trial-epochs", "% of FIFO"):
        table.add_column(column, justify="right")
    for grace in (1, 2, 3):
        for eta in (2, 3, 4):
            if grace >= args.epochs:
                continue
            best, spent = replay_asha(curves, grace=grace, eta=eta, slots=max(1, int((os.cpu_count() or 2) / args.cpu)))
            table.add_row(
                str(grace), str(eta), f"{best:.4f}", f"{100 * (fifo_best - best):.2f}", str(spent),
                f"{100 * spent / fifo_epochs:.0f}%",
            )  # fmt: skip
    Console(width=120).print(table)


def overhead(args: argparse.Namespace, stamp: str) -> dict[str, float]:
    """Wall time of one trial inline and under Tune, same config (2 epochs)."""
    from trainables import create_trainable
    from trainables.session import InlineSession

    config: dict[str, Any] = {
        "backbone": args.backbone,
        "pretrained": args.backbone != "test_efficientnet",
        "image_size": args.image_size,
        "epochs": 2,
        "batch_size": 32,
        "lr": 1e-3,
    }
    # Both runs find the data set and its decoded cache already built (what every trial but the
    # first of a search finds); inline, torch and timm are already imported, as in a debug session.
    from trainables.data import decoded_images, folds_for, load_dataset

    dataset = load_dataset("synthetic")
    decoded_images(dataset, "train", size=args.image_size)
    folds_for(dataset, k=5, seed=0)
    # The same CPU share as a trial: the inline fit sizes its torch threads from this process's
    # affinity, a trial from its Ray resources.
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(affinity)[: max(1, int(args.cpu))])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            create_trainable("timm").fit(config, InlineSession(tmp, verbose=False))
            inline = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, affinity)
    overrides = [f"trainable.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in config.items()]
    cfg = load_config(
        ["space=quick", *overrides, "search=null", "tune.points_to_evaluate=[]", "tune.num_samples=1",
         f"resources.cpu={args.cpu}", "scheduler.name=fifo", "mlflow.enabled=false", "verbose=0",
         f"experiment=bench-overhead-{stamp}"]
    )  # fmt: skip
    start = time.perf_counter()
    outcome = run_search(cfg)
    tuned = time.perf_counter() - start
    trial_s = float(outcome.leaderboard.iloc[0]["time_s"])
    return {"inline_s": inline, "tune_s": tuned, "trial_reported_s": trial_s}


def report(
    runs: dict[str, tuple[SearchOutcome, float]], cost: dict[str, float] | None, args: argparse.Namespace
) -> None:
    """Print the figures side by side, with the ratios the targets are about."""
    console = Console(width=120)
    table = Table(
        title=f"ASHA vs FIFO: {args.trials} trials x {args.epochs} epochs, {args.backbone} @ {args.image_size}px, seed {args.seed}"
    )
    for column in ("scheduler", "best val_acc", "trial-epochs", "stopped early", "wall s"):
        table.add_column(column, justify="right")
    for name, (outcome, wall) in runs.items():
        board = outcome.leaderboard
        table.add_row(
            name,
            f"{outcome.best['val_acc']:.4f}",
            str(outcome.trial_epochs),
            str(int((board["status"] == "stopped").sum())),
            f"{wall:.0f}",
        )
    console.print(table)
    (fifo, fifo_wall), (asha, asha_wall) = runs["fifo"], runs["asha"]
    console.print(f"same configs in the same order under both: {same_configs(fifo, asha)}")
    gap = 100 * (fifo.best["val_acc"] - asha.best["val_acc"])
    ratio = asha.trial_epochs / max(1, fifo.trial_epochs)
    console.print(
        f"ASHA best is {gap:+.2f} points below FIFO's (target <= 1.00): {'met' if gap <= 1.0 else 'MISSED'}\n"
        f"ASHA spent {100 * ratio:.0f}% of FIFO's trial-epochs (target <= 40%): {'met' if ratio <= 0.40 else 'MISSED'}; "
        f"wall time {asha_wall:.0f}s vs {fifo_wall:.0f}s ({asha_wall / fifo_wall:.2f}x)"
    )
    if cost is None:
        return
    console.print(
        f"Per-trial overhead of Ray Tune: one 2-epoch trial inline {cost['inline_s']:.1f}s, as a one-trial "
        f"Tune search {cost['tune_s']:.1f}s (the trial itself reports {cost['trial_reported_s']:.1f}s): "
        f"+{cost['tune_s'] - cost['inline_s']:.1f}s per trial"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print its figures."""
    import ray

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.environ["RUNS_DIR"] = str(runs_dir())  # absolute, inherited by the Ray workers
    start = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f}s; runs under {runs_dir()}", flush=True)
    try:
        cost = None if args.skip_overhead else overhead(args, stamp)
        runs = scheduler_runs(args, stamp)
    finally:
        ray.shutdown()
    report(runs, cost, args)
    print(f"total bench time {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the one command win? ``space=compete budget=B`` against a plain Lite0 fine-tune, in one run.

    python bench/bench_compete.py             # sketchy125: ~40 min on 2 CPU cores (B = the plain run's time)
    python bench/bench_compete.py --seeds 0,1,2   # each seed trains both flows; the gain's mean over seeds
    python bench/bench_compete.py --smoke     # the built-in set, a tiny model: checks the bench runs

1. **Plain fine-tune** (what a competitor does by hand): Lite0 pretrained, 128 px, 12 epochs,
   AdamW with a linear warmup and a cosine decay (one cycle), flip + the sketch augmentation
   (affine, elastic, noise, blur: a superset of flip + affine), label smoothing 0.1, flip TTA,
   trained on the 5 group-aware folds the product finds by default. Its CV is the mean of its
   fold accuracies; its wall time is the time of the 5 fold fits.
2. **The compete flow**, run as a user runs it (``python -m search.run space=compete data=...
   budget=B``, a subprocess, its terminal output in ``<runs>/bench/<name>-compete.log``), with B
   the plain run's wall time: search, OOF, auto ensemble.

Reported: both CVs, the compete ensemble's nested CV (the submitted method's mean over held-out
folds) and its best single model's CV, the models chosen with their weights, and wall times.
Target: the compete flow's nested ensemble CV at least 5 points above the plain fine-tune's CV.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from common.io import runs_dir  # noqa: E402
from search.config import load_config  # noqa: E402
from search.oof import load_oof_config, run_oof  # noqa: E402
from search.runner import run_search  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sketchy125"
# The plain recipe (the reference teams' hand-tuned Lite0 settings), as trial config keys.
PLAIN = {
    "backbone": "tf_efficientnet_lite0",
    "pretrained": True,
    "image_size": 128,
    "batch_size": 32,
    "optimizer": "adamw",
    "lr": 1.0e-3,
    "weight_decay": 0.05,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "aug.sketch_ab": True,
    "tta_flip": True,
    # A fine-tune by hand starts from a random head (timm's); the trainable's default probes it.
    "head_init": "random",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (defaults: the full bench)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--epochs", type=int, default=12, help="the plain fine-tune's epochs")
    p.add_argument(
        "--budget-s", type=float, default=None, help="the compete budget (default: the plain run's time)"
    )
    p.add_argument(
        "--plain-cpu", type=float, default=0.4,
        help="CPUs per plain fold fit (0.4: all 5 folds at once on 2 cores, no idle core in a last wave)",
    )  # fmt: skip
    p.add_argument(
        "--plain", default=None, metavar="CV,STD,WALL_S",
        help="the plain fine-tune's figures from an earlier run of this bench: skips it (e.g. 0.4824,0.0424,1060)",
    )  # fmt: skip
    p.add_argument(
        "--seeds", type=lambda text: [int(x) for x in text.split(",")], default=[0],
        help="training seeds (trainable.seed), e.g. 0,1,2: each runs both flows; a CV moves 1-2 points with it",
    )  # fmt: skip
    p.add_argument("--plain-only", action="store_true", help="run the plain fine-tune alone and print its figures")
    p.add_argument("--smoke", action="store_true", help="built-in set, tiny model, 2 epochs, budget 4m")
    args = p.parse_args(argv)
    if args.smoke:
        args.data, args.epochs, args.budget_s = "synthetic", 2, 240.0
    if args.plain and len(args.seeds) > 1:
        p.error("--plain gives one seed's figures: pass one seed with it")
    return args


def plain(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The plain fine-tune on every fold; its CV and the wall time of its fold fits.

    The OOF stage needs a search to refit, so a one-epoch, one-trial search of the same config
    comes first (not timed); the refit then trains the full ``--epochs`` schedule on all folds.
    """
    overrides = [
        "space=quick",
        f"data={args.data}",
        f"experiment={name}",
        "search={}",
        "tune.points_to_evaluate=[]",
        "tune.num_samples=1",
        "scheduler.name=fifo",
        "trainable.epochs=1",
        "mlflow.enabled=false",
        "leak_audit=false",
        "stages=[]",
        f"trainable.seed={args.seed}",
        *(f"trainable.{k}={v}" for k, v in PLAIN.items()),
    ]
    if args.smoke:
        overrides += [
            "trainable.backbone=test_efficientnet",
            "trainable.pretrained=false",
            "trainable.image_size=32",
        ]
    run_search(load_config(overrides))
    cfg = load_oof_config(
        name,
        [
            ("mode", "refit"),
            ("top_k", 1),
            ("epochs", args.epochs),
            ("tta_flip", True),
            ("resources.cpu", args.plain_cpu),
        ],
    )
    start = time.perf_counter()
    result = run_oof(cfg)
    wall = time.perf_counter() - start
    model = result.results[0]
    return {"cv": float(model.cv_mean or 0.0), "cv_std": float(model.cv_std or 0.0), "wall_s": wall}


def compete(args: argparse.Namespace, name: str, budget_s: float) -> dict[str, Any]:
    """``python -m search.run space=compete budget=B`` as a user runs it; its ensemble's figures."""
    command = [
        sys.executable, "-m", "search.run", "space=compete", f"data={args.data}", f"experiment={name}",
        f"budget={int(budget_s)}s", "mlflow.enabled=false", f"trainable.seed={args.seed}",
    ]  # fmt: skip
    if args.smoke:
        command += [
            "search.backbone={choice: [test_efficientnet]}", "trainable.backbone=test_efficientnet",
            "trainable.pretrained=false", "tune.points_to_evaluate=[]",
        ]  # fmt: skip
    log = runs_dir() / "bench" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(
            command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ)
        ).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the compete run failed (exit {code}); see {log}")
    weights = json.loads(next((runs_dir() / "ensembles" / name).glob("*/weights.json")).read_text())
    chosen = weights["methods"][weights["method"]]
    singles = [json.loads(p.read_text()) for p in (runs_dir() / "oof" / name).glob("*/meta.json")]
    return {
        "wall_s": wall,
        "nested": float(chosen["nested_mean"]),
        "nested_std": float(chosen["nested_std"] or 0.0),
        "method": weights["method"],
        "weights": {k: v for k, v in weights["weights"].items() if v > 0},
        "best_single": max(float(m.get("cv_mean") or 0.0) for m in singles),
        "models": len(singles),
        "log": log,
        "plan": [
            line
            for line in log.read_text().splitlines()
            if line.startswith(("budget ", "estimate:", "warning:"))
        ][:3],
    }


def main(argv: list[str] | None = None) -> int:
    """For each seed, the plain fine-tune, then the compete flow in its time; print the comparison."""
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    console = Console(width=140)
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    budget = args.budget_s
    for seed in args.seeds:
        args.seed = seed
        if args.plain:
            cv, std, wall = (float(x) for x in args.plain.split(","))
            p = {"cv": cv, "cv_std": std, "wall_s": wall}
        else:
            p = plain(args, f"bench-plain-{stamp}-seed{seed}")
        console.print(f"plain fine-tune (seed {seed}): CV {p['cv']:.4f} ± {p['cv_std']:.4f} in {p['wall_s']:.0f} s")
        if args.plain_only:
            continue
        # One budget for every seed: the plain run's compute does not depend on its seed.
        budget = budget or p["wall_s"]
        c = compete(args, f"bench-compete-{stamp}-seed{seed}", budget)
        console.print("compete's plan:", *c["plan"], sep="\n  ")
        console.print("weights:", ", ".join(f"{k} {v:.2f}" for k, v in c["weights"].items()), f"(log: {c['log']})")
        rows.append((seed, p, c))
    if rows:
        report(console, rows, budget or 0.0, args.data)
    return 0


def report(console: Console, rows: list[tuple[int, dict[str, Any], dict[str, Any]]], budget: float, data: str) -> None:
    """One row per seed (plain and compete trained with it) and the mean gain over seeds."""
    table = Table(title=f"compete (budget {budget:.0f} s) vs a plain Lite0 fine-tune ({data})")
    columns = ("seed", "plain CV", "compete nested CV", "gain", "best single CV", "models", "plain s", "compete s")
    for column in columns:
        table.add_column(column, justify="right")
    gains = []
    for seed, p, c in rows:
        gains.append(c["nested"] - p["cv"])
        table.add_row(
            str(seed), f"{p['cv']:.4f} ± {p['cv_std']:.4f}", f"{c['nested']:.4f} ± {c['nested_std']:.4f} ({c['method']})",
            f"{100 * gains[-1]:+.1f}", f"{c['best_single']:.4f}", str(c["models"]), f"{p['wall_s']:.0f}",
            f"{c['wall_s']:.0f}",
        )  # fmt: skip
    console.print(table)
    mean = sum(gains) / len(gains)
    console.print(
        f"compete's nested ensemble CV is {100 * mean:+.1f} points over the plain fine-tune, "
        f"the mean over {len(gains)} seed(s) (target >= +5)"
    )


if __name__ == "__main__":
    raise SystemExit(main())

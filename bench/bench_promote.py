"""Folds as the search's budget: promotion (oof.mode=promote) against search-then-refit, in one run.

    python bench/bench_promote.py                # sketchy125, quick space, 6 trials x 5 epochs at 96 px
    python bench/bench_promote.py --smoke        # the built-in set, a tiny model: checks the bench runs

One search on fold 0 (group-aware folds), then its OOF stage two ways over the same search:

- refit (today's flow): the top-k configs by search score trained anew on all K folds for the
  epochs the search found best;
- promote: the fold-0 trials that add most to the fold-0 ensemble (oof.select=gain) keep their
  model as fold 0 (a trial ASHA stopped first finishes its schedule there) and train on folds
  1..K-1 with the search's full schedule.

Each flow's models are then ensembled (ensemble.optimize, method auto, nested CV). Reported per
flow: trial-epochs (search + folds), wall time of the OOF stage, models in the final ensemble,
the nested-CV accuracy of that ensemble and the best single model's CV. Target: promotion at
most 60% of refit's trial-epochs at equal or better nested ensemble accuracy.
"""

from __future__ import annotations

import argparse
import json
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
from search.oof_fold import fold_result_path, read_fold_result  # noqa: E402
from search.runner import run_search  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sketchy125"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (defaults: the full bench)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="built-in set, tiny model, 3 trials x 2 epochs")
    args = p.parse_args(argv)
    if args.smoke:
        args.data, args.trials, args.epochs, args.image_size, args.top_k = "synthetic", 3, 2, 32, 2
    return args


def search(args: argparse.Namespace, name: str) -> int:
    """The shared fold-0 search; returns its trial-epochs."""
    overrides = [
        "space=quick",
        f"data={args.data}",
        f"experiment={name}",
        f"tune.num_samples={args.trials}",
        f"trainable.epochs={args.epochs}",
        f"trainable.image_size={args.image_size}",
        "mlflow.enabled=false",
        "stages=[]",
    ]
    if args.smoke:
        overrides += ["trainable.backbone=test_efficientnet", "trainable.pretrained=false"]
    outcome = run_search(load_config(overrides))
    return int(outcome.trial_epochs)


def flow(name: str, mode: str, top_k: int) -> dict[str, Any]:
    """One OOF stage over the shared search, then its ensemble; figures for the table."""
    from ensemble.optimize import main as ensemble_main

    overrides = [("mode", mode), ("select", "gain" if mode == "promote" else "score"), ("top_k", top_k)]
    cfg = load_oof_config(name, overrides)
    start = time.perf_counter()
    result = run_oof(cfg, out_name=f"{name}-{mode}")
    wall = time.perf_counter() - start
    epochs = 0
    for model in result.results:
        for fold in range(len(model.fold_scores or [])):
            saved = read_fold_result(fold_result_path(model.directory, fold))
            fit = saved["fit"]
            # A stopped trial promoted continues its fold 0: its search epochs are counted there.
            trained = int(fit.get("epoch", 0) or 0) - int(saved.get("search_epochs", 0) or 0)
            epochs += trained if "n_train" in fit else 0
    out = runs_dir() / "ensembles" / f"{name}-{mode}" / "auto"
    ensemble_main(["--experiment", f"{name}-{mode}", "--out", str(out), "--no-mlflow", "--quiet"])
    weights = json.loads((out / "weights.json").read_text())
    return {
        "fold_epochs": epochs,
        "wall_s": wall,
        "models": len(result.results),
        "best_cv": max(r.cv_mean or 0.0 for r in result.results),
        "nested": _nested(weights),
        "method": weights.get("method"),
    }


def _nested(weights: dict[str, Any]) -> float:
    """The submitted method's nested-CV score from ``weights.json``."""
    method = weights["methods"][weights["method"]]
    return float(method["nested_mean"] if method["nested_mean"] is not None else method["in_sample"])


def main(argv: list[str] | None = None) -> int:
    """Run the search once and both OOF flows over it; print the comparison."""
    args = parse_args(argv)
    name = f"bench-promote-{time.strftime('%Y%m%d-%H%M%S')}"
    search_epochs = search(args, name)
    rows = {mode: flow(name, mode, args.top_k) for mode in ("refit", "promote")}
    table = Table(title=f"promote vs refit ({args.data}, {args.trials} trials x {args.epochs} epochs)")
    for column in ("flow", "trial-epochs", "OOF wall s", "models", "best single CV", "ensemble nested", "method"):
        table.add_column(column, justify="left" if column in ("flow", "method") else "right")
    for mode, r in rows.items():
        table.add_row(
            mode, str(search_epochs + r["fold_epochs"]), f"{r['wall_s']:.0f}", str(r["models"]),
            f"{r['best_cv']:.4f}", f"{r['nested']:.4f}", str(r["method"]),
        )  # fmt: skip
    console = Console(width=140)
    console.print(table)
    ratio = (search_epochs + rows["promote"]["fold_epochs"]) / max(1, search_epochs + rows["refit"]["fold_epochs"])
    console.print(f"promote spends {ratio:.0%} of refit's trial-epochs (target <= 60%); "
                  f"nested ensemble {rows['promote']['nested'] - rows['refit']['nested']:+.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

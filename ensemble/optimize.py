"""Search ensemble weights over OOF artifacts, estimate every method honestly, write a submission.

Usage::

    python -m ensemble.optimize                                    # latest experiment, --method auto
    python -m ensemble.optimize --experiment exp1 --method all     # every registered method
    python -m ensemble.optimize --method bayesian                  # submit this one method
    python -m ensemble.optimize --runs runs/oof/exp1/a runs/oof/exp1/b --method caruana --metric f1

Writes ``submission.csv``, ``weights.json``, ``report.md`` and ``weights.png`` to
``$RUNS_DIR/ensembles/<experiment>/<method>/`` (or ``--out``) and logs an MLflow run linked to
the source model runs (``--no-mlflow`` skips it). The best single model and the plain mean are
always evaluated as baselines. With several methods (``auto``, the default: every fast built-in
method; ``all``; or a comma list) the submission comes from the simplest method within one
standard error of the best nested-CV estimate (:mod:`ensemble._select`), and the report and
the terminal say why. With one method named, that method is submitted.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from common.console import make_console
from common.io import runs_dir
from ensemble._defaults import DEFAULT_METHOD, DEFAULT_TRIALS
from ensemble.artifacts import (
    ArtifactError,
    ArtifactWarning,
    check_compatible,
    find_artifacts,
    latest_experiment,
)

BASELINES = ["best", "mean"]
BUILTIN_ORDER = ["best", "mean", "vote", "caruana", "bayesian", "genetic", "logloss", "stacking"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m ensemble.optimize",
        description="Ensemble OOF artifacts: weight search, honest nested-CV estimates, submission.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--experiment", default="latest", help="experiment under $RUNS_DIR/oof (default: the latest)"
    )
    source.add_argument(
        "--runs", nargs="+", type=Path, metavar="DIR", help="artifact directories to ensemble instead"
    )
    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help="auto (every fast method, the simplest within one SE of the best nested score is submitted), "
        "all, one of bayesian, genetic, caruana, logloss, mean, vote, stacking, best, or a comma list "
        f"(default: {DEFAULT_METHOD})",
    )
    p.add_argument(
        "--metric",
        default="accuracy",
        choices=["accuracy", "f1", "logloss"],
        help="what to optimise and report",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help=f"bayesian: Optuna trials (default {DEFAULT_TRIALS})",
    )
    p.add_argument("--generations", type=int, default=100, help="genetic: generations (default 100)")
    p.add_argument("--caruana-iters", type=int, default=100, help="caruana: selection steps (default 100)")
    p.add_argument(
        "--stacking-meta", default="logreg", choices=["logreg", "rf"], help="stacking: meta-learner"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the searches (same seed, same weights)")
    p.add_argument(
        "--out", type=Path, help="output directory (default $RUNS_DIR/ensembles/<experiment>/<method>)"
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.add_argument("--mlflow-experiment", help="MLflow experiment (default: sketchsearch, where the search logs; the run nests under the search's parent run)")
    p.add_argument(
        "--mlflow-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///$RUNS_DIR/mlflow.db)",
    )
    p.add_argument(
        "--no-submission", action="store_true", help="keep models without test.npy and skip the submission"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def _parse_methods(spec: str) -> list[str]:
    from ensemble._base import list_methods
    from ensemble._select import AUTO_METHODS

    known = list_methods()
    if spec.strip() == "auto":
        return [m for m in AUTO_METHODS if m in known]
    if spec.strip() == "all":
        return [m for m in BUILTIN_ORDER if m in known] + sorted(set(known) - set(BUILTIN_ORDER))
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ValueError(f"unknown method(s) {unknown or spec!r}; valid: {', '.join(known)}, 'auto' or 'all'")
    return names


def _method_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from ensemble._base import create_method

    options = {
        "metric": args.metric,
        "n_trials": args.trials,
        "n_generations": args.generations,
        "n_iter": args.caruana_iters,
        "meta": args.stacking_meta,
        "random_state": args.seed,
        "verbose": not args.quiet,
    }
    accepted = create_method(name).get_params()
    return {k: v for k, v in options.items() if k in accepted}


def _experiment_label(args: argparse.Namespace) -> str:
    if args.runs is None:
        return latest_experiment() if args.experiment in (None, "latest") else args.experiment
    # A model directory belongs to its parent's experiment; an experiment directory is one.
    names = {
        (r.resolve().parent if (r / "meta.json").is_file() or (r / "oof.npy").is_file() else r.resolve()).name
        for r in args.runs
    }
    return names.pop() if len(names) == 1 else "custom"


def main(argv: list[str] | None = None) -> int:
    """Run the ensemble search; returns the process exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    console = make_console(stderr=True, quiet=args.quiet)  # progress
    errors = make_console(stderr=True)  # errors and warnings print even with --quiet
    try:
        requested = _parse_methods(args.method)
    except ValueError as err:
        errors.print(f"[red]error:[/] {err}", highlight=False)
        return 2
    evaluated = [m for m in BASELINES if m not in requested] + requested

    try:
        experiment = _experiment_label(args)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ArtifactWarning)
            found = find_artifacts(experiment=None if args.runs else experiment, runs=args.runs)
            artifacts = check_compatible(found, require_test=not args.no_submission)
    except ArtifactError as err:
        errors.print(f"[red]error:[/] {err}", highlight=False)
        return 2
    for w in caught:
        errors.print(f"[yellow]warning:[/] {w.message}", highlight=False)
    excluded = [a.model_id for a in found if a not in artifacts]

    from tqdm.auto import tqdm

    from ensemble._base import create_method
    from ensemble._evaluate import evaluate_method
    from ensemble._report import RunSummary, print_comparison, write_outputs
    from ensemble._select import choose_method
    from ensemble._stack import ProbStack

    stack = ProbStack.from_artifacts(artifacts)
    y = np.asarray(artifacts[0].targets, dtype=np.int64)
    folds = np.asarray(artifacts[0].folds)
    console.print(
        f"[bold]{experiment}[/]: {len(artifacts)} models x {stack.n_rows} rows x {stack.n_classes} classes, "
        f"{np.unique(folds).size} folds; metric {args.metric}; methods {', '.join(evaluated)}"
    )
    results = []
    n_folds = int(np.unique(folds).size)
    for name in evaluated:
        method = create_method(name, **_method_kwargs(name, args))
        # One bar per method: the fit on all rows, then each nested fold.
        with tqdm(
            total=n_folds + 1, desc=f"{name:>9}", unit="fit", disable=args.quiet, dynamic_ncols=True
        ) as bar:
            result = evaluate_method(
                method, stack, y, folds, args.metric, on_fold=lambda i, n, bar=bar: bar.update(1)
            )
            bar.update(1)
        results.append(result)

    choice = choose_method(results, args.metric, requested=requested[0] if len(requested) == 1 else None)
    chosen = choice.chosen
    test_labels = test_proba = None
    if not args.no_submission:
        test_stack = ProbStack.from_artifacts(artifacts, split="test")
        test_labels = chosen.method.predict(test_stack)
        test_proba = chosen.method.predict_proba(test_stack)  # what a pseudo-labelling round reads
    summary = RunSummary(
        experiment,
        args.metric,
        artifacts,
        results,
        chosen,
        choice.best,
        test_labels,
        excluded,
        test_proba,
        choice,
    )

    label = args.method.strip() if args.method.strip() in ("auto", "all") else "+".join(requested)
    out_dir = args.out or runs_dir() / "ensembles" / experiment / label
    files = write_outputs(summary, out_dir)
    if not args.quiet:
        print_comparison(summary, file=sys.stdout)
    console.print(f"wrote {', '.join(str(p) for p in files.values())}", highlight=False)

    if not args.no_mlflow:
        from common.tracking import tracking_uri
        from ensemble._mlflow import log_run

        try:
            run_id = log_run(
                summary,
                out_dir,
                experiment_name=args.mlflow_experiment,
                params={"trials": args.trials, "generations": args.generations, "seed": args.seed},
                uri=args.mlflow_uri,
            )
        except Exception as err:  # the store is down or refuses: the files are what matters
            first = str(err).splitlines()[0][:300] if str(err) else ""
            errors.print(
                f"[yellow]warning:[/] MLflow at {args.mlflow_uri or tracking_uri()} failed ({type(err).__name__}: {first}); "
                f"the ensemble's files are written in {out_dir} but not logged",
                highlight=False,
            )
        else:
            console.print(f"MLflow run {run_id} at {args.mlflow_uri or tracking_uri()}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

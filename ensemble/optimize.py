"""Search ensemble weights over OOF artifacts, estimate every method honestly, write a submission.

Usage::

    python -m ensemble.optimize                                    # latest experiment, --method auto
    python -m ensemble.optimize --experiment exp1 --method all     # every registered method
    python -m ensemble.optimize --method bayesian                  # submit this one method
    python -m ensemble.optimize --runs runs/oof/exp1/a runs/oof/exp1/b --method caruana --metric f1

Writes ``submission.csv``, ``weights.json``, ``report.md`` and ``weights.png`` (two models or more) to
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
from ensemble._compat import check_compatible
from ensemble._defaults import DEFAULT_METHOD, DEFAULT_TRIALS
from ensemble._discover import find_artifacts, latest_experiment
from ensemble.artifacts import ArtifactWarning
from ensemble.options import EnsembleOptions

BASELINES = ["best", "mean"]
BUILTIN_ORDER = ["best", "mean", "vote", "caruana", "bayesian", "genetic", "logloss", "stacking"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; its defaults are :class:`EnsembleOptions`'s."""
    d = EnsembleOptions()
    p = argparse.ArgumentParser(
        prog="python -m ensemble.optimize",
        description="Ensemble OOF artifacts: weight search, honest nested-CV estimates, submission.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--experiment", default=d.experiment, help="experiment under $RUNS_DIR/oof (default: the latest)"
    )
    source.add_argument(
        "--runs", nargs="+", type=Path, metavar="DIR", help="artifact directories to ensemble instead"
    )
    p.add_argument(
        "--method",
        default=d.method,
        help="auto (every fast method, the simplest within one SE of the best nested score is submitted), "
        "all, one of bayesian, genetic, caruana, logloss, mean, vote, stacking, best, or a comma list "
        f"(default: {DEFAULT_METHOD})",
    )
    p.add_argument(
        "--metric",
        default=d.metric,
        choices=["accuracy", "f1", "logloss"],
        help="what to optimise and report",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=d.trials,
        help=f"bayesian: Optuna trials (default {DEFAULT_TRIALS})",
    )
    p.add_argument(
        "--generations", type=int, default=d.generations, help="genetic: generations (default 100)"
    )
    p.add_argument(
        "--caruana-iters", type=int, default=d.caruana_iters, help="caruana: selection steps (default 100)"
    )
    p.add_argument(
        "--stacking-meta", default=d.stacking_meta, choices=["logreg", "rf"], help="stacking: meta-learner"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the searches (same seed, same weights)")
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


def _method_kwargs(name: str, options: EnsembleOptions) -> dict[str, Any]:
    from ensemble._base import create_method

    kwargs = {
        "metric": options.metric,
        "n_trials": options.trials,
        "n_generations": options.generations,
        "n_iter": options.caruana_iters,
        "meta": options.stacking_meta,
        "random_state": options.seed,
        "verbose": not options.quiet,
    }
    accepted = create_method(name).get_params()
    return {k: v for k, v in kwargs.items() if k in accepted}


def _experiment_label(options: EnsembleOptions) -> str:
    if options.runs is None:
        return latest_experiment() if options.experiment in (None, "latest") else options.experiment
    # A model directory belongs to its parent's experiment; an experiment directory is one.
    names = {
        (r.resolve().parent if (r / "meta.json").is_file() or (r / "oof.npy").is_file() else r.resolve()).name
        for r in options.runs
    }
    return names.pop() if len(names) == 1 else "custom"


def out_dir(options: EnsembleOptions, experiment: str) -> Path:
    """Where a run writes: ``options.out``, else ``$RUNS_DIR/ensembles/<experiment>/<method label>``."""
    return options.out or runs_dir() / "ensembles" / experiment / options.label()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status (0 ok, 2 bad input)."""
    return run(EnsembleOptions.from_args(build_parser().parse_args(argv)))


def run(options: EnsembleOptions) -> int:
    """Run one ensemble search: load the artifacts, evaluate every method, write and log the result.

    Args:
        options: What to ensemble and how (from the command line or the search's ensemble stage).

    Returns:
        The exit status: 0 ok, 2 bad input (the error is printed).
    """
    console = make_console(stderr=True, quiet=options.quiet)  # progress
    errors = make_console(stderr=True)  # errors and warnings print even with --quiet
    try:
        requested = _parse_methods(options.method)
        experiment = _experiment_label(options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ArtifactWarning)
            found = find_artifacts(
                experiment=None if options.runs else experiment,
                runs=list(options.runs) if options.runs else None,
            )
            artifacts = check_compatible(found, require_test=options.submission)
    except ValueError as err:  # an unknown method, or an ArtifactError (a ValueError)
        errors.print(f"[red]error:[/] {err}", highlight=False)
        return 2
    for w in caught:
        errors.print(f"[yellow]warning:[/] {w.message}", highlight=False)
    excluded = [a.model_id for a in found if a not in artifacts]
    summary = _evaluate(options, experiment, artifacts, requested, excluded, console)

    from ensemble._report import print_comparison, write_outputs

    directory = out_dir(options, experiment)
    files = write_outputs(summary, directory)
    if not options.quiet:
        print_comparison(summary, file=sys.stdout)
    if options.paths:
        console.print(f"wrote {', '.join(str(p) for p in files.values())}", highlight=False)
    if options.mlflow:
        _log_mlflow(options, summary, directory, console, errors)
    return 0


def _evaluate(
    options: EnsembleOptions,
    experiment: str,
    artifacts: list[Any],
    requested: list[str],
    excluded: list[str],
    console: Any,
) -> Any:
    """Fit and score every requested method (and the baselines); choose one; predict the test rows."""
    from ensemble._report import RunSummary
    from ensemble._select import choose_method
    from ensemble._stack import ProbStack

    evaluated = [m for m in BASELINES if m not in requested] + requested
    stack = ProbStack.from_artifacts(artifacts)
    y = np.asarray(artifacts[0].targets, dtype=np.int64)
    folds = np.asarray(artifacts[0].folds)
    single = len(artifacts) == 1
    if single:  # every method is that model's predictions: a table of ties would say nothing more
        evaluated = ["mean"]
    console.print(
        f"[bold]{experiment}[/]: {len(artifacts)} model{'' if single else 's'} x {stack.n_rows} rows x "
        f"{stack.n_classes} classes, {np.unique(folds).size} folds; metric {options.metric}; "
        + (
            "one model, nothing to weigh: its predictions are the submission (method mean)"
            if single
            else f"methods {', '.join(evaluated)}"
        )
    )
    results = _score_methods(evaluated, options, stack, y, folds)

    one_asked = requested[0] if len(requested) == 1 and not single else None
    choice = choose_method(results, options.metric, requested=one_asked)
    chosen = choice.chosen
    test_labels = test_proba = None
    if options.submission:
        test_stack = ProbStack.from_artifacts(artifacts, split="test")
        test_labels = chosen.method.predict(test_stack)
        test_proba = chosen.method.predict_proba(test_stack)  # what a pseudo-labelling round reads
    return RunSummary(
        experiment,
        options.metric,
        artifacts,
        results,
        chosen,
        choice.best,
        test_labels,
        excluded,
        test_proba,
        choice,
    )


def _score_methods(
    evaluated: list[str], options: EnsembleOptions, stack: Any, y: np.ndarray, folds: np.ndarray
) -> list[Any]:
    """Fit each method on every row and estimate it by nested CV, with a progress bar per method."""
    from tqdm.auto import tqdm

    from ensemble._base import create_method
    from ensemble._evaluate import evaluate_method

    results = []
    n_folds = int(np.unique(folds).size)
    for name in evaluated:
        method = create_method(name, **_method_kwargs(name, options))
        # One bar per method: the fit on all rows, then each nested fold.
        with tqdm(
            total=n_folds + 1,
            desc=f"{name:>9}",
            unit="fit",
            # a bar per method on a terminal; in a log the comparison table says it all
            disable=options.quiet or not sys.stderr.isatty(),
            dynamic_ncols=True,
        ) as bar:
            result = evaluate_method(
                method, stack, y, folds, options.metric, on_fold=lambda i, n, bar=bar: bar.update(1)
            )
            bar.update(1)
        results.append(result)
    return results


def _log_mlflow(options: EnsembleOptions, summary: Any, directory: Path, console: Any, errors: Any) -> None:
    """Log the run to MLflow; a store that is down only warns (the files are what matters)."""
    from common.tracking import tracking_uri
    from ensemble._mlflow import log_run

    try:
        run_id = log_run(
            summary,
            directory,
            experiment_name=options.mlflow_experiment,
            params={"trials": options.trials, "generations": options.generations, "seed": options.seed},
            uri=options.mlflow_uri,
        )
    except Exception as err:  # the store is down or refuses: the files are what matters
        first = str(err).splitlines()[0][:300] if str(err) else ""
        errors.print(
            f"[yellow]warning:[/] MLflow at {options.mlflow_uri or tracking_uri()} failed ({type(err).__name__}: {first}); "
            f"the ensemble's files are written in {directory} but not logged",
            highlight=False,
        )
    else:
        if options.paths:
            console.print(f"MLflow run {run_id} at {options.mlflow_uri or tracking_uri()}", highlight=False)


if __name__ == "__main__":
    sys.exit(main())

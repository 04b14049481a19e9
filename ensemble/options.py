"""The options of one ensemble run: what ``python -m ensemble.optimize`` parses and the search's stage builds.

Both callers make an :class:`EnsembleOptions` and hand it to :func:`ensemble.optimize.run`, so the
command line and the ``ensemble`` stage of ``search.run`` share one set of defaults (the field
defaults here, :mod:`ensemble._defaults` for the method and the trials) and no argv is rebuilt.
Imports nothing heavy: no torch, ray or ``search``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ensemble._defaults import DEFAULT_METHOD, DEFAULT_TRIALS


@dataclass(frozen=True)
class EnsembleOptions:
    """One ensemble run.

    Attributes:
        experiment: Experiment under ``$RUNS_DIR/oof`` (``latest``: the most recent); ignored with ``runs``.
        runs: Artifact directories to ensemble instead of an experiment.
        method: ``auto``, ``all``, one method or a comma list.
        metric: ``accuracy``, ``f1`` or ``logloss``: what to optimise and report.
        trials: Bayesian: Optuna trials.
        generations: Genetic: generations.
        caruana_iters: Caruana: selection steps.
        stacking_meta: Stacking: meta-learner (``logreg`` or ``rf``).
        seed: Seed of the searches (same seed, same weights).
        out: Output directory; None: ``$RUNS_DIR/ensembles/<experiment>/<method>``.
        mlflow: Log an MLflow run.
        mlflow_experiment: MLflow experiment; None: the OOF experiment's name.
        mlflow_uri: MLflow tracking URI; None: ``$MLFLOW_TRACKING_URI``, else the runs folder's store.
        submission: Write the submission (False keeps models without ``test.npy``).
        quiet: No progress output.
        paths: Say where the files went and which MLflow run holds them (off as a stage of
            ``search.run``, which says where everything is once, at its end).
    """

    experiment: str = "latest"
    runs: tuple[Path, ...] | None = None
    method: str = DEFAULT_METHOD
    metric: str = "accuracy"
    trials: int = DEFAULT_TRIALS
    generations: int = 100
    caruana_iters: int = 100
    stacking_meta: str = "logreg"
    seed: int = 0
    out: Path | None = None
    mlflow: bool = True
    mlflow_experiment: str | None = None
    mlflow_uri: str | None = None
    submission: bool = True
    quiet: bool = False
    paths: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EnsembleOptions:
        """The options of a parsed ``ensemble.optimize`` command line (``--no-*`` flags negated)."""
        given = vars(args)
        values = {f.name: given[f.name] for f in fields(cls) if f.name in given}
        values["mlflow"] = not given.get("no_mlflow", False)
        values["submission"] = not given.get("no_submission", False)
        if values.get("runs") is not None:
            values["runs"] = tuple(values["runs"])
        return cls(**values)

    def label(self) -> str:
        """The output folder's name for :attr:`method` (``auto``, ``all``, or the methods joined by ``+``)."""
        method = self.method.strip()
        return re.sub(r"[^A-Za-z0-9_.+-]+", "+", method).strip("+") or "ensemble"

"""The ``ensemble`` stage of ``search.run``: ensemble the OOF artifacts the ``oof`` stage just wrote.

It runs ``python -m ensemble.optimize`` in-process with the search's ``ensemble:`` settings, so a
search with ``stages: [oof, ensemble]`` ends with a submission. It reads the search's config only
through plain attribute access and imports nothing from ``search``, ``torch`` or ``ray``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from common.io import runs_dir


def stage_out_dir(cfg: Any, experiment: str) -> Path:
    """``<runs>/ensembles/<experiment>/<method>``: where the stage writes (as ``ensemble.optimize`` would)."""
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "+", str(cfg.ensemble.method).strip()).strip("+") or "ensemble"
    return runs_dir() / "ensembles" / experiment / label


def stage_argv(cfg: Any, experiment: str, tracking_uri: str | None = None) -> list[str]:
    """The ``ensemble.optimize`` command line for a search's config."""
    ens = cfg.ensemble
    argv = [
        "--experiment", experiment,
        "--out", str(stage_out_dir(cfg, experiment)),
        "--method", str(ens.method),
        "--metric", str(ens.metric),
        "--trials", str(int(ens.trials)),
    ]  # fmt: skip
    if not cfg.mlflow.enabled:
        argv.append("--no-mlflow")
    else:
        argv += ["--mlflow-experiment", str(cfg.mlflow.experiment)]
        if tracking_uri:
            argv += ["--mlflow-uri", str(tracking_uri)]
    return argv


def run_stage(cfg: Any, outcome: Any) -> str:
    """Ensemble the experiment's OOF artifacts and write the submission.

    The search's MLflow store is used for the ensemble's run, so the search, its refit models
    and the ensemble sit side by side in one UI.

    Returns:
        The path of the submission.

    Raises:
        RuntimeError: ``ensemble.optimize`` refused the artifacts (its message says why).
    """
    from ensemble.optimize import main

    experiment = str(outcome.experiment)
    code = main(stage_argv(cfg, experiment, getattr(outcome, "tracking_uri", None)))
    if code != 0:
        raise RuntimeError(f"the ensemble stage failed (exit {code}); see the error above")
    submission = stage_out_dir(cfg, experiment) / "submission.csv"
    print(f"submission:   {submission}")
    return str(submission)

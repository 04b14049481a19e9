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
from ensemble._defaults import DEFAULT_METHOD, DEFAULT_TRIALS


def _setting(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.ensemble.<key>``, or the package's default where the config leaves it out or null."""
    value = getattr(cfg.ensemble, key, None)
    return default if value is None else value


def stage_out_dir(cfg: Any, experiment: str) -> Path:
    """``<runs>/ensembles/<experiment>/<method>``: where the stage writes (as ``ensemble.optimize`` would)."""
    method = str(_setting(cfg, "method", DEFAULT_METHOD)).strip()
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "+", method).strip("+") or "ensemble"
    return runs_dir() / "ensembles" / experiment / label


def stage_argv(cfg: Any, experiment: str, tracking_uri: str | None = None) -> list[str]:
    """The ``ensemble.optimize`` command line for a search's config.

    ``ensemble.method`` and ``ensemble.trials`` fall back to :mod:`ensemble._defaults`, the
    values ``python -m ensemble.optimize`` uses, so the stage and the command agree.
    """
    argv = [
        "--experiment", experiment,
        "--out", str(stage_out_dir(cfg, experiment)),
        "--method", str(_setting(cfg, "method", DEFAULT_METHOD)),
        "--metric", str(_setting(cfg, "metric", "accuracy")),
        "--trials", str(int(_setting(cfg, "trials", DEFAULT_TRIALS))),
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

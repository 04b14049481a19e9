"""The ``ensemble`` stage of ``search.run``: ensemble the OOF artifacts the ``oof`` stage just wrote.

It builds an :class:`~ensemble.options.EnsembleOptions` from the search's ``ensemble:`` settings
and calls :func:`ensemble.optimize.run` in-process, so a search with ``stages: [oof, ensemble]``
ends with a submission. It reads the search's config only through plain attribute access and
imports nothing from ``search``, ``torch`` or ``ray``.
"""

from __future__ import annotations

from typing import Any

from ensemble.options import EnsembleOptions


def stage_options(cfg: Any, experiment: str, tracking_uri: str | None = None) -> EnsembleOptions:
    """The ensemble run of a search's config.

    A key the config leaves out or sets to null keeps :class:`EnsembleOptions`'s default (the
    values ``python -m ensemble.optimize`` uses), so the stage and the command agree.

    Args:
        cfg: The search's config (``ensemble.*`` and ``mlflow.*`` are read).
        experiment: The OOF experiment to ensemble.
        tracking_uri: The search's MLflow store, so the ensemble's run sits beside its models'.
    """
    defaults = EnsembleOptions()
    given = {
        key: value
        for key in ("method", "metric", "trials")
        if (value := getattr(cfg.ensemble, key, None)) is not None
    }
    return EnsembleOptions(
        experiment=experiment,
        method=str(given.get("method", defaults.method)),
        metric=str(given.get("metric", defaults.metric)),
        trials=int(given.get("trials", defaults.trials)),
        mlflow=bool(cfg.mlflow.enabled),
        mlflow_experiment=str(cfg.mlflow.experiment) if cfg.mlflow.enabled else None,
        mlflow_uri=str(tracking_uri) if cfg.mlflow.enabled and tracking_uri else None,
        paths=False,  # search.run says where everything is, once, at its end
    )


def run_stage(cfg: Any, outcome: Any) -> str:
    """Ensemble the experiment's OOF artifacts and write the submission.

    The search's MLflow store is used for the ensemble's run, so the search, its refit models
    and the ensemble sit side by side in one UI.

    Returns:
        The path of the submission.

    Raises:
        RuntimeError: ``ensemble.optimize`` refused the artifacts (its message says why).
    """
    from ensemble.optimize import out_dir, run

    experiment = str(outcome.experiment)
    options = stage_options(cfg, experiment, getattr(outcome, "tracking_uri", None))
    code = run(options)
    if code != 0:
        raise RuntimeError(f"the ensemble stage failed (exit {code}); see the error above")
    return str(out_dir(options, experiment) / "submission.csv")

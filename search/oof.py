"""``python -m search.oof experiment=<name> top_k=5``: refit a search's best configs on every fold.

Each (model, fold) is a Ray trial with the search's per-trial resources. A fold trains on the
other folds for the epochs at which the search scored the trial best, then predicts its own rows
and the test set; the folds of a model become its OOF artifact (``oof.npy``, ``test.npy``,
``meta.json``: see :mod:`ensemble.artifacts`) and a single-model ``submission.csv`` under
``<runs>/oof/<experiment>/<model_id>/``, logged to the trial's MLflow run. Folds already
predicted are kept, so rerunning an interrupted refit finishes only what is missing.

Examples::

    python -m search.oof                                    # the latest search, oof.* from its config
    python -m search.oof experiment=quick-20261126-101500 top_k=5 max_per_backbone=2
    python -m search.oof experiment=my-search tta_flip=true resources.gpu=0.5

Also a stage of ``search.run``: ``stages=[oof]`` (``[oof, ensemble]`` goes on to a submission).
"""

from __future__ import annotations

import logging
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from common.io import runs_dir
from common.tracking import tracking_uri
from search import tracking
from search.cluster import ray_session, remote_storage, storage_root
from search.config import ConfigError, parse_overrides
from search.failures import install_retry_rule
from search.oof_collect import (
    DataFacts,
    ModelResult,
    collect_model,
    is_current,
    log_model,
    missing_folds,
    model_run_id,
)
from search.oof_config import OVERRIDABLE, SHORTHANDS, load_oof_config
from search.oof_data import data_facts
from search.oof_fold import fetch_shipped, make_job, ray_fold_trial
from search.oof_promote import NothingToPromote, Promotion, promote
from search.oof_report import print_summary, save_leaderboard
from search.oof_select import OofTime, RefitModel, select_models, take_in_time
from search.preflight import preflight
from search.progress import LiveReporter, setup_logging
from search.search_result import SearchResult, load_search_result

log = logging.getLogger("search.oof")

# Set on every refit model from the refit's own config: how it runs here, not what it is.
RUNTIME_TRAINABLE_KEYS = ("device", "num_workers", "amp")


@dataclass
class OofOutcome:
    """What a refit produced.

    Attributes:
        experiment: The search's name (also the OOF experiment's).
        out_dir: ``<runs>/oof/<experiment>``: one directory per model plus ``leaderboard.csv``.
        results: One per selected model, best search score first.
        tracking_uri: The MLflow store the models were logged to, or None.
        leaderboard: ``out_dir/leaderboard.csv``.
    """

    experiment: str
    out_dir: Path
    results: list[ModelResult] = field(default_factory=list)
    tracking_uri: str | None = None
    leaderboard: Path | None = None

    @property
    def complete(self) -> bool:
        """Whether every selected model has all its folds."""
        return all(r.complete for r in self.results)


def oof_dir(runs: Path, experiment: str) -> Path:
    """``<runs>/oof/<experiment>``, where :func:`ensemble.find_artifacts` looks."""
    return Path(runs) / "oof" / experiment


def run_oof(
    cfg: DictConfig,
    *,
    callbacks: Sequence[Any] = (),
    out_name: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    log_prefix: str = "oof",
) -> OofOutcome:
    """Refit the best trials of the search ``cfg.experiment`` on every fold; write their artifacts.

    Args:
        cfg: From :func:`load_oof_config` (or the config ``search.run`` ran, as a stage).
        callbacks: Extra ``ray.tune.Callback`` objects for the fold trials.
        out_name: The OOF experiment to write (default: the search's name). A variant of the
            refit (pseudo-labels, say) writes beside the plain one under its own name.
        config_overrides: Set in every model's config (e.g. ``{"pseudo_labels": path}``).
        log_prefix: MLflow metric prefix and artifact folder in each trial's run.

    Returns:
        The outcome; models with missing folds (a fold failed or the run was interrupted) have
        no ``meta.json`` yet and are finished by running the same command again.

    Raises:
        ValueError: The search has no usable trial, or the chosen models disagree on the folds.
    """
    runs = runs_dir()
    experiment = str(cfg.experiment)
    found = load_search_result(runs, experiment, str(cfg.tune.metric))
    record = found.record
    models, promotion = _select(cfg, found)
    if config_overrides:
        models = [replace(m, config={**m.config, **config_overrides}) for m in models]
    facts = data_facts(models)
    name = out_name or experiment
    out_dir = oof_dir(runs, name)
    jobs = _jobs(cfg, models, facts, out_dir, ship=_ships(cfg, runs), promotion=promotion)
    log.info(
        "refitting %d models x %d folds (%d fold fits to run, %d already done) into %s",
        len(models), facts.k, len(jobs), len(models) * facts.k - len(jobs), out_dir,
    )  # fmt: skip
    if jobs:
        _run_folds(cfg, runs, name, jobs, callbacks)

    return _collect(cfg, record, models, facts, name, log_prefix=log_prefix)


def _collect(
    cfg: DictConfig,
    record: Any,
    models: Sequence[RefitModel],
    facts: DataFacts,
    name: str,
    *,
    log_prefix: str,
) -> OofOutcome:
    """Assemble each model's folds into its artifact, log the new ones to MLflow, write the leaderboard."""
    experiment = str(cfg.experiment)
    out_dir = oof_dir(runs_dir(), name)
    tracker, exp_id = _tracker(cfg, record)
    outcome = OofOutcome(name, out_dir, tracking_uri=tracker.uri if tracker else None)
    for model in models:
        model_dir = out_dir / model.model_id
        run_id = None
        todo = not missing_folds(model_dir, facts.k) and not is_current(model_dir, facts.k)
        if tracker is not None and exp_id and todo:
            run_id = model_run_id(tracker, exp_id, record.parent_run_id, model, {"experiment": experiment})
        result = collect_model(
            model,
            model_dir,
            facts,
            experiment=name,
            dtype=str(cfg.oof.dtype),
            tta_flip=bool(cfg.oof.tta_flip),
            mlflow_run_id=run_id,
        )
        if tracker is not None and run_id and result.complete and not result.reused:
            log_model(tracker, run_id, result, prefix=log_prefix)
        outcome.results.append(result)
    outcome.leaderboard = save_leaderboard(outcome)
    if tracker is not None:
        if record.parent_run_id:
            tracker.call(lambda c: c.log_artifact(record.parent_run_id, str(outcome.leaderboard), log_prefix))
        tracker.flush()
    return outcome


def run_stage(cfg: DictConfig, outcome: Any) -> OofOutcome:
    """The ``oof`` stage of ``search.run``: refit the search that just finished.

    Raises:
        RuntimeError: Some folds did not finish; the message says how to complete them.
    """
    stage_cfg = cfg.copy()
    stage_cfg.experiment = outcome.experiment
    result = run_oof(stage_cfg)
    print_summary(result, where=False)  # search.run prints where everything is, once, at the end
    if not result.complete:
        raise RuntimeError(
            f"the OOF refit of {outcome.experiment} is incomplete; finish it with: "
            f"python -m search.oof experiment={outcome.experiment}"
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; 0 when every model is complete, 1 when folds are missing, 2 on bad input
    or inconsistent fold files (the message names the file to delete)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(textwrap.dedent(__doc__ or "").strip())
        print(
            "\nKeys: oof.* (or their shorthands " + ", ".join(SHORTHANDS) + "), " + ", ".join(OVERRIDABLE[1:])
        )
        return 0
    setup_logging()
    try:
        pairs = parse_overrides(argv)
        experiment = dict(pairs).get("experiment")
        cfg = load_oof_config(experiment, [(k, v) for k, v in pairs if k != "experiment"])
        preflight(cfg, stages=False)  # data, backbones, resources, ensemble keys: before Ray starts
        outcome = run_oof(cfg)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(outcome)
    if not outcome.complete:
        print(
            f"some folds did not finish; rerun python -m search.oof experiment={outcome.experiment} "
            "to complete them (finished folds are kept)",
            file=sys.stderr,
        )
        return 1
    return 0


def _select(cfg: DictConfig, found: SearchResult) -> tuple[list[RefitModel], Promotion]:
    """The models to fit on every fold, and (promotion) where each one's fold 0 comes from."""
    promotion = Promotion()
    if cfg.oof.mode == "promote":
        try:
            promotion = promote(cfg, found)
        except NothingToPromote as err:
            # A short budget can end every trial early; refitting them beats ending with nothing.
            log.warning("%s: refitting the best %d on every fold instead", err, int(cfg.oof.top_k))
    models = promotion.models or take_in_time(
        select_models(
            found,
            trainable=str(cfg.trainable.name),
            top_k=len(found.trials),  # then as many of them as the OOF's time fits (budget=), up to top_k
            max_per_backbone=cfg.oof.max_per_backbone,
            epochs=cfg.oof.epochs,
        ),
        int(cfg.oof.top_k),
        OofTime.from_config(cfg.oof),
    )
    overrides = {k: cfg.trainable[k] for k in RUNTIME_TRAINABLE_KEYS if k in cfg.trainable}
    return [replace(m, config={**m.config, **overrides}) for m in models], promotion


def _ships(cfg: DictConfig, runs: Path) -> bool:
    """Whether fold results travel through Ray's storage rather than a run directory every node shares."""
    ship = cfg.oof.ship_results
    return remote_storage(cfg, runs) if ship == "auto" else bool(ship)


def _jobs(
    cfg: DictConfig,
    models: Sequence[RefitModel],
    facts: DataFacts,
    out_dir: Path,
    ship: bool,
    promotion: Promotion,
) -> list[dict[str, Any]]:
    """One job per (model, missing fold); a promoted model's fold 0 predicts from its search
    checkpoint, or (a trial stopped early) continues training from it."""
    jobs = []
    for model in models:
        model_dir = out_dir / model.model_id
        for fold in missing_folds(model_dir, facts.k):
            rows = np.flatnonzero(facts.folds == fold)
            jobs.append(
                make_job(
                    model_id=model.model_id,
                    model_dir=model_dir,
                    trainable=model.trainable,
                    config=model.config,
                    fold=fold,
                    epochs=model.epochs,
                    val_rows=rows,
                    val_targets=facts.targets[rows],
                    predict_test=facts.test_image_paths is not None,
                    tta_flip=bool(cfg.oof.tta_flip),
                    keep_checkpoint=bool(cfg.oof.keep_checkpoints),
                    ship=ship,
                    checkpoint=promotion.predict_from.get(model.model_id) if fold == 0 else None,
                    resume=promotion.resume_from.get(model.model_id) if fold == 0 else None,
                )
            )
    return jobs


def _run_folds(
    cfg: DictConfig, runs: Path, experiment: str, jobs: list[dict[str, Any]], callbacks: Sequence[Any]
) -> None:
    from ray import tune

    from trainables.raytrial import reusable

    name = f"{experiment}-oof"
    storage = storage_root(cfg, runs)
    if not remote_storage(cfg, runs):
        # Ray's state of an earlier refit: its finished folds are on disk already, and a trial
        # directory of the same name must not be mistaken for this run's.
        shutil.rmtree(Path(storage) / name, ignore_errors=True)
    resources = {"cpu": float(cfg.resources.cpu), "gpu": float(cfg.resources.gpu)}
    install_retry_rule()  # max_failures retries crashes, not deterministic errors
    with ray_session(cfg, runs):
        tuner = tune.Tuner(
            tune.with_resources(reusable(ray_fold_trial), resources),
            param_space={"job": tune.grid_search(jobs)},
            # A finished fold's worker runs the next: no new process, imports or placement group.
            tune_config=tune.TuneConfig(trial_dirname_creator=_fold_dirname, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=int(cfg.max_failures)),
                callbacks=list(callbacks),
                progress_reporter=LiveReporter(
                    title=f"OOF refit {experiment}",
                    paths=[],
                    metric="val_acc",
                    mode="max",
                    max_epochs=max((int(j["config"]["epochs"]) for j in jobs), default=0),
                    group="job.model_id",
                ),
                verbose=int(cfg.verbose),
            ),
        )
        results = tuner.fit()
    fetched = fetch_shipped(results)
    if fetched:
        log.info("fetched %d fold results from Ray's storage %s", len(fetched), storage)


def _fold_dirname(trial: Any) -> str:
    job = trial.config["job"]
    return f"{job['model_id']}-fold{job['fold']}"


def _tracker(cfg: DictConfig, record: Any) -> tuple[tracking.Tracker | None, str | None]:
    if not cfg.mlflow.enabled:
        return None, None
    uri = record.tracking_uri or tracking_uri(cfg.mlflow.tracking_uri)
    tracker = tracking.Tracker(uri)
    exp_id = record.mlflow_experiment_id or tracking.ensure_experiment(tracker, str(cfg.mlflow.experiment))
    if exp_id is None:
        log.warning("MLflow at %s is unreachable: the artifacts are written but not logged", uri)
        return None, None
    return tracker, exp_id


if __name__ == "__main__":
    raise SystemExit(main())

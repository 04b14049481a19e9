"""One search, start to finish: Ray Tune over a space, MLflow parent and child runs, the leaderboard."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from common.io import atomic_write_text, runs_dir
from common.tracking import tracking_uri
from search import tracking
from search.algorithms import make_scheduler, make_searcher, resolve_search_alg, uses_grid_search
from search.cluster import concurrent_trials, experiment_path, ray_session, storage_root
from search.config import dimensions, max_epochs, save_config, trainable_config
from search.failures import install_retry_rule
from search.leaderboard import (
    STATUS_CUT,
    STATUS_ERROR,
    STATUS_INTERRUPTED,
    STATUS_STOPPED,
    TRIAL_DIR_PREFIX,
    build_leaderboard,
    ray_statuses,
    save_leaderboard,
    total_epochs,
    trial_histories,
)
from search.plots import write_plots
from search.preflight import Preflight
from search.progress import LiveReporter
from search.records import CONFIG_FILE, PLAN_FILE, SearchRecord, load_record, save_record, search_dir
from search.space import build_param_space, flatten
from search.trial_ends import TRIAL_ENDS_FILE, TrialEnds, read_trial_ends

log = logging.getLogger(__name__)

# Ray warns whenever a trial checkpoints faster than every few seconds (short epochs on tiny
# models do); the snapshot it warns about is what makes a killed search resumable, so keep it quiet.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Ray's classic reporter interface is what lets search.progress draw its own table; the newer
# output ignores progress_reporter and prints every trial's full config.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@dataclass
class SearchOutcome:
    """What a search produced.

    Attributes:
        experiment: The experiment's name.
        leaderboard: One row per trial, best first (see :func:`search.leaderboard.build_leaderboard`).
        histories: Per-trial metrics per epoch.
        out_dir: ``<runs>/search/<experiment>``: leaderboard CSV, plots, config, state.
        ray_path: Ray Tune's experiment directory (``resume=<experiment>`` continues it).
        tracking_uri: The MLflow store, or None when untracked.
        parent_run_id: The MLflow parent run, or None.
        files: The leaderboard CSV and plots.
        trial_epochs: Epochs run, summed over trials.
        status: ``finished``, ``interrupted`` or ``failed``.
    """

    experiment: str
    leaderboard: pd.DataFrame
    histories: dict[str, pd.DataFrame]
    out_dir: Path
    ray_path: str
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    files: list[Path] = field(default_factory=list)
    trial_epochs: int = 0
    status: str = "finished"

    @property
    def best(self) -> pd.Series | None:
        """The leaderboard's top row, or None when no trial reported."""
        return None if self.leaderboard.empty else self.leaderboard.iloc[0]


def run_search(
    cfg: DictConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    checked: Preflight | None = None,
) -> SearchOutcome:
    """Run (or resume) the search a loaded config describes.

    Args:
        cfg: From :func:`search.config.load_config` (or, to resume, the saved ``config.yaml``).
        resume: Continue the experiment ``cfg.experiment`` from Ray's saved state: finished trials
            stay finished, interrupted and errored ones restart from their last checkpoint, the
            searcher keeps its history, and the MLflow parent run is re-attached.
        callbacks: Extra ``ray.tune.Callback`` objects for a new search (a resumed one keeps the
            callbacks it was started with).
        checked: What :func:`search.preflight.preflight` found; files it skipped
            (``trainable.skip_bad``) are listed in ``skipped.csv`` and on the MLflow parent run.

    Returns:
        The outcome; the leaderboard and plots are also saved under ``outcome.out_dir``.

    Raises:
        FileExistsError: A new search would overwrite an experiment of the same name.
        FileNotFoundError: ``resume`` but there is nothing to resume.
    """
    runs = runs_dir()
    out_dir = search_dir(runs, cfg.experiment)
    record = _open_record(cfg, runs, out_dir, resume)
    _save_skipped(out_dir, checked)
    audit = None if resume or not cfg.get("leak_audit", False) else leak_audit(cfg, out_dir)
    with ray_session(cfg, runs) as resources:
        tracker, tune_callbacks = _start_tracking(cfg, runs, record, resume)
        if tracker is not None and audit is not None:
            tracking.log_metrics(tracker, record.parent_run_id, audit.as_metrics())
        save_record(out_dir, record)
        trainable = _trainable(cfg)
        if resume:
            import ray.tune

            tuner = ray.tune.Tuner.restore(
                record.ray_path, trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = _new_tuner(
                cfg,
                trainable,
                [*tune_callbacks, TrialEnds(out_dir / TRIAL_ENDS_FILE), *callbacks],
                concurrent_trials(cfg, resources),
            )
        results = tuner.fit()
    shutil.rmtree(runs / "progress" / str(cfg.experiment), ignore_errors=True)  # the live table's
    outcome = _summarise(cfg, results, out_dir, record)
    _remember_speeds(cfg, results)
    record.status = outcome.status = _search_status(outcome.leaderboard)
    save_record(out_dir, record)
    if tracker is not None and record.parent_run_id:
        _finish_parent(tracker, record, outcome, cfg)
    return outcome


def leak_audit(cfg: DictConfig, out_dir: Path) -> Any:
    """Do the folds flatter the leaderboard? Fold 0's validation rows against the test rows, in
    frozen pretrained features (:mod:`trainables.leak_audit`); printed, saved and, with the advice,
    warned about. An audit that cannot run (no test set, no weights) never stops the search."""
    from trainables.leak_audit import run_leak_audit
    from trainables.split import config_folds

    t = cfg.trainable
    try:
        ds, folds = config_folds(t)
        audit = run_leak_audit(ds, folds, fold=int(t.fold) if int(t.fold) >= 0 else 0)
    except (RuntimeError, ValueError, OSError) as err:
        log.warning("leak audit skipped: %s", err)
        return None
    lines = audit.lines()
    atomic_write_text(out_dir / "leak_audit.txt", "\n".join(lines) + "\n")
    for line in lines:
        (log.warning if audit.verdict == "leak" else log.info)(line)
    return audit


def _save_skipped(out_dir: Path, checked: Preflight | None) -> Path | None:
    """``skipped.csv``: the files ``trainable.skip_bad=true`` left out, and why."""
    if checked is None or not checked.skipped:
        return None
    frame = pd.DataFrame(checked.skipped, columns=["path", "reason"])
    return atomic_write_text(out_dir / "skipped.csv", frame.to_csv(index=False, lineterminator="\n"))


def _search_status(board: pd.DataFrame) -> str:
    """``finished``, ``interrupted`` (Ctrl-C: resume it) or ``failed`` (every trial errored)."""
    if not board.empty and (board["status"] == STATUS_INTERRUPTED).any():
        return "interrupted"
    if not board.empty and (board["status"] != STATUS_ERROR).any():
        return "finished"
    return "failed"


def _open_record(cfg: DictConfig, runs: Path, out_dir: Path, resume: bool) -> SearchRecord:
    if resume:
        record = load_record(out_dir)
        record.resumes += 1
        record.status = "running"
        return record
    if (out_dir / "state.json").exists():
        raise FileExistsError(
            f"experiment {cfg.experiment!r} exists ({out_dir}); resume it with resume={cfg.experiment} "
            "or pick a new name with experiment=<name>"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / CONFIG_FILE)
    return SearchRecord(experiment=str(cfg.experiment), ray_path=experiment_path(cfg, runs))


def _trainable(cfg: DictConfig) -> Any:
    import ray.tune

    import trainables

    resources = {"cpu": float(cfg.resources.cpu), "gpu": float(cfg.resources.gpu)}
    return ray.tune.with_resources(trainables.ray_trainable(str(cfg.trainable.name)), resources)


def _new_tuner(cfg: DictConfig, trainable: Any, callbacks: list[Any], fits: int) -> Any:
    from ray import tune

    install_retry_rule()  # max_failures retries crashes, not deterministic errors
    dims = dimensions(cfg)
    grid = uses_grid_search(cfg)
    # Model-based searchers must not be asked for more trials than can run: each suggestion
    # should see the results before it. Ray's variant generator needs no limit.
    max_concurrent = cfg.tune.max_concurrent or (
        None if grid or resolve_search_alg(cfg) == "random" else fits
    )
    log.info(
        "search %s: %s x %s, %s, scheduler %s, up to %s trials at once",
        cfg.experiment,
        resolve_search_alg(cfg),
        cfg.tune.num_samples,
        ", ".join(f"{p}~{d.describe()}" for p, d in dims.items()) or "no searched keys",
        cfg.scheduler.name,
        max_concurrent or fits,
    )
    return tune.Tuner(
        trainable,
        param_space=build_param_space(trainable_config(cfg), dims, grid_as_choice=not grid),
        tune_config=tune.TuneConfig(
            metric=str(cfg.tune.metric),
            mode=str(cfg.tune.mode),
            search_alg=make_searcher(cfg, max_concurrent),
            scheduler=make_scheduler(cfg),
            num_samples=int(cfg.tune.num_samples),
            time_budget_s=cfg.tune.time_budget_s,
            trial_dirname_creator=trial_dirname,
            # A finished trial's worker runs the next one: no new process, imports or placement group.
            reuse_actors=bool(cfg.tune.reuse_actors),
        ),
        run_config=tune.RunConfig(
            name=str(cfg.experiment),
            storage_path=storage_root(cfg, runs_dir()),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=int(cfg.checkpoint.num_to_keep)),
            failure_config=tune.FailureConfig(max_failures=int(cfg.max_failures)),
            callbacks=callbacks,
            progress_reporter=_reporter(cfg, dims),
            verbose=int(cfg.verbose),
        ),
    )


def _reporter(cfg: DictConfig, dims: dict[str, Any]) -> Any:
    """One live table (or plain lines into a log) instead of Ray's status dumps."""
    return LiveReporter(
        title=f"search {cfg.experiment}",
        paths=list(dims),
        metric=str(cfg.tune.metric),
        mode=str(cfg.tune.mode),
        max_epochs=max_epochs(cfg),
        progress_dir=runs_dir() / "progress" / str(cfg.experiment),
        trial_ends=search_dir(runs_dir(), cfg.experiment) / TRIAL_ENDS_FILE,
    )


def trial_dirname(trial: Any) -> str:
    """``trial_<id>``: short, unique, and how the leaderboard finds a trial that never reported."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def _start_tracking(
    cfg: DictConfig, runs: Path, record: SearchRecord, resume: bool
) -> tuple[tracking.Tracker | None, list[Any]]:
    """Open (or re-open) the MLflow parent run; returns the tracker and the Tune callbacks."""
    if not cfg.mlflow.enabled:
        return None, []
    if resume:
        if not (record.tracking_uri and record.parent_run_id):
            return None, []
        tracker = tracking.Tracker(record.tracking_uri)
        tracking.reopen_run(tracker, record.parent_run_id)
        return tracker, []  # the trial callback is restored with the Tuner
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    tracker = tracking.Tracker(uri)
    exp_id = tracking.ensure_experiment(tracker, str(cfg.mlflow.experiment))
    tags = {
        "space": str(cfg.space),
        "trainable": str(cfg.trainable.name),
        "experiment": str(cfg.experiment),
        "search_alg": resolve_search_alg(cfg),
        "scheduler": str(cfg.scheduler.name),
        "data": str(cfg.data),
        "ray_path": record.ray_path,
    }
    parent = (
        tracking.start_parent_run(tracker, exp_id, str(cfg.experiment), _parent_params(cfg), tags)
        if exp_id
        else None
    )
    if parent is None:
        log.warning(
            "MLflow at %s is unreachable: this search runs untracked (its leaderboard is still saved)", uri
        )
        return None, []
    record.tracking_uri, record.mlflow_experiment_id, record.parent_run_id = uri, exp_id, parent
    child_tags = {k: tags[k] for k in ("space", "trainable", "experiment")}
    callback = tracking.MlflowTrialCallback(
        uri, exp_id, parent, child_tags, str(cfg.tune.metric), str(cfg.tune.mode), max_epochs(cfg),
        paths=list(dimensions(cfg)),
    )
    return tracker, [callback]


def _parent_params(cfg: DictConfig) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("search", None)
    plain.pop("description", None)
    params = flatten(plain)
    params["tune.search_alg"] = resolve_search_alg(cfg)
    for path, dim in dimensions(cfg).items():
        params[f"search.{path}"] = dim.describe()
        params.pop(f"trainable.{path}", None)  # searched: the child runs hold the values
    return params


def _summarise(cfg: DictConfig, results: Any, out_dir: Path, record: SearchRecord) -> SearchOutcome:
    dims = dimensions(cfg)
    metric, mode = str(cfg.tune.metric), str(cfg.tune.mode)
    histories = trial_histories(results)
    board = build_leaderboard(
        results,
        list(dims),
        metric=metric,
        mode=mode,
        max_epochs=max_epochs(cfg),
        histories=histories,
        statuses=ray_statuses(record.ray_path),
        ended=read_trial_ends(out_dir / TRIAL_ENDS_FILE),
    )
    files = [save_leaderboard(board, out_dir / "leaderboard.csv")]
    title = f"{cfg.space} ({cfg.experiment})"
    base = {p: OmegaConf.select(cfg.trainable, p) for p in dims}
    files += write_plots(board, histories, dims, base, out_dir, metric=metric, mode=mode, title=title)
    return SearchOutcome(
        experiment=str(cfg.experiment),
        leaderboard=board,
        histories=histories,
        out_dir=out_dir,
        ray_path=record.ray_path,
        tracking_uri=record.tracking_uri,
        parent_run_id=record.parent_run_id,
        files=files,
        trial_epochs=total_epochs(histories),
    )


def _remember_speeds(cfg: DictConfig, results: Any) -> None:
    """The trials' own training speed, for the next ``budget=`` plan on this machine.

    Only CPU fine-tunes (``timm``): the plan prices those; a frozen-feature or GPU trial's speed
    says nothing about them. A failure here must not cost a finished search.
    """
    from search.budget import remember_trial_speeds

    if str(cfg.trainable.name) != "timm" or float(cfg.resources.gpu) > 0:
        return
    try:
        stored = remember_trial_speeds(results, max(1, int(float(cfg.resources.cpu))))
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("could not store the trials' training speed for the next budget plan: %s", err)
        return
    if stored:
        log.info("training speed for the next budget plan: %s",
                 ", ".join(f"{b} {1 / s:.0f} img/s" for b, s in stored.items()))  # fmt: skip


def _finish_parent(
    tracker: tracking.Tracker, record: SearchRecord, outcome: SearchOutcome, cfg: DictConfig
) -> None:
    board, metric = outcome.leaderboard, str(cfg.tune.metric)
    metrics: dict[str, float] = {
        "n_trials": float(len(board)),
        "n_errors": float((board["status"] == "error").sum()) if not board.empty else 0.0,
        "n_stopped": float((board["status"] == STATUS_STOPPED).sum()) if not board.empty else 0.0,
        "n_cut": float((board["status"] == STATUS_CUT).sum()) if not board.empty else 0.0,
        "trial_epochs": float(outcome.trial_epochs),
    }
    if outcome.best is not None:
        metrics[f"best_{metric}"] = float(outcome.best[metric])
    extra = [outcome.out_dir / name for name in ("skipped.csv", "leak_audit.txt", PLAN_FILE)]  # when written
    files = [*outcome.files, outcome.out_dir / CONFIG_FILE, *(p for p in extra if p.exists())]
    status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(record.status, "FAILED")
    tracking.finish_run(tracker, record.parent_run_id, metrics=metrics, artifacts=files, status=status)
    if not tracker.healthy:
        log.warning(
            "MLflow at %s is still unreachable: the parent run %s (and trials that ended during the outage) "
            "stay RUNNING there; the leaderboard in %s is complete",
            tracker.uri,
            record.parent_run_id,
            outcome.out_dir,
        )

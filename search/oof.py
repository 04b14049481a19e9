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
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from common.console import make_console
from common.io import atomic_path, runs_dir
from common.tracking import tracking_uri
from search import tracking
from search.cluster import ray_session, remote_storage, storage_root
from search.config import (
    DEFAULTS_FILE,
    ConfigError,
    oof_checks,
    parse_overrides,
    read_config,
    set_key,
    valid_keys,
)
from search.failures import install_retry_rule
from search.leaderboard import STATUS_DONE, TRIAL_DIR_PREFIX
from search.oof_collect import (
    DataFacts,
    ModelResult,
    collect_model,
    is_current,
    log_model,
    missing_folds,
    model_run_id,
)
from search.oof_fold import fetch_shipped, make_job, ray_fold_trial
from search.oof_select import (
    RefitModel,
    candidates,
    cap_per_backbone,
    select_by_gain,
    select_models,
    trial_configs,
)
from search.preflight import preflight
from search.progress import LiveReporter, setup_logging
from search.records import CONFIG_FILE, list_experiments, load_record, search_dir
from search.schema import EnsembleSchema, OofSchema

log = logging.getLogger("search.oof")

# `top_k=5` on the command line means `oof.top_k=5`.
SHORTHANDS = ("mode", "select", "top_k", "max_per_backbone", "epochs", "tta_flip", "dtype", "keep_checkpoints")
# What a refit may change in the search's saved config: how and where it runs, never the models.
OVERRIDABLE = (
    "oof",
    "ensemble",
    "resources",
    "ray",
    "mlflow",
    "max_failures",
    "verbose",
    "trainable.device",
    "trainable.num_workers",
    "trainable.amp",
)
RUNTIME_TRAINABLE_KEYS = ("device", "num_workers", "amp")
# The sections a refit reads typed from the saved config (the rest is the search's, as it ran).
SECTION_SCHEMAS = {"oof": OofSchema, "ensemble": EnsembleSchema}


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


def load_oof_config(experiment: str | None, overrides: Sequence[tuple[str, Any]] = ()) -> DictConfig:
    """The search's saved config, with the ``oof``/``ensemble`` defaults filled in and the overrides applied.

    Args:
        experiment: A search under ``<runs>/search``; None or ``latest`` picks the most recent.
        overrides: ``(key, value)`` pairs; ``top_k`` etc. are short for ``oof.top_k``.

    Raises:
        ConfigError: No such search, or an override that would change the models themselves.
    """
    runs = runs_dir()
    known = list_experiments(runs)
    if experiment in (None, "", "latest"):
        if not known:
            raise ConfigError(f"no search under {runs / 'search'}: run python -m search.run first")
        experiment = known[0]
    if experiment not in known:
        raise ConfigError(
            f"experiment={experiment}: no such search under {runs / 'search'}; there are: {', '.join(known) or 'none'}"
        )
    cfg = read_config(search_dir(runs, experiment) / CONFIG_FILE)
    defaults = OmegaConf.load(DEFAULTS_FILE)
    for section, schema in SECTION_SCHEMAS.items():  # typed; filled in for searches saved before they existed
        cfg[section] = OmegaConf.merge(OmegaConf.structured(schema), defaults[section], cfg.get(section) or {})
    keys = valid_keys(cfg)
    for key, value in overrides:
        key = f"oof.{key}" if key in SHORTHANDS else key
        if not any(key == k or key.startswith(k + ".") for k in OVERRIDABLE):
            raise ConfigError(
                f"{key}: a refit runs the search's configs; it may change only {', '.join(OVERRIDABLE)} "
                f"(and the shorthands {', '.join(SHORTHANDS)})"
            )
        if key not in keys:
            raise ConfigError(
                f"unknown key {key!r}; valid: {', '.join(k for k in keys if k.startswith(OVERRIDABLE))}"
            )
        set_key(cfg, key, value, "command line")
    for ok, message in oof_checks(cfg):
        if not ok:
            raise ConfigError(message)
    return cfg


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
    record = load_record(search_dir(runs, experiment))
    models, checkpoints = _select(cfg, runs, record.ray_path)
    if config_overrides:
        models = [replace(m, config={**m.config, **config_overrides}) for m in models]
    facts = data_facts(models)
    name = out_name or experiment
    out_dir = oof_dir(runs, name)
    jobs = _jobs(cfg, models, facts, out_dir, ship=_ships(cfg, runs), checkpoints=checkpoints)
    log.info(
        "refitting %d models x %d folds (%d fold fits to run, %d already done) into %s",
        len(models), facts.k, len(jobs), len(models) * facts.k - len(jobs), out_dir,
    )  # fmt: skip
    if jobs:
        _run_folds(cfg, runs, name, jobs, callbacks)

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
    outcome.leaderboard = _save_leaderboard(outcome)
    if tracker is not None:
        if record.parent_run_id:
            tracker.call(lambda c: c.log_artifact(record.parent_run_id, str(outcome.leaderboard), log_prefix))
        tracker.flush()
    return outcome


def data_facts(models: Sequence[RefitModel]) -> DataFacts:
    """Rows, labels and folds of the data the models are fit on (which must be the same for all).

    Raises:
        ValueError: The models use different data or fold settings (searched ``k``, say): their
            artifacts could not be ensembled.
    """
    from trainables.data import folds_for, folds_hash, load_dataset

    specs = {_fold_spec(m.config) for m in models}
    if len(specs) != 1:
        raise ValueError(
            "the chosen models use different data or folds (data, k, folds_seed, group_pattern, group_column): "
            f"{sorted(specs, key=str)}; refit them separately (oof.top_k, or a search with those keys fixed)"
        )
    data, k, seed, pattern, column = specs.pop()
    ds = load_dataset(data)
    folds = folds_for(ds, k=k, seed=seed, group_pattern=pattern, group_column=column)
    test_paths = None if ds.test is None else [str(p) for p in ds.test["image_path"]]
    return DataFacts(
        classes=[str(c) for c in ds.classes],
        targets=folds["target"].to_numpy(dtype=np.int64),
        folds=folds["fold"].to_numpy(dtype=np.int64),
        folds_hash=str(folds.attrs.get("hash") or folds_hash(folds)),
        data_hash=str(ds.fingerprint),
        test_image_paths=test_paths,
    )


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


def print_summary(outcome: OofOutcome, *, where: bool = True) -> None:
    """A table of the refit models and (``where``) where their files are."""
    from rich.table import Table

    console = make_console()
    table = Table(title=f"OOF refit: {outcome.experiment}", title_justify="left", header_style="bold")
    for column in ("model", "search", "cv mean", "cv std", "oof acc", "epochs", "status"):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for r in outcome.results:
        status = "done" if r.complete else f"missing folds {r.missing_folds}"
        table.add_row(
            r.model.model_id,
            f"{r.model.search_score:.4f}",
            _fmt(r.cv_mean),
            _fmt(r.cv_std),
            _fmt(r.oof_accuracy),
            str(r.model.epochs),
            status,
        )
    console.print(table)
    if not where:
        return
    console.print(f"artifacts:   {outcome.out_dir}", highlight=False)
    for r in outcome.results:
        if r.submission:
            console.print(f"submission:  {r.submission}", highlight=False)
    if outcome.tracking_uri:
        console.print(f"mlflow store: {outcome.tracking_uri}", highlight=False)
    if outcome.complete:
        console.print(
            f"ensemble them: python -m ensemble.optimize --experiment {outcome.experiment}",
            highlight=False,
        )


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


def _select(cfg: DictConfig, runs: Path, ray_path: str) -> tuple[list[RefitModel], dict[str, str]]:
    """The models to fit on every fold, and (promotion) the search checkpoint that is each one's fold 0."""
    board_path = search_dir(runs, str(cfg.experiment)) / "leaderboard.csv"
    if not board_path.is_file():
        raise FileNotFoundError(f"{board_path} is missing: the search did not finish; resume it first")
    board = pd.read_csv(board_path, index_col="rank")
    configs = trial_configs(ray_path)
    checkpoints: dict[str, str] = {}
    if cfg.oof.mode == "promote":
        models, checkpoints = _promote(cfg, board, configs, ray_path)
    else:
        models = select_models(
            board,
            configs,
            trainable=str(cfg.trainable.name),
            metric=str(cfg.tune.metric),
            top_k=int(cfg.oof.top_k),
            max_per_backbone=cfg.oof.max_per_backbone,
            epochs=cfg.oof.epochs,
        )
    overrides = {k: cfg.trainable[k] for k in RUNTIME_TRAINABLE_KEYS if k in cfg.trainable}
    return [replace(m, config={**m.config, **overrides}) for m in models], checkpoints


def _promote(
    cfg: DictConfig, board: pd.DataFrame, configs: dict[str, dict[str, Any]], ray_path: str
) -> tuple[list[RefitModel], dict[str, str]]:
    """Promotion: trials that ran their whole schedule keep their model as fold 0; pick which ones.

    Only finished trials qualify: their last checkpoint is the model the search scored, trained
    with the schedule the other folds will use. ``oof.select=gain`` ranks them by what each adds
    to the fold-0 ensemble of those already chosen; ``score`` by their own score.
    """
    found = candidates(
        board, configs, trainable=str(cfg.trainable.name), metric=str(cfg.tune.metric),
        epochs="full", statuses=(STATUS_DONE,),
    )  # fmt: skip
    checkpoints = {m.model_id: c for m in found if int(m.config.get("fold", 0)) == 0
                   and (c := last_checkpoint(ray_path, m.trial_id))}  # fmt: skip
    found = [m for m in found if m.model_id in checkpoints]
    if not found:
        raise ValueError(
            "oof.mode=promote needs fold-0 trials that ran their whole schedule and left a checkpoint on "
            "this machine's disk; this search has none (all stopped early, or Ray's storage is remote): "
            "use oof.mode=refit"
        )
    top_k, cap = int(cfg.oof.top_k), cfg.oof.max_per_backbone
    if cfg.oof.select == "gain" and len(found) > 1:
        facts = data_facts(found)
        rows = np.flatnonzero(facts.folds == 0)
        probs = {m.model_id: _predict(m, checkpoints[m.model_id], rows, bool(cfg.oof.tta_flip)) for m in found}
        chosen = select_by_gain(found, probs, facts.targets[rows], top_k=top_k, max_per_backbone=cap)
    else:
        chosen = cap_per_backbone(found, cap)[:top_k]
    log.info("promoting %s (of %d finished trials) to every fold", ", ".join(m.model_id for m in chosen), len(found))
    return chosen, {m.model_id: checkpoints[m.model_id] for m in chosen}


def _predict(model: RefitModel, checkpoint: str, rows: np.ndarray, tta_flip: bool) -> np.ndarray:
    from trainables import create_trainable

    return create_trainable(model.trainable).predict(None, checkpoint, split="train", rows=rows, tta_flip=tta_flip)


def last_checkpoint(ray_path: str, trial_id: str) -> str | None:
    """The newest checkpoint folder of a search trial, where Ray's storage is a local path."""
    if "://" in ray_path:
        return None
    trial_dir = Path(ray_path) / f"{TRIAL_DIR_PREFIX}{trial_id}"
    found = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name)
    return str(found[-1]) if found else None


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
    checkpoints: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One job per (model, missing fold); a promoted model's fold 0 predicts from its search checkpoint."""
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
                    checkpoint=checkpoints.get(model.model_id) if fold == 0 else None,
                )
            )
    return jobs


def _run_folds(
    cfg: DictConfig, runs: Path, experiment: str, jobs: list[dict[str, Any]], callbacks: Sequence[Any]
) -> None:
    from ray import tune

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
            tune.with_resources(ray_fold_trial, resources),
            param_space={"job": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(trial_dirname_creator=_fold_dirname),
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


def _fold_spec(config: dict[str, Any]) -> tuple[Any, ...]:
    return (
        config.get("data"),
        int(config.get("k", 5)),
        int(config.get("folds_seed", 0)),
        config.get("group_pattern"),
        config.get("group_column"),
    )


def _save_leaderboard(outcome: OofOutcome) -> Path:
    rows = [
        {
            "model_id": r.model.model_id,
            "trial_id": r.model.trial_id,
            "backbone": r.model.backbone,
            "search_score": r.model.search_score,
            "cv_mean": r.cv_mean,
            "cv_std": r.cv_std,
            "oof_acc": r.oof_accuracy,
            "epochs": r.model.epochs,
            "complete": r.complete,
            "artifact": str(r.directory),
            "submission": str(r.submission) if r.submission else "",
            "mlflow_run_id": r.mlflow_run_id or "",
        }
        for r in outcome.results
    ]
    frame = pd.DataFrame(rows)
    outcome.out_dir.mkdir(parents=True, exist_ok=True)
    path = outcome.out_dir / "leaderboard.csv"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())

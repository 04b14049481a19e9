"""What the terminal shows while trials run: one live table instead of Ray's status dumps.

On a terminal the table is redrawn in place (rich ``Live``): a row per trial with its searched
values, status, epoch of epochs, a bar for the epoch in progress, and its latest and best score.
Into a log (not a terminal) it prints one plain line whenever a trial starts, finishes an epoch or
ends, so a log reads as a story rather than a stack of tables. During the OOF refit the rows are
the models, each with its folds done, running and left.

A trial's progress inside an epoch comes from a small JSON file the trial rewrites every second
(:func:`trainables.session.write_progress`); trials on another node without the shared run folder simply
show no bar.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.progress_reporter import ProgressReporter
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from search.leaderboard import short_backbone
from search.trial_ends import read_trial_ends

_STATUS_STYLE = {"RUNNING": "cyan", "TERMINATED": "green", "ERROR": "red", "PENDING": "dim", "PAUSED": "yellow"}
_REFRESH_S = 1.0


# Libraries whose INFO lines (database set-up, study creation, Ray's bookkeeping) bury ours.
_NOISY = ("mlflow", "alembic", "optuna", "ray", "urllib3", "filelock")


def setup_logging(verbose: int = 1) -> None:
    """Our own INFO lines, and the libraries' only from ``verbose=2`` (warnings always)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state_log = logging.getLogger("ray.tune.execution.experiment_state")
    if not any(isinstance(f, _SupersededSyncRace) for f in state_log.filters):
        state_log.addFilter(_SupersededSyncRace())
    # MLflow sets its own loggers' level when it is imported (later, in the tracker): tell it first.
    os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO" if verbose >= 2 else "WARNING"
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.INFO if verbose >= 2 else logging.WARNING)
    if verbose < 2:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")


class _SupersededSyncRace(logging.Filter):
    """Drops Ray Tune's ERROR traceback for a sync that lost a race with the next save, which replaces it.

    Tune copies its driver state to the storage path in the background; a forced save rewrites the
    searcher state (temp file, then rename) before waiting for the previous copy, which then fails
    on the vanished ``-tmp-`` file, is logged with a 30-line traceback, and is followed at once by a
    new copy of the complete state. Any other failure to save the state still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            str(record.msg).startswith("Saving experiment state to storage")
            and isinstance(error, FileNotFoundError)
            and "-tmp-" in str(error)
        )


def read_progress(path: Path) -> dict[str, Any] | None:
    """What :func:`trainables.session.write_progress` last wrote, or None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trial_label(config: Mapping[str, Any], paths: Sequence[str]) -> str:
    """``lite0 lr=0.001 cutmix=0.5``: a trial named by what differs between trials."""
    parts = []
    for path in paths:
        value: Any = config
        for key in path.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if path == "backbone" and isinstance(value, str):
            parts.append(short_backbone(value))
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{path.rsplit('.', 1)[-1]}={shown}")
    return " ".join(parts)


class LiveReporter(ProgressReporter):
    """Ray Tune's progress as one table redrawn in place, or plain lines into a log.

    Args:
        title: The table's title (the experiment).
        paths: Searched keys, shown as each trial's name (dotted, into the trial's config).
        metric: The score to show (latest and best).
        mode: ``max`` or ``min``.
        max_epochs: Epochs of a full trial.
        progress_dir: Folder of the trials' progress files (None: no bars).
        group: A config key whose value groups trials into one row (the OOF refit: ``job.model_id``).
        trial_ends: The search's record of trials Tune completed (:mod:`search.trial_ends`): an early
            end missing from it was the time cap's (*cut*), not the scheduler's (*stopped*).
        console: Where to draw (default stdout).
    """

    def __init__(
        self,
        *,
        title: str,
        paths: Sequence[str],
        metric: str,
        mode: str,
        max_epochs: int,
        progress_dir: Path | None = None,
        group: str | None = None,
        trial_ends: Path | None = None,
        console: Console | None = None,
    ) -> None:
        self.title, self.paths, self.metric, self.mode = title, list(paths), metric, mode
        self.max_epochs, self.progress_dir, self.group = max_epochs, progress_dir, group
        self._console = console
        self.trial_ends = trial_ends
        self._ended: set[str] | None = None  # read once per report
        self.live: Live | None = None
        self._seen: dict[str, tuple[str, int]] = {}
        self._last = 0.0

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(soft_wrap=True)
        return self._console

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (for a resume); a console and a live display hold locks.
        return {**self.__dict__, "_console": None, "live": None}

    def setup(self, start_time: float | None = None, total_samples: int | None = None, **kwargs: Any) -> None:
        self._start = start_time or time.time()

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        if self.console.is_terminal:
            return done or time.time() - self._last >= _REFRESH_S
        return done or any(self._seen.get(t.trial_id) != self._state(t) for t in trials)

    def report(self, trials: list[Any], done: bool, *sys_info: Any) -> None:
        self._last = time.time()
        self._ended = read_trial_ends(self.trial_ends) if self.trial_ends is not None else None
        if self.console.is_terminal:
            if self.live is None:
                self.live = Live(console=self.console, auto_refresh=False, transient=False)
                self.live.start()
            self.live.update(self.table(trials), refresh=True)
            if done:
                self.live.stop()
                self.live = None
            return
        for trial in trials:
            state = self._state(trial)
            if self._seen.get(trial.trial_id) != state:
                self._seen[trial.trial_id] = state
                if trial.status != "PENDING":  # queued trials are news only when they start
                    self.console.print(self.line(trial), highlight=False)

    # -- rendering ---------------------------------------------------------------------------

    def table(self, trials: list[Any]) -> Table:
        """The live table: one row per trial (or per group during the refit)."""
        elapsed = time.time() - getattr(self, "_start", time.time())
        table = Table(title=f"{self.title}  ({elapsed / 60:.1f} min)", title_justify="left", header_style="bold")
        if self.group:
            return self._group_table(table, trials)
        for column in ("trial", "status", "epoch", "progress", self.metric, "best", "img/s"):
            table.add_column(column, justify="right" if column not in ("trial", "status", "progress") else "left")
        for trial in trials:
            result = trial.last_result or {}
            status = trial.status
            table.add_row(
                trial_label(trial.config, self.paths) or trial.trial_id,
                f"[{_STATUS_STYLE.get(status, '')}]{self._status(trial)}[/]",
                f"{_epoch(trial)}/{self.max_epochs}",
                self._bar(trial) if status == "RUNNING" else "",
                _fmt(_score(trial, self.metric)),
                _fmt(self._best(trial)),
                _fmt(result.get("img_per_s"), 0),
            )
        return table

    def _group_table(self, table: Table, trials: list[Any]) -> Table:
        for column in ("model", "folds done", "running", "left", "fold scores"):
            table.add_column(column, justify="left" if column in ("model", "fold scores") else "right")
        groups: dict[str, list[Any]] = {}
        for trial in trials:
            groups.setdefault(str(_get(trial.config, self.group)), []).append(trial)
        for name, members in groups.items():
            done = [t for t in members if t.status == "TERMINATED"]
            running = [t for t in members if t.status == "RUNNING"]
            scores = " ".join(_fmt(_score(t, self.metric)) for t in done)
            table.add_row(name, str(len(done)), str(len(running)), str(len(members) - len(done) - len(running)), scores)
        return table

    def line(self, trial: Any) -> str:
        """One plain line for a log: who, what changed, the scores."""
        name = str(_get(trial.config, self.group)) if self.group else trial_label(trial.config, self.paths)
        fold = f" fold {_get(trial.config, 'job.fold')}" if self.group else ""
        # A promoted trial's fold 0 trains nothing: it predicts with the search trial's model.
        epoch = "the search trial's model" if _get(trial.config, "job.checkpoint") else f"epoch {_epoch(trial)}/{self.max_epochs}"
        score, loss = _score(trial, self.metric), (trial.last_result or {}).get("train_loss")
        # A fold fit validates only its last epoch (search.oof_fold): until then, its training loss.
        scores = (
            f"train_loss {_fmt(loss)} ({self.metric} at its end)"
            if self.group and score is None and loss is not None
            else f"{self.metric} {_fmt(score)}"
        )
        return f"{time.strftime('%H:%M:%S')} {name or trial.trial_id}{fold}: {self._status(trial)}, {epoch}, {scores}"

    def _status(self, trial: Any) -> str:
        """Ray's status, except for a trial ended before its last epoch: *stopped* by the scheduler, or *cut* by the time cap."""
        if trial.status == "TERMINATED" and not self.group and _epoch(trial) < self.max_epochs:
            if self._ended is not None and str(trial.trial_id) not in self._ended:
                return "cut"  # possibly before its first epoch ended
            if _epoch(trial) > 0:
                return "stopped"
        return "done" if trial.status == "TERMINATED" else trial.status.lower()

    def _bar(self, trial: Any) -> ProgressBar | str:
        if self.progress_dir is None:
            return ""
        progress = read_progress(self.progress_dir / f"{trial.trial_id}.json")
        if not progress or not progress.get("batches"):
            return ""
        return ProgressBar(total=float(progress["batches"]), completed=float(progress["batch"]), width=20)

    def _best(self, trial: Any) -> float | None:
        history = getattr(trial, "metric_analysis", {}).get(self.metric, {})
        return history.get(self.mode)

    def _state(self, trial: Any) -> tuple[str, int]:
        return trial.status, _epoch(trial)


def _epoch(trial: Any) -> int:
    """Epochs completed: the most any result said (a refit fold's last result is its predictions)."""
    return int(getattr(trial, "metric_analysis", {}).get("epoch", {}).get("max", 0) or 0)


def _score(trial: Any, metric: str) -> Any:
    """The latest score; for a finished refit fold, its out-of-fold accuracy (``fold_acc``)."""
    result = trial.last_result or {}
    return result.get("fold_acc", result.get(metric)) if "fold_acc" in result else result.get(metric)


def _get(config: Mapping[str, Any], path: str | None) -> Any:
    value: Any = config
    for key in (path or "").split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

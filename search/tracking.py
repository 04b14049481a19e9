"""MLflow: one parent run per search, one nested child run per trial, all logged from the driver.

Trials never talk to MLflow themselves: a Ray Tune callback in the driver turns trial events into
MLflow calls, so workers need no tracking access, and an MLflow server that is down costs a
warning, never a trial. While the store fails, calls are kept (a bounded backlog) and replayed
once it answers again.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from common.tracking import get_or_create_experiment, is_finite, now_ms, param_value
from search.failures import describe_error
from search.progress import trial_label
from search.space import flatten

log = logging.getLogger(__name__)

# Ray's bookkeeping keys are not the trainable's metrics, except the wall time a trial has spent.
# ``epoch`` is every metric's step, not a metric: logged, MLflow would chart it against itself.
_NOT_METRICS = (
    set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint", "epoch"}
) - {"time_total_s"}
# After a failure, wait this long before touching the store again (a down server times out slowly).
_COOLDOWN_S = 30.0
_MAX_BACKLOG = 20_000

# MLflow's REST client retries a refused connection for minutes by default; the driver's event
# loop must not stall that long. Users can still set these themselves.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class Tracker:
    """Failure-tolerant access to one MLflow store.

    Every call goes through :meth:`call`. A failing call logs one warning, is queued, and is replayed
    in order once the store answers again; until then calls are queued without trying (a cooldown),
    so a dead server does not slow the search down.

    Args:
        uri: The tracking URI.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client: Any = None
        self._backlog: collections.deque[Callable[[Any], Any]] = collections.deque(maxlen=_MAX_BACKLOG)
        self._down_since: float | None = None
        self._warned = False
        self.failures = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into the experiment; a client and queued closures do not travel.
        return {"uri": self.uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"])

    @property
    def client(self) -> Any:
        """The ``MlflowClient``, created on first use."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    @property
    def healthy(self) -> bool:
        """Whether the last call reached the store."""
        return self._down_since is None

    def call(self, fn: Callable[[Any], Any], *, queue: bool = True) -> Any:
        """Run ``fn(client)``; on failure warn once and keep it for later (unless ``queue`` is False).

        Returns:
            ``fn``'s value, or None when the store did not answer.
        """
        if self._down_since is not None:
            if time.monotonic() - self._down_since < _COOLDOWN_S:
                if queue:
                    self._backlog.append(fn)
                return None
            if not self._replay():
                if queue:
                    self._backlog.append(fn)
                return None
        try:
            return fn(self.client)
        except Exception as err:  # any store error: the search goes on without tracking
            self._failed(err)
            if queue:
                self._backlog.append(fn)
            return None

    def flush(self) -> bool:
        """Replay queued calls now (ignoring the cooldown); True when nothing is left queued."""
        return self._replay()

    def _replay(self) -> bool:
        while self._backlog:
            fn = self._backlog[0]
            try:
                fn(self.client)
            except Exception as err:
                self._failed(err)
                return False
            self._backlog.popleft()
        if self._down_since is not None:
            log.warning("MLflow at %s answers again; the queued calls were replayed", self.uri)
        self._down_since = None
        return True

    def _failed(self, err: Exception) -> None:
        self.failures += 1
        self._down_since = time.monotonic()
        if not self._warned:
            self._warned = True
            log.warning(
                "MLflow at %s failed (%s: %s); the search goes on and tracking calls are queued and "
                "retried every %.0f s. Further MLflow errors are not shown.",
                self.uri,
                type(err).__name__,
                str(err).splitlines()[0][:300] if str(err) else "",
                _COOLDOWN_S,
            )


def ensure_experiment(tracker: Tracker, name: str) -> str | None:
    """The id of MLflow experiment ``name``, created if needed (:func:`common.tracking.get_or_create_experiment`).

    Returns:
        The experiment id, or None when the store is unreachable.
    """
    return tracker.call(lambda client: get_or_create_experiment(client, name, tracker.uri), queue=False)


def start_parent_run(
    tracker: Tracker, experiment_id: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> str | None:
    """Create the search's parent run and log its params.

    Returns:
        The run id, or None when the store is unreachable (the search then runs untracked).
    """

    def create(client: Any) -> str:
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
        _log_params(client, run.info.run_id, params)
        return run.info.run_id

    return tracker.call(create, queue=False)


def reopen_run(tracker: Tracker, run_id: str) -> None:
    """Mark a resumed search's parent run as running again."""
    tracker.call(lambda c: c.update_run(run_id, status="RUNNING"))


def log_metrics(tracker: Tracker, run_id: str | None, metrics: Mapping[str, float]) -> None:
    """Log finite metrics to a run now (queued and replayed if the store is down)."""
    from mlflow.entities import Metric

    now = now_ms()
    values = [Metric(k, float(v), now, 0) for k, v in metrics.items() if is_finite(v)]
    if run_id and values:
        tracker.call(lambda c: c.log_batch(run_id, metrics=values))


def finish_run(
    tracker: Tracker,
    run_id: str,
    *,
    metrics: Mapping[str, float] | None = None,
    artifacts: Iterable[Path] = (),
    status: str = "FINISHED",
) -> None:
    """Log the final metrics and artifact files of a run, then close it with ``status``."""
    from mlflow.entities import Metric

    now = now_ms()
    values = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if is_finite(v)]
    if values:
        tracker.call(lambda c: c.log_batch(run_id, metrics=values))
    for path in artifacts:
        tracker.call(lambda c, p=str(path): c.log_artifact(run_id, p))
    tracker.call(lambda c: c.set_terminated(run_id, status=status))
    tracker.flush()


class MlflowTrialCallback(Callback):
    """Log each trial as a child run of the search's parent run (Ray Tune driver callback).

    The child is named by what differs between trials (``lite0 lr=0.001 cutmix=0.5``, see
    :func:`search.progress.trial_label`) and holds the trial's whole config as flattened params
    (``backbone``, ``lr``, ``aug.cutmix``), every reported metric per epoch (``step`` = epoch), tags
    (space, trainable, backbone, fold, trial id, parent) and, when the trial ends, its final scores
    and status.

    Args:
        uri: Tracking URI.
        experiment_id: MLflow experiment of the parent run.
        parent_run_id: The search's parent run.
        tags: Tags every child gets (e.g. ``space``, ``trainable``, ``experiment``).
        metric: The metric the search optimises (for the final ``best_<metric>``).
        mode: ``max`` or ``min``.
        max_epochs: A trial stopped before this many epochs is tagged ``stopped_early``.
        paths: The searched keys (dotted), which name each child run; none: named by trial id.
    """

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_run_id: str,
        tags: Mapping[str, str],
        metric: str,
        mode: str,
        max_epochs: int,
        paths: Iterable[str] = (),
    ) -> None:
        self.tracker = Tracker(uri)
        self.paths = list(paths)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.tags = dict(tags)
        self.metric = metric
        self.mode = mode
        self.max_epochs = max_epochs
        self._runs: dict[str, str] = {}  # trial id -> child run id
        self._closed: set[str] = set()  # trials whose run was closed by a complete or error hook

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runs"] = {}  # found again by tag after a resume (see _child)
        state["_closed"] = set()
        return state

    # ---- Tune callback hooks -------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Create (or, for a restored trial, find) the trial's child run."""
        tid, config = trial.trial_id, dict(trial.config)
        self.tracker.call(lambda c: self._child(c, tid, config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Log the epoch's metrics with ``step`` = epoch."""
        from mlflow.entities import Metric

        tid, config = trial.trial_id, dict(trial.config)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = now_ms()
        values = [
            Metric(key, float(value), now, step)
            for key, value in result.items()
            if key not in _NOT_METRICS and is_finite(value)
        ]
        if values:
            self.tracker.call(lambda c: c.log_batch(self._child(c, tid, config), metrics=values))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Log the final scores and close the run as FINISHED."""
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Close the run as FAILED, with the error's first line as a tag."""
        self._finish(trial, "FAILED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Count retries (a trial that raised and restarts from its last checkpoint)."""
        tid, config, n = trial.trial_id, dict(trial.config), trial.num_failures
        self.tracker.call(lambda c: c.set_tag(self._child(c, tid, config), "retries", str(n)))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close the runs of trials the time cap cut (KILLED), then replay whatever is still queued.

        When ``tune.time_budget_s`` runs out Ray stops the running trials without the complete
        hook: their runs would stay RUNNING in the UI forever.
        """
        for trial in trials:
            tid = trial.trial_id
            if trial.status == "TERMINATED" and tid in self._runs and tid not in getattr(self, "_closed", ()):
                self._finish(trial, "KILLED")
        if not self.tracker.flush():
            log.warning("MLflow at %s still unreachable; some trial logs were not written", self.tracker.uri)

    # ---- helpers ----------------------------------------------------------------------------------

    def _child(self, client: Any, trial_id: str, config: Mapping[str, Any]) -> str:
        """The child run of ``trial_id``: cached, else found by tag (after a resume), else created."""
        if trial_id in self._runs:
            return self._runs[trial_id]
        found = client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.trial_id = '{trial_id}' and tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
        else:
            tags = {
                **self.tags,
                "mlflow.parentRunId": self.parent_run_id,
                "trial_id": trial_id,
                "backbone": str(config.get("backbone", "")),
                "fold": str(config.get("fold", "")),
            }
            name = trial_label(config, getattr(self, "paths", ())) or trial_id  # pickled before paths
            run = client.create_run(self.experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            _log_params(client, run_id, config)
        self._runs[trial_id] = run_id
        return run_id

    def _finish(self, trial: Any, status: str) -> None:
        from mlflow.entities import Metric, RunTag

        tid, config = trial.trial_id, dict(trial.config)
        error = _first_line(trial) if status == "FAILED" else ""
        if hasattr(self, "_closed"):  # absent in a callback pickled before it existed
            self._closed.add(tid)

        def finish(client: Any) -> None:
            run_id = self._child(client, tid, config)
            history = client.get_metric_history(run_id, self.metric)
            now, metrics, tags = now_ms(), [], [RunTag("status", status.lower())]
            if history:
                pick = max if self.mode == "max" else min
                best = pick(history, key=lambda m: m.value)
                epochs = max(m.step for m in history)
                metrics += [
                    Metric(f"best_{self.metric}", best.value, now, 0),
                    Metric("best_epoch", float(best.step), now, 0),
                    Metric("epochs_run", float(epochs), now, 0),
                ]
                if status == "FINISHED" and epochs < self.max_epochs:
                    tags = [RunTag("status", "stopped_early")]
            if status == "KILLED":
                tags = [RunTag("status", "cut_by_time_cap")]
            if error:
                tags.append(RunTag("error", error))
            client.log_batch(run_id, metrics=metrics, tags=tags)
            client.set_terminated(run_id, status=status)

        self.tracker.call(finish)


def _log_params(client: Any, run_id: str, config: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    # MLflow caps a param value's length; configs are short, but a long path must not fail the call.
    params = [Param(key, param_value(value)) for key, value in sorted(flatten(config).items())]
    for i in range(0, len(params), 100):  # log_batch takes at most 100 params per call
        client.log_batch(run_id, params=params[i : i + 100])


def _first_line(trial: Any) -> str:
    try:
        err = trial.get_pickled_error() or trial.get_error()
    except Exception:
        return "error"
    return (describe_error(err) or "error")[:500]

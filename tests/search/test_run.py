"""Real searches: the timm trainable (timm's test model, 32 px) on the built-in set under Ray Tune."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from ray import tune

from common.io import runs_dir
from search.budget import REFERENCE_SIZE, measure_speed
from search.config import load_config
from search.records import load_record, search_dir
from search.run import main
from search.runner import run_search
from search.tracking import Tracker, ensure_experiment

pytestmark = pytest.mark.slow


def _children(client: MlflowClient, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    return sorted(runs, key=lambda r: float(r.data.params["lr"]))


def _epochs(trial_dir: Path) -> list[int]:
    return [
        int(json.loads(line)["epoch"])
        for line in (trial_dir / "result.json").read_text().splitlines()
        if line.strip()
    ]


def _checkpoint_in_saved_state(ray_dir: Path) -> bool:
    """Whether Ray's experiment snapshot already records a trial checkpoint (and its result line).

    A checkpoint folder appears before the driver has logged its result and snapshotted the
    experiment; killing the driver in that gap leaves nothing that says the trial was mid-way,
    which is a different test from "resume continues from the checkpoint".
    """
    if not any(p.stat().st_size for p in ray_dir.glob("trial_*/result.json")):
        return False
    return any(
        re.search(r"checkpoint_dir_name\W+checkpoint_\d", p.read_text(errors="replace"))
        for p in ray_dir.glob("experiment_state-*.json")
    )


def test_search_ranks_trials_stops_the_weak_one_and_logs_to_mlflow(
    ray_local: None, tiny: list[str], tmp_path: Path
) -> None:
    """Two trials, one that learns and one that cannot (lr 1e-9), one after the other under ASHA.

    ASHA compares them after epoch 1 (grace period 1, reduction factor 2) and must stop the second.
    The metric is the training loss: after an epoch at lr 3e-3 it is surely below the untrained one.
    """
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        *tiny,
        "space=quick",
        "experiment=e2e-asha",
        "search={lr: {grid: [3.0e-3, 1.0e-9]}}",
        "tune.points_to_evaluate=[]",
        "tune.num_samples=1",  # one pass over the grid
        "tune.metric=train_loss",
        "tune.mode=min",
        "tune.max_concurrent=1",
        "scheduler.name=asha",
        "scheduler.grace_period=1",
        "scheduler.reduction_factor=2",
        "trainable.epochs=2",
        f"mlflow.tracking_uri={uri}",
    ]
    assert main(argv) == 0

    out = search_dir(runs_dir(), "e2e-asha")
    board = pd.read_csv(out / "leaderboard.csv", index_col="rank")
    assert list(board.columns[:2]) == ["trial_id", "lr"] and len(board) == 2
    good, weak = board.set_index("lr").loc[3e-3], board.set_index("lr").loc[1e-9]
    assert (good.status, good.epochs) == ("done", 2)
    assert (weak.status, weak.epochs) == ("stopped", 1), "ASHA did not stop the trial that cannot learn"
    assert board.iloc[0].lr == 3e-3 and good.train_loss < weak.train_loss
    for name in ("ablation.png", "curves.png", "config.yaml"):
        assert (out / name).stat().st_size > 1000 or name == "config.yaml"

    record = load_record(out)
    # The trials' own training speed is what the next budget= plan on this machine prices epochs
    # at: the good trial's epoch after the first (the weak one has none), scaled to 128 px.
    cfg = load_config(["experiment=x", *tiny])
    lines = (Path(record.ray_path) / f"trial_{good.trial_id}" / "result.json").read_text().splitlines()
    second_epoch = json.loads(lines[1])
    expected = (REFERENCE_SIZE / int(cfg.trainable.image_size)) ** 2 / second_epoch["img_per_s"]
    remembered = measure_speed("test_efficientnet", REFERENCE_SIZE, int(cfg.trainable.batch_size), 1)
    assert remembered == pytest.approx(expected)
    client = MlflowClient(uri)
    parent = client.get_run(record.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "e2e-asha"
    assert parent.data.tags["space"] == "quick" and parent.data.params["search.lr"] == "grid(0.003, 1e-09)"
    assert parent.data.metrics["n_trials"] == 2 and parent.data.metrics["n_stopped"] == 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "ablation.png", "curves.png", "config.yaml"} <= artifacts

    weak_run, good_run = _children(client, parent.info.run_id)
    for run in (weak_run, good_run):
        assert run.data.params["backbone"] == "test_efficientnet" and run.data.params["aug.cutmix"] == "0.0"
        assert run.data.params["image_size"] == "32" and "data" in run.data.params
        tags = run.data.tags
        assert (
            tags["space"] == "quick"
            and tags["trainable"] == "timm"
            and tags["backbone"] == "test_efficientnet"
        )
        assert tags["fold"] == "0" and tags["trial_id"] in set(board.trial_id)
        assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(good_run.info.run_id, "val_acc")] == [1, 2]
    assert [m.step for m in client.get_metric_history(weak_run.info.run_id, "train_loss")] == [1]
    assert good_run.data.tags["status"] == "finished" and weak_run.data.tags["status"] == "stopped_early"
    assert good_run.data.metrics["epochs_run"] == 2 and good_run.data.metrics[
        "best_train_loss"
    ] == pytest.approx(good.train_loss)
    for key in ("val_acc", "val_f1", "val_loss", "lr", "img_per_s"):
        assert key in good_run.data.metrics
    assert "epoch" not in good_run.data.metrics  # it is every metric's step, not a chart of its own
    # named by what differs between trials, the trial id kept as a tag
    assert {good_run.info.run_name, weak_run.info.run_name} == {"lr=0.003", "lr=1e-09"}
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )


def test_search_logs_to_a_real_mlflow_server(ray_local: None, tiny: list[str], mlflow_server: str) -> None:
    """The tracking server ``mlflow ui`` would read: parent, child, params, metrics and artifacts."""
    argv = [
        *tiny,
        "space=quick",
        "experiment=e2e-server",
        "search.aug.cutmix=null",
        "tune.num_samples=1",
        "trainable.epochs=1",
        f"mlflow.tracking_uri={mlflow_server}",
        "mlflow.experiment=server-test",
    ]
    assert main(argv) == 0
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("server-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 1
    child = children[0]
    assert float(child.data.params["lr"]) == 1e-3  # the space's known-good point ran first
    assert child.data.params["backbone"] == "test_efficientnet" and child.data.params["aug.hflip"] == "True"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")] == [1]
    assert "best_val_acc" in child.data.metrics
    assert {"leaderboard.csv", "params.png", "curves.png"} <= {
        a.path for a in client.list_artifacts(parents[0].info.run_id)
    }


def test_a_trial_cut_by_the_time_cap_says_so_and_its_run_is_closed(
    ray_local: None, tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tune.time_budget_s`` (what ``budget=`` sets) ends a long trial: ``cut``, not ``stopped`` by ASHA.

    Ray stops the trials a time cap ends without Tune's complete hook, so the leaderboard must not
    call them stopped early and their MLflow runs must not stay RUNNING.
    """
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        *tiny,
        "space=quick",
        "experiment=e2e-cut",
        "search.aug.cutmix=null",
        "tune.num_samples=1",
        "trainable.epochs=500",  # far more than the cap allows
        "scheduler.name=fifo",
        "tune.time_budget_s=20",
        f"mlflow.tracking_uri={uri}",
    ]
    assert main(argv) == 0
    board = pd.read_csv(search_dir(runs_dir(), "e2e-cut") / "leaderboard.csv", index_col="rank")
    # Usually a few epochs; none on a machine busy enough that the first one outlasts the cap.
    assert len(board) == 1 and board.iloc[0].status == "cut" and 0 <= board.iloc[0].epochs < 500
    progress = [line for line in capsys.readouterr().out.splitlines() if ", epoch " in line]
    assert ": cut, epoch" in progress[-1] and not any(": stopped," in line for line in progress)
    client = MlflowClient(uri)
    parent = client.get_run(load_record(search_dir(runs_dir(), "e2e-cut")).parent_run_id)
    assert parent.data.metrics["n_cut"] == 1 and parent.data.metrics["n_stopped"] == 0
    (child,) = _children(client, parent.info.run_id)
    assert child.info.status == "KILLED" and child.data.tags["status"] == "cut_by_time_cap"
    assert child.data.metrics.get("epochs_run", 0) == board.iloc[0].epochs


class _KillWorkerOnce(tune.Callback):
    """SIGKILLs the trial's worker process once Tune holds its first checkpoint: a crash mid-trial."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:  # noqa: ANN001
        if not self.killed:
            pid = int(trial.last_result["pid"])
            self.killed.append(pid)
            os.kill(pid, signal.SIGKILL)


def test_a_crashed_trial_resumes_from_its_last_checkpoint(
    ray_local: None, tiny: list[str], tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(
        [*tiny, "space=quick", "experiment=e2e-retry", "search=null", "tune.points_to_evaluate=[]",
         "tune.num_samples=1", "trainable.epochs=3", "max_failures=1", f"mlflow.tracking_uri={uri}"]
    )  # fmt: skip
    killer = _KillWorkerOnce()
    outcome = run_search(cfg, callbacks=[killer])
    assert killer.killed, "the worker was never killed"
    row = outcome.leaderboard.iloc[0]
    assert (row.status, row.epochs) == ("done", 3)
    trial_dir = Path(outcome.ray_path) / f"trial_{row.trial_id}"
    assert _epochs(trial_dir) == [1, 2, 3], "the retried trial did not continue from its epoch-1 checkpoint"
    child = _children(MlflowClient(uri), outcome.parent_run_id)[0]
    assert child.data.tags["retries"] == "1" and child.info.status == "FINISHED"


def test_kill_the_driver_then_resume_loses_and_restarts_nothing(
    ray_local: None,
    tiny: list[str],
    start_driver: Callable[..., subprocess.Popen],
    kill_session: Callable[[subprocess.Popen], None],
    tmp_path: Path,
) -> None:
    """SIGKILL ``python -m search.run`` mid-search (with its local Ray), then ``resume=<name>``.

    Every trial must finish all its epochs, and a trial that had a checkpoint before the kill must
    continue from it: its epoch 1 appears once in its results.
    """
    name, epochs, samples = "e2e-resume", 4, 2
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        *tiny, "space=quick", f"experiment={name}", "search.aug.cutmix=null", "tune.points_to_evaluate=[]",
        f"tune.num_samples={samples}", f"trainable.epochs={epochs}", "scheduler.name=fifo",
        f"mlflow.tracking_uri={uri}",
    ]  # fmt: skip
    driver = start_driver("search.run", argv, tmp_path / "driver.log")  # kill_session ends it and its Ray
    ray_dir = runs_dir() / "ray" / name
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not _checkpoint_in_saved_state(ray_dir):
            assert driver.poll() is None, (
                f"driver exited early:\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
            )
            time.sleep(0.2)
        assert _checkpoint_in_saved_state(ray_dir), "no checkpoint in Ray's saved state within 240 s"
    finally:
        kill_session(driver)
    before = {p.name: _epochs(p) for p in ray_dir.glob("trial_*") if (p / "result.json").is_file()}
    assert any(before.values()) and all(len(e) < epochs for e in before.values()), f"not mid-search: {before}"

    assert main([f"resume={name}"]) == 0

    trials = sorted(ray_dir.glob("trial_*"))
    assert len(trials) == samples, "a trial was lost"
    for trial in trials:
        seen = _epochs(trial)
        assert sorted(set(seen)) == list(range(1, epochs + 1)), f"{trial.name} did not finish: {seen}"
        if before.get(trial.name):
            assert seen.count(1) == 1, f"{trial.name} restarted from zero after the resume: {seen}"
    record = load_record(search_dir(runs_dir(), name))
    assert record.resumes == 1 and record.status == "finished"
    children = _children(MlflowClient(uri), record.parent_run_id)
    assert len(children) == samples, "the resume created new MLflow child runs instead of continuing them"
    for child in children:
        steps = [m.step for m in MlflowClient(uri).get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(set(steps)) == list(range(1, epochs + 1))


def test_a_dead_tracking_store_costs_a_warning_not_the_search(
    free_port: Callable[[], int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tracking calls fail fast, warn once, queue, and replay once the store works."""
    dead = Tracker(f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="search.tracking"):
        start = time.monotonic()
        assert ensure_experiment(dead, "x") is None
        assert dead.call(lambda c: c.search_experiments()) is None
        assert dead.call(lambda c: c.search_experiments()) is None  # cooling down: not even tried
    assert time.monotonic() - start < 30
    assert sum("MLflow at" in r.message for r in caplog.records) == 1
    assert dead.failures == 1 and not dead.healthy

    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's folder should be")
    late = Tracker(f"sqlite:///{blocker / 'mlflow.db'}")
    assert late.call(lambda c: c.create_experiment("later")) is None and not late.healthy
    blocker.unlink()
    assert late.flush() and late.healthy
    assert MlflowClient(late.uri).get_experiment_by_name("later") is not None


def test_joins_a_running_ray_cluster(
    tiny: list[str],
    free_port: Callable[[], int],
    kill_session: Callable[[subprocess.Popen], None],
    tmp_path: Path,
) -> None:
    """``ray.address=<head>`` runs the trials on a cluster started by ``ray start --head``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Token authentication, Ray's default for a new cluster: a joining driver must say so and hold
    # the cluster's token. A token of this test's own leaves ~/.ray alone.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    # Its own short temp dir: `ray start` records itself there (ray_current_cluster), and a record
    # left in the shared /tmp/ray would make every later plain ray.init() on this machine join it.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}"],
        env=env, stdout=(tmp_path / "head.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        argv = [*tiny, "space=quick", "experiment=e2e-join", "search.aug.cutmix=null", "tune.num_samples=1",
                "trainable.epochs=1", f"ray.address=127.0.0.1:{port}", "mlflow.enabled=false"]  # fmt: skip
        driver = subprocess.run(
            [sys.executable, "-m", "search.run", *argv],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        kill_session(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    output = driver.stdout + driver.stderr
    assert driver.returncode == 0, output[-3000:]
    assert "Connected to Ray cluster" in output and "Started a local Ray instance" not in output
    board = pd.read_csv(search_dir(runs_dir(), "e2e-join") / "leaderboard.csv")
    assert list(board.status) == ["done"]

"""The service for real: searches submitted as Ray jobs to a two-node cluster tracked by MLflow on PostgreSQL.

The processes are docker-compose.yml's commands (see conftest.py): a ``ray start --head`` node
(127.0.0.2) and a ``ray start --address`` worker node (127.0.0.3) of one CPU each, ``mlflow
server`` on a PostgreSQL database, and ``ray job submit -- python -m search.run ...`` as a user
would type it. Then the faults: a worker node killed mid-trial, the MLflow server killed mid-search.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from mlflow import MlflowClient

from ensemble.artifacts import read_artifact
from tests.service.conftest import HEAD_IP, TINY, Service, free_port, healthcheck_command, healthy, wait_for
from trainables.data import load_dataset

pytestmark = pytest.mark.slow

JOB_TIMEOUT_S = 240


def _search_args(experiment: str, mlflow_experiment: str, *extra: str) -> list[str]:
    return [
        "python", "-m", "search.run", "space=quick", f"experiment={experiment}",
        f"mlflow.experiment={mlflow_experiment}", *TINY, *extra,
    ]  # fmt: skip


def _results(service: Service, experiment: str) -> dict[str, list[dict[str, Any]]]:
    """Each trial's reported results (``result.json`` lines) by trial directory name."""
    out = {}
    for trial in sorted((service.runs / "ray" / experiment).glob("trial_*")):
        path = trial / "result.json"
        lines = path.read_text().splitlines() if path.is_file() else []
        out[trial.name] = [json.loads(line) for line in lines if line.strip()]
    return out


def _leaderboard(service: Service, experiment: str) -> pd.DataFrame:
    return pd.read_csv(service.runs / "search" / experiment / "leaderboard.csv")


def _wait_job(service: Service, job_id: str, timeout: float = JOB_TIMEOUT_S) -> tuple[str, str]:
    """Wait for a job to end; returns its status and logs."""
    from ray.job_submission import JobStatus

    client = service.cluster.job_client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status), client.get_job_logs(job_id)
        time.sleep(1)
    client.stop_job(job_id)
    raise TimeoutError(
        f"job {job_id} still running after {timeout} s:\n{client.get_job_logs(job_id)[-4000:]}"
    )


def _children(client: MlflowClient, parent_id: str) -> list[Any]:
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )


def _psql(service: Service, database: str, sql: str) -> str:
    pg = service.postgres
    assert pg is not None
    cmd = [str(pg.bindir / "psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "mlflow", "-d", database,
           "-At", "-c", sql]  # fmt: skip
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def test_the_compose_health_checks_and_mlflow_host_check(service: Service) -> None:
    """The compose health checks pass for the live services and fail for dead ones; MLflow accepts
    the ``Host`` the Ray nodes use in compose (``mlflow:5000``) and rejects others."""
    for svc, port in (("mlflow", service.mlflow.port), ("ray-head", service.cluster.head.agent_port),
                      ("ray-worker", service.cluster.workers[-1].agent_port)):  # fmt: skip
        assert healthy(healthcheck_command(svc, port)), f"{svc}'s check fails on the live service"
        assert not healthy(healthcheck_command(svc, free_port())), f"{svc}'s check passes on a dead port"

    def status(host: str) -> int:
        request = urllib.request.Request(
            f"{service.mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    assert status("mlflow:5000") == 200 and status("localhost:5000") == 200
    assert status("attacker.example:5000") == 403


def test_a_submitted_search_runs_trials_on_both_nodes_and_tracks_them_in_mlflow(service: Service) -> None:
    """``ray job submit -- python -m search.run``: two trials at once, one per node, both in MLflow."""
    service.ensure_workers(1)
    name = "svc-both-nodes"
    # As the docs say: the job API on 127.0.0.1, the cluster's token in the environment.
    submit = subprocess.run(
        ["ray", "job", "submit", f"--address={service.cluster.dashboard}", f"--submission-id={name}", "--",
         *_search_args(name, "service", "tune.num_samples=2", "trainable.epochs=2")],
        env=service.cluster.env, cwd=service.root, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    logs = submit.stdout + submit.stderr
    assert submit.returncode == 0, logs[-6000:]
    info = service.cluster.job_client().get_job_info(name)
    assert str(info.status) == "SUCCEEDED", logs[-6000:]
    assert "Connected to Ray cluster" in logs and "Started a local Ray instance" not in logs
    head = next(n for n in service.cluster.nodes() if n["node_ip"] == HEAD_IP)
    assert info.driver_node_id == head["node_id"], "the search's driver did not run on the head"

    results = _results(service, name)
    assert len(results) == 2, f"expected 2 trials: {list(results)}"
    nodes = {trial: {r["node_ip"] for r in rows} for trial, rows in results.items()}
    assert set().union(*nodes.values()) == {HEAD_IP, service.cluster.workers[0].ip}, (
        f"trials did not use both nodes: {nodes}"
    )
    board = _leaderboard(service, name)
    assert list(board.status) == ["done", "done"] and list(board.epochs) == [2, 2]

    client = MlflowClient(service.mlflow.url)
    experiment = client.get_experiment_by_name("service")
    parents = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == name]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.metrics["n_trials"] == 2 and parent.data.tags["experiment"] == name
    children = _children(client, parent.info.run_id)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == [1, 2] and child.data.params["backbone"] == "test_efficientnet"
    # Artifacts go through the server (--serve-artifacts) into its artifact store.
    assert "leaderboard.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert list(service.mlflow.artifacts.rglob("leaderboard.csv")), "the server did not store the artifact"
    if service.postgres is not None:  # and the runs are rows in PostgreSQL, not in a file beside it
        ids = {parent.info.run_id, *(c.info.run_id for c in children)}
        rows = _psql(service, "mlflow", "SELECT run_uuid, name, status, experiment_id FROM runs")
        assert ids <= {line.split("|")[0] for line in rows.splitlines()}, rows


@contextlib.contextmanager
def _trials_paused() -> Iterator[None]:
    """SIGSTOP every running trial actor (``ray::<Trainable>...``) on this machine; SIGCONT on exit.

    While paused no trial can end an epoch, so whatever the test does meanwhile happens between two
    of a trial's epochs however slow or fast the machine is.
    """
    trials = [p for p in psutil.process_iter(["cmdline"])
              if (p.info["cmdline"] or [""])[0].startswith("ray::") and "Trainable" in p.info["cmdline"][0]]  # fmt: skip
    assert trials, "no trial process to pause"
    for proc in trials:
        proc.suspend()
    try:
        yield
    finally:
        for proc in trials:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()


def test_killing_the_mlflow_server_mid_search_costs_a_warning_not_the_search(service: Service) -> None:
    """The search outlives its tracking server; what was logged before the kill stays in the store."""
    service.ensure_workers(1)
    name, mlflow, epochs = "svc-mlflow-dies", service.mlflow, 6
    tracked = MlflowClient(mlflow.url)
    client = service.cluster.job_client()
    job = client.submit_job(
        entrypoint=" ".join(
            _search_args(
                name, "outage", "tune.num_samples=2", f"trainable.epochs={epochs}", "trainable.image_size=64"
            )
        ),
        submission_id=name,
    )
    try:

        def logged() -> list[Any]:
            exp = tracked.get_experiment_by_name("outage")
            return tracked.search_runs([exp.experiment_id]) if exp else []

        def reported() -> int:
            return sum(len(rows) for rows in _results(service, name).values())

        wait_for("a trial's first epoch", lambda: reported() > 0, JOB_TIMEOUT_S)
        # Kill the server between two epochs by construction, not by racing the clock: with the
        # trials paused, the driver logs what they reported, and the outage starts before they go on.
        with _trials_paused():
            paused_at = time.time()
            assert reported() < 2 * epochs, "the search ended before its trials could be paused"
            wait_for("a trial's first epoch in MLflow", lambda: any("val_acc" in r.data.metrics for r in logged()),
                     JOB_TIMEOUT_S)  # fmt: skip
            before = {r.info.run_id: r for r in logged()}
            time.sleep(max(0.0, paused_at + 1.0 - time.time()))  # epochs carry whole-second timestamps
            mlflow.stop()  # SIGKILL, mid-search
            killed_at = int(time.time())

        status, logs = _wait_job(service, job)
        assert status == "SUCCEEDED", logs[-6000:]
        assert "MLflow at" in logs and "the search goes on" in logs, (
            f"no warning that tracking failed:\n{logs[-6000:]}"
        )
        assert "still unreachable; some trial logs were not written" in logs, logs[-6000:]
        # The driver raised nothing (trial processes' own lines, prefixed "(name pid=...)", aside:
        # Ray's workers print a harmless SystemExit traceback when they are shut down).
        driver = [line for line in logs.splitlines() if not re.match(r"^(\x1b\[\d+m)?\(", line)]
        assert not any("Traceback" in line for line in driver), logs[-6000:]
        board = _leaderboard(service, name)
        assert list(board.status) == ["done", "done"] and list(board.epochs) == [epochs, epochs]
        during = [r for rows in _results(service, name).values() for r in rows if r["timestamp"] >= killed_at]
        assert during, "no epoch ended while MLflow was down: the outage came too late to test anything"
    finally:
        if mlflow.proc is None:
            mlflow.start()  # the same port and store, for the other tests and for the checks below
    after = {r.info.run_id: r for r in logged()}
    for run_id, run in before.items():
        assert run_id in after, f"run {run.info.run_name} was lost"
        assert run.data.params.items() <= after[run_id].data.params.items()
        for key, value in run.data.metrics.items():
            history = tracked.get_metric_history(run_id, key)
            assert any(m.value == value for m in history), f"{run.info.run_name}: {key}={value} was lost"


def test_a_trial_on_a_killed_worker_node_resumes_from_its_checkpoint_on_the_head(service: Service) -> None:
    """SIGKILL the worker node (its raylet, agents and the trial's process) after its trial's first checkpoint."""
    service.ensure_workers(1)
    worker = next(w for w in service.cluster.workers if w.proc.poll() is None)
    name, epochs = "svc-node-dies", 4
    client = service.cluster.job_client()
    job = client.submit_job(
        entrypoint=" ".join(_search_args(name, "service", "tune.num_samples=2", f"trainable.epochs={epochs}",
                                         "trainable.image_size=64", "max_failures=2")),
        submission_id=name,
    )  # fmt: skip

    def on_worker_with_checkpoint() -> str | None:
        for trial, rows in _results(service, name).items():
            mid_trial = rows and rows[-1]["node_ip"] == worker.ip and rows[-1]["epoch"] < epochs - 1
            if mid_trial and list((service.runs / "ray" / name / trial).glob("checkpoint_*")):
                return trial
        return None

    wait_for("a checkpointed trial on the worker node", lambda: on_worker_with_checkpoint() is not None,
             JOB_TIMEOUT_S)  # fmt: skip
    victim = on_worker_with_checkpoint()
    assert victim is not None, "the worker's trial finished before it could be killed"
    epochs_before = [r["epoch"] for r in _results(service, name)[victim]]
    service.cluster.kill_worker(worker)
    wait_for("the worker node declared dead", lambda: worker.ip not in service.cluster.alive_node_ips(), 60)

    status, logs = _wait_job(service, job)
    assert status == "SUCCEEDED", logs[-6000:]
    board = _leaderboard(service, name)
    assert list(board.status) == ["done", "done"] and list(board.epochs) == [epochs, epochs], board
    rows = _results(service, name)[victim]
    seen = [r["epoch"] for r in rows]
    assert sorted(set(seen)) == list(range(1, epochs + 1)), seen
    assert seen.count(1) == 1, f"the trial restarted from scratch instead of its checkpoint: {seen}"
    after = [r for r in rows if r["epoch"] > max(epochs_before)]
    assert after and {r["node_ip"] for r in after} == {HEAD_IP}, f"not resumed on the head: {rows}"
    dead = [n for n in service.cluster.nodes() if n["node_ip"] == worker.ip]
    assert dead and {n["state"] for n in dead} == {"DEAD"}


def test_nodes_with_their_own_run_dirs_refit_through_the_bucket(service: Service, tmp_path: Path) -> None:
    """Hosts that share only Ray's storage (S3 in production; a directory URI here), not ``/runs``.

    The worker node gets a ``RUNS_DIR`` of its own. A search with ``stages=[oof]`` refits its best
    model on two folds, one per node; the worker's fold result reaches the driver's ``runs/oof``
    only through the bucket, and the worker keeps nothing of it.
    """
    for worker in service.cluster.workers:  # the nodes that share the head's runs dir go away
        service.cluster.kill_worker(worker)
    wait_for(
        "the shared-runs workers declared dead", lambda: service.cluster.alive_node_ips() == {HEAD_IP}, 60
    )
    own_runs = tmp_path / "worker-runs"
    worker = service.cluster.add_worker(runs=own_runs)
    bucket = tmp_path / "bucket"
    name = "svc-own-runs"
    data = Path(load_dataset("synthetic").root)  # as on real hosts: data= names a path every host has
    job = service.cluster.job_client().submit_job(
        entrypoint=" ".join(
            _search_args(
                name,
                "service",
                "tune.num_samples=2",
                "trainable.epochs=1",
                f"data={data}",
                "trainable.k=2",
                "'stages=[oof]'",
                "oof.top_k=1",
                f"ray.storage={bucket.as_uri()}",
            )
        ),
        submission_id=name,
    )
    try:
        status, logs = _wait_job(service, job)
        assert status == "SUCCEEDED", logs[-6000:]
        assert "fetched" in logs and "fold results from Ray's storage" in logs, logs[-6000:]
        fold_nodes = {}
        for result in bucket.glob(f"{name}-oof/*-fold*/result.json"):
            rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            fold_nodes[result.parent.name] = {r["node_ip"] for r in rows}
        assert len(fold_nodes) == 2 and worker.ip in set().union(*fold_nodes.values()), fold_nodes
        models = [p for p in (service.runs / "oof" / name).iterdir() if p.is_dir()]
        assert len(models) == 1
        art = read_artifact(models[0])
        assert len(art.fold_scores) == 2 and art.cv_mean is not None
        assert sorted(p.name for p in (models[0] / "folds").glob("fold_*.npz")) == [
            "fold_0.npz",
            "fold_1.npz",
        ]
        assert (own_runs / "oof-staging" / name).is_dir(), "no fold ran in the worker's own runs dir"
        assert not list((own_runs / "oof-staging").rglob("*.npz")), "the worker kept a fold result"
        assert not (own_runs / "oof" / name).exists(), "the worker wrote into a run directory of its own"
    finally:
        service.cluster.kill_worker(worker)
        wait_for(
            "the own-runs worker declared dead", lambda: worker.ip not in service.cluster.alive_node_ips(), 60
        )

"""Fixtures of the search tests: one small local Ray for the session, a real MLflow server, tiny trials."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# A trial small enough for tests: timm's test model at 32 px on the built-in set, no warmup so an
# epoch's learning shows in its loss. The test model has no pretrained weights.
TINY = [
    "trainable.backbone=test_efficientnet",
    "trainable.image_size=32",
    "trainable.pretrained=false",
    "trainable.batch_size=32",
    "trainable.warmup_epochs=0",
    "checkpoint.num_to_keep=1",
    "verbose=1",
    "stages=[]",  # the search alone; tests/search/test_oof.py runs the stages
    "leak_audit=false",  # tests/search/test_audit.py runs it
]

_RAY: dict[str, bool] = {}


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """Overrides that make any space a tiny, fast search (see TINY)."""
    return list(TINY)


@pytest.fixture(scope="session")
def _ray_teardown() -> Iterator[None]:
    yield
    if _RAY.get("started"):
        import ray

        ray.shutdown()


@pytest.fixture
def ray_local(_isolated_runs_dir: None, _ray_teardown: None) -> None:
    """A local Ray with 2 CPUs, started once per session (search.run uses it instead of its own).

    Started lazily from a function-scoped fixture so that the session's RUNS_DIR (set per test by
    the root conftest) is already in the environment the Ray workers inherit.
    """
    start_local_ray()


@pytest.fixture(scope="module")
def ray_module(session_runs_dir: Path, _ray_teardown: None) -> Iterator[Path]:
    """:func:`ray_local` for module-scoped fixtures; yields the session's RUNS_DIR, set meanwhile."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNS_DIR", str(session_runs_dir))
        start_local_ray()
        yield session_runs_dir


def start_local_ray() -> None:
    """Start the session's local Ray (2 CPUs) unless one is up; it inherits the current RUNS_DIR."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=True)
        _RAY["started"] = True


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """:func:`free_port`, for tests."""
    return free_port


@pytest.fixture(name="start_driver")
def start_driver_fixture() -> Callable[[str, list[str], Path], subprocess.Popen]:
    """:func:`start_driver`, for tests."""
    return start_driver


@pytest.fixture(name="kill_session")
def kill_session_fixture() -> Callable[[subprocess.Popen], None]:
    """:func:`kill_session`, for tests."""
    return kill_session


def free_port() -> int:
    """A TCP port nobody listens on right now, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` process on 127.0.0.1 (what ``mlflow ui`` reads); yields its URL."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers go with it at teardown
    )
    try:
        _wait_healthy(url, proc, root / "server.log", timeout=120)
        yield url
    finally:
        kill_session(proc)
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


def start_driver(module: str, argv: list[str], log: Path) -> subprocess.Popen:
    """``python -m <module> <argv>`` in a session of its own, with a local Ray of its own (not the
    tests' one), output to ``log``: what :func:`kill_session` can kill whole, as a crash would."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with log.open("w") as out:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module, *argv, "ray.address=local", "ray.num_cpus=2"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and everything in its session.

    Ray's own processes (raylet, GCS, workers) put themselves in new process groups, so killing
    the group is not enough; they stay in the session, which is what this walks.
    """
    sid = proc.pid
    for pid in _session_members(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def _session_members(sid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp session ...
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members

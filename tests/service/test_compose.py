"""docker-compose.yml, Dockerfile and docs/service.md checked against the code, without Docker.

Each service's command is parsed by the real CLI it names (``ray start``, ``mlflow server``), its
health check, ports, volumes and wiring are checked against that command, every published port
must bind to 127.0.0.1, and every ``python -m`` in the docs must be a module that exists.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from fnmatch import fnmatch
from typing import Any

import click
import pytest
import yaml

from tests.service.conftest import (
    COMPOSE_FILE,
    REPO,
    compose_command,
    healthcheck_command,
    interpolate,
    load_compose,
)

SERVICES = {"postgres", "mlflow", "ray-head", "ray-worker"}
ENV = {"RAY_AUTH_TOKEN": "0" * 64}  # the one variable without a default (a deliberate lock)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` and bare ``--name`` arguments of a command."""
    out = {}
    for arg in command:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            out[name] = value
    return out


def _parse(cli: click.Group, name: str, args: list[str]) -> click.Context:
    """Parse ``args`` with the real click command: unknown flags and bad values fail here."""
    command = cli.commands[name]
    return command.make_context(name, list(args), resilient_parsing=False)


def _environment(spec: Mapping[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v), ENV) for k, v in env.items()}


def test_the_services_and_volumes(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    assert {"postgres-data", "mlflow-artifacts", "runs"} <= set(compose["volumes"])
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith(("$", ".", "/")):
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"


def test_every_variable_interpolates_and_the_ray_token_is_required(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    interpolate(text, ENV)  # every ${...} is well formed and has a default, except the token
    with pytest.raises(KeyError, match="RAY_AUTH_TOKEN"):
        interpolate(text, {})
    assert not re.search(r"\$\{[^}]*$", text, re.MULTILINE), "an unclosed ${"


def test_published_ports_bind_to_loopback_only(compose: dict[str, Any]) -> None:
    """Ray's dashboard and job API run arbitrary code: nothing is published beyond 127.0.0.1."""
    published = {}
    for name, spec in compose["services"].items():
        assert spec.get("network_mode") != "host", f"{name}: host networking publishes every port"
        for port in spec.get("ports", []):
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
                published[name] = int(port["target"])
                continue
            text = interpolate(str(port), ENV)
            host_ip, host_port, container_port = text.split(":")
            assert host_ip == "127.0.0.1", f"{name}: {port} is reachable from other machines"
            assert host_port.isdigit() and container_port.isdigit(), port
            published[name] = int(container_port)
    assert set(published) == {"mlflow", "ray-head"}, "only the MLflow UI and the Ray dashboard are published"
    mlflow = _flags(compose_command("mlflow", ENV, compose))
    head = _flags(compose_command("ray-head", ENV, compose))
    assert published["mlflow"] == int(mlflow["--port"])
    assert published["ray-head"] == int(head["--dashboard-port"])


def test_restart_policies_and_health_checks(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        assert spec.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name}: no restart policy"
        check = spec.get("healthcheck") or {}
        assert check.get("test", [None])[0] == "CMD", f"{name}: needs an exec-form health check"
        assert check.get("interval") and check.get("retries"), name
    for name, flag, path in (
        ("mlflow", "--port", "/health"),
        ("ray-head", "--dashboard-agent-listen-port", "/api/healthz"),
        ("ray-worker", "--dashboard-agent-listen-port", "/api/healthz"),
    ):
        test = compose["services"][name]["healthcheck"]["test"]
        port = _flags(compose_command(name, ENV, compose))[flag]
        assert f"http://127.0.0.1:{port}{path}" in test, f"{name}: health check does not probe {flag}={port}"
        script = healthcheck_command(name, int(port), compose)[1]
        assert script == str(REPO / "docker" / "healthcheck.py")
    pg = compose["services"]["postgres"]
    assert pg["healthcheck"]["test"][1] == "pg_isready"


def test_the_ray_commands_parse_with_ray_start(compose: dict[str, Any]) -> None:
    from ray.scripts.scripts import cli

    head = compose_command("ray-head", ENV, compose)
    worker = compose_command("ray-worker", ENV, compose)
    assert head[:2] == ["ray", "start"] and worker[:2] == ["ray", "start"]
    head_args = _parse(cli, "start", head[2:]).params
    worker_args = _parse(cli, "start", worker[2:]).params
    assert head_args["head"] and head_args["block"] and head_args["num_gpus"] == 0
    assert head_args["dashboard_host"] == "0.0.0.0"  # inside the container; published on 127.0.0.1 only
    assert not worker_args["head"] and worker_args["block"]
    host, port = worker_args["address"].split(":")
    assert host == "ray-head" and int(port) == head_args["port"], "workers must join the head's GCS port"
    gpu = compose["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    # Compose accepts "all" or an int here, and rejects an interpolated number ("${N}" -> "1").
    assert gpu["count"] == "all" or (isinstance(gpu["count"], int) and gpu["count"] >= 1)
    assert "deploy" not in compose["services"]["ray-head"], "the head runs drivers, not GPU trials"


def test_the_ray_nodes_share_run_storage_and_reach_mlflow(compose: dict[str, Any]) -> None:
    mlflow = _flags(compose_command("mlflow", ENV, compose))
    for name in ("ray-head", "ray-worker"):
        spec = compose["services"][name]
        env = _environment(spec)
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == ENV["RAY_AUTH_TOKEN"]
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in spec["volumes"]}
        assert mounts.get(env["RUNS_DIR"]) == "runs", f"{name}: RUNS_DIR is not the shared runs volume"
        url = env["MLFLOW_TRACKING_URI"]
        match = re.fullmatch(r"http://([\w-]+):(\d+)", url)
        assert match and match.group(1) in compose["services"] and match.group(2) == mlflow["--port"], url
        host = f"{match.group(1)}:{match.group(2)}"
        allowed = mlflow["--allowed-hosts"].split(",")
        assert any(fnmatch(host, pattern) for pattern in allowed), f"mlflow rejects Host {host}: {allowed}"
    for host in ("localhost:5000", "127.0.0.1:5000"):  # a browser on the host
        assert any(fnmatch(host, p) for p in mlflow["--allowed-hosts"].split(","))


def test_the_mlflow_command_parses_with_mlflow_server(compose: dict[str, Any]) -> None:
    import sqlalchemy
    from mlflow.cli import cli

    command = compose_command("mlflow", ENV, compose)
    assert command[:2] == ["mlflow", "server"]
    params = _parse(cli, "server", command[2:]).params
    assert params["serve_artifacts"] and params["artifacts_destination"] == "/mlartifacts"
    url = sqlalchemy.engine.make_url(params["backend_store_uri"])
    assert url.host == "postgres" and url.database == "mlflow" and url.username == "mlflow"
    url.get_dialect()  # the driver it names (psycopg) is installed: `pip install .[service]`
    pg = _environment(compose["services"]["postgres"])
    assert (pg["POSTGRES_USER"], pg["POSTGRES_DB"], pg["POSTGRES_PASSWORD"]) == (
        url.username,
        url.database,
        url.password,
    )
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in compose["services"]["mlflow"]["volumes"]}
    assert mounts.get("/mlartifacts") == "mlflow-artifacts"


def test_the_image_installs_what_the_services_run() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    dockerfile = (REPO / "Dockerfile").read_text()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "pip install '.[service]'" in dockerfile and any("psycopg" in d for d in extras["service"])
    assert "WORKDIR /app" in dockerfile and "pip install --no-deps -e ." in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "runs", ".git"} <= set(ignored), "the build context would carry the venv or runs"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ray = next(d for d in deps if d.startswith("ray["))
    assert "default" in ray, "`ray job submit` and the dashboard need ray[default]"


def test_the_documented_commands_name_real_modules_and_spaces() -> None:
    from search.config import list_spaces

    text = (REPO / "docs" / "service.md").read_text() + COMPOSE_FILE.read_text()
    modules = set(re.findall(r"python -m ([\w.]+)", text))
    assert "search.run" in modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, f"documented module {module} does not exist"
    for space in set(re.findall(r"space=(\w+)", text)):
        assert space in list_spaces(), f"documented space {space} does not exist"


def test_docker_compose_accepts_the_file() -> None:
    """Where Docker's compose plugin is installed, its own parser has the last word."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        pytest.skip("no `docker compose` on this machine (the static checks above stand in for it)")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin", **ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_healthcheck_script() -> None:
    from tests.service.conftest import free_port

    script = [sys.executable, str(REPO / "docker" / "healthcheck.py")]
    dead = subprocess.run([*script, f"http://127.0.0.1:{free_port()}/health"], capture_output=True, text=True)
    assert dead.returncode == 1 and "unhealthy" in dead.stderr and "Connection refused" in dead.stderr
    bad = subprocess.run([*script, "not-a-url"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unhealthy" in bad.stderr


class _Tagged:
    """A Compose merge tag (``!reset``, ``!override``) and its value."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


class _OverrideLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags, which plain YAML does not know."""


for _tag in ("!reset", "!override"):
    _OverrideLoader.add_constructor(
        _tag,
        lambda loader, node, tag=_tag: _Tagged(
            tag,
            loader.construct_sequence(node)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node)
            if isinstance(node, yaml.MappingNode)
            else loader.construct_scalar(node),
        ),
    )


def _override(name: str) -> dict[str, Any]:
    return yaml.load((REPO / "docker" / name).read_text(), Loader=_OverrideLoader)


def test_the_cpu_override_only_drops_the_gpu_reservation(compose: dict[str, Any]) -> None:
    cpu = _override("cpu.yml")
    assert set(cpu["services"]) == {"ray-worker"}
    deploy = cpu["services"]["ray-worker"]["deploy"]
    assert isinstance(deploy, _Tagged) and deploy.tag == "!reset"


def test_the_multihost_override_keeps_the_dashboard_on_loopback(compose: dict[str, Any]) -> None:
    from ray.scripts.scripts import cli

    hosts = {"RAY_NODE_IP": "10.0.0.2", "RAY_HEAD_ADDRESS": "10.0.0.1:6379", "RUNS_SHARED": "/mnt/shared/x"}
    multi = _override("multihost.yml")["services"]
    assert set(multi) == {"ray-head", "ray-worker"} <= set(compose["services"])
    for name, spec in multi.items():
        assert spec["network_mode"] == "host", name
        with pytest.raises(KeyError):  # a node must be told its address and the shared storage
            [interpolate(str(a), {**ENV, "RUNS_SHARED": "/x"}) for a in spec["command"]]
        assert [interpolate(v, {**ENV, **hosts}) for v in spec["volumes"]] == ["/mnt/shared/x:/runs"]
    head = [interpolate(str(a), {**ENV, **hosts}) for a in multi["ray-head"]["command"]]
    worker = [interpolate(str(a), {**ENV, **hosts}) for a in multi["ray-worker"]["command"]]
    head_args = _parse(cli, "start", head[2:]).params
    worker_args = _parse(cli, "start", worker[2:]).params
    assert head_args["dashboard_host"] == "127.0.0.1", "host networking would publish the job API"
    assert head_args["node_ip_address"] == "10.0.0.2" and worker_args["address"] == "10.0.0.1:6379"
    ports = multi["ray-head"]["ports"]
    assert isinstance(ports, _Tagged) and ports.tag == "!reset" and not ports.value
    assert isinstance(multi["ray-worker"]["depends_on"], _Tagged), "a worker host has no ray-head service"
    # The override repeats the base commands: they must not drift apart.
    base_head = set(_flags(compose_command("ray-head", ENV, compose)))
    assert set(_flags(head)) - base_head == {"--node-ip-address"}
    assert base_head - set(_flags(head)) == set()
    base_worker = set(_flags(compose_command("ray-worker", ENV, compose)))
    assert set(_flags(worker)) - base_worker == {"--node-ip-address"} and not base_worker - set(
        _flags(worker)
    )
    uri = interpolate(multi["ray-head"]["environment"]["MLFLOW_TRACKING_URI"], ENV)
    mlflow = _flags(compose_command("mlflow", ENV, compose))
    assert uri == "http://127.0.0.1:5000" and any(
        fnmatch("127.0.0.1:5000", p) for p in mlflow["--allowed-hosts"].split(",")
    )

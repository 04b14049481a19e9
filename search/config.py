"""The search config: the base file, a named space over it, then ``key=value`` overrides.

``search/defaults.yaml`` is the base. ``spaces/<name>.yaml`` stores only its differences from it
(and a ``search:`` section, see :mod:`search.space`). Command-line overrides are applied last.
The trainable's keys come from ``trainables.default_config(name)``, so they are written once.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from search.io import atomic_write_text
from search.space import (
    DISTRIBUTIONS,
    Dimension,
    SpaceError,
    flatten,
    get_path,
    has_path,
    nest_search,
    normalize_points,
    parse_search,
    points_for_variants,
    set_path,
)
from trainables.overrides import ConfigError, parse_overrides

DEFAULTS_FILE = Path(__file__).resolve().parent / "defaults.yaml"
SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"

SEARCH_ALGS = ("auto", "grid", "random", "tpe", "gp", "cmaes")
SCHEDULERS = ("asha", "hyperband", "median", "fifo")
# Keys a resumed search may change: where it runs and how much it prints, never what it searches.
RESUMABLE_KEYS = ("resume", "ray.address", "ray.num_cpus", "ray.num_gpus", "stages", "oof", "ensemble")


def spaces_dir() -> Path:
    """The folder of space files: ``SEARCH_SPACES_DIR`` if set, else ``spaces/`` in the repository."""
    return Path(os.environ.get("SEARCH_SPACES_DIR") or SPACES_DIR)


def list_spaces() -> list[str]:
    """Names of the space files (``spaces/<name>.yaml``), sorted."""
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


def runs_root() -> Path:
    """The output root shared by every stage: ``trainables.data.runs_dir()`` (``RUNS_DIR`` or ``./runs``)."""
    try:
        from trainables.data import runs_dir
    except ImportError:  # the data layer is optional for config work; same rule, written here
        return Path(os.environ.get("RUNS_DIR") or "runs").resolve()
    return Path(runs_dir()).resolve()


def load_space(name: str) -> dict[str, Any]:
    """Read ``spaces/<name>.yaml`` as a plain dict.

    Args:
        name: The space's name (file stem).

    Returns:
        The file's contents (an empty file is an empty space).

    Raises:
        ConfigError: No such file; the message lists the spaces there are.
    """
    path = spaces_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown space {name!r}; spaces in {spaces_dir()}: {', '.join(list_spaces()) or 'none'}"
        )
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def base_config(trainable: str) -> DictConfig:
    """The defaults file with ``trainable:`` completed from the trainable's own defaults.

    Args:
        trainable: A name from ``trainables.list_trainables()``.

    Raises:
        ConfigError: Unknown trainable; the message lists the registered ones.
    """
    import trainables

    try:
        defaults = trainables.default_config(trainable)
    except (KeyError, ValueError) as err:
        raise ConfigError(
            f"unknown trainable {trainable!r}; registered: {', '.join(trainables.list_trainables())}"
        ) from err
    base = OmegaConf.load(DEFAULTS_FILE)
    own = OmegaConf.to_container(base.trainable)
    base.trainable = OmegaConf.merge(
        {"name": trainable}, defaults, {k: v for k, v in own.items() if k != "name"}
    )
    base.trainable.name = trainable
    return base


def load_config(
    overrides: Sequence[str] | Sequence[tuple[str, Any]] = (), *, now: datetime | None = None
) -> DictConfig:
    """Build the complete config of one search.

    Order: ``search/defaults.yaml`` (trainable keys from the trainable's defaults), then
    ``spaces/<space>.yaml``, then the overrides. Setting ``trainable.<key>`` on the command line
    also removes ``<key>`` from the searched keys (the command line wins); ``search.<key>=null``
    stops searching a key; ``search.<key>={loguniform: [1e-4, 1e-2]}`` adds or replaces one.

    Args:
        overrides: ``key=value`` strings or parsed ``(key, value)`` pairs; ``space=<name>`` picks the space.
        now: Clock for the default experiment name (tests pin it).

    Returns:
        The config; ``search`` holds the searched keys as a nested mapping.

    Raises:
        ConfigError: Unknown space, key, trainable or value; the message lists the valid ones.
    """
    pairs = [p if isinstance(p, tuple) else parse_overrides([p])[0] for p in overrides]
    given = dict(pairs)
    defaults = OmegaConf.load(DEFAULTS_FILE)
    space_name = str(given.get("space", defaults.space))
    space = load_space(space_name)
    trainable = (
        given.get("trainable.name") or (space.get("trainable") or {}).get("name") or defaults.trainable.name
    )
    base = base_config(str(trainable))

    where = f"spaces/{space_name}.yaml"
    search_section = space.pop("search", None) or {}
    for key, value in flatten(space).items():
        _check_key(base, key, value, where)
    cfg = OmegaConf.merge(base, space)
    cfg.space = space_name
    try:
        dims = parse_search(search_section)
    except SpaceError as err:
        raise ConfigError(f"{where}: {err}") from err

    searched_before = set(dims)
    for key, value in pairs:
        if key == "search" or key.startswith("search."):
            _override_search(dims, key, value, cfg)
            continue
        if key == "trainable.data":
            raise ConfigError(
                "set the data with the top-level key: data=<synthetic|path>, not trainable.data"
            )
        _check_key(base, key, value, "command line")
        if isinstance(value, Mapping):  # trainable.aug={cutmix: 0.5}: each inner key must exist too
            for inner_key, inner_value in flatten(value).items():
                _check_key(base, f"{key}.{inner_key}", inner_value, "command line")
        OmegaConf.update(cfg, key, value, merge=isinstance(value, Mapping))
        inner = key.removeprefix("trainable.")
        if key.startswith("trainable."):
            for path in [p for p in dims if p == inner or p.startswith(inner + ".")]:
                del dims[path]  # the command line fixes a key the space searched
    _check_search_keys(dims, cfg)
    _prune_points(cfg, searched_before, dims)
    cfg.search = nest_search(dims)
    cfg.trainable.data = _absolute_data(cfg.data)
    if cfg.experiment in (None, ""):
        cfg.experiment = f"{space_name}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    validate(cfg)
    return cfg


def dimensions(cfg: DictConfig) -> dict[str, Dimension]:
    """The searched keys of a loaded config."""
    return parse_search(OmegaConf.to_container(cfg.search))


def trainable_config(cfg: DictConfig) -> dict[str, Any]:
    """The trainable's config as a plain dict, without ``name`` (what a trial's config starts from)."""
    out = OmegaConf.to_container(cfg.trainable, resolve=True)
    out.pop("name", None)
    return out


def max_epochs(cfg: DictConfig) -> int:
    """The most epochs a trial can run: ``trainable.epochs``, or the top of its range if searched."""
    dims = dimensions(cfg)
    return int(dims["epochs"].upper()) if "epochs" in dims else int(cfg.trainable.epochs)


def validate(cfg: DictConfig) -> None:
    """Check the values that the search itself uses (the trainable checks its own keys).

    Raises:
        ConfigError: A value is out of range or not one of the allowed choices.
    """
    checks: list[tuple[bool, str]] = [
        (
            cfg.tune.search_alg in SEARCH_ALGS,
            f"tune.search_alg={cfg.tune.search_alg!r}: use one of {list(SEARCH_ALGS)}",
        ),
        (
            cfg.scheduler.name in SCHEDULERS,
            f"scheduler.name={cfg.scheduler.name!r}: use one of {list(SCHEDULERS)}",
        ),
        (cfg.tune.mode in ("max", "min"), f"tune.mode={cfg.tune.mode!r}: use max or min"),
        (
            _is_int(cfg.tune.num_samples) and cfg.tune.num_samples >= 1,
            "tune.num_samples must be an integer >= 1",
        ),
        (
            cfg.tune.max_concurrent is None
            or (_is_int(cfg.tune.max_concurrent) and cfg.tune.max_concurrent >= 1),
            "tune.max_concurrent must be null or an integer >= 1",
        ),
        (
            cfg.tune.time_budget_s is None
            or (_is_number(cfg.tune.time_budget_s) and cfg.tune.time_budget_s > 0),
            "tune.time_budget_s must be null or seconds > 0",
        ),
        (
            _is_int(cfg.scheduler.grace_period) and cfg.scheduler.grace_period >= 1,
            "scheduler.grace_period must be >= 1",
        ),
        (
            _is_number(cfg.scheduler.reduction_factor) and cfg.scheduler.reduction_factor > 1,
            "scheduler.reduction_factor must be > 1",
        ),
        (
            _is_number(cfg.resources.cpu) and cfg.resources.cpu > 0,
            "resources.cpu must be > 0 (fractions are fine)",
        ),
        (
            _is_number(cfg.resources.gpu) and cfg.resources.gpu >= 0,
            "resources.gpu must be >= 0 (fractions are fine)",
        ),
        (
            _is_int(cfg.checkpoint.num_to_keep) and cfg.checkpoint.num_to_keep >= 1,
            "checkpoint.num_to_keep must be >= 1",
        ),
        (
            _is_int(cfg.max_failures) and cfg.max_failures >= -1,
            "max_failures must be an integer >= 0 (-1: retry forever)",
        ),
        (isinstance(cfg.resume, (bool, str)), "resume must be true, false or an experiment's name"),
        ("/" not in str(cfg.experiment), f"experiment={cfg.experiment!r} must be a plain name, not a path"),
        *oof_checks(cfg),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    gpu = float(cfg.resources.gpu)
    if gpu > 1 and not gpu.is_integer():
        raise ConfigError(f"resources.gpu={gpu}: above 1 a trial needs whole GPUs")
    alg = cfg.tune.search_alg
    dims = dimensions(cfg)
    if alg == "grid" and not all(d.is_grid for d in dims.values()):
        sampled = [p for p, d in dims.items() if not d.is_grid]
        raise ConfigError(
            f"tune.search_alg=grid needs every searched key to be a grid; {sampled} are sampled: use random or tpe"
        )
    if alg in ("gp", "cmaes", "tpe") and not dims:
        raise ConfigError(f"tune.search_alg={alg} needs at least one searched key (search: is empty)")
    base = trainable_config(cfg)
    try:
        normalize_points(OmegaConf.to_container(cfg.tune.points_to_evaluate), dims, base)
    except SpaceError as err:
        raise ConfigError(str(err)) from err
    _check_trainable_values(cfg, base, dims)


def oof_checks(cfg: DictConfig) -> list[tuple[bool, str]]:
    """``(ok, message)`` for the ``oof`` and ``ensemble`` sections (shared with ``search.oof``)."""
    oof, ens = cfg.oof, cfg.ensemble
    return [
        (_is_int(oof.top_k) and oof.top_k >= 1, "oof.top_k must be an integer >= 1"),
        (
            oof.max_per_backbone is None or (_is_int(oof.max_per_backbone) and oof.max_per_backbone >= 1),
            "oof.max_per_backbone must be null or an integer >= 1",
        ),
        (
            oof.epochs == "best" or (_is_int(oof.epochs) and oof.epochs >= 1),
            f"oof.epochs={oof.epochs!r}: use best (the search's best epoch per trial) or a number >= 1",
        ),
        (oof.dtype in ("float16", "float32"), f"oof.dtype={oof.dtype!r}: use float16 or float32"),
        (oof.mode in ("refit", "promote"), f"oof.mode={oof.mode!r}: use refit or promote"),
        (oof.select in ("score", "gain"), f"oof.select={oof.select!r}: use score or gain"),
        (
            oof.ship_results in ("auto", True, False),
            f"oof.ship_results={oof.ship_results!r}: use auto (when ray.storage is a URI), true or false",
        ),
        (
            ens.metric in ("accuracy", "f1", "logloss"),
            f"ensemble.metric={ens.metric!r}: use accuracy, f1 or logloss",
        ),
        (_is_int(ens.trials) and ens.trials >= 1, "ensemble.trials must be an integer >= 1"),
    ]


def _validator(name: str) -> Any:
    """The trainable's own config check (every trainable has ``validate_config``)."""
    import trainables

    return trainables.create_trainable(name).validate_config


def _check_trainable_values(cfg: DictConfig, base: dict[str, Any], dims: Mapping[str, Dimension]) -> None:
    """Let the trainable check its config, and each searched value in it, before any trial starts."""
    check = _validator(str(cfg.trainable.name))
    if check is None:
        return
    try:
        check(base)
    except ValueError as err:
        raise ConfigError(f"trainable config: {err}") from err
    for path, dim in dims.items():
        values = dim.args if dim.kind in ("grid", "choice") else dim.args[:2]
        for value in values:
            trial = copy.deepcopy(base)
            set_path(trial, path, value)
            try:
                check(trial)
            except ValueError as err:
                raise ConfigError(
                    f"search.{path}: value {value!r} of {dim.describe()} is invalid: {err}"
                ) from err


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically (a resume reads it back)."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg))


def read_config(path: Path) -> DictConfig:
    """Read a config written by :func:`save_config`."""
    return OmegaConf.load(path)


def valid_keys(cfg: DictConfig) -> list[str]:
    """Every dotted key an override may set (groups and leaves)."""
    keys: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if name == "search":
                continue
            keys.append(name)
            if isinstance(value, Mapping):
                walk(value, name)

    walk(OmegaConf.to_container(cfg), "")
    return keys


def _check_key(base: DictConfig, key: str, value: Any, where: str) -> None:
    """Raise for a key the config does not have (nearest names first, then its section's keys) or a
    value of the wrong type."""
    keys = valid_keys(base)
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
        # the deepest existing section the key is under: list its keys, not all ~100 of them
        parts = key.split(".")
        section = next(
            (p for p in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)) if p in keys), ""
        )
        siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]
        close = [c for c in close if c != section]
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        listing = f"keys of {section}" if section else "top-level keys"
        raise ConfigError(
            f"{where}: unknown key {key!r}{hint}\n  {listing}: {', '.join(siblings)}\n"
            "  (searched keys go under search.<key>; python -m search.run --help describes every key)"
        )
    old = OmegaConf.select(base, key)
    if not _compatible(old, value):
        raise ConfigError(f"{where}: {key}={value!r} should be {type(old).__name__} like the default {old!r}")


def _compatible(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool):
        return isinstance(new, bool)
    if isinstance(old, (int, float)):
        return (
            isinstance(new, (int, float))
            and not isinstance(new, bool)
            and (isinstance(old, float) or float(new).is_integer())
        )
    if isinstance(old, Mapping):
        return isinstance(new, Mapping)
    if isinstance(old, str):
        # a string default may take a number or flag (num_workers: auto | 2, amp: auto | false)
        return not isinstance(new, (Mapping, list))
    return True


def _override_search(dims: dict[str, Dimension], key: str, value: Any, cfg: DictConfig) -> None:
    path = key.removeprefix("search").removeprefix(".").removeprefix("trainable.")
    if not path:  # search=null or search={...}: replace the whole section
        dims.clear()
        dims.update(parse_search(value) if value else {})
        return
    head, _, last = path.rpartition(".")
    if head and last in DISTRIBUTIONS:  # search.lr.loguniform=[...] replaces lr's distribution
        path, value = head, {last: value}
    for p in [p for p in dims if p == path or p.startswith(path + ".")]:
        del dims[p]
    if value is None:
        return
    try:
        dims.update(parse_search({path: value}))
    except SpaceError as err:
        raise ConfigError(f"command line: {err}") from err


def _prune_points(cfg: DictConfig, searched_before: set[str], dims: Mapping[str, Dimension]) -> None:
    """Drop from the known-good points the keys the command line stopped searching."""
    dropped = searched_before - set(dims)
    if not dropped or not cfg.tune.points_to_evaluate:
        return
    points = []
    for point in OmegaConf.to_container(cfg.tune.points_to_evaluate):
        kept = {k: v for k, v in flatten(point).items() if k.removeprefix("trainable.") not in dropped}
        if kept and kept not in points:
            points.append(kept)
    cfg.tune.points_to_evaluate = points_for_variants(points)


def _check_search_keys(dims: Mapping[str, Dimension], cfg: DictConfig) -> None:
    tconf = trainable_config(cfg)
    for path in dims:
        if not has_path(tconf, path) or isinstance(get_path(tconf, path), Mapping):
            valid = [k for k in flatten(tconf) if k != "data"]
            raise ConfigError(
                f"search.{path}: not a key of trainable {cfg.trainable.name!r}; valid: {', '.join(valid)}"
            )
        if path == "data":
            raise ConfigError("search.data: the data set cannot be searched; run one search per data set")


def _absolute_data(data: Any) -> Any:
    # Ray workers may run in another directory (or chdir to the trial's), so a local path is made absolute.
    from trainables.data import BUILTIN_SETS

    if isinstance(data, str) and data not in BUILTIN_SETS and "://" not in data and Path(data).exists():
        return str(Path(data).resolve())
    return data


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)

"""The search config: the base file, a named space over it, then ``key=value`` overrides.

``search/defaults.yaml`` is the base. ``spaces/<name>.yaml`` stores only its differences from it
(and a ``search:`` section, see :mod:`search.space`). Command-line overrides are applied last.
The trainable's keys come from ``trainables.default_config(name)``, so they are written once.
The tree is typed by :mod:`search.schema` (a wrong type fails where it is set), its values are
checked by :mod:`search.validate`, and what it implies (searched dimensions, the concrete search
algorithm, the most epochs) is computed once by :mod:`search.plan`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from common.io import atomic_write_text
from search.plan import SearchPlan, dimensions, max_epochs, search_plan
from search.schema import typed_base
from search.space import (
    DISTRIBUTIONS,
    Dimension,
    SpaceError,
    flatten,
    nest_search,
    parse_search,
    points_for_variants,
)
from search.validate import SCHEDULERS, SEARCH_ALGS, oof_checks, validate
from trainables.overrides import ConfigError, parse_overrides

__all__ = [  # the plan, checks and override parser are re-exported: callers import them from here
    "SCHEDULERS",
    "SEARCH_ALGS",
    "ConfigError",
    "SearchPlan",
    "dimensions",
    "load_config",
    "max_epochs",
    "oof_checks",
    "parse_overrides",
    "search_plan",
    "validate",
]

DEFAULTS_FILE = Path(__file__).resolve().parent / "defaults.yaml"
SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"

# Keys a resumed search may change: where it runs and how much it prints, never what it searches.
RESUMABLE_KEYS = ("resume", "ray.address", "ray.num_cpus", "ray.num_gpus", "stages", "oof", "ensemble")


def spaces_dir() -> Path:
    """The folder of space files: ``SEARCH_SPACES_DIR`` if set, else ``spaces/`` in the repository."""
    return Path(os.environ.get("SEARCH_SPACES_DIR") or SPACES_DIR)


def list_spaces() -> list[str]:
    """Names of the space files (``spaces/<name>.yaml``), sorted."""
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


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
    """The typed defaults: :class:`~search.schema.SearchSchema` over the defaults file and the trainable's.

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
    return typed_base(OmegaConf.load(DEFAULTS_FILE), trainable, defaults)


def load_config(
    overrides: Sequence[str] | Sequence[tuple[str, Any]] = (), *, now: datetime | None = None
) -> DictConfig:
    """Build the complete, typed and checked config of one search.

    Order: ``search/defaults.yaml`` (trainable keys from the trainable's defaults), then
    ``spaces/<space>.yaml``, then the overrides. Setting ``trainable.<key>`` on the command line
    also removes ``<key>`` from the searched keys (the command line wins); ``search.<key>=null``
    stops searching a key; ``search.<key>={loguniform: [1e-4, 1e-2]}`` adds or replaces one.

    Args:
        overrides: ``key=value`` strings or parsed ``(key, value)`` pairs; ``space=<name>`` picks the space.
        now: Clock for the default experiment name (tests pin it).

    Returns:
        The config; ``search`` holds the searched keys as a nested mapping; :func:`search_plan`
        gives what it implies.

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
    cfg = base_config(str(trainable))

    where = f"spaces/{space_name}.yaml"
    search_section = space.pop("search", None) or {}
    for key, value in flatten(space).items():
        set_key(cfg, key, value, where)
    cfg.space = space_name
    try:
        dims = parse_search(search_section)
    except SpaceError as err:
        raise ConfigError(f"{where}: {err}") from err
    searched_before = set(dims)
    for key, value in pairs:
        _apply_override(cfg, dims, key, value)
    _check_search_keys(dims, cfg)
    _prune_points(cfg, searched_before, dims)
    cfg.search = nest_search(dims)
    cfg.trainable.data = _absolute_data(cfg.data)
    if cfg.experiment in (None, ""):
        cfg.experiment = f"{space_name}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    validate(cfg)
    return cfg


def _apply_override(cfg: DictConfig, dims: dict[str, Dimension], key: str, value: Any) -> None:
    """One command-line ``key=value``: a searched key, or a config key (which then is not searched)."""
    if key == "search" or key.startswith("search."):
        _override_search(dims, key, value)
        return
    if key == "trainable.data":
        raise ConfigError("set the data with the top-level key: data=<synthetic|path>, not trainable.data")
    set_key(cfg, key, value, "command line")
    if key.startswith("trainable."):
        inner = key.removeprefix("trainable.")
        for path in [p for p in dims if p == inner or p.startswith(inner + ".")]:
            del dims[path]  # the command line fixes a key the space searched


def set_key(cfg: DictConfig, key: str, value: Any, where: str) -> None:
    """Set one dotted key of a typed config (a mapping value merges into its section).

    Args:
        cfg: A typed config (:func:`base_config`), changed in place.
        key: Dotted key, e.g. ``tune.num_samples`` or ``trainable.aug``.
        value: The new value; the schema converts it (``1`` for a float key) or refuses it.
        where: Where the key was given (``spaces/x.yaml``, ``command line``), for the message.

    Raises:
        ConfigError: The key does not exist (nearest names first, then its section's keys) or the
            value has the wrong type (the default's type and value are named).
    """
    old = OmegaConf.select(cfg, key, default=None)
    try:
        OmegaConf.update(cfg, key, value, merge=isinstance(value, Mapping))
    except (ConfigAttributeError, ConfigKeyError) as err:
        full = str(err.full_key or key)  # an inner key of a mapping value is named itself
        raise ConfigError(_unknown_key(cfg, key if key.startswith(full) else full, where)) from None
    except ValidationError as err:
        if old is None or isinstance(old, DictConfig):
            raise ConfigError(f"{where}: {key}={value!r}: {str(err).splitlines()[0]}") from None
        raise ConfigError(
            f"{where}: {key}={value!r} should be {type(old).__name__} like the default {old!r}"
        ) from None


def trainable_config(cfg: DictConfig) -> dict[str, Any]:
    """The trainable's config as a plain dict, without ``name`` (what a trial's config starts from)."""
    out = OmegaConf.to_container(cfg.trainable, resolve=True)
    out.pop("name", None)
    return out


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically (a resume reads it back)."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg))


def read_config(path: Path) -> DictConfig:
    """Read a config written by :func:`save_config` (untyped: it may come from an older version)."""
    return OmegaConf.load(path)


def valid_keys(cfg: DictConfig) -> list[str]:
    """Every dotted key an override may set (groups and leaves)."""
    return [k for k in _walk_keys(OmegaConf.to_container(cfg), "") if k != "search"]


def _walk_keys(node: Mapping[str, Any], prefix: str) -> list[str]:
    keys: list[str] = []
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        keys.append(name)
        if isinstance(value, Mapping) and name != "search":
            keys += _walk_keys(value, name)
    return keys


def _unknown_key(cfg: DictConfig, key: str, where: str) -> str:
    """The message for a key the config does not have: nearest names, then its section's keys."""
    keys = valid_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    # the deepest existing section the key is under: list its keys, not all ~100 of them
    parts = key.split(".")
    section = next((p for p in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)) if p in keys), "")
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]
    close = [c for c in close if c != section]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    listing = f"keys of {section}" if section else "top-level keys"
    return (
        f"{where}: unknown key {key!r}{hint}\n  {listing}: {', '.join(siblings)}\n"
        "  (searched keys go under search.<key>; python -m search.run --help describes every key)"
    )


def _override_search(dims: dict[str, Dimension], key: str, value: Any) -> None:
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


def narrow_search(cfg: DictConfig, drop: Mapping[str, Sequence[Any]]) -> None:
    """Take values out of searched choices (``budget=`` leaves out what its OOF could not refit).

    A choice left with one value is no longer searched: its trainable key takes that value. A
    known-good point that holds a value taken out is dropped; the others lose the keys no longer
    searched. Grids and ranges are left as they are.

    Args:
        cfg: A loaded config; ``search``, ``trainable`` and ``tune.points_to_evaluate`` change.
        drop: ``{searched path: values to take out}``.
    """
    dims = dimensions(cfg)
    searched_before = set(dims)
    points = [
        {k.removeprefix("trainable."): v for k, v in flatten(p).items()}
        for p in OmegaConf.to_container(cfg.tune.points_to_evaluate) or []
    ]
    for path, values in drop.items():
        dim = dims.get(path)
        if dim is None or dim.kind != "choice":
            continue
        kept = [v for v in dim.args if v not in values]
        if not kept or len(kept) == len(dim.args):
            continue
        # the base value completes partial points (normalize_points): it must be one of those kept
        if len(kept) == 1 or OmegaConf.select(cfg.trainable, path) not in kept:
            OmegaConf.update(cfg.trainable, path, kept[0], merge=False)
        points = [p for p in points if path not in p or p[path] in kept]
        if len(kept) == 1:
            del dims[path]
        else:
            dims[path] = Dimension(path, dim.kind, tuple(kept))
    cfg.tune.points_to_evaluate = points_for_variants(points)
    _prune_points(cfg, searched_before, dims)
    cfg.search = nest_search(dims)


def _check_search_keys(dims: Mapping[str, Dimension], cfg: DictConfig) -> None:
    for path in dims:
        node = OmegaConf.select(cfg.trainable, path, default=KeyError)
        if node is KeyError or isinstance(node, DictConfig) or path == "name":
            valid = [k for k in flatten(trainable_config(cfg)) if k != "data"]
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

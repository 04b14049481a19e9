"""The ``search:`` section of a space: a small declarative syntax, translated to Ray Tune / Optuna.

A searched key mirrors the trainable's config (``lr``, ``aug.cutmix``) and holds exactly one
distribution::

    search:
      lr: {loguniform: [1.0e-4, 1.0e-3]}
      batch_size: {choice: [32, 64]}
      aug:
        cutmix: {grid: [0.0, 0.5]}

Dotted keys (``aug.cutmix: {...}``) and a leading ``trainable.`` are accepted as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from ray import tune

from common.errors import DeterministicError

# name -> (argument shape, meaning); the shapes are checked by Dimension.parse.
DISTRIBUTIONS: dict[str, str] = {
    "grid": "[v1, v2, ...]: every value is tried (a grid over all grid keys)",
    "choice": "[v1, v2, ...]: one value sampled per trial",
    "uniform": "[low, high]: float, uniform",
    "quniform": "[low, high, q]: float, uniform, rounded to a multiple of q",
    "loguniform": "[low, high]: float, uniform in log space (low > 0)",
    "qloguniform": "[low, high, q]: float, log-uniform, rounded to a multiple of q",
    "randint": "[low, high]: integer in [low, high) (high exclusive, as ray.tune.randint)",
    "qrandint": "[low, high, q]: integer multiple of q in [low, high] (high inclusive)",
    "lograndint": "[low, high]: integer in [low, high), log-uniform (low > 0)",
}
_CATEGORICAL = ("grid", "choice")
_FLOAT = ("uniform", "quniform", "loguniform", "qloguniform")
_INT = ("randint", "qrandint", "lograndint")


class SpaceError(DeterministicError, ValueError):
    """A ``search:`` entry or a point to evaluate is malformed; the message says which and why."""


@dataclass(frozen=True)
class Dimension:
    """One searched key.

    Attributes:
        path: Dotted key in the trainable's config, e.g. ``"lr"`` or ``"aug.cutmix"``.
        kind: A key of :data:`DISTRIBUTIONS`.
        args: Its arguments: the values (grid, choice) or ``(low, high[, q])``.
    """

    path: str
    kind: str
    args: tuple[Any, ...]

    @classmethod
    def parse(cls, path: str, spec: Any) -> Dimension:
        """Read ``{kind: args}``, checking the arguments' shape.

        Args:
            path: Dotted key, for the error messages.
            spec: The mapping found in the ``search:`` section.

        Returns:
            The dimension.

        Raises:
            SpaceError: Not a one-key mapping of a known distribution, or bad arguments.
        """
        where = f"search.{path}"
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise SpaceError(
                f"{where}: expected one distribution as {{name: args}}, got {spec!r}; "
                f"distributions: {', '.join(DISTRIBUTIONS)}"
            )
        ((kind, args),) = spec.items()
        if kind not in DISTRIBUTIONS:
            raise SpaceError(f"{where}: unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
        if not isinstance(args, Sequence) or isinstance(args, str):
            raise SpaceError(f"{where}.{kind}: expected a list {DISTRIBUTIONS[kind]}, got {args!r}")
        args = tuple(args)
        if kind in _CATEGORICAL:
            if not args:
                raise SpaceError(f"{where}.{kind}: needs at least one value")
            for value in args:
                if not (value is None or isinstance(value, (bool, int, float, str))):
                    raise SpaceError(
                        f"{where}.{kind}: values must be scalars (Optuna stores them), got {value!r}"
                    )
            return cls(path, kind, args)
        n_args = 3 if kind.startswith("q") else 2
        if len(args) != n_args or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args
        ):
            raise SpaceError(f"{where}.{kind}: expected {DISTRIBUTIONS[kind]}, got {list(args)}")
        if kind in _INT and not all(float(a).is_integer() for a in args):
            raise SpaceError(f"{where}.{kind}: integer bounds expected, got {list(args)}")
        low, high = args[0], args[1]
        if not low < high:
            raise SpaceError(f"{where}.{kind}: low must be below high, got {list(args)}")
        if "log" in kind and low <= 0:
            raise SpaceError(f"{where}.{kind}: a log scale needs low > 0, got {list(args)}")
        if n_args == 3 and args[2] <= 0:
            raise SpaceError(f"{where}.{kind}: q must be > 0, got {args[2]}")
        if kind in _INT:
            args = tuple(int(a) for a in args)
        return cls(path, kind, args)

    @property
    def is_grid(self) -> bool:
        """Whether every value is to be tried rather than sampled."""
        return self.kind == "grid"

    @property
    def is_log(self) -> bool:
        """Whether the dimension is sampled on a log scale (plots use a log axis for it)."""
        return "log" in self.kind

    def domain(self, *, grid_as_choice: bool = False) -> Any:
        """The Ray Tune domain (``tune.grid_search`` for a grid unless ``grid_as_choice``).

        Args:
            grid_as_choice: Model-based searchers (Optuna) cannot enumerate a grid; they sample it
                as a categorical instead.

        Returns:
            A ``ray.tune`` search domain, or a ``grid_search`` marker dict.
        """
        a = self.args
        if self.kind == "grid":
            return tune.choice(list(a)) if grid_as_choice else tune.grid_search(list(a))
        return {
            "choice": lambda: tune.choice(list(a)),
            "uniform": lambda: tune.uniform(a[0], a[1]),
            "quniform": lambda: tune.quniform(a[0], a[1], a[2]),
            "loguniform": lambda: tune.loguniform(a[0], a[1]),
            "qloguniform": lambda: tune.qloguniform(a[0], a[1], a[2]),
            "randint": lambda: tune.randint(a[0], a[1]),
            "qrandint": lambda: tune.qrandint(a[0], a[1], a[2]),
            "lograndint": lambda: tune.lograndint(a[0], a[1]),
        }[self.kind]()

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this dimension (used to check points to evaluate)."""
        if self.kind in _CATEGORICAL:
            return any(value == v and type(value) is type(v) or _same_number(value, v) for v in self.args)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.args[0], self.args[1]
        if self.kind in ("randint", "lograndint"):
            return float(value).is_integer() and low <= value < high
        return low <= value <= high

    def upper(self) -> Any:
        """The largest value the dimension can take (e.g. the scheduler's max_t when epochs is searched)."""
        if self.kind in _CATEGORICAL:
            return max(self.args)
        return self.args[1] - 1 if self.kind in ("randint", "lograndint") else self.args[1]

    def describe(self) -> str:
        """A short human form, e.g. ``loguniform(0.0001, 0.001)``."""
        return f"{self.kind}({', '.join(map(repr, self.args))})"


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and math.isclose(a, b)
    )


def parse_search(section: Mapping[str, Any] | None) -> dict[str, Dimension]:
    """Flatten a ``search:`` section into dimensions keyed by their dotted path.

    Args:
        section: The plain (container) ``search:`` mapping; nested or dotted keys.

    Returns:
        ``{path: Dimension}`` in file order.

    Raises:
        SpaceError: A leaf is not a distribution.
    """
    dims: dict[str, Dimension] = {}

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = prefix + tuple(str(key).split("."))
            name = ".".join(path[1:] if path[0] == "trainable" and len(path) > 1 else path)
            # A one-key mapping whose value is not itself a mapping is a distribution ({kind: args});
            # anything else with keys is a group such as `aug`.
            if (
                isinstance(value, Mapping)
                and len(value) == 1
                and not isinstance(next(iter(value.values())), Mapping)
            ):
                if name in dims:
                    raise SpaceError(f"search.{name} is given twice")
                dims[name] = Dimension.parse(name, value)
            elif isinstance(value, Mapping) and value:
                walk(value, path)
            else:
                raise SpaceError(
                    f"search.{name}: expected one distribution as {{name: args}}, got {value!r}; "
                    f"distributions: {', '.join(DISTRIBUTIONS)}"
                )

    walk(section or {}, ())
    return dims


def nest_search(dims: Mapping[str, Dimension]) -> dict[str, Any]:
    """The inverse of :func:`parse_search`: a nested ``search:`` mapping (what a saved config holds)."""
    return nested({path: {dim.kind: list(dim.args)} for path, dim in dims.items()})


def _tree(tree: Mapping[str, Any]) -> DictConfig:
    # allow_objects: a param space holds Ray domains, which OmegaConf keeps as they are.
    return OmegaConf.create(dict(tree), flags={"allow_objects": True})


def select(tree: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """``OmegaConf.select`` over a plain nested dict: ``tree["aug"]["cutmix"]`` for ``aug.cutmix``.

    Args:
        tree: A plain nested mapping (a trial's config).
        path: Dotted key.
        default: Returned when the key is absent.
    """
    value = OmegaConf.select(_tree(tree), path, default=default)
    return OmegaConf.to_container(value) if isinstance(value, DictConfig) else value


def nested(flat: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"aug.cutmix": 0.5}`` -> ``{"aug": {"cutmix": 0.5}}``, over a copy of ``base`` (``OmegaConf.update``)."""
    tree = _tree(base or {})
    for path, value in flat.items():
        OmegaConf.update(tree, path, value, merge=False)
    return OmegaConf.to_container(tree)  # type: ignore[return-value]


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"aug": {"cutmix": 0.5}}`` -> ``{"aug.cutmix": 0.5}`` (MLflow params, leaderboard columns)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def build_param_space(
    trainable_config: Mapping[str, Any], dims: Mapping[str, Dimension], *, grid_as_choice: bool = False
) -> dict[str, Any]:
    """The Tuner's ``param_space``: the trainable's config with each searched key made a domain.

    Args:
        trainable_config: The complete trainable config (plain dict, ``name`` removed).
        dims: The searched keys; each must exist in ``trainable_config``.
        grid_as_choice: Sample grid keys as categoricals (for Optuna searchers).

    Returns:
        A nested dict Ray Tune resolves per trial.

    Raises:
        SpaceError: A searched key is not a key of the trainable's config.
    """
    for path in dims:
        if select(trainable_config, path, KeyError) is KeyError:
            raise SpaceError(
                f"search.{path}: not a key of the trainable's config; valid: {sorted(flatten(trainable_config))}"
            )
    domains = {path: dim.domain(grid_as_choice=grid_as_choice) for path, dim in dims.items()}
    return nested(domains, base=trainable_config)


def normalize_points(
    points: Sequence[Mapping[str, Any]] | None,
    dims: Mapping[str, Dimension],
    trainable_config: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Check known-good points and complete each with the config's value for keys it leaves out.

    Optuna insists on a value for every searched key, so a point that only says ``{lr: 3e-4}``
    means "the base config with this lr".

    Args:
        points: ``tune.points_to_evaluate`` (nested or dotted keys).
        dims: The searched keys.
        trainable_config: The base values used to complete partial points.

    Returns:
        Flat ``{path: value}`` points covering every dimension.

    Raises:
        SpaceError: A point names an unsearched key, holds a value outside its dimension, or
            leaves out a key whose base value is outside the dimension.
    """
    out: list[dict[str, Any]] = []
    base = OmegaConf.create(dict(trainable_config))
    for i, point in enumerate(points or []):
        if not isinstance(point, Mapping):
            raise SpaceError(
                f"tune.points_to_evaluate[{i}]: expected a mapping of searched keys, got {point!r}"
            )
        flat = {k.removeprefix("trainable."): v for k, v in flatten(point).items()}
        unknown = sorted(set(flat) - set(dims))
        if unknown:
            raise SpaceError(
                f"tune.points_to_evaluate[{i}]: {unknown} are not searched keys; searched: {list(dims)}"
            )
        full: dict[str, Any] = {}
        for path, dim in dims.items():
            given = path in flat
            value = flat[path] if given else OmegaConf.select(base, path)
            if not dim.contains(value):
                what = "value" if given else "left out, and its base value"
                hint = "" if given else "; give it in the point"
                raise SpaceError(
                    f"tune.points_to_evaluate[{i}]: {path}: {what} {value!r} is outside {dim.describe()}{hint}"
                )
            full[path] = value
        out.append(full)
    return out


def points_for_optuna(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat points keyed the way Ray's OptunaSearch flattens a nested space (``aug/cutmix``)."""
    return [{k.replace(".", "/"): v for k, v in p.items()} for p in points]


def points_for_variants(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Nested points, as Ray's BasicVariantGenerator (grid and random search) expects them."""
    return [nested(p) for p in points]

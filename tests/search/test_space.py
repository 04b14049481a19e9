"""The ``search:`` syntax and its translation to Ray Tune domains and searcher points."""

from __future__ import annotations

import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from search.space import (
    Dimension,
    SpaceError,
    build_param_space,
    normalize_points,
    parse_search,
    points_for_optuna,
    points_for_variants,
)

BASE = {"lr": 3e-4, "batch_size": 64, "schedule": "cosine", "aug": {"cutmix": 0.0, "edge": False}}


def test_nested_dotted_and_prefixed_keys_mean_the_same() -> None:
    nested = parse_search({"aug": {"cutmix": {"grid": [0.0, 0.5]}}, "lr": {"loguniform": [1e-4, 1e-3]}})
    dotted = parse_search({"aug.cutmix": {"grid": [0.0, 0.5]}, "trainable.lr": {"loguniform": [1e-4, 1e-3]}})
    assert nested == dotted
    assert list(nested) == ["aug.cutmix", "lr"]


def test_domains() -> None:
    dims = parse_search(
        {
            "lr": {"loguniform": [1e-4, 1e-2]},
            "batch_size": {"choice": [32, 64]},
            "aug": {"cutmix": {"grid": [0.0, 0.5]}, "edge": {"choice": [False, True]}},
        }
    )
    space = build_param_space(BASE, dims)
    assert isinstance(space["lr"], Float) and space["lr"].lower == 1e-4
    assert isinstance(space["batch_size"], Categorical)
    assert space["aug"]["cutmix"] == {"grid_search": [0.0, 0.5]}
    assert space["schedule"] == "cosine"  # unsearched keys stay constants
    as_choice = build_param_space(BASE, dims, grid_as_choice=True)
    assert isinstance(as_choice["aug"]["cutmix"], Categorical)
    assert BASE["lr"] == 3e-4  # the base is not modified


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"uniform": [0.0, 1.0]}, Float),
        ({"quniform": [0.0, 1.0, 0.1]}, Float),
        ({"qloguniform": [1e-4, 1e-2, 1e-4]}, Float),
        ({"randint": [1, 5]}, Integer),
        ({"qrandint": [16, 128, 16]}, Integer),
        ({"lograndint": [8, 256]}, Integer),
    ],
)
def test_every_distribution_translates(spec: dict, kind: type) -> None:
    dim = Dimension.parse("x", spec)
    assert isinstance(dim.domain(), kind)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (0.1, "expected one distribution"),
        ({"uniform": [1.0]}, "expected [low, high]"),
        ({"uniform": [2.0, 1.0]}, "low must be below high"),
        ({"randint": [1.5, 3]}, "integer bounds expected"),
        ({"grid": []}, "needs at least one value"),
        ({"choice": [[1, 2]]}, "values must be scalars"),
        ({"qrandint": [1, 8, 0]}, "q must be > 0"),
        ({"normal": [0, 1]}, "unknown distribution 'normal'"),
    ],
)
def test_malformed_entries_say_why(spec: object, message: str) -> None:
    with pytest.raises(SpaceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_search({"x": spec})


def test_points_are_completed_checked_and_shaped_per_searcher() -> None:
    dims = parse_search({"lr": {"loguniform": [1e-4, 1e-2]}, "aug": {"cutmix": {"grid": [0.0, 0.5]}}})
    points = normalize_points([{"lr": 1e-3}, {"aug": {"cutmix": 0.5}, "lr": 2e-3}], dims, BASE)
    assert points == [{"lr": 1e-3, "aug.cutmix": 0.0}, {"lr": 2e-3, "aug.cutmix": 0.5}]
    assert points_for_optuna(points)[0] == {"lr": 1e-3, "aug/cutmix": 0.0}
    assert points_for_variants(points)[1] == {"lr": 2e-3, "aug": {"cutmix": 0.5}}
    with pytest.raises(SpaceError, match="outside grid"):
        normalize_points([{"aug.cutmix": 0.3}], dims, BASE)
    with pytest.raises(SpaceError, match="lr: left out, and its base value 0.0003 is outside"):
        normalize_points(
            [{"aug.cutmix": 0.5}],
            parse_search({"lr": {"uniform": [1e-3, 1e-2]}, "aug.cutmix": {"grid": [0.5]}}),
            BASE,
        )


def test_contains_keeps_bools_and_numbers_apart() -> None:
    flags = Dimension.parse("edge", {"grid": [False, True]})
    assert flags.contains(True) and not flags.contains(1)
    ints = Dimension.parse("bs", {"randint": [1, 4]})
    assert ints.contains(3) and not ints.contains(4) and ints.upper() == 3


def test_param_space_keeps_the_config_and_puts_domains_at_the_searched_keys() -> None:
    from search.space import nested, select

    base = {"lr": 3e-4, "aug": {"cutmix": 0.0, "edge": False}}
    dims = parse_search({"lr": {"loguniform": [1e-4, 1e-3]}, "aug.cutmix": {"grid": [0.0, 0.5]}})
    space = build_param_space(base, dims)
    assert space["aug"]["cutmix"] == {"grid_search": [0.0, 0.5]} and space["aug"]["edge"] is False
    assert isinstance(space["lr"], Float) and base["lr"] == 3e-4  # base untouched
    assert select(base, "aug.cutmix") == 0.0 and select(base, "aug.nope", KeyError) is KeyError
    assert nested({"aug.cutmix": 0.5, "lr": 1}) == {"aug": {"cutmix": 0.5}, "lr": 1}
    with pytest.raises(SpaceError, match="search.aug.nope: not a key"):
        build_param_space(base, parse_search({"aug.nope": {"grid": [1, 2]}}))

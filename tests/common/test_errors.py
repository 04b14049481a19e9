"""Every exception class of the project survives copy, deepcopy and pickle (what Ray does to it)."""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import pkgutil
from collections.abc import Callable

import cloudpickle
import pytest

PACKAGES = ("common", "search", "trainables", "ensemble")

# Classes whose __init__ does not take just a message; any other class is built with one.
EXAMPLES: dict[str, Callable[[type], BaseException]] = {
    "BadDataError": lambda cls: cls([("train/a.png", "cannot identify image file"), ("b.png", "missing")], where="/d"),
    "DeterministicTrialError": lambda cls: cls("ValueError", "unknown timm backbone 'nope'"),
}


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


CLASSES = _exception_classes()


def test_the_known_classes_are_discovered() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"ConfigError", "SpaceError", "DataFormatError", "BadDataError", "ArtifactError"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e)), lambda e: cloudpickle.loads(cloudpickle.dumps(e))],
    ids=["copy", "deepcopy", "pickle", "cloudpickle"],
)
def test_exceptions_survive_copy_and_pickle(cls: type[BaseException], clone: Callable) -> None:
    make = EXAMPLES.get(cls.__name__, lambda c: c("what was wrong; what to do"))
    try:
        error = make(cls)
    except TypeError as err:
        pytest.fail(f"{cls.__name__} takes more than a message: add an example to EXAMPLES ({err})")
    error.extra = {"attribute": [1, 2]}  # attributes set after construction travel too
    again = clone(error)
    assert type(again) is cls
    assert str(again) == str(error) and again.args == error.args
    assert vars(again) == vars(error)


def test_bad_data_error_keeps_its_problems_and_names_the_fix() -> None:
    from trainables.data import BadDataError

    error = BadDataError([("a.png", "truncated")], where="set")
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == [("a.png", "truncated")] and again.where == "set"
    assert "trainable.skip_bad=true" in str(again) and "skip_bad=true for `python -m trainables.run`" in str(again)


def test_project_errors_are_deterministic() -> None:
    from common.errors import DeterministicError
    from ensemble.artifacts import ArtifactError
    from search.config import ConfigError
    from search.space import SpaceError
    from trainables.data import BadDataError, DataFormatError

    for cls in (ConfigError, SpaceError, DataFormatError, BadDataError, ArtifactError):
        assert issubclass(cls, DeterministicError) and issubclass(cls, ValueError)

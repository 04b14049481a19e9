"""Stages that run after the search, in the order ``stages:`` lists them (the hook for issue #5).

A stage is ``run_stage(cfg, outcome) -> None`` in a module named here; it gets the search's
config and :class:`search.runner.SearchOutcome` (leaderboard, experiment name, paths).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# name -> "module:function". The modules arrive with the OOF and ensemble stages.
STAGES: dict[str, str] = {
    "oof": "search.oof:run_stage",
    "ensemble": "ensemble.stage:run_stage",
}


def load_stage(name: str) -> Callable[[Any, Any], None]:
    """The function behind a stage name.

    Raises:
        ValueError: Unknown name, or its module is not built yet; the message lists the names.
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    module, _, func = STAGES[name].partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"stage {name!r} ({STAGES[name]}) is not available in this checkout: {err}") from err


def run_stages(
    names: list[str], cfg: Any, outcome: Any, results: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run each named stage in order; the search's HTML report is written first and after each stage.

    ``results`` (filled as the stages finish) maps a stage to what it returned.
    """
    from search.report import publish

    results = {} if results is None else results
    publish(outcome)
    for name in names:
        results[name] = load_stage(name)(cfg, outcome)
        publish(outcome)
    return results

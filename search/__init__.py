"""Ray Tune search over named spaces: ``python -m search.run space=<name> [key=value ...]``.

The public names: load a config (:func:`load_config`), run it (:func:`run_search`), read what it
produced (:class:`SearchOutcome`, :func:`build_leaderboard`).
"""

from __future__ import annotations

from search.config import ConfigError, list_spaces, load_config, spaces_dir
from search.leaderboard import build_leaderboard, print_leaderboard, trial_histories
from search.runner import SearchOutcome, run_search
from search.space import DISTRIBUTIONS, Dimension, SpaceError, build_param_space, parse_search
from search.tracking import MlflowTrialCallback

__all__ = [
    "DISTRIBUTIONS",
    "ConfigError",
    "Dimension",
    "MlflowTrialCallback",
    "SearchOutcome",
    "SpaceError",
    "build_leaderboard",
    "build_param_space",
    "list_spaces",
    "load_config",
    "parse_search",
    "print_leaderboard",
    "run_search",
    "spaces_dir",
    "trial_histories",
]

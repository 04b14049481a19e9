"""What a loaded config implies, computed once: the searched dimensions, the algorithm, the epochs.

Every module that needs the parsed ``search:`` section, the concrete search algorithm or the
scheduler's ``max_t`` asks :func:`search_plan` instead of re-deriving them. The plan is cached on
what it is computed from (the ``search`` section, ``tune.search_alg`` and ``trainable.epochs``),
so a change to the config after loading (``budget=`` sets the epochs) gives a fresh plan and
an unchanged config the same one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from omegaconf import DictConfig, OmegaConf

from search.space import Dimension, parse_search


@dataclass(frozen=True)
class SearchPlan:
    """The derived values of one config.

    Attributes:
        dimensions: The searched keys, ``{dotted path: Dimension}`` in file order (read-only).
        search_alg: The concrete algorithm: ``auto`` is ``grid`` when every searched key is a
            grid, else ``tpe``.
        max_epochs: The most epochs a trial can run: ``trainable.epochs``, or the top of its
            range if searched (the scheduler's ``max_t``).
    """

    dimensions: Mapping[str, Dimension]
    search_alg: str
    max_epochs: int

    @property
    def grid(self) -> bool:
        """Whether grid keys are enumerated (``tune.grid_search``) rather than sampled."""
        return self.search_alg == "grid"


def search_plan(cfg: DictConfig) -> SearchPlan:
    """The plan of a loaded config (cached on the keys it depends on).

    Args:
        cfg: A config from :func:`search.config.load_config` (or one read back from a run).

    Returns:
        Its :class:`SearchPlan`.
    """
    section = json.dumps(OmegaConf.to_container(cfg.search, resolve=True))
    return _plan(section, str(cfg.tune.search_alg), int(cfg.trainable.epochs))


@lru_cache(maxsize=64)
def _plan(section: str, search_alg: str, epochs: int) -> SearchPlan:
    dims = parse_search(json.loads(section))
    if search_alg == "auto":
        search_alg = "grid" if all(d.is_grid for d in dims.values()) else "tpe"
    top = int(dims["epochs"].upper()) if "epochs" in dims else epochs
    return SearchPlan(MappingProxyType(dims), search_alg, top)


def dimensions(cfg: DictConfig) -> dict[str, Dimension]:
    """The searched keys of a loaded config (a copy of its plan's, free to change)."""
    return dict(search_plan(cfg).dimensions)


def max_epochs(cfg: DictConfig) -> int:
    """The most epochs a trial can run: ``trainable.epochs``, or the top of its range if searched."""
    return search_plan(cfg).max_epochs

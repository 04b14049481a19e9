"""The config of a refit: the search's saved config, typed ``oof``/``ensemble`` sections, overrides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from common.io import runs_dir
from search.config import DEFAULTS_FILE, ConfigError, oof_checks, read_config, set_key, valid_keys
from search.records import CONFIG_FILE, list_experiments, search_dir
from search.schema import EnsembleSchema, OofSchema

# `top_k=5` on the command line means `oof.top_k=5`.
SHORTHANDS = (
    "mode",
    "select",
    "top_k",
    "max_per_backbone",
    "epochs",
    "tta_flip",
    "dtype",
    "keep_checkpoints",
)
# What a refit may change in the search's saved config: how and where it runs, never the models.
OVERRIDABLE = (
    "oof",
    "ensemble",
    "resources",
    "ray",
    "mlflow",
    "max_failures",
    "verbose",
    "trainable.device",
    "trainable.num_workers",
    "trainable.amp",
)
# The sections a refit reads typed from the saved config (the rest is the search's, as it ran).
SECTION_SCHEMAS = {"oof": OofSchema, "ensemble": EnsembleSchema}

__all__ = ["OVERRIDABLE", "SHORTHANDS", "load_oof_config"]


def load_oof_config(experiment: str | None, overrides: Sequence[tuple[str, Any]] = ()) -> DictConfig:
    """The search's saved config, with the ``oof``/``ensemble`` defaults filled in and the overrides applied.

    Args:
        experiment: A search under ``<runs>/search``; None or ``latest`` picks the most recent.
        overrides: ``(key, value)`` pairs; ``top_k`` etc. are short for ``oof.top_k``.

    Raises:
        ConfigError: No such search, or an override that would change the models themselves.
    """
    runs = runs_dir()
    known = list_experiments(runs)
    if experiment in (None, "", "latest"):
        if not known:
            raise ConfigError(f"no search under {runs / 'search'}: run python -m search.run first")
        experiment = known[0]
    if experiment not in known:
        raise ConfigError(
            f"experiment={experiment}: no such search under {runs / 'search'}; there are: {', '.join(known) or 'none'}"
        )
    cfg = read_config(search_dir(runs, experiment) / CONFIG_FILE)
    defaults = OmegaConf.load(DEFAULTS_FILE)
    for section, schema in SECTION_SCHEMAS.items():  # typed; filled in for searches saved before they existed
        cfg[section] = OmegaConf.merge(
            OmegaConf.structured(schema), defaults[section], cfg.get(section) or {}
        )
    keys = valid_keys(cfg)
    for key, value in overrides:
        key = f"oof.{key}" if key in SHORTHANDS else key
        if not any(key == k or key.startswith(k + ".") for k in OVERRIDABLE):
            raise ConfigError(
                f"{key}: a refit runs the search's configs; it may change only {', '.join(OVERRIDABLE)} "
                f"(and the shorthands {', '.join(SHORTHANDS)})"
            )
        if key not in keys:
            raise ConfigError(
                f"unknown key {key!r}; valid: {', '.join(k for k in keys if k.startswith(OVERRIDABLE))}"
            )
        set_key(cfg, key, value, "command line")
    for ok, message in oof_checks(cfg):
        if not ok:
            raise ConfigError(message)
    return cfg

"""The typed tree of a search's config: one structured-config dataclass per section.

The classes give every key its type and nothing else: the values come from
``search/defaults.yaml`` (the single place of the search's defaults, whose ``# comments``
``--help`` prints) and the ``trainable:`` section's from the trainable's ``default_config()``
(:mod:`trainables.schema` generates its schema from them). :func:`typed_base` merges the three
into one typed :class:`~omegaconf.DictConfig`, so a wrong type or an unknown key fails where it
is set; the value checks (ranges, choices) are :mod:`search.validate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from omegaconf import MISSING, DictConfig, OmegaConf

# OmegaConf reads typing's Optional/Union, not ``X | None``: hence the noqa on the fields below.
# A key that takes a word or a number (``grace_period: auto | 3``) is ``Any``: OmegaConf's Union
# refuses a wrong value with a type hint, where the value check says what to write instead.
Number = Union[int, float]  # noqa: UP007 - kept as given (1 stays 1, 0.5 stays 0.5)


@dataclass
class TuneSchema:
    """``tune:``: how trials are sampled and ranked."""

    search_alg: str = MISSING
    num_samples: int = MISSING
    max_concurrent: Optional[int] = MISSING  # noqa: UP045
    time_budget_s: Optional[Number] = MISSING  # noqa: UP045
    metric: str = MISSING
    mode: str = MISSING
    points_to_evaluate: list[Any] = MISSING
    seed: int = MISSING
    reuse_actors: bool = MISSING


@dataclass
class SchedulerSchema:
    """``scheduler:``: when a trial is stopped early."""

    name: str = MISSING
    grace_period: Any = MISSING  # auto or an int >= 1 (an either-or: search.validate's check names both)
    reduction_factor: Number = MISSING
    noise_margin: Number = MISSING


@dataclass
class ResourcesSchema:
    """``resources:``: per trial; fractions are fine."""

    cpu: Number = MISSING
    gpu: Number = MISSING


@dataclass
class RaySchema:
    """``ray:``: which cluster runs the trials."""

    address: Optional[str] = MISSING  # noqa: UP045
    storage: Optional[str] = MISSING  # noqa: UP045
    num_cpus: Optional[Number] = MISSING  # noqa: UP045
    num_gpus: Optional[Number] = MISSING  # noqa: UP045


@dataclass
class MlflowSchema:
    """``mlflow:``: where the search and its trials are logged."""

    enabled: bool = MISSING
    tracking_uri: Optional[str] = MISSING  # noqa: UP045
    experiment: str = MISSING


@dataclass
class CheckpointSchema:
    """``checkpoint:``: what a trial keeps."""

    num_to_keep: int = MISSING


@dataclass
class OofSchema:
    """``oof:``: the out-of-fold refit of the best trials."""

    mode: str = MISSING
    select: str = MISSING
    top_k: int = MISSING
    max_per_backbone: Optional[int] = MISSING  # noqa: UP045
    epochs: Any = MISSING  # best or an int >= 1 (an either-or: search.validate's check names both)
    tta_flip: bool = MISSING
    dtype: str = MISSING
    keep_checkpoints: bool = MISSING
    ship_results: Any = MISSING  # auto, true or false (checked in search.validate)
    time_budget_s: Optional[Number] = MISSING  # noqa: UP045 - set by budget=, like tune.time_budget_s
    model_s: dict[str, float] = MISSING  # set by budget=: one model's OOF seconds, per backbone
    model_full_s: dict[str, float] = MISSING  # the same for a model whose folds cannot read frozen-stage caches


@dataclass
class EnsembleSchema:
    """``ensemble:``: the ensemble stage over the OOF artifacts."""

    method: str = MISSING
    metric: str = MISSING
    trials: int = MISSING


@dataclass
class PseudoSchema:
    """The own keys of ``python -m search.pseudo`` (the rest go to the refit, as for ``search.oof``)."""

    experiment: Optional[str] = None  # noqa: UP045 - null: the latest search
    threshold: Optional[float] = None  # noqa: UP045 - null: 0.9, unless top_fraction is given
    top_fraction: Optional[float] = None  # noqa: UP045
    ensemble: Optional[str] = None  # noqa: UP045 - the ensemble whose labels to use; null: the latest
    name: Optional[str] = None  # noqa: UP045 - the refit's OOF experiment; null: <search>-pseudo
    honest: bool = True


@dataclass
class SearchSchema:
    """The whole config of ``python -m search.run`` (``trainable:`` is typed per trainable)."""

    space: str = MISSING
    description: str = MISSING
    data: str = MISSING
    experiment: Optional[str] = MISSING  # noqa: UP045
    budget: Optional[str] = MISSING  # noqa: UP045 - a duration with its unit: 90m, 2h
    leak_audit: bool = MISSING
    trainable: Any = MISSING
    search: dict[str, Any] = field(default_factory=dict)
    tune: TuneSchema = field(default_factory=TuneSchema)
    scheduler: SchedulerSchema = field(default_factory=SchedulerSchema)
    resources: ResourcesSchema = field(default_factory=ResourcesSchema)
    ray: RaySchema = field(default_factory=RaySchema)
    mlflow: MlflowSchema = field(default_factory=MlflowSchema)
    checkpoint: CheckpointSchema = field(default_factory=CheckpointSchema)
    max_failures: int = MISSING
    resume: Any = MISSING  # true, false or an experiment's name (checked in search.validate)
    stages: list[str] = MISSING
    oof: OofSchema = field(default_factory=OofSchema)
    ensemble: EnsembleSchema = field(default_factory=EnsembleSchema)
    verbose: int = MISSING


def typed_base(defaults: DictConfig, trainable: str, trainable_defaults: dict[str, Any]) -> DictConfig:
    """The typed config before any space or override: schema, then defaults file, then the trainable's.

    Args:
        defaults: ``search/defaults.yaml`` as loaded.
        trainable: The trainable's name (``trainable.name``).
        trainable_defaults: Its ``default_config()``; ``defaults.trainable``'s keys other than
            ``name`` are applied over them.

    Returns:
        A struct-mode config typed by :class:`SearchSchema`; no key is missing.
    """
    from dataclasses import make_dataclass

    from trainables.schema import trainable_schema

    schema = trainable_schema(trainable, trainable_defaults)
    named = make_dataclass(schema.__name__, [("name", str, field(default=trainable))], bases=(schema,))
    cfg = OmegaConf.structured(SearchSchema)
    rest = OmegaConf.masked_copy(defaults, [k for k in defaults if k != "trainable"])
    cfg = OmegaConf.merge(cfg, rest)
    cfg.trainable = OmegaConf.structured(named)
    own = {k: v for k, v in OmegaConf.to_container(defaults.trainable).items() if k != "name"}
    cfg.trainable = OmegaConf.merge(cfg.trainable, own)
    return cfg

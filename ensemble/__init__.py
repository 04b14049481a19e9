"""Ensembles over OOF artifacts: weight searches, stacking, honest estimates, submissions.

Reads artifacts only (numpy + json) and never imports torch, ray or timm. The artifact format
(:mod:`ensemble.artifacts`, with its discovery and compatibility checks) is loaded eagerly and
needs only numpy, so the OOF stage can import ``ensemble.artifacts`` cheaply; everything else (scikit-learn, scipy, Optuna) loads on first use.

Example:
    >>> from ensemble import ProbStack, create_method, find_artifacts, check_compatible
    >>> arts = check_compatible(find_artifacts("my_experiment"))
    >>> stack = ProbStack.from_artifacts(arts)
    >>> method = create_method("caruana").fit(stack, arts[0].targets)
    >>> labels = method.predict(ProbStack.from_artifacts(arts, split="test"))

CLI: ``python -m ensemble.optimize`` (``--method auto``: every fast method scored by nested CV,
the simplest within one standard error of the best submitted; see :mod:`ensemble._select`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ensemble._compat import check_compatible
from ensemble._discover import find_artifacts, latest_experiment
from ensemble.artifacts import (
    Artifact,
    ArtifactError,
    ArtifactWarning,
    IncompatibleArtifactsError,
    artifact_dir,
    hash_folds,
    read_artifact,
    write_artifact,
)
from ensemble.submission import write_submission

if TYPE_CHECKING:
    from ensemble._base import EnsembleMethod, WeightedEnsemble, create_method, list_methods, register_method
    from ensemble._evaluate import MethodResult, evaluate_method, nested_cv, pick_winner
    from ensemble._metrics import METRICS, Objective, score_proba
    from ensemble._search import BayesianEnsemble, GeneticEnsemble
    from ensemble._select import AUTO_METHODS, SIMPLICITY, Choice, choose_method
    from ensemble._stack import ProbStack
    from ensemble._stacking import StackingEnsemble
    from ensemble._weights import (
        BestSingleModel,
        CaruanaEnsemble,
        LogLossEnsemble,
        MeanEnsemble,
        VoteEnsemble,
    )

_LAZY = {
    "ProbStack": "ensemble._stack",
    "METRICS": "ensemble._metrics",
    "Objective": "ensemble._metrics",
    "score_proba": "ensemble._metrics",
    "EnsembleMethod": "ensemble._base",
    "WeightedEnsemble": "ensemble._base",
    "create_method": "ensemble._base",
    "list_methods": "ensemble._base",
    "register_method": "ensemble._base",
    "BestSingleModel": "ensemble._weights",
    "MeanEnsemble": "ensemble._weights",
    "VoteEnsemble": "ensemble._weights",
    "CaruanaEnsemble": "ensemble._weights",
    "LogLossEnsemble": "ensemble._weights",
    "BayesianEnsemble": "ensemble._search",
    "GeneticEnsemble": "ensemble._search",
    "StackingEnsemble": "ensemble._stacking",
    "MethodResult": "ensemble._evaluate",
    "evaluate_method": "ensemble._evaluate",
    "nested_cv": "ensemble._evaluate",
    "pick_winner": "ensemble._evaluate",
    "AUTO_METHODS": "ensemble._select",
    "SIMPLICITY": "ensemble._select",
    "Choice": "ensemble._select",
    "choose_method": "ensemble._select",
}

__all__ = [
    "AUTO_METHODS",
    "METRICS",
    "SIMPLICITY",
    "Artifact",
    "ArtifactError",
    "ArtifactWarning",
    "BayesianEnsemble",
    "BestSingleModel",
    "CaruanaEnsemble",
    "Choice",
    "EnsembleMethod",
    "GeneticEnsemble",
    "IncompatibleArtifactsError",
    "LogLossEnsemble",
    "MeanEnsemble",
    "MethodResult",
    "Objective",
    "ProbStack",
    "StackingEnsemble",
    "VoteEnsemble",
    "WeightedEnsemble",
    "artifact_dir",
    "check_compatible",
    "choose_method",
    "create_method",
    "evaluate_method",
    "find_artifacts",
    "hash_folds",
    "latest_experiment",
    "list_methods",
    "nested_cv",
    "pick_winner",
    "read_artifact",
    "register_method",
    "score_proba",
    "write_artifact",
    "write_submission",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'ensemble' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""Which method a run submits: the simplest one within one standard error of the best nested score.

Nested-CV scores are noisy: with 5 folds of ~350 rows each, methods a fraction of a point apart
swap places from one draw of the data to the next, and the method with the top score is often a
flexible one that happened to fit this draw's noise. The one-standard-error rule (Breiman et al.,
*Classification and Regression Trees*, 1984; Hastie et al., *Elements of Statistical Learning*
7.10) takes the best nested mean, its standard error over the folds, and submits the simplest
method whose nested mean is no more than one standard error worse: a complex method must beat
the simple ones by more than the noise to be chosen.

Simplicity, from simplest (what each method fits from the OOF rows):

====  ==========  ===============================================================================
rank  method      why here
====  ==========  ===============================================================================
0     mean        fits nothing: the uniform soft vote, the least variance of any blend
1     vote        fits nothing either, but throws away the confidences (a cruder mean); after mean
2     best        fits one discrete choice among M models, and is the most exposed to the
                  winner's curse of that choice; before any fitted continuous weights
3     logloss     M weights, a convex problem with one optimum: stable from fold to fold
4     caruana     M integer counts by greedy search on the stepped metric
5     bayesian    M free weights searched on the stepped metric (hundreds of evaluations)
5     genetic     the same search space and budget as bayesian, another optimiser: equal rank
6     stacking    a meta-learner with its own parameters on top of the models' probabilities
====  ==========  ===============================================================================

Methods of equal rank are ordered by nested score; a method not listed here (registered by a
user) ranks after stacking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ensemble._evaluate import MethodResult, pick_winner
from ensemble._metrics import METRICS

__all__ = ["AUTO_METHODS", "SIMPLICITY", "Choice", "choose_method"]

SIMPLICITY: dict[str, int] = {
    "mean": 0,
    "vote": 1,
    "best": 2,
    "logloss": 3,
    "caruana": 4,
    "bayesian": 5,
    "genetic": 5,
    "stacking": 6,
}
#: What ``--method auto`` fits and scores: every built-in method. Each one's fit plus nested
#: estimate stays under half a minute at sketchy125's shape on 2 busy cores, stacking included
#: since its class-wise features (about 1 s; bench/bench_ensemble_auto.py).
AUTO_METHODS: list[str] = list(SIMPLICITY)


@dataclass
class Choice:
    """The outcome of the one-standard-error rule.

    Attributes:
        chosen: The method submitted.
        best: The method with the best nested mean.
        metric: Metric of the scores.
        se: Standard error of ``best``'s nested mean (fold std with ddof=1 over sqrt(folds)).
        threshold: The worst nested mean still within one SE of the best.
        eligible: Names of the methods within one SE, simplest first.
        requested: Set when the user asked for one method, which is then submitted regardless.
    """

    chosen: MethodResult
    best: MethodResult
    metric: str
    se: float
    threshold: float
    eligible: list[str] = field(default_factory=list)
    requested: str | None = None

    @property
    def rule(self) -> str:
        order = " < ".join(
            " = ".join(n for n, r in SIMPLICITY.items() if r == rank)
            for rank in sorted(set(SIMPLICITY.values()))
        )
        return f"the simplest method within one standard error of the best nested score (simplicity: {order})"

    def reason(self) -> str:
        """One paragraph in plain words: the scores, the SE, the rule and the pick."""
        c, b = self.chosen, self.best
        worse = "below" if METRICS[self.metric] else "above"
        folds = len(b.fold_scores)
        text = (
            f"Best nested {self.metric}: **{b.name}** {_f(b.nested_mean)}, standard error {_f(self.se)} "
            f"(sample std of its {folds} fold scores {_f(float(np.std(b.fold_scores, ddof=1)) if folds > 1 else 0.0)} / √{folds}). "
            f"Within one SE (not {worse} {_f(self.threshold)}): {', '.join(self.eligible)}. "
        )
        if self.requested is not None:
            auto = self.eligible[0]
            return text + (
                f"The submission uses **{self.requested}** as requested"
                + (
                    f" (the rule would pick **{auto}**)."
                    if auto != self.requested
                    else ", which the rule picks too."
                )
            )
        if len(self.eligible) == 1:
            return text + f"Rule: {self.rule}. Only **{c.name}** is within one SE: submitted."
        if c.name == b.name:
            return (
                text
                + f"Rule: {self.rule}. **{c.name}** is both the best and the simplest of them: submitted."
            )
        return text + (
            f"Rule: {self.rule}. Submitted: **{c.name}** (nested {_f(c.nested_mean)}), simpler than "
            f"{b.name} and no worse beyond the noise of the folds."
        )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 4) + 0.0:.4f}"


def _rank(name: str) -> int:
    return SIMPLICITY.get(name, max(SIMPLICITY.values()) + 1)


def choose_method(results: list[MethodResult], metric: str, requested: str | None = None) -> Choice:
    """Apply the one-standard-error rule (module docstring) to the evaluated methods.

    Args:
        results: Every method evaluated, with nested scores (in-sample scores are used, with a
            zero SE, only where nested CV was skipped).
        metric: Metric of the scores.
        requested: A single method the user asked for: it is submitted, and the choice records
            what the rule would have picked.

    Returns:
        The choice, with what it needs to explain itself.
    """
    best = pick_winner(results, metric)
    sign = 1.0 if METRICS[metric] else -1.0
    folds = len(best.fold_scores)
    se = float(np.std(best.fold_scores, ddof=1) / np.sqrt(folds)) if folds > 1 else 0.0
    top = best.nested_mean if best.nested_mean is not None else best.in_sample
    threshold = top - sign * se

    def score(r: MethodResult) -> float:
        return sign * (r.nested_mean if r.nested_mean is not None else r.in_sample)

    # A tiny tolerance so that a method exactly one SE away (or the best itself, SE 0) is within.
    within = [r for r in results if score(r) >= sign * threshold - 1e-12]
    within.sort(key=lambda r: (_rank(r.name), -score(r)))
    chosen = within[0] if requested is None else next(r for r in results if r.name == requested)
    return Choice(chosen, best, metric, se, threshold, [r.name for r in within], requested)

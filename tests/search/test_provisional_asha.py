"""ASHA's promotions made on fewer than reduction_factor scores are taken back when the rung fills up."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.provisional_asha import ProvisionalASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _scheduler(kind: type = ProvisionalASHA) -> ASHAScheduler:
    return kind(time_attr="training_iteration", metric="score", mode="max", max_t=6, grace_period=1, reduction_factor=3)


def _decide(scheduler: ASHAScheduler, trial: SimpleNamespace, iteration: int, score: float) -> str:
    return scheduler.on_trial_result(None, trial, {"training_iteration": iteration, "score": score})


def test_a_first_arrival_promoted_on_no_evidence_is_stopped_once_a_better_score_arrives() -> None:
    for kind, expected in ((ASHAScheduler, CONTINUE), (ProvisionalASHA, STOP)):
        scheduler = _scheduler(kind)
        a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
        for trial in (a, b):
            scheduler.on_trial_add(None, trial)
        assert _decide(scheduler, a, 1, 0.05) == CONTINUE  # the rung is empty: no cutoff yet
        assert _decide(scheduler, b, 1, 0.90) == CONTINUE
        # Ray's ASHA never looks back; a is below what b set, so its promotion is overturned.
        assert _decide(scheduler, a, 2, 0.10) == expected, kind.__name__


def test_a_promotion_stands_once_the_rung_holds_reduction_factor_other_scores() -> None:
    scheduler = _scheduler()
    trials = {name: SimpleNamespace(trial_id=name) for name in "abcdefg"}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    assert _decide(scheduler, trials["a"], 1, 0.05) == CONTINUE
    assert _decide(scheduler, trials["b"], 1, 0.90) == CONTINUE  # provisional: one other score
    assert _decide(scheduler, trials["c"], 1, 0.95) == CONTINUE
    assert _decide(scheduler, trials["d"], 1, 0.50) == STOP
    # b now has 3 other scores (0.05, 0.95, 0.50) and is in their top third: confirmed.
    for name, score in (("e", 0.99), ("f", 0.98), ("g", 0.97)):
        _decide(scheduler, trials[name], 1, score)
    assert _decide(scheduler, trials["b"], 2, 0.91) == CONTINUE  # later, better arrivals do not undo it
    assert _decide(scheduler, trials["a"], 2, 0.06) == STOP  # a never had the evidence


# Per trial: its score, and the seconds before each report (``a`` reports first, then slowly).
_SCRIPT = {"a": (0.1, [0.0, 10.0]), "b": (0.9, [1.0]), "c": (0.5, [1.0])}


def _scripted(config: dict) -> None:
    score, delays = _SCRIPT[config["name"]]
    for iteration in range(4):
        time.sleep(delays[min(iteration, len(delays) - 1)])
        tune.report({"score": score})


def test_in_a_real_tune_run_the_first_arrival_stops_at_its_next_report(ray_local: None, tmp_path: Path) -> None:
    """Under Ray's ASHA ``a`` would run 3 of 4 iterations (first at rung 1, stopped at rung 3)."""
    tuner = tune.Tuner(
        tune.with_resources(_scripted, {"cpu": 1}),  # 2 at once on the 2-CPU test cluster
        param_space={"name": tune.grid_search(list(_SCRIPT))},
        tune_config=tune.TuneConfig(
            scheduler=ProvisionalASHA(
                time_attr="training_iteration", metric="score", mode="max", max_t=4, grace_period=1, reduction_factor=3
            ),
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="provisional", verbose=0),
    )
    iterations = {r.config["name"]: r.metrics["training_iteration"] for r in tuner.fit()}
    assert iterations == {"a": 2, "b": 4, "c": 1}


def test_an_accuracy_within_its_noise_of_the_cutoff_goes_on() -> None:
    """The compete run's case: 0.247 against 0.267 on 347 validation rows is one standard error
    (2.4 points) apart, not a verdict; 0.15 against 0.267 is. Without n_val, or for a metric that
    is not an accuracy, the rule is Ray's."""

    def first_rung(margin: float, score: float, metric: str = "val_acc", n_val: int | None = 347) -> str:
        scheduler = ProvisionalASHA(time_attr="training_iteration", metric=metric, mode="max", max_t=6,
                                    grace_period=1, reduction_factor=4, noise_margin=margin)  # fmt: skip
        a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
        for trial in (a, b):
            scheduler.on_trial_add(None, trial)
        rows = {"n_val": n_val} if n_val else {}
        scheduler.on_trial_result(None, a, {"training_iteration": 1, metric: 0.267, **rows})
        return scheduler.on_trial_result(None, b, {"training_iteration": 1, metric: score, **rows})

    assert first_rung(0.0, 0.247) == STOP  # Ray's rule: below the cutoff by any amount
    assert first_rung(1.0, 0.247) == CONTINUE
    assert first_rung(1.0, 0.15) == STOP
    assert first_rung(1.0, 0.247, n_val=None) == STOP
    assert first_rung(1.0, 0.247, metric="score") == STOP

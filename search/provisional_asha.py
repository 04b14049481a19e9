"""Ray's ASHA, with the promotions it makes on too little evidence taken back when evidence arrives.

ASHA promotes a trial at a rung when its score is in the top ``1 / reduction_factor`` of the
scores that rung holds *so far*. The first trial to reach a rung meets no cutoff at all, and the
second only has to beat the first, so on a small search the trials that happen to arrive first
run to the end whatever they score. On sketchy125 (12 configs x 6 epochs, 2 slots) the trial
that ended epoch 1 first, 9th of 12 there at 0.046 accuracy, ran all 6 epochs.

Here such a promotion, made while the rung held fewer than ``reduction_factor`` other scores, is
provisional. Each new score recorded at that rung revisits it, against the cutoff the trial would
meet if it arrived now; once it is below, the trial stops at its next report (Tune's own
``STOP``, so every hook runs as for any stopped trial). Once the rung holds
``reduction_factor`` other scores the promotion stands, as in ASHA. Synchronous successive
halving would have decided the same with the whole rung in hand, but made every slot wait for
the rung's slowest trial.

A score is also a measurement on a finite validation set. With ``noise_margin`` z, an accuracy
(a metric named ``*acc``, maximised, whose results carry ``n_val``, the rows it rests on) stops a
trial only when it is more than z standard errors, ``sqrt(c (1 - c) / n_val)`` at the cutoff c,
below the cutoff. On sketchy125's 347 validation rows one error is 2.4 points at 0.25: in the
``compete`` space the reference recipe scored 0.247 at epoch 1 against another config's 0.267,
was stopped, and had reached 0.411 at epoch 2 against that config's 0.308. Replayed over 200
arrival orders of 12 curves (``bench_search.py``), z = 1 spends about 4 points more of FIFO's
epochs than z = 0.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

__all__ = ["ProvisionalASHA"]


class ProvisionalASHA(AsyncHyperBandScheduler):
    """``ASHAScheduler`` whose promotions on fewer than ``reduction_factor`` scores are provisional.

    Takes the same arguments as Ray's ``ASHAScheduler``, and ``noise_margin`` (standard errors of an
    accuracy a trial may fall below a rung's cutoff and go on; 0: Ray's rule).
    """

    def __init__(self, *, noise_margin: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.noise_margin = float(noise_margin)
        self._n_val: int | None = None  # validation rows behind each score, from the results
        for bracket in self._brackets:
            bracket.cutoff = self._margin(bracket.cutoff)
        # trial id -> milestones it passed with fewer than reduction_factor other scores there
        self._provisional: dict[str, set[float]] = {}
        self._overturned: set[str] = set()  # to stop at their next report

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        tid = trial.trial_id
        if tid in self._overturned and self._time_attr in result and self._metric in result:
            self._forget(tid)
            self._num_stopped += 1
            return TrialScheduler.STOP
        if result.get("n_val"):
            self._n_val = min(int(result["n_val"]), self._n_val or int(result["n_val"]))
        bracket = self._trial_info.get(tid)
        before = {milestone: len(recorded) for milestone, recorded in bracket._rungs} if bracket else {}
        action = super().on_trial_result(tune_controller, trial, result)
        if bracket is None:
            return action
        for milestone, recorded in bracket._rungs:
            if len(recorded) == before[milestone]:
                continue  # nothing recorded here by this result
            if action == TrialScheduler.CONTINUE and before[milestone] < self._reduction_factor:
                self._provisional.setdefault(tid, set()).add(milestone)
            self._revisit(bracket, milestone, recorded)
        if action == TrialScheduler.STOP:
            self._forget(tid)
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._forget(trial.trial_id)
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial.trial_id)
        super().on_trial_remove(tune_controller, trial)

    def _revisit(self, bracket: Any, milestone: float, recorded: dict[str, float]) -> None:
        """Overturn or confirm the provisional promotions at ``milestone`` after a new score there."""
        for tid, milestones in list(self._provisional.items()):
            if milestone not in milestones or tid not in recorded:
                continue
            others = {k: v for k, v in recorded.items() if k != tid}
            cutoff = bracket.cutoff(others)
            if cutoff is not None and recorded[tid] < cutoff:
                self._overturned.add(tid)
            elif len(others) >= self._reduction_factor:
                milestones.discard(milestone)  # as much evidence as ASHA ever asks for: it stands

    def _margin(self, cutoff: Any) -> Any:
        """A bracket's cutoff, lowered by ``noise_margin`` standard errors of an accuracy there."""

        def lowered(recorded: dict[str, float]) -> float | None:
            value = cutoff(recorded)
            if value is None or not self._weighs_noise() or not 0.0 <= value <= 1.0:
                return value
            return float(value - self.noise_margin * math.sqrt(value * (1.0 - value) / self._n_val))

        return lowered

    def _weighs_noise(self) -> bool:
        """Whether scores are accuracies on a known number of rows, and a margin is asked for."""
        metric = str(self._metric or "")
        return bool(self.noise_margin and self._n_val and self._mode == "max" and metric.endswith("acc"))

    def _forget(self, tid: str) -> None:
        self._provisional.pop(tid, None)
        self._overturned.discard(tid)

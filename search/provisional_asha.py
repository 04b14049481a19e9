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
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

__all__ = ["ProvisionalASHA"]


class ProvisionalASHA(AsyncHyperBandScheduler):
    """``ASHAScheduler`` whose promotions on fewer than ``reduction_factor`` scores are provisional.

    Takes the same arguments as Ray's ``ASHAScheduler``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # trial id -> milestones it passed with fewer than reduction_factor other scores there
        self._provisional: dict[str, set[float]] = {}
        self._overturned: set[str] = set()  # to stop at their next report

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        tid = trial.trial_id
        if tid in self._overturned and self._time_attr in result and self._metric in result:
            self._forget(tid)
            self._num_stopped += 1
            return TrialScheduler.STOP
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

    def _forget(self, tid: str) -> None:
        self._provisional.pop(tid, None)
        self._overturned.discard(tid)

"""Defaults shared by ``python -m ensemble.optimize``, the estimators and the search's ensemble stage.

Defined once here so the command line, :class:`~ensemble.BayesianEnsemble` and the ``ensemble``
stage of ``search.run`` (whose ``search/defaults.yaml`` repeats these values, checked by
``tests/ensemble/test_select.py``) cannot drift apart. Imports nothing, so reading it is free.
"""

from __future__ import annotations

#: What a run fits and how it picks: every fast method, scored by nested CV, the simplest within
#: one standard error of the best submitted (:mod:`ensemble._select`).
DEFAULT_METHOD = "auto"

#: Optuna trials of the Bayesian weight search. 200: on crafted OOF of sketchy125's shape
#: (6 models x 1,735 rows x 125 classes, bench/bench_ensemble_auto.py --trials 100,200,500) the
#: nested accuracy was 0.4438 / 0.4455 / 0.4444 at 100 / 200 / 500 trials, all within a tenth of
#: one standard error (0.010) of each other, and 500 trials took 5x the time of 200: past a few
#: hundred trials the search only fits the OOF rows' noise in its M weights.
DEFAULT_TRIALS = 200

"""Defaults shared by ``python -m ensemble.optimize``, the estimators and the search's ensemble stage.

Defined once here so the command line, :class:`~ensemble.BayesianEnsemble` and the ``ensemble``
stage of ``search.run`` (whose ``search/defaults.yaml`` repeats these values, checked by
``tests/ensemble/test_select.py``) cannot drift apart. Imports nothing, so reading it is free.
"""

from __future__ import annotations

#: What a run fits and how it picks: every fast method, scored by nested CV, the simplest within
#: one standard error of the best submitted (:mod:`ensemble._select`).
DEFAULT_METHOD = "auto"

#: Optuna trials of the Bayesian weight search. 200: at 6 models x 1,735 rows x 125 classes
#: (sketchy125's shape) the nested score at 200 trials equals 500's within a tenth of the
#: fold-to-fold standard error, at 40% of the time (bench/bench_ensemble.py --auto); the
#: searched space is only M weights, so a few hundred TPE trials cover it.
DEFAULT_TRIALS = 200

"""The leak audit: validation rows closer to training than to the test set mean CV flatters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainables.data import folds_for, load_dataset
from trainables.leak_audit import LEAK_SHARE, audit_features, nearest_similarity, run_leak_audit


def _features(seed: int = 0, leak: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """400 training rows and 300 test rows drawn alike; with ``leak``, rows 100-199 re-draw rows 0-99."""
    rng = np.random.default_rng(seed)
    train, test = rng.normal(size=(400, 32)), rng.normal(size=(300, 32))
    if leak:
        train[100:200] = train[:100] + 0.5 * rng.normal(size=(100, 32))
    return train, test


VAL, TRAIN = np.arange(100), np.arange(100, 400)


def test_near_copies_in_training_are_a_leak() -> None:
    audit = audit_features(*_features(leak=True), TRAIN, VAL)
    assert audit.verdict == "leak" and audit.closer_share is not None and audit.closer_share > 0.9
    assert audit.val.median > audit.test.p90  # type: ignore[union-attr]
    metrics = audit.as_metrics()
    assert metrics["leak_audit_leak"] == 1.0 and metrics["leak_audit_closer_share"] == audit.closer_share
    assert "LEAK" in audit.lines()[0] and any("group_pattern" in line for line in audit.lines())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_drawn_like_the_test_rows_pass(seed: int) -> None:
    audit = audit_features(*_features(seed), TRAIN, VAL)
    assert audit.verdict == "ok", audit.lines()
    assert audit.closer_share is not None and abs(audit.closer_share - 0.5) < LEAK_SHARE - 0.5
    assert audit.as_metrics()["leak_audit_leak"] == 0.0


def test_without_a_test_set_the_audit_cannot_judge() -> None:
    train, _ = _features(leak=True)
    audit = audit_features(train, None, TRAIN, VAL)
    assert audit.verdict == "unknown" and audit.test is None and "no test set" in audit.advice
    assert "leak_audit_leak" not in audit.as_metrics() and audit.as_metrics()["leak_audit_val_sim_median"] > 0
    few = audit_features(*_features(), TRAIN, VAL[:5])
    assert few.verdict == "unknown" and "too few" in few.advice


def test_nearest_similarity_sees_mirrored_views() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 16)), rng.normal(size=(3, 16))
    views = np.stack([b, -b], axis=1)  # (3, 2, 16): the second view is the one a row matches
    assert np.allclose(nearest_similarity(-b[:2], views), 1.0)
    assert nearest_similarity(a, b).shape == (2,) and (nearest_similarity(a, b) < 1).all()


@pytest.mark.slow
def test_sketchy_folds_without_groups_leak_and_auto_folds_do_not(sketchy125: Path) -> None:
    ds = load_dataset(sketchy125)
    leaky = run_leak_audit(ds, folds_for(ds, k=5, seed=0, group_pattern="none"))
    assert leaky.verdict == "leak", leaky.lines()
    honest = run_leak_audit(ds, folds_for(ds, k=5, seed=0))  # auto: the photo groups
    assert honest.verdict == "ok", honest.lines()
    assert honest.seconds < leaky.seconds or honest.seconds < 5  # the second reads cached features

"""``budget=``: durations, and a plan that fits the time on the slots given."""

from __future__ import annotations

import pytest

from search.budget import apply_plan, parse_budget, plan_budget
from search.config import ConfigError, load_config


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("1.5h", 5400), ("45min", 2700), ("1800s", 1800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["90", "ninety minutes", "10s"])
def test_bad_durations_say_what_to_write(text: str) -> None:
    with pytest.raises(ConfigError, match="budget="):
        parse_budget(text)


def test_more_time_buys_more_and_the_plan_fits() -> None:
    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "trainable.batch_size=8"]
    plans = []
    for budget in ("5m", "30m", "4h"):
        cfg = load_config([*base, f"budget={budget}"])
        plans.append(plan_budget(cfg, n_train=735, n_test=240, slots=2))
    small, medium, large = plans
    assert medium.fits and large.fits
    for plan in (medium, large):
        assert plan.search_s + plan.oof_s <= plan.budget_s
    assert (large.image_size, large.epochs, large.trials) >= (medium.image_size, medium.epochs, medium.trials)
    assert large.trials > medium.trials or large.image_size > medium.image_size
    assert not small.fits or small.search_s + small.oof_s <= small.budget_s
    cfg = load_config([*base, "budget=30m"])
    apply_plan(cfg, medium)
    assert cfg.tune.num_samples == medium.trials and cfg.trainable.epochs == medium.epochs
    assert cfg.tune.time_budget_s == round(medium.search_s) and cfg.oof.top_k == medium.top_k
    assert any("refit on every fold" in line for line in medium.lines())


def test_promotion_buys_more_search_than_a_refit_of_every_fold() -> None:
    """Promoted models reuse their search trial as fold 0, so the plan charges K-1 folds each."""
    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "budget=30m"]
    refit = plan_budget(load_config([*base, "oof.mode=refit"]), n_train=735, n_test=240, slots=2)
    promote = plan_budget(load_config([*base, "oof.mode=promote"]), n_train=735, n_test=240, slots=2)
    assert (refit.image_size, refit.epochs, refit.top_k) == (promote.image_size, promote.epochs, promote.top_k)
    assert promote.oof_s == pytest.approx(refit.oof_s * 4 / 5)
    assert promote.trials >= refit.trials
    assert any("promoted to every other fold" in line for line in promote.lines())

"""``budget=``: durations, and a plan that fits the time on the slots given."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from search.budget import BudgetPlan, apply_plan, fold_epoch_rows, parse_budget, plan_budget
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
    rounds = math.ceil(promote.top_k * 4 / 2), math.ceil(refit.top_k * 5 / 2)  # fold fits in rounds of 2 slots
    fits_s = refit.oof_s * rounds[0] / rounds[1]
    # Besides its K-1 fold fits, a promoted model's fold 0 predicts from its search checkpoint.
    assert fits_s < promote.oof_s < fits_s + 0.5 * refit.oof_s / rounds[1]
    assert promote.trials >= refit.trials
    assert any("promoted to every other fold" in line for line in promote.lines())


def test_the_search_lasts_at_least_one_whole_trial() -> None:
    """The trial that survives every rung runs all its epochs in one slot; a cap below that would
    cut the best model before its schedule ends (and promotion would then finish it, unplanned)."""
    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "oof.mode=promote"]
    plans = [
        plan_budget(load_config([*base, f"budget={budget}"]), n_train=735, n_test=240, slots=2)
        for budget in ("20m", "45m", "2h")
    ]
    fitting = [plan for plan in plans if plan.fits]
    assert fitting, "no budget here fits a plan: the checks below would check nothing"
    for plan in fitting:
        assert plan.search_s >= plan.epochs * plan.epoch_s
        assert plan.search_s + plan.oof_s <= plan.budget_s
        assert f"an epoch about {plan.epoch_s:.0f} s" in plan.lines()[1]


def test_an_epoch_is_priced_on_the_rows_it_trains_balancing_copies_included() -> None:
    """``aug.balance`` fills short classes: the planner counts the rows a trial really trains."""
    from trainables.data import folds_for, load_dataset

    base = ["data=synthetic", "trainable.k=3", "trainable.pretrained=false", "trainable.backbone=test_efficientnet"]
    balanced = fold_epoch_rows(load_config([*base, "trainable.aug.balance=true"]))
    raw = fold_epoch_rows(load_config([*base, "trainable.aug.balance=false"]))
    folds = folds_for(load_dataset("synthetic"), k=3, seed=0)
    train = folds[folds["fold"] != 0]
    counts = train["target"].value_counts()
    assert raw == len(train)
    assert balanced == counts.max() * len(counts) and balanced > raw
    plain = load_config([*base, "budget=30m"])
    cheap = plan_budget(plain, n_train=735, n_test=240, slots=2, epoch_rows=raw)
    dear = plan_budget(plain, n_train=735, n_test=240, slots=2, epoch_rows=2 * raw)
    assert dear.epoch_s > 1.5 * cheap.epoch_s  # validation rows are priced the same in both


def test_frozen_stages_have_their_own_speed_and_sizes_above_the_images_own_are_planned() -> None:
    """Freezing changes what a step costs, so it is probed apart; a long budget may upsample."""
    from common.io import runs_dir

    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "trainable.image_size=192"]
    cfg = load_config([*base, "trainable.freeze_stages=1", "budget=4h"])
    frozen = plan_budget(cfg, n_train=735, n_test=240, slots=2)
    assert frozen.fits and frozen.image_size == 192
    plan_budget(load_config([*base, "budget=4h"]), n_train=735, n_test=240, slots=2)
    probed = [key.split("|") for key in json.loads((runs_dir() / "cache" / "speed.json").read_text())]
    model = ["test_efficientnet", "128", str(cfg.trainable.batch_size), "1"]
    assert [*model, "frozen1", platform.machine()] in [key[:6] for key in probed]
    assert [*model, platform.machine()] in [key[:5] for key in probed]
    # Predictions are probed apart too (a forward pass at the evaluation batch, frozen or not).
    batch = 2 * int(cfg.trainable.batch_size)
    assert ["forward", "test_efficientnet", "128", str(batch), "1", platform.machine()] in [key[:6] for key in probed]


def test_the_oof_is_priced_at_the_fastest_backbone_and_the_plan_tells_promotion_each_ones_cost() -> None:
    """A slower backbone is promoted only where its folds fit (search.oof_select.OofTime)."""
    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "oof.mode=promote", "budget=2h"]
    cfg = load_config([*base, "search.backbone={choice: [test_efficientnet, test_convnext]}"])
    plan = plan_budget(cfg, n_train=735, n_test=240, slots=2)
    assert plan.fits and set(plan.model_s) == {"test_efficientnet", "test_convnext"}
    fastest = min(plan.model_s, key=plan.model_s.__getitem__)
    assert plan.oof_backbone == fastest
    # top_k models of the fastest backbone fill the OOF's time (4 folds each, queued on 2 slots);
    # the OOF can take longer than its models' shares where a slot runs one job more
    assert plan.top_k * plan.model_s[fastest] <= plan.oof_s + 1e-6
    assert any(f"priced at {fastest}, the fastest to refit" in line for line in plan.lines())
    apply_plan(cfg, plan)
    assert cfg.oof.time_budget_s == round(plan.oof_s)
    assert dict(cfg.oof.model_s) == {b: round(s) for b, s in plan.model_s.items()}


def test_a_fold_fit_is_priced_with_one_validation_not_one_per_epoch() -> None:
    """Fold fits validate their last epoch only (search.oof_fold.FoldSession)."""
    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "oof.mode=promote"]
    plans = {
        flip: plan_budget(load_config([*base, "budget=2h", f"trainable.tta_flip={flip}"]), 735, 240, 2)
        for flip in ("false", "true")
    }
    single, double = plans["false"], plans["true"]
    assert (single.epochs, single.image_size, single.top_k) == (double.epochs, double.image_size, double.top_k)
    # a second view at validation costs the search every epoch, the OOF only once per fold
    search_extra = double.epoch_s - single.epoch_s
    assert search_extra > 0
    assert double.model_s["test_efficientnet"] - single.model_s["test_efficientnet"] == pytest.approx(
        4 * search_extra / 2  # 4 folds, one validation each, on 2 slots
    )


def test_a_probe_is_priced_above_its_bare_steps_and_a_measured_trial_speed_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A probe times optimizer steps alone; a trial also augments, loads and shares the cores.

    speed.json keeps the bare probe, the plan reads it times the factor, and what trials measured
    on the machine (``observed|``) is taken as it is.
    """
    from search import budget

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(budget, "_time_steps", lambda *args: 0.010)
    monkeypatch.setattr(budget, "_time_forward", lambda *args: 0.004)
    assert budget.measure_speed("lite", 128, 32, 1, 3) == pytest.approx(0.010 * budget.TRAIN_FACTOR)
    assert budget.measure_forward("lite", 128, 64, 1) == pytest.approx(0.004 * budget.PREDICT_FACTOR)
    stored = json.loads((tmp_path / "cache" / "speed.json").read_text())
    assert sorted(stored.values()) == [0.004, 0.010]
    key = budget._speed_key("lite", 128, 32, 1, 3)
    (tmp_path / "cache" / "speed.json").write_text(json.dumps({**stored, f"observed|{key}": 0.015}))
    assert budget.measure_speed("lite", 128, 32, 1, 3) == 0.015


def test_a_plan_that_fits_keeps_its_reserve_whatever_the_number_of_trials() -> None:
    """The search's cap is its trials' slot-seconds (ASHA runs them as slots free up), not whole
    rounds of the slots: an odd number of trials on 2 slots once capped the search half a round
    past what the plan had left it, and a 21-minute flow ended 2% past its budget."""
    from search.budget import RESERVE, STAGES_S

    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "oof.mode=promote"]
    for minutes in range(4, 40):
        plan = plan_budget(load_config([*base, f"budget={minutes}m"]), n_train=735, n_test=240, slots=2)
        if plan.fits:
            usable = plan.budget_s * (1 - RESERVE) - STAGES_S
            assert plan.search_s + plan.oof_s <= usable + 1e-6, (minutes, plan.trials, plan.search_s, plan.oof_s)


def test_the_oof_is_priced_as_tune_queues_its_jobs_on_the_slots() -> None:
    """A promoted model's fold-0 predictions take a slot of their own: the measured compete OOF
    (92 s of fold-0 predictions, then four folds of about 320 s on 2 slots) took 727 s."""
    from search.budget import makespan

    assert makespan([92, 320, 320, 320, 320], slots=2) == 732
    assert makespan([100, 100, 100, 100], slots=2) == 200
    assert makespan([50, 10], slots=4) == 50


def test_fold_fits_that_read_the_searchs_frozen_stage_caches_are_priced_at_the_rest_of_the_step() -> None:
    """With frozen stages (trainables.frozen) a promoted model's folds find every epoch's frozen
    outputs built by its search trial, and the test split's by the first job: the plan prices a
    fold's steps and test predictions at the rest of the network, and tells promotion what a model
    that cannot read them costs (oof.model_full_s)."""
    base = ["trainable.backbone=test_efficientnet", "trainable.pretrained=false", "trainable.image_size=64"]
    base += ["trainable.freeze_stages=2", "oof.mode=promote", "budget=2h"]
    cached = plan_budget(load_config(base), n_train=735, n_test=240, slots=2)
    plain = plan_budget(load_config([*base, "trainable.frozen_cache=false"]), n_train=735, n_test=240, slots=2)
    share = cached.frozen_share["test_efficientnet"]
    assert 0 < share < 1 and plain.frozen_share["test_efficientnet"] == 1
    assert any("the frozen stages' outputs the search cached" in line for line in cached.lines())
    b = "test_efficientnet"
    assert cached.model_full_s[b] > cached.model_s[b]
    assert plain.model_full_s[b] == pytest.approx(plain.model_s[b])
    cfg = load_config(base)
    apply_plan(cfg, cached)
    assert dict(cfg.oof.model_full_s) == {k: round(v) for k, v in cached.model_full_s.items()}
    # a base config the cache cannot serve (object split adds rows outside the split) is priced whole
    split = plan_budget(load_config([*base, "trainable.aug.object_split=true"]), n_train=735, n_test=240, slots=2)
    assert split.frozen_share[b] == 1


def test_cached_epochs_are_priced_as_a_measured_compete_run_took_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes of a compete run (Lite0, 192 px, 3 stages frozen, one core a slot, the allocator
    kept) and what its epochs took on sketchy125 (1735 rows, 1388 a fold, 612 fill copies, two
    slots busy): a fold epoch 30.5 s, a search epoch, which builds its cache, 47.5 s, and a search
    epoch on images 43.5 s."""
    from search import budget

    probes = {"step": 0.01822, "rest": 0.01385, "forward": 0.00665, "rest_forward": 0.00299}
    monkeypatch.setattr(budget, "_speed_cache", lambda: (Path("/nonexistent"), {}))
    monkeypatch.setattr(budget, "atomic_write_json", lambda *args: None)
    monkeypatch.setattr(
        budget, "_time_steps", lambda *a, rest_only=False: probes["rest" if rest_only else "step"]
    )
    monkeypatch.setattr(budget, "_time_forward", lambda b, s, n, t, rest_after=0: probes[
        "rest_forward" if rest_after else "forward"
    ])  # fmt: skip
    cfg = load_config(["space=compete", "trainable.group_pattern=none", "budget=1h"])
    b = "tf_efficientnet_lite0"
    share = budget.frozen_share(cfg, b, 192, 32, 1)
    step = probes["step"] * budget.TRAIN_FACTOR
    image_s = {b: (step, probes["forward"] * budget.PREDICT_FACTOR)}

    def search_epoch(shares: dict) -> float:  # the plan's own price of a search epoch
        plan = budget._plan(cfg, 3600, 2, 192, 6, image_s, 1735, 1390, 5, 1, False, 2000, shares)
        return plan.epoch_s

    fold_epoch = (1388 * share.train + 612 * share.fill) * step
    assert fold_epoch == pytest.approx(30.5, rel=0.1)
    assert search_epoch({b: share}) == pytest.approx(47.5, rel=0.1)
    # the same run's Lite0 trial on images (frozen_cache=false): 2,000 rows and its validation
    assert search_epoch({}) == pytest.approx(43.5, rel=0.1)


def test_promotion_prices_a_model_that_cannot_read_the_frozen_caches_at_its_whole_cost() -> None:
    from search.oof_select import OofTime, RefitModel
    from trainables.config import BASE_DEFAULTS, resolve_config

    def model(**keys: object) -> RefitModel:
        config = resolve_config(BASE_DEFAULTS, {"freeze_stages": 3, **keys})
        return RefitModel("m", "t", "timm", config, 4, 0.5, "lite0")

    time = OofTime(1000.0, {"lite0": 300.0}, full_s={"lite0": 450.0})
    assert time.cost(model()) == 300.0
    assert time.cost(model(**{"aug.object_split": True})) == 450.0
    assert OofTime(1000.0, {"lite0": 300.0}).cost(model(**{"aug.object_split": True})) == 300.0


def test_trials_on_frozen_stage_caches_are_not_remembered_as_a_step_on_images(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A cached trial's epochs mix a cache build, cached rows and whole fill copies: the plan
    prices those parts from probes, so only trials on images set the machine's observed speed."""
    from types import SimpleNamespace

    import pandas as pd

    from search.budget import remember_trial_speeds

    monkeypatch.setenv("RUNS_DIR", str(tmp_path))
    frame = pd.DataFrame({"epoch": [1, 2, 3], "img_per_s": [10.0, 20.0, 20.0]})
    base = {"backbone": "lite", "image_size": 128, "batch_size": 32}
    on_images = SimpleNamespace(config={**base, "freeze_stages": 0}, metrics_dataframe=frame)
    cached = SimpleNamespace(config={**base, "backbone": "frozen", "freeze_stages": 3}, metrics_dataframe=frame)
    split = SimpleNamespace(
        config={**base, "backbone": "split", "freeze_stages": 3, "aug.object_split": True}, metrics_dataframe=frame
    )
    assert remember_trial_speeds([on_images, cached, split], threads=1) == {"lite": 0.05, "split": 0.05}


@pytest.fixture
def lite_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speed probes pinned at Lite0/1/2 costs of 1 : 1.3 : 1.8 (sketchy125's at 192 px), nothing timed."""
    from search import budget

    cost = {"tf_efficientnet_lite0": 1.0, "tf_efficientnet_lite1": 1.3, "tf_efficientnet_lite2": 1.8}
    monkeypatch.setattr(budget, "_speed_cache", lambda: (Path("/nonexistent"), {}))
    monkeypatch.setattr(budget, "atomic_write_json", lambda *args: None)
    monkeypatch.setattr(
        budget, "_time_steps", lambda b, *a, rest_only=False: cost[b] * (0.0138 if rest_only else 0.0182)
    )
    monkeypatch.setattr(
        budget, "_time_forward", lambda b, s, n, t, rest_after=0: cost[b] * (0.003 if rest_after else 0.0067)
    )


def _compete_plan(minutes: int, *overrides: str) -> tuple[BudgetPlan, Any]:
    """The compete space planned for sketchy125's rows (1,735 train, 125 classes) on 2 slots."""
    cfg = load_config(["space=compete", "trainable.group_pattern=none", f"budget={minutes}m", *overrides])
    plan = plan_budget(cfg, n_train=1735, n_test=1390, slots=2, epoch_rows=2000, n_classes=125)
    apply_plan(cfg, plan)
    return plan, cfg


def test_a_probed_head_is_priced_per_trial_and_fold_and_its_features_once(lite_probes: None) -> None:
    """head_init=auto fits a linear probe in every trial and fold fit, on pooled features the first
    trial builds: the plan pays for both, and with a random head for neither."""
    from search import budget

    probed, cfg = _compete_plan(18)
    random, _ = _compete_plan(18, "trainable.head_init=random")
    assert (probed.image_size, probed.epochs) == (random.image_size, random.epochs)
    fit_s = round(2 * 1735 * 4 / 5) * 125 * budget.PROBE_FIT_S
    assert fit_s > 1
    # a promoted model trains 4 folds on 2 slots, each fold fit one probe more
    lite0 = "tf_efficientnet_lite0"
    assert probed.model_s[lite0] - random.model_s[lite0] == pytest.approx(4 * fit_s / 2)
    assert probed.trials < random.trials


def test_the_search_leaves_out_what_the_oofs_time_could_not_refit(lite_probes: None) -> None:
    """A compete run at the plain fine-tune's time (18 min) searched Lite1, Lite2 and object split,
    whose folds no OOF of that plan could train: its finished trials were those, and promotion
    took the cheapest over its time (CV 2 points below the plain run, 103% of the budget). The
    plan now searches only what it could promote, and a larger budget searches everything."""
    from search.plan import dimensions
    from search.space import normalize_points

    planned = _compete_plan

    short, cfg = planned(18)
    assert short.top_k == 1
    assert short.left_out == {
        "backbone": ["tf_efficientnet_lite1", "tf_efficientnet_lite2"], "aug.object_split": [True]
    }  # fmt: skip
    # and it says from which budget on the whole space is searched
    assert short.whole_space_s is not None and short.whole_space_s % 300 == 0
    whole = round(short.whole_space_s / 60)
    (line,) = [line for line in short.lines() if line.startswith("left out of the search")]
    assert line.endswith(f"budget={whole}min searches them")
    assert planned(whole)[0].left_out == {} and planned(whole - 5)[0].left_out
    searched = dimensions(cfg)
    assert "backbone" not in searched and "aug.object_split" not in searched and "lr" in searched
    assert cfg.trainable.backbone == "tf_efficientnet_lite0" and cfg.trainable.aug.object_split is False
    # the reference point still leads the search, on the keys still searched
    from search.config import trainable_config

    (point,) = normalize_points(
        OmegaConf.to_container(cfg.tune.points_to_evaluate), searched, trainable_config(cfg)
    )
    assert point["lr"] == 1e-3 and set(point) == set(searched)
    # every backbone's model fits the OOF of a plan with an ensemble: nothing is left out
    long, cfg = planned(180)
    assert long.top_k == 3 and long.left_out == {}
    assert {"backbone", "aug.object_split"} <= set(dimensions(cfg))
    assert short.explore_trials < long.explore_trials


def test_an_ensemble_is_planned_only_of_models_that_train_long_enough(lite_probes: None) -> None:
    """Two short models average worse than one trained longer (sketchy125, five folds: two configs
    at 4 epochs 0.476 together, one at 6 epochs 0.531): a 25-minute compete plan once chose 2
    models x 4 epochs over 1 model x 10. More time buys one model's epochs up to the floor, then
    an ensemble."""
    from search.budget import ENSEMBLE_MIN_EPOCHS

    plans = [_compete_plan(minutes)[0] for minutes in range(14, 61, 3)]
    assert all(p.epochs >= ENSEMBLE_MIN_EPOCHS for p in plans if p.top_k > 1)
    assert {p.top_k for p in plans} >= {1, 2}, [(p.top_k, p.epochs) for p in plans]
    single = [p for p in plans if p.top_k == 1 and p.fits]
    assert max(p.epochs for p in single) > ENSEMBLE_MIN_EPOCHS  # the epochs an ensemble could not have had

"""Searchers that explore on small budgets, and schedulers that never judge a warmup epoch."""

from __future__ import annotations

import logging
import math

import pytest
from omegaconf import OmegaConf
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

from search.algorithms import (
    first_epoch_after_warmup,
    grace_period,
    make_scheduler,
    make_searcher,
    start_trials,
)
from search.config import DEFAULTS_FILE, ConfigError, dimensions, load_config, trainable_config
from search.space import build_param_space

LR_RANGE = (3e-4, 3e-3)
ONLY_LR = [
    "space=quick",
    "search={lr: {loguniform: [3.0e-4, 3.0e-3]}}",
    "tune.points_to_evaluate=[]",
    "tune.num_samples=8",
]


def _sample(overrides: list[str], n: int, running: int = 2) -> list[dict]:
    """Ask the real Ray/Optuna searcher for ``n`` configs, ``running`` at a time, scoring each by its lr.

    The score peaks at lr 1e-3 (a search that only exploits would crowd there) with a little
    noise-free tilt from cutmix, so the model phase has something to learn.
    """
    cfg = load_config(overrides)
    searcher = make_searcher(cfg, max_concurrent=None)
    space = build_param_space(trainable_config(cfg), dimensions(cfg), grid_as_choice=True)
    searcher.set_search_properties(str(cfg.tune.metric), str(cfg.tune.mode), space)
    configs: list[dict] = []
    pending: list[tuple[str, dict]] = []
    for i in range(n):
        if len(pending) >= running:  # as on a machine that fits `running` trials at once
            trial_id, config = pending.pop(0)
            score = (
                0.8
                - 0.1 * (math.log10(config["lr"]) + 3) ** 2
                + 0.01 * config.get("aug", {}).get("cutmix", 0.0)
            )
            searcher.on_trial_complete(trial_id, {"val_acc": score})
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        pending.append((f"t{i}", config))
    return configs


def _unit(lr: float) -> float:
    """Where ``lr`` lies in the log range, 0 at its low end, 1 at its high end."""
    lo, hi = LR_RANGE
    return (math.log(lr) - math.log(lo)) / (math.log(hi) - math.log(lo))


@pytest.mark.parametrize(
    ("n_keys", "num_samples", "expected"), [(2, 4, 3), (1, 8, 2), (2, 8, 3), (1, 40, 10), (3, 2, 2)]
)
def test_start_is_one_more_than_the_keys_or_a_quarter_of_the_trials(
    n_keys: int, num_samples: int, expected: int
) -> None:
    assert start_trials(n_keys, num_samples) == expected


@pytest.mark.parametrize("seed", range(5))
def test_eight_trials_cover_most_of_the_log_range(seed: int) -> None:
    """Coverage = span of the sampled log-lr over the range's log width; the start is stratified."""
    lrs = [c["lr"] for c in _sample([*ONLY_LR, f"tune.seed={seed}"], 8)]
    assert all(LR_RANGE[0] <= lr <= LR_RANGE[1] for lr in lrs)
    units = [_unit(lr) for lr in lrs]
    assert max(units) - min(units) >= 0.6, (
        f"8 trials spanned {max(units) - min(units):.2f} of the range: {lrs}"
    )
    # The start (2 trials for 1 key): scrambled Sobol puts one point in each half of the range.
    assert (units[0] < 0.5) != (units[1] < 0.5), f"start points {lrs[:2]} share a half of the range"


@pytest.mark.parametrize("seed", range(3))
def test_known_point_counts_toward_the_start_and_sobol_fills_the_rest(seed: int) -> None:
    """The quick space: its known point, then two Sobol points that differ in both keys, then TPE."""
    configs = _sample(["space=quick", "tune.num_samples=4", f"tune.seed={seed}"], 4)
    assert (configs[0]["lr"], configs[0]["aug"]["cutmix"]) == (1e-3, 0.0)
    a, b = configs[1], configs[2]
    assert (_unit(a["lr"]) < 0.5) != (_unit(b["lr"]) < 0.5), f"{a['lr']}, {b['lr']} share a half"
    assert a["aug"]["cutmix"] != b["aug"]["cutmix"], "the start tried one cutmix value twice"
    assert len({c["lr"] for c in configs}) == 4


def test_the_start_is_reproducible_for_a_seed_and_differs_across_seeds() -> None:
    first = [c["lr"] for c in _sample([*ONLY_LR, "tune.seed=3"], 3)]
    again = [c["lr"] for c in _sample([*ONLY_LR, "tune.seed=3"], 3)]
    other = [c["lr"] for c in _sample([*ONLY_LR, "tune.seed=4"], 3)]
    assert first == again and first[:2] != other[:2]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], 1),  # the trainable's default warmup_epochs=0.5 leaves half of epoch 1 at the peak lr
        (["trainable.warmup_epochs=0"], 1),
        (["trainable.warmup_epochs=1"], 2),  # epoch 1 ends as the ramp does: every update of it warmed up
        (["trainable.warmup_epochs=1.5"], 2),
        (["trainable.warmup_epochs=3", "trainable.epochs=10"], 4),
        (["search.warmup_epochs={choice: [0.5, 1, 2]}", "trainable.epochs=10"], 3),  # the top of its range
        (["trainable.warmup_epochs=5", "trainable.epochs=4"], 4),  # clamped to the epochs
        (["scheduler.grace_period=3", "trainable.epochs=10"], 3),  # set by hand: kept
    ],
)
def test_auto_grace_period_ends_after_the_warmup(overrides: list[str], expected: int) -> None:
    cfg = load_config(["space=quick", "scheduler.grace_period=auto", "trainable.epochs=6", *overrides])
    assert grace_period(cfg) == expected


def test_the_default_grace_period_is_auto() -> None:
    assert OmegaConf.load(DEFAULTS_FILE).scheduler.grace_period == "auto"
    cfg = load_config(["space=multitask"])  # a space that leaves the scheduler's grace at its default
    assert cfg.scheduler.grace_period == "auto"
    assert grace_period(cfg) == first_epoch_after_warmup(cfg.trainable.warmup_epochs)


@pytest.mark.parametrize(("warmup", "expected"), [("0.5", [1, 4]), ("1", [2, 8])])
def test_asha_rungs_start_after_the_warmup_and_follow_the_epochs(warmup: str, expected: list[int]) -> None:
    cfg = load_config(
        ["space=quick", "scheduler.grace_period=auto", "trainable.epochs=10", f"trainable.warmup_epochs={warmup}"]
    )
    scheduler = make_scheduler(cfg)
    assert isinstance(scheduler, AsyncHyperBandScheduler) and scheduler._max_t == 10
    rungs = sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)
    assert rungs == expected  # the first epoch past the warmup, then x4 (the reduction factor) while below 10


@pytest.mark.parametrize("name", ["asha", "median"])
def test_a_grace_period_that_reaches_the_last_epoch_runs_fifo_and_says_so(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(
        ["space=quick", f"scheduler.name={name}", "scheduler.grace_period=auto", "trainable.epochs=2",
         "trainable.warmup_epochs=1"]
    )
    with caplog.at_level(logging.INFO, logger="search.algorithms"):
        scheduler = make_scheduler(cfg)
    assert type(scheduler) is FIFOScheduler
    assert "grace period 2 >= 2 epochs" in caplog.text and "running FIFO" in caplog.text


def test_median_rule_waits_for_the_warmup() -> None:
    cfg = load_config(
        ["space=quick", "scheduler.name=median", "scheduler.grace_period=auto", "trainable.warmup_epochs=1"]
    )
    scheduler = make_scheduler(cfg)
    assert isinstance(scheduler, MedianStoppingRule) and scheduler._grace_period == 2


def test_a_hand_set_grace_period_inside_the_warmup_is_kept_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = load_config(["space=quick", "scheduler.grace_period=1", "trainable.epochs=6", "trainable.warmup_epochs=1"])
    with caplog.at_level(logging.WARNING, logger="search.algorithms"):
        assert grace_period(cfg) == 1
    assert "ends inside the trainable's warmup" in caplog.text and "grace_period=auto" in caplog.text


@pytest.mark.parametrize("value", ["0", "soon", "1.5", "true"])
def test_bad_grace_periods_fail_with_what_to_use(value: str) -> None:
    with pytest.raises(ConfigError, match="scheduler.grace_period=.*use auto .* or an integer >= 1"):
        load_config(["space=quick", f"scheduler.grace_period={value}"])

"""``budget=90m``: size a whole flow (search, OOF refit, ensemble) to the time a user has.

A competitor knows how long they can wait, not how many trials that buys. The plan measures how
fast this machine trains each backbone of the space (a few real optimizer steps per backbone and
image size, remembered per machine), then spends the budget in this order of importance:

1. **image size**, largest first from ``trainable.image_size`` (which may be above the images' own
   size: they are upsampled): a pretrained net fine-tuned on small data loses more from smaller
   inputs than it gains from more trials or more ensemble members (on sketchy125 a 38-minute plan
   that went down to 64 px to keep 11 trials and 2 refit models scored 0.35, 13 points below one
   128 px fine-tune of the same time; its 128 px sketches upsampled to 192 px scored 8 points
   above 128 px on fold 0);
2. **ensemble members and a search that explores** (3, then 2 refit models, with enough trials
   for a space-filling start), then a short search (at least two rounds of the trial slots)
   with 1 refit model;
3. **epochs**, most first.

The first plan that fits on the trial slots the resources give wins. It says up front what it
chose and what it expects each stage to cost, and caps the search with ``tune.time_budget_s`` so
an estimate that is off cannot eat the refit's share.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from common.allocator import keep_freed_memory
from common.io import atomic_write_json, runs_dir
from search.algorithms import auto_grace_period
from search.config import ConfigError, dimensions, narrow_search, trainable_config
from search.oof_select import TIME_SLACK
from search.space import nested

log = logging.getLogger(__name__)

IMAGE_SIZES = (224, 192, 160, 128, 112, 96, 64)  # tried largest first, up to trainable.image_size
EPOCH_CHOICES = (12, 10, 8, 7, 6, 5, 4)  # a full warmup-and-cosine cycle each
# An ensemble's models train at least this many epochs; below it the plan buys one model's epochs.
# Two short models average worse than one trained longer: on sketchy125's five folds (Lite0, 192 px,
# 3 stages frozen, flip TTA) two configs at 4 epochs scored 0.481 and 0.431 and their mean 0.476,
# where one model at 6 epochs scored 0.531 (and a 25-minute budget had planned 2 models x 4 epochs
# over 1 model x 10). At 6 epochs two models' mean adds 1.4 points over the better one.
ENSEMBLE_MIN_EPOCHS = 6
REFERENCE_SIZE = 128
# Seconds a trial costs besides its epochs: model build, data and cache open, checkpoints. Workers
# are reused between trials (bench_overhead: +0.5 s per trial per slot over an inline fit), so
# this is mostly the set-up inside the trial.
TRIAL_OVERHEAD_S = 3.0
# Kept back from the budget: a share for the estimate's error (the planner's estimate of a
# 38-minute compete run was 4% above what it took), and seconds for what is not a trial: start-up,
# the leak audit, Ray's stop and start between the stages, the ensemble stage and MLflow (35 s in
# each of four 1060 s compete runs: 12 before the search, 19 between search and OOF, 4 after). The
# plan's own speed probes, timed as they run, are kept back besides (none once they are cached).
RESERVE = 0.05
STAGES_S = 35.0
# A trial's epoch also augments and batches its images on the same cores, and the trial slots share
# the memory bus, so an epoch takes longer than the bare optimizer steps a probe times alone. With
# the allocator keeping freed memory (common.allocator), a compete run's trials on images
# (sketchy125, 192 px, 3 stages frozen, two one-thread slots) trained Lite0 at 1.09x its probe,
# Lite1 at 1.04x and Lite2 at 1.03x, and a Lite0 search epoch with its validation took 43.5 s where
# the probes add up to 38.9 s. (Before it, page faults made that 1.44x, and priced at 1.1x a run
# ended 14% past its budget.) Probes are priced at this factor until a search on the machine has
# measured its own trials (:func:`remember_trial_speeds`).
TRAIN_FACTOR = 1.15
# Predictions read cached images without augmentation: priced at 1.1x their forward probe, the
# same run's fold predictions took no longer than planned.
PREDICT_FACTOR = 1.1
_SPEED_VERSION = 4  # 3: bare probes, the factors applied when read; 4: timed with common.allocator
# A trial that reads the frozen stages' outputs from caches (trainables.frozen) trains the rest of
# the network on a cached row, and the whole network on a copy that fills a short class (its
# frozen pass on the spot), at this many times their bare probes: no loader workers share the
# core. On sketchy125 (Lite0, 192 px, 3 stages frozen, two slots busy) a cached fold epoch took
# 30.5 s where those probes add up to 30.4 s.
FROZEN_REST_FACTOR = 1.05
# A search epoch on the caches also builds its cache (the frozen stages' forward pass on every
# image of the split, priced as predictions are) and validates, opens its loaders, checkpoints and
# reports: 7.5 s beyond its probes for Lite0 on sketchy125 (47.5 s an epoch), 3.5 s for Lite1.
CACHED_EPOCH_S = 6.0
# A trial whose head starts as a linear probe (trainables.probe) fits it by L-BFGS on its training
# rows' pooled features (both views): seconds per row-view and class (sketchy125: 2,774 row-views,
# 125 classes, 3.7-4.8 s). The pooled features themselves are a forward pass over the train split's
# two views, built once per backbone by the search's first trial (the other slots wait for it).
PROBE_FIT_S = 1.4e-5
# The search's cap leaves the trial that runs its whole schedule this much over its estimate: it
# is the one a cut hurts most (in a compete run the reference Lite0 trial, its epochs 5% over their
# price, was cut 4 s before its last epoch ended, and another model took its place).
LONGEST_MARGIN = 1.1


class FrozenShare(NamedTuple):
    """What reading the frozen stages' caches makes of a row's cost, as a share of a training step
    on images (``train``, ``fill``, ``build``) or of a prediction on images (``test``)."""

    train: float = 1.0  # a fold fit's step on a cached row
    test: float = 1.0  # a prediction from the test split's cache
    fill: float = 1.0  # a copy filling a short class: its frozen pass on the spot, then the rest
    build: float = 0.0  # the frozen stages' forward pass on one image, building an epoch's cache

    @property
    def cached(self) -> bool:
        return self.train < 1


NO_CACHE = FrozenShare()


@dataclass
class BudgetPlan:
    """What a budget bought.

    Attributes:
        budget_s: The budget in seconds.
        slots: Trials that run at once.
        image_size: Chosen input side.
        epochs: Chosen epochs per trial.
        trials: Chosen number of search trials.
        top_k: Configs refit on every fold.
        search_s: Estimated search time (also its hard cap, ``tune.time_budget_s``).
        oof_s: Estimated OOF time: when its last fold job ends, the jobs queued on the slots.
        fits: Whether the smallest plan fits at all (False: the budget is too small; the plan is
            the smallest one).
        explore_trials: Trials a space-filling start needs; a plan with fewer is a short search.
        oof_mode: ``refit`` (every fold trained anew) or ``promote`` (the search trial is fold 0).
        sec_per_image: Measured training seconds per image at ``image_size``, per backbone.
        epoch_s: Estimated seconds of one search epoch (training and validation) on one slot,
            the space's backbones averaged.
        model_s: One model's share of the slots' OOF seconds (its fold jobs' work / slots), per
            backbone; promotion sums these against ``oof_s``.
        oof_backbone: The backbone ``oof_s`` is priced at (the fastest to refit).
        frozen_share: Per backbone, what a fold fit's step on a cached row costs against one on
            images (1: its folds cannot read the frozen stages' caches; :mod:`trainables.frozen`).
        model_full_s: ``model_s`` of a model whose folds run the frozen stages themselves.
        left_out: Values of searched choices the search leaves out, ``{path: [values]}``: a
            backbone whose model alone is over the OOF's time, and values whose folds cannot read
            the frozen-stage caches (``aug.object_split=True``) when no backbone left fits then.
        whole_space_s: The least budget (in 5-minute steps) whose plan leaves nothing out.
    """

    budget_s: float
    slots: int
    image_size: int
    epochs: int
    trials: int
    top_k: int
    search_s: float
    oof_s: float
    fits: bool
    sec_per_image: dict[str, float]
    explore_trials: int = 0
    oof_mode: str = "refit"
    epoch_s: float = 0.0
    model_s: dict[str, float] = field(default_factory=dict)
    oof_backbone: str = ""
    frozen_share: dict[str, float] = field(default_factory=dict)
    model_full_s: dict[str, float] = field(default_factory=dict)
    left_out: dict[str, list[Any]] = field(default_factory=dict)
    whole_space_s: float | None = None

    def lines(self) -> list[str]:
        """What was chosen and why, for the terminal."""
        dropped = self.left_out.get("backbone", [])  # said once, in the line on what is left out
        speeds = ", ".join(f"{b} {1 / s:.0f} img/s" for b, s in self.sec_per_image.items() if b not in dropped)
        head = (
            f"budget {_fmt(self.budget_s)} on {self.slots} trial slot(s): {self.trials} trials x up to "
            f"{self.epochs} epochs at {self.image_size} px, then the best {self.top_k} "
            + ("promoted to every other fold" if self.oof_mode == "promote" else "refit on every fold")
        )
        estimate = (
            f"estimate: search {_fmt(self.search_s)} (its cap), OOF refit {_fmt(self.oof_s)}, "
            f"total {_fmt(self.search_s + self.oof_s)}; an epoch about {self.epoch_s:.0f} s; "
            f"measured training speed per slot: {speeds}"
        )
        out = [head, estimate]
        shared = {b: x for b, x in self.frozen_share.items() if x < 1 and b not in dropped}
        if shared:
            out.append(
                "fold fits read the frozen stages' outputs the search cached: a cached row's step costs "
                + ", ".join(f"{b} {x:.2f}x" for b, x in shared.items())
                + " of one on images (the copies that fill short classes, all of it)"
            )
        if len(self.model_s) - len(dropped) > 1:
            out.append(
                f"the OOF is priced at {self.oof_backbone}, the fastest to refit; a slower model is chosen only "
                f"while the chosen models' folds fit in its {_fmt(self.oof_s)}"
            )
        if self.left_out:
            out.append(self._left_out_line())
        if self.fits and self.trials < self.explore_trials:
            out.append(
                f"note: {self.trials} trials cannot explore this space (a space-filling start needs "
                f"{self.explore_trials}); the image size and epochs were kept instead. Give more time "
                "(budget=...) to search and ensemble more"
            )
        if not self.fits:
            out.append(
                "warning: the budget is too small for a search that explores this space; this is the "
                "smallest plan. Give more time (budget=...) or fewer searched keys"
            )
        return out

    def _left_out_line(self) -> str:
        """Why the search leaves values out: the OOF could not refit a model that has them."""
        parts = []
        for path, values in self.left_out.items():
            if path == "backbone":
                parts += [f"{b} (its folds {_fmt(self.model_s[b])})" for b in values]
            else:
                kept = [b for b in self.model_full_s if b not in self.left_out.get("backbone", [])]
                cheapest = min(self.model_full_s[b] for b in kept)
                shown = ", ".join(f"{path}={v}" for v in values)
                parts.append(f"{shown} (its folds train on images, not the caches: {_fmt(cheapest)})")
        return (
            f"left out of the search, as the OOF's {_fmt(self.oof_s)} could not refit them: {', '.join(parts)}; "
            + (f"budget={_fmt(self.whole_space_s).replace(' ', '')} searches them" if self.whole_space_s
               else "a larger budget searches them")
        )  # fmt: skip


def parse_budget(text: object) -> float:
    """Seconds in ``90m``, ``1.5h``, ``45min``, ``3600s``.

    Raises:
        ConfigError: Not a duration with a unit.
    """
    raw = str(text).strip()
    try:
        if raw.replace(".", "", 1).isdigit():
            raise ValueError("no unit")
        seconds = pd.Timedelta(raw).total_seconds()
    except ValueError:
        raise ConfigError(f"budget={text!r}: give a duration with its unit, e.g. budget=90m, 2h or 1800s") from None
    if seconds < 60:
        raise ConfigError(f"budget={text!r}: a flow needs at least a few minutes (e.g. budget=20m)")
    return seconds


def plan_budget(
    cfg: DictConfig, n_train: int, n_test: int, slots: int, epoch_rows: int | None = None,
    n_classes: int | None = None,
) -> BudgetPlan:  # fmt: skip
    """Choose image size, epochs, trials and top-k so the flow fits ``cfg.budget``.

    Args:
        cfg: A loaded config with ``budget`` set.
        n_train: Training rows of the data.
        n_test: Test rows (predicted by every refit fold).
        slots: Trials that run at once.
        epoch_rows: Rows one training epoch of a fold goes through, class-balancing copies
            included (:func:`fold_epoch_rows`); by default the K-1 folds' share of ``n_train``.
        n_classes: Classes of the data (the linear probe's cost); by default read from the data.

    Returns:
        The plan; apply it with :func:`apply_plan`.
    """
    budget = parse_budget(cfg.budget)
    started = time.monotonic()
    k = int(cfg.trainable.k)
    backbones = _backbones(cfg)
    threads = max(1, int(float(cfg.resources.cpu)))
    # (refit models, whether its search must explore): an exploring search and an ensemble first,
    # then a short search with one model. A short search rarely finishes two models worth promoting:
    # a 21-minute plan of 2 models x 4 epochs found one (the others stopped or cut), where 1 model
    # could have had more epochs.
    shapes = ((3, True), (2, True), (1, False))
    # Measured once per backbone at the reference size; a convnet's cost grows with the pixels.
    batch, frozen = int(cfg.trainable.batch_size), int(cfg.trainable.get("freeze_stages", 0))
    # The config's image size is the largest the plan may choose (the space's, or the user's).
    sizes = [z for z in IMAGE_SIZES if z <= int(cfg.trainable.image_size)] or [min(IMAGE_SIZES)]
    # What reading frozen-stage caches saves (train, predict): the frozen stages' share of a step
    # grows with the input, so it is measured at the size a plan tries first and mostly keeps.
    share = {b: frozen_share(cfg, b, sizes[0], batch, threads) for b in backbones}
    measured = {
        b: measure_speed(b, REFERENCE_SIZE, batch, threads, frozen, observed=not share[b].cached) for b in backbones
    }
    forwards = {b: measure_forward(b, REFERENCE_SIZE, 2 * batch, threads) for b in backbones}
    on_images = _values_on_images(cfg)  # read off the config once, not per candidate plan
    probe = _probe_rows(cfg, n_train, n_classes)
    probes_s = time.monotonic() - started  # spent out of the budget already

    def choose(seconds: float) -> BudgetPlan:
        plan = None
        for size in sizes:
            scale = (size / REFERENCE_SIZE) ** 2  # a convnet's cost grows with the pixels
            image_s = {b: (measured[b] * scale, forwards[b] * scale) for b in backbones}
            for top_k, explores in shapes:
                for epochs in [e for e in EPOCH_CHOICES if top_k == 1 or e >= ENSEMBLE_MIN_EPOCHS]:
                    plan = _plan(
                        cfg, seconds, slots, size, epochs, image_s, n_train, n_test, k, top_k, explores,
                        epoch_rows, share, on_images, probe, probes_s,
                    )  # fmt: skip
                    if plan.fits:
                        return plan
        assert plan is not None
        return plan

    plan = choose(budget)
    if plan.left_out:
        plan = replace(plan, whole_space_s=_least_budget(budget, lambda s: not choose(s).left_out))
    return plan


def _least_budget(budget: float, enough: Callable[[float], bool]) -> float | None:
    """The least budget, in 5-minute steps up to 8 times ``budget``, that is ``enough`` (a binary
    search: a larger budget leaves out no more); None beyond that."""
    steps = [300.0 * n for n in range(math.ceil(budget / 300), math.ceil(8 * budget / 300) + 1)]
    if not steps or not enough(steps[-1]):
        return None
    low, high = 0, len(steps) - 1
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(steps[middle]) else (middle + 1, high)
    return steps[low]


def _explore_trials(cfg: DictConfig, slots: int, left_out: dict[str, list[Any]] | None = None) -> int:
    """Trials a space-filling start needs: one per searched key and one, or two rounds of the slots.
    A choice the plan narrows to one value is no longer searched."""
    dims = dimensions(cfg)
    fixed = [p for p, values in (left_out or {}).items() if p in dims and len(dims[p].args) - len(values) <= 1]
    return max(len(dims) - len(fixed) + 1, 2 * slots, 6)


def _probe_rows(cfg: DictConfig, n_train: int, n_classes: int | None) -> tuple[int, int]:
    """``(row-views, classes)`` of a trial's linear probe (:mod:`trainables.probe`), ``(0, 0)`` when
    the config's trials start from a random head."""
    from trainables.probe import probes

    if cfg.trainable.name != "timm" or not probes(trainable_config(cfg)):
        return 0, 0
    if n_classes is None:
        from trainables.split import config_folds

        ds, _ = config_folds(OmegaConf.to_container(cfg.trainable, resolve=True))  # type: ignore[arg-type]
        n_classes = int(ds.num_classes)
    k = int(cfg.trainable.k)
    return round(2 * n_train * (k - 1) / k), int(n_classes)


def _values_on_images(cfg: DictConfig) -> dict[str, list[Any]]:
    """Values of searched choices (not the backbone) whose folds cannot read the frozen-stage
    caches while the config's own can (``aug.object_split=True``): their models cost
    ``model_full_s``. Empty when the config's folds train on images anyway."""
    from trainables.frozen import config_refusal

    base = trainable_config(cfg)
    if cfg.trainable.name != "timm" or config_refusal(base) is not None:
        return {}
    out: dict[str, list[Any]] = {}
    for path, dim in dimensions(cfg).items():
        if dim.kind != "choice" or path == "backbone":
            continue
        refused = [v for v in dim.args if config_refusal(nested({path: v}, base)) is not None]
        if refused and len(refused) < len(dim.args):
            out[path] = refused
    return out


def _plan(
    cfg: DictConfig, budget: float, slots: int, size: int, epochs: int, image_s: dict[str, tuple[float, float]],
    n_train: int, n_test: int, k: int, top_k: int, explores: bool, epoch_rows: int | None,
    share: dict[str, FrozenShare] | None = None, on_images: dict[str, list[Any]] | None = None,
    probe: tuple[int, int] = (0, 0), probes_s: float = 0.0,
) -> BudgetPlan:  # fmt: skip
    """One candidate plan; ``image_s`` holds each backbone's seconds per image of a training step and
    of a prediction at ``size``, ``share`` what rows cost against those when they read frozen-stage
    caches (default :data:`NO_CACHE`: they cannot).

    With frozen-stage caches a search trial builds its epoch's cache (the frozen stages on every
    image of the split), trains the rest of the network on its own rows, and passes the copies
    that fill short classes through the whole network; a fold fit of a promoted model finds the
    caches built.

    The search leaves out what the OOF could not refit (:attr:`BudgetPlan.left_out`): a trial
    whose model is over the OOF's time is never promoted, so its epochs would buy nothing but a
    leaderboard row. ``explores``: the plan needs the trials of a space-filling start;
    ``on_images``: :func:`_values_on_images` of ``cfg`` (computed here when not given); ``probe``:
    :func:`_probe_rows` (each trial and fold fit fits a linear probe on the pooled features the
    search's first trial of each backbone builds); ``probes_s``: what measuring the speeds took."""
    share = share or {}
    fold_train, fold_val = epoch_rows or n_train * (k - 1) / k, n_train / k
    val_views = 2 if cfg.trainable.get("tta_flip") else 1
    views = 2 if cfg.oof.get("tta_flip") else 1
    # Of a fold epoch's rows, the originals read the frozen-stage caches; the copies that fill
    # short classes go through the frozen stages on the spot (trainables.frozen).
    originals = min(fold_train, n_train * (k - 1) / k)

    def search_epoch_s(backbone: str) -> float:
        step, forward = image_s[backbone]
        s = share.get(backbone, NO_CACHE)
        if not s.cached:
            return fold_train * step + fold_val * forward * val_views
        rows = n_train * s.build + originals * s.train + (fold_train - originals) * s.fill
        return rows * step + fold_val * forward * val_views + CACHED_EPOCH_S

    usable = budget * (1 - RESERVE) - STAGES_S - probes_s
    # Promotion keeps each model's search trial as its fold 0: only K-1 folds are trained.
    trained_folds = k - 1 if cfg.oof.get("mode") == "promote" else k
    promoted = trained_folds < k  # a promoted model's fold 0 predicts from its search checkpoint

    # A fold fit validates only its last epoch (search.oof_fold), unless plateau decays on it.
    validations = epochs if cfg.trainable.get("schedule") == "plateau" else 1
    probe_rows, probe_classes = probe
    probe_fit_s = probe_rows * probe_classes * PROBE_FIT_S

    def pooled_s(backbone: str) -> float:
        """The pooled features a probe fits on: the train split's two views, built once."""
        return n_train * 2 * image_s[backbone][1] if probe_rows else 0.0

    def fold_s(backbone: str, cached: bool = True) -> float:
        """A fold fit: its epochs and validation, then its predictions."""
        step, forward = image_s[backbone]
        s = share.get(backbone, NO_CACHE) if cached else NO_CACHE
        rows_s = (originals * s.train + (fold_train - originals) * s.fill) * step
        return (
            epochs * rows_s + validations * fold_val * forward * val_views
            + (fold_val + n_test * s.test) * forward * views + TRIAL_OVERHEAD_S + probe_fit_s
        )  # fmt: skip

    def test_cache_s(backbone: str) -> float:
        """The test split's frozen-stage cache (both views), built by a model's first job."""
        return n_test * 2 * image_s[backbone][1] if share.get(backbone, NO_CACHE).test < 1 else 0.0

    def fold0_s(backbone: str) -> float:
        test_share = share.get(backbone, NO_CACHE).test
        return (fold_val + n_test * test_share) * image_s[backbone][1] * views if promoted else 0.0

    # The OOF is priced at the backbone cheapest to refit; promotion takes a dearer one only where the
    # time allows (oof.model_s, oof.time_budget_s), so the plan does not pay for the slowest.
    fastest = min(image_s, key=lambda b: trained_folds * fold_s(b) + fold0_s(b) + test_cache_s(b))
    # Each model's fold 0 (its predictions, when promoted), then its trained folds, as the OOF queues
    # them; the first job of the backbone builds the test split's cache.
    jobs = [fold0_s(fastest)] if promoted else []
    jobs += [fold_s(fastest)] * trained_folds
    oof_s = makespan([jobs[0] + test_cache_s(fastest), *jobs[1:], *jobs * (top_k - 1)], slots)
    model_s = {b: (trained_folds * fold_s(b) + fold0_s(b) + test_cache_s(b)) / slots for b in image_s}
    model_full_s = {b: (trained_folds * fold_s(b, cached=False) + fold0_s(b)) / slots for b in image_s}
    # What the OOF could refit alone: promotion passes over a model beyond it (oof_select.OofTime).
    limit = oof_s * TIME_SLACK
    left_out: dict[str, list[Any]] = {}
    if "backbone" in dimensions(cfg):
        left_out["backbone"] = [b for b in image_s if model_s[b] > limit]
    kept = [b for b in image_s if b not in left_out.get("backbone", [])]
    cached = any(share.get(b, NO_CACHE).cached for b in kept)
    if cached and not any(model_full_s[b] <= limit for b in kept):
        left_out.update(_values_on_images(cfg) if on_images is None else on_images)
    left_out = {path: values for path, values in left_out.items() if values}
    # The search tries every backbone it keeps: its epoch is their average.
    epoch_s = sum(search_epoch_s(b) for b in kept) / len(kept)
    trial_s = epoch_s * _asha_epochs(cfg, epochs) + TRIAL_OVERHEAD_S + probe_fit_s
    # Each backbone's pooled features are built once, by the first of its trials; the other slots
    # may wait for the first build.
    builds = [pooled_s(b) for b in kept]
    build_slot_s = sum(builds) + (slots - 1) * max(builds)
    # The trial that survives every rung runs its whole schedule in one slot: the search cannot
    # end before it, and a cap that cut it would leave the best model half-trained.
    longest_s = (epoch_s * epochs + TRIAL_OVERHEAD_S + probe_fit_s + max(builds)) * LONGEST_MARGIN
    explore = _explore_trials(cfg, slots, left_out)
    min_trials = explore if explores else max(2 * slots, 4)
    trials = math.floor(((usable - oof_s) * slots - build_slot_s) / trial_s) if usable - oof_s >= longest_s else 0
    fits = trials >= min_trials
    trials = max(trials, min_trials) if fits else min_trials
    # Slot-seconds, not whole rounds of the slots: ASHA starts a trial as soon as a slot frees up.
    search_s = max(usable - oof_s, (trial_s * trials + build_slot_s) / slots, longest_s)
    speed = {b: s for b, (s, _) in image_s.items()}
    return BudgetPlan(
        budget, slots, size, epochs, trials, top_k, search_s, oof_s, fits, speed,
        oof_mode=str(cfg.oof.get("mode")), epoch_s=epoch_s, model_s=model_s, oof_backbone=fastest,
        frozen_share={b: share.get(b, NO_CACHE).train for b in image_s}, model_full_s=model_full_s,
        explore_trials=explore, left_out=left_out,
    )  # fmt: skip


def makespan(jobs: list[float], slots: int) -> float:
    """When the last of ``jobs`` ends, each started in order on the first slot to free up, as Tune
    runs the OOF's fold fits. A promoted model's fold-0 predictions are a job of their own: with
    4 folds to train on 2 slots, one slot runs them and two folds (a compete run's OOF: 92 s of
    predictions and 320 s folds took 727 s; spread over the slots as if divisible, 686 s)."""
    free = [0.0] * max(1, slots)
    for seconds in jobs:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def _asha_epochs(cfg: DictConfig, epochs: int) -> float:
    """Expected epochs per trial: ASHA stops all but 1/eta of the trials at each rung."""
    if str(cfg.scheduler.name) != "asha":
        return float(epochs)
    eta = float(cfg.scheduler.reduction_factor)
    grace = cfg.scheduler.grace_period
    if grace in (None, "auto"):
        grace = auto_grace_period(cfg)  # the scheduler's own rule, on the trainable's defaults too
    grace = int(grace)
    rungs = [grace]
    while rungs[-1] * eta < epochs:
        rungs.append(math.ceil(rungs[-1] * eta))
    expected, survivors, done = 0.0, 1.0, 0
    for rung in [*rungs, epochs]:
        expected += survivors * (min(rung, epochs) - done)
        done = min(rung, epochs)
        survivors /= eta
    return expected


def apply_plan(cfg: DictConfig, plan: BudgetPlan) -> None:
    """Write the plan into the config (the saved config records what the budget chose)."""
    cfg.trainable.image_size = plan.image_size
    cfg.trainable.epochs = plan.epochs
    cfg.tune.num_samples = plan.trials
    cfg.tune.time_budget_s = round(plan.search_s)
    cfg.oof.top_k = plan.top_k
    cfg.oof.time_budget_s = round(plan.oof_s)
    cfg.oof.model_s = {b: float(round(seconds)) for b, seconds in plan.model_s.items()}
    narrow_search(cfg, plan.left_out)
    if any(x < 1 for x in plan.frozen_share.values()):
        cfg.oof.model_full_s = {b: float(round(seconds)) for b, seconds in plan.model_full_s.items()}


def fold_epoch_rows(cfg: DictConfig) -> int:
    """Rows one training epoch of fold 0 goes through, as a trial builds them.

    ``aug.balance`` fills every class up to the largest, which on a data set of small, uneven
    classes is far more than the K-1 folds' rows (2,000 against 1,388 on sketchy125's fold 0):
    an estimate from the raw rows under-prices every epoch by that ratio.
    """
    from trainables.split import config_folds, trial_rows

    t = OmegaConf.to_container(cfg.trainable, resolve=True)
    assert isinstance(t, dict)
    _, folds = config_folds(t)
    return len(trial_rows({**t, "fold": 0}, folds).train_rows)


def _backbones(cfg: DictConfig) -> list[str]:
    dim = dimensions(cfg).get("backbone")
    if dim is not None and dim.kind in ("grid", "choice"):
        return [str(b) for b in dim.args]
    return [str(cfg.trainable.backbone)]


def measure_speed(
    backbone: str, image_size: int, batch_size: int, threads: int, freeze_stages: int = 0, observed: bool = True
) -> float:
    """Training seconds per image (forward, backward, AdamW step) on this machine's CPU.

    What earlier searches' trials on this machine measured wins (:func:`remember_trial_speeds`:
    their own epochs, with the loading, augmentation and the other slots' contention in them).
    Otherwise a probe: a few real steps of the model with random inputs (a second or two per
    backbone), in the trial's own memory format and batch size (channels_last is 1.7x faster
    than NCHW for Lite0 on one core; a smaller batch than the trial's was 1.1x slower), times
    :data:`TRAIN_FACTOR`. Both live in ``<runs>/cache/speed.json``, per machine, backbone,
    size, batch, thread count and frozen stages (Lite0 steps 1.7x faster with 3 frozen).
    ``observed=False`` takes the probe (a trial on frozen-stage caches measures another mix of
    costs, so their plans price each part from probes).
    """
    key = _speed_key(backbone, image_size, batch_size, threads, freeze_stages)
    path, known = _speed_cache()
    if observed and f"observed|{key}" in known:
        return float(known[f"observed|{key}"])
    if key not in known:
        known[key] = _time_steps(backbone, image_size, batch_size, threads, freeze_stages)
        atomic_write_json(path, known)
    return float(known[key]) * TRAIN_FACTOR


def measure_forward(backbone: str, image_size: int, batch_size: int, threads: int) -> float:
    """Prediction seconds per image (a forward pass in inference mode) on this machine's CPU.

    Validation after every epoch and a fold's test predictions cost a forward pass per image and
    view, whatever is frozen: with the early stages frozen a training step gets cheaper and a
    prediction does not (Lite0 at 192 px on one core: 21 img/s trained in a search, 40 predicted;
    priced as a third of a training step, the test predictions of a fold took 3x their estimate).
    Probed like :func:`measure_speed` and kept beside it in ``speed.json``.
    """
    key = "forward|" + _speed_key(backbone, image_size, batch_size, threads, 0)
    path, known = _speed_cache()
    if key not in known:
        known[key] = _time_forward(backbone, image_size, batch_size, threads)
        atomic_write_json(path, known)
    return float(known[key]) * PREDICT_FACTOR


def frozen_share(
    cfg: DictConfig, backbone: str, image_size: int, batch_size: int, threads: int
) -> FrozenShare:
    """What rows cost against whole steps and predictions on images when they read the frozen
    stages' cached outputs (:mod:`trainables.frozen`); :data:`NO_CACHE` where the config or the
    backbone cannot.

    Ratios of probes, kept in ``speed.json`` beside them: the rest of the network's step (a cached
    row) and the whole step (a fill copy) at :data:`FROZEN_REST_FACTOR` against the whole step at
    :data:`TRAIN_FACTOR`; the frozen stages' forward pass (the whole forward less the rest's, at
    :data:`PREDICT_FACTOR`) against it too; and the rest's forward pass against the whole one
    (both bare: predictions read cached images either way).
    """
    frozen = int(cfg.trainable.get("freeze_stages", 0))
    t = OmegaConf.to_container(cfg.trainable, resolve=True)
    assert isinstance(t, dict)
    device = "cpu" if not float(cfg.resources.get("gpu", 0) or 0) else "cuda"
    if str(t.get("name", "timm")) != "timm" or not _read_frozen_caches(t, device):
        return NO_CACHE
    key = _speed_key(backbone, image_size, batch_size, threads, frozen)
    path, known = _speed_cache()
    probes = {
        f"frozen-rest|{key}": lambda: _time_steps(backbone, image_size, batch_size, threads, frozen, rest_only=True),
        key: lambda: _time_steps(backbone, image_size, batch_size, threads, frozen),
        f"frozen-rest-forward|{key}": lambda: _time_forward(backbone, image_size, 2 * batch_size, threads, frozen),
        f"forward|{key}": lambda: _time_forward(backbone, image_size, 2 * batch_size, threads),
    }
    for name, probe in probes.items():
        if name not in known:
            known[name] = probe()
            if known[name] is None:  # not a family the cache splits
                return NO_CACHE
            atomic_write_json(path, known)
    step = float(known[key]) * TRAIN_FACTOR
    rest_forward, forward = float(known[f"frozen-rest-forward|{key}"]), float(known[f"forward|{key}"])
    return FrozenShare(
        train=min(1.0, float(known[f"frozen-rest|{key}"]) * FROZEN_REST_FACTOR / step),
        test=min(1.0, rest_forward / forward),
        fill=min(1.0, float(known[key]) * FROZEN_REST_FACTOR / step),
        build=max(0.0, forward - rest_forward) * PREDICT_FACTOR / step,
    )


def remember_trial_speeds(results: Iterable[Any], threads: int) -> dict[str, float]:
    """Store the training speed a search's trials measured, for the next plan on this machine.

    Each backbone's figure is the median ``img_per_s`` of its trials' epochs after the first
    (which starts the loader), scaled to :data:`REFERENCE_SIZE` by the pixel count. On sketchy125
    the probe priced Lite1 and Lite2 epochs 10% under what two concurrent trials took.

    Args:
        results: The search's Ray ``ResultGrid`` (``timm`` trials on CPU).
        threads: CPUs per trial (``resources.cpu``).

    Returns:
        ``{backbone: seconds per image at the reference size}`` of what was stored.
    """
    samples: dict[tuple[str, int], list[float]] = {}
    for result in results:
        config, frame = result.config or {}, result.metrics_dataframe
        if frame is None or "img_per_s" not in frame or "backbone" not in config:
            continue
        if _read_frozen_caches(config):
            continue  # its epochs built and read caches: the plan prices those parts from probes
        speeds = frame.drop_duplicates("epoch", keep="last")["img_per_s"].dropna().to_numpy()[1:]
        size = int(config["image_size"])
        scale = (REFERENCE_SIZE / size) ** 2  # a convnet's cost grows with the pixels
        key = (str(config["backbone"]), int(config["batch_size"]), int(config.get("freeze_stages", 0)))
        samples.setdefault(key, []).extend(scale / v for v in speeds if v > 0)
    medians = {key: float(np.median(values)) for key, values in samples.items() if values}
    if medians:
        path, known = _speed_cache()
        for (backbone, batch, frozen), seconds in medians.items():
            known[f"observed|{_speed_key(backbone, REFERENCE_SIZE, batch, threads, frozen)}"] = seconds
        atomic_write_json(path, known)
    return {backbone: seconds for (backbone, _, _), seconds in medians.items()}


def _read_frozen_caches(config: dict[str, Any], device: str = "cpu") -> bool:
    """Whether a trial of this (flat or dotted) trainable config trains on frozen-stage caches
    (trainables.frozen), as far as its config tells."""
    from trainables.config import BASE_DEFAULTS, resolve_config
    from trainables.frozen import config_refusal

    try:
        trial = resolve_config(BASE_DEFAULTS, {k: v for k, v in config.items() if k.split(".")[0] in BASE_DEFAULTS})
    except ValueError:
        return False
    return config_refusal(trial, device) is None


def _speed_cache() -> tuple[Path, dict[str, float]]:
    """``<runs>/cache/speed.json`` and what it holds (empty before the first plan)."""
    path = runs_dir() / "cache" / "speed.json"
    return path, json.loads(path.read_text()) if path.is_file() else {}


def _speed_key(backbone: str, image_size: int, batch_size: int, threads: int, freeze_stages: int) -> str:
    machine = (platform.machine(), os.cpu_count(), _SPEED_VERSION)
    frozen = (f"frozen{freeze_stages}",) if freeze_stages else ()  # keys of a plain fine-tune read as before
    return "|".join(map(str, (backbone, image_size, batch_size, threads, *frozen, *machine)))


def _time_steps(
    backbone: str, image_size: int, batch: int, threads: int, freeze_stages: int, rest_only: bool = False
) -> Any:
    """Seconds per image of a training step; ``rest_only``: of the step after the frozen stages,
    on their output (None where :mod:`trainables.frozen` does not split the model)."""
    import torch
    import torch.nn.functional as F

    from trainables.frozen import FrozenSplit, splits
    from trainables.models import create_model

    with _threads(threads):
        channels_last = torch.channels_last  # as the trials train (trainables.timm_classifier)
        model = create_model(backbone, 100, image_size=image_size, freeze_stages=freeze_stages).train()
        model = model.to(memory_format=channels_last)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        images = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=channels_last)
        labels = torch.randint(0, 100, (batch,))
        forward = model
        if rest_only:
            if not splits(model):
                return None
            split = FrozenSplit(model, freeze_stages)
            with torch.no_grad():
                images = split.prefix(images).contiguous(memory_format=channels_last)
            forward = split.rest

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(forward(images), labels).backward()
            optimizer.step()

        return _seconds_per_call(step) / batch


def _time_forward(backbone: str, image_size: int, batch: int, threads: int, rest_after: int = 0) -> Any:
    """Seconds per image of a prediction; ``rest_after``: of the network after that many frozen
    stages, on their output (None where :mod:`trainables.frozen` does not split the model)."""
    import torch

    from trainables.frozen import FrozenSplit, splits
    from trainables.models import create_model

    with _threads(threads), torch.inference_mode():
        channels_last = torch.channels_last
        model = create_model(backbone, 100, image_size=image_size).eval().to(memory_format=channels_last)
        images = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=channels_last)
        forward = model
        if rest_after:
            if not splits(model):
                return None
            split = FrozenSplit(model, rest_after)
            images, forward = split.prefix(images).contiguous(memory_format=channels_last), split.rest
        return _seconds_per_call(lambda: forward(images)) / batch


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set to a trial's CPU share for a probe, then put back; the
    allocator kept as trials keep it (:mod:`common.allocator`), or the probe times page faults."""
    import torch

    keep_freed_memory()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _seconds_per_call(call: Callable[[], object]) -> float:
    """Mean seconds of ``call`` over 2 to 8 calls (about a second), after one that allocates."""
    call()  # the first call allocates; it is not what an epoch costs
    start, calls = time.perf_counter(), 0
    while calls < 2 or (calls < 8 and time.perf_counter() - start < 1.0):
        call()
        calls += 1
    return (time.perf_counter() - start) / calls


def _fmt(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"

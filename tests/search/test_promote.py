"""Folds as the search's budget: a finished trial's own model is its fold-0 member (``oof.mode=promote``),
and which trials are promoted is decided by what they add to the ensemble (``oof.select=gain``)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from common.io import runs_dir
from search.config import load_config
from search.oof import load_oof_config, run_oof
from search.oof import main as oof_main
from search.oof_fold import fold_result_path, fold_work_dir, read_fold_result
from search.oof_select import OofTime, RefitModel, select_by_gain, take_in_time
from search.records import load_record, search_dir
from search.runner import run_search
from search.search_result import last_checkpoint
from trainables import create_trainable
from trainables.checkpoint import read_meta
from trainables.data import folds_for, load_dataset

K = 3
EXPERIMENT = "promote-e2e"


# ------------------------------------------------------------------ selection by gain (fast)


def _model(name: str, backbone: str = "net") -> RefitModel:
    return RefitModel(name, name, "timm", {"backbone": backbone}, 2, 0.5, backbone)


def _probs(targets: np.ndarray, right: np.ndarray, n_classes: int, confidence: float) -> np.ndarray:
    """Confident on the rows in ``right``, confidently wrong (next class) elsewhere."""
    out = np.full((len(targets), n_classes), (1 - confidence) / (n_classes - 1))
    guess = np.where(right, targets, (targets + 1) % n_classes)
    out[np.arange(len(targets)), guess] = confidence
    return out


def test_a_weaker_but_different_model_beats_a_near_copy() -> None:
    rng = np.random.default_rng(0)
    n, c = 600, 5
    targets = rng.integers(0, c, n)
    right_a = rng.random(n) < 0.8
    strong = _probs(targets, right_a, c, 0.9)
    copy = np.clip(strong + rng.normal(0, 0.01, strong.shape), 1e-4, None)  # a near-copy of strong
    copy /= copy.sum(1, keepdims=True)
    right_b = np.where(right_a, rng.random(n) < 0.6, rng.random(n) < 0.9)  # right where strong is wrong
    different = _probs(targets, right_b, c, 0.9)
    probs = {"strong": strong, "copy": copy, "different": different}
    accuracy = {k: float((v.argmax(1) == targets).mean()) for k, v in probs.items()}
    assert accuracy["copy"] > accuracy["different"]  # the copy scores better alone

    models = [_model("strong"), _model("copy"), _model("different")]
    chosen = select_by_gain(models, probs, targets, top_k=2)
    assert [m.model_id for m in chosen] == ["strong", "different"]


def test_the_first_model_promoted_is_the_searchs_best_not_the_least_smoothed() -> None:
    """Label smoothing flattens a model's probabilities: a sharper, less accurate one has the lower
    log-loss, but the ensemble starts from the model the search scored best."""
    rng = np.random.default_rng(4)
    n, c = 600, 5
    targets = rng.integers(0, c, n)
    smoothed = _probs(targets, rng.random(n) < 0.8, c, 0.35)
    sharp = _probs(targets, rng.random(n) < 0.72, c, 0.9)
    scores = {k: float((v.argmax(1) == targets).mean()) for k, v in (("smoothed", smoothed), ("sharp", sharp))}
    loss = {k: -np.log(v[np.arange(n), targets]).mean() for k, v in (("smoothed", smoothed), ("sharp", sharp))}
    assert scores["smoothed"] > scores["sharp"] and loss["smoothed"] > loss["sharp"]  # the premise
    models = [RefitModel(k, k, "timm", {"backbone": "net"}, 2, scores[k], "net") for k in ("sharp", "smoothed")]
    chosen = select_by_gain(models, {"smoothed": smoothed, "sharp": sharp}, targets, top_k=1)
    assert [m.model_id for m in chosen] == ["smoothed"]


def test_a_model_that_only_adds_noise_is_not_promoted() -> None:
    rng = np.random.default_rng(1)
    n, c = 400, 4
    targets = rng.integers(0, c, n)
    good = _probs(targets, rng.random(n) < 0.9, c, 0.8)
    noise = rng.dirichlet(np.ones(c), n)
    chosen = select_by_gain([_model("good"), _model("noise")], {"good": good, "noise": noise}, targets, top_k=3)
    assert [m.model_id for m in chosen] == ["good"]


def test_the_backbone_cap_holds_during_selection() -> None:
    rng = np.random.default_rng(2)
    n, c = 600, 5
    targets = rng.integers(0, c, n)
    right_a = rng.random(n) < 0.8
    complement = np.where(right_a, rng.random(n) < 0.6, rng.random(n) < 0.9)
    probs = {
        "a": _probs(targets, right_a, c, 0.9),
        "b": _probs(targets, complement, c, 0.9),  # a's backbone, the best partner
        "c": _probs(targets, complement & (rng.random(n) < 0.97), c, 0.9),  # another backbone, a bit worse
    }
    models = [_model("a", "x"), _model("b", "x"), _model("c", "y")]
    assert [m.model_id for m in select_by_gain(models, probs, targets, top_k=2)] == ["a", "b"]
    capped = select_by_gain(models, probs, targets, top_k=2, max_per_backbone=1)
    assert [m.model_id for m in capped] == ["a", "c"]


def test_under_a_budget_a_model_too_slow_for_the_oofs_time_is_passed_over() -> None:
    """budget= prices the OOF at the fastest backbone: a slower one is taken only while it fits."""
    rng = np.random.default_rng(3)
    n, c = 600, 5
    targets = rng.integers(0, c, n)
    right_a = rng.random(n) < 0.8
    probs = {
        "slow": _probs(targets, right_a, c, 0.9),  # the best alone
        "fast": _probs(targets, right_a & (rng.random(n) < 0.95), c, 0.9),
        "fast2": _probs(targets, np.where(right_a, rng.random(n) < 0.6, rng.random(n) < 0.9), c, 0.9),
    }
    models = [_model("slow", "big"), _model("fast", "small"), _model("fast2", "small")]
    assert [m.model_id for m in select_by_gain(models, probs, targets, top_k=2)] == ["slow", "fast2"]
    # the plan gave the OOF 1000 s: two small models (480 s each), or one big (1250 s) not at all
    time = OofTime(1000.0, {"small": 480.0, "big": 1250.0})
    chosen = select_by_gain(models, probs, targets, top_k=2, time=time)
    assert [m.model_id for m in chosen] == ["fast", "fast2"]
    assert [m.model_id for m in take_in_time(models, 2, time)] == ["fast", "fast2"]
    # a model beside which the next no longer fits ends the choice there
    assert [m.model_id for m in take_in_time(models, 3, OofTime(700.0, {"small": 480.0, "big": 1250.0}))] == [
        "fast"
    ]
    # when none fits, the cheapest is taken alone; without a plan, nothing is passed over
    tight = OofTime(300.0, {"small": 480.0, "big": 1250.0})
    assert [m.model_id for m in select_by_gain(models, probs, targets, top_k=2, time=tight)] == ["fast"]
    assert [m.model_id for m in take_in_time(models, 2, tight)] == ["fast"]
    assert take_in_time(models, 2, OofTime()) == models[:2]
    # a stopped trial also pays for the rest of its fold 0
    assert OofTime(1000.0, {"small": 480.0}, {"fast": 100.0}).cost(models[1]) == 580.0


def test_a_stopped_trial_too_slow_for_the_oof_leaves_its_place_to_one_that_fits() -> None:
    from search.oof_promote import stopped_candidates

    slow, fast, fast2 = _model("slow", "big"), _model("fast", "small"), _model("fast2", "small")
    time = OofTime(600.0, {"small": 550.0, "big": 1200.0})
    assert stopped_candidates([slow, fast, fast2], time, top_k=1) == [fast]
    assert stopped_candidates([slow, fast, fast2], time, top_k=2) == [fast, fast2]
    assert stopped_candidates([slow], time, top_k=1) == [slow]  # none fits: promotion takes the cheapest
    assert stopped_candidates([slow, fast], OofTime(), top_k=1) == [slow]  # no plan: by score


# ---------------------------------------------------------------------- a real promotion (slow)


@pytest.fixture(scope="module")
def promoted(ray_module: Path, tiny: list[str]) -> dict:
    """A 3-trial FIFO search on fold 0, then promotion of the trials that add most, over 3 folds."""
    cfg = load_config(
        [
            *tiny,
            "space=quick",
            f"experiment={EXPERIMENT}",
            "trainable.epochs=2",
            f"trainable.k={K}",
            "tune.num_samples=3",
            "scheduler.name=fifo",
            "mlflow.enabled=false",
        ]
    )
    outcome = run_search(cfg)
    assert outcome.status == "finished"
    oof_cfg = load_oof_config(EXPERIMENT, [("mode", "promote"), ("select", "gain"), ("top_k", 2)])
    return {"cfg": oof_cfg, "result": run_oof(oof_cfg)}


@pytest.mark.slow
def test_fold_0_is_the_search_trials_own_model_and_only_the_other_folds_train(promoted: dict) -> None:
    result, cfg = promoted["result"], promoted["cfg"]
    assert result.complete and result.results
    ray_path = load_record(search_dir(runs_dir(), EXPERIMENT)).ray_path
    ds = load_dataset(cfg.data)
    for model in result.results:
        folds = [read_fold_result(fold_result_path(model.directory, f)) for f in range(K)]
        fits = [f for f in folds if "n_train" in f["fit"]]  # a fold that trained reports its rows
        assert len(fits) == K - 1, "fold 0 was trained again"
        assert folds[0]["fit"] == {"trained_by": "search trial"}
        assert not fold_work_dir(model.directory, 0).exists()
        assert all(f["epochs"] == model.model.config["epochs"] for f in folds)  # the search's full schedule
        checkpoint = last_checkpoint(ray_path, model.model.trial_id)
        again = create_trainable("timm").predict(
            None, checkpoint, split="train", rows=folds[0]["val_rows"], tta_flip=bool(cfg.oof.tta_flip)
        )
        assert np.allclose(folds[0]["val_probs"], again, atol=1e-5)
        rows = np.concatenate([f["val_rows"] for f in folds])
        assert np.array_equal(np.sort(rows), np.arange(len(ds.train)))  # every row once
    fold0 = folds_for(ds, k=K, seed=0)
    assert len(folds[0]["val_rows"]) == int((fold0["fold"] == 0).sum())


@pytest.mark.slow
def test_a_rerun_after_a_crash_fits_only_what_is_missing(promoted: dict) -> None:
    model = promoted["result"].results[0]
    kept = {f: fold_result_path(model.directory, f).stat().st_mtime_ns for f in (0, 1)}
    fold_result_path(model.directory, 2).unlink()  # as if the driver died during fold 2
    again = run_oof(promoted["cfg"])
    assert again.complete
    assert {f: fold_result_path(model.directory, f).stat().st_mtime_ns for f in (0, 1)} == kept
    assert "n_train" in read_fold_result(fold_result_path(model.directory, 2))["fit"]


def _mid_promotion(model_dir: Path) -> tuple[list[int], dict[int, int]]:
    """Folds finished by training, and unfinished folds with their checkpoint's epoch, right now."""
    finished, running = [], {}
    for fold in range(K):
        if fold_result_path(model_dir, fold).is_file():
            with_fit = "n_train" in read_fold_result(fold_result_path(model_dir, fold))["fit"]
            finished += [fold] if with_fit else []
        else:
            epochs = [int(p.name.rsplit("_", 1)[1]) for p in fold_work_dir(model_dir, fold).glob("checkpoint_*")]
            running.update({fold: max(epochs)} if epochs else {})
    return finished, running


@pytest.mark.slow
def test_a_driver_killed_mid_promotion_resumes_without_retraining_or_restarting(
    ray_local: None,
    tiny: list[str],
    start_driver: Callable[..., subprocess.Popen],
    kill_session: Callable[[subprocess.Popen], None],
    tmp_path: Path,
) -> None:
    """SIGKILL ``python -m search.oof mode=promote`` (with its local Ray) once one fold has finished
    training and another has a checkpoint, then run it again: the finished fold is kept as it was,
    the interrupted one continues from its checkpoint, and fold 0 is never trained."""
    name, epochs = "promote-kill", 6
    outcome = run_search(
        load_config(
            [*tiny, "space=quick", f"experiment={name}", "search=null", "tune.points_to_evaluate=[]",
             "tune.num_samples=1", f"trainable.epochs={epochs}", f"trainable.k={K}", "scheduler.name=fifo",
             "mlflow.enabled=false"]
        )  # fmt: skip
    )
    assert outcome.status == "finished"
    argv = [f"experiment={name}", "mode=promote", "top_k=1"]
    # One fold at a time (2 CPUs per fold on a 2-CPU Ray), so one finishes while the next trains.
    driver = start_driver("search.oof", [*argv, "resources.cpu=2"], tmp_path / "driver.log")
    oof_root = runs_dir() / "oof" / name
    finished: list[int] = []
    running: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (finished and running):
            assert driver.poll() is None, f"driver exited early:\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
            model_dirs = [p for p in oof_root.glob("*") if p.is_dir()]
            finished, running = _mid_promotion(model_dirs[0]) if model_dirs else ([], {})
            time.sleep(0.1)
    finally:
        kill_session(driver)
    assert finished and running, f"never caught mid-promotion within 300 s: {finished}, {running}"
    model_dir = next(p for p in oof_root.glob("*") if p.is_dir())
    finished, running = _mid_promotion(model_dir)  # as the kill left it
    kept = {f: fold_result_path(model_dir, f).stat().st_mtime_ns for f in finished}

    assert oof_main(argv) == 0

    assert {f: fold_result_path(model_dir, f).stat().st_mtime_ns for f in finished} == kept, "a finished fold was retrained"
    folds = [read_fold_result(fold_result_path(model_dir, f)) for f in range(K)]
    assert folds[0]["fit"] == {"trained_by": "search trial"}, "fold 0 was trained"
    for fold, epoch in running.items():
        assert folds[fold]["fit"]["resumed_from_epoch"] >= epoch >= 1, f"fold {fold} restarted from zero"
        assert folds[fold]["fit"]["epoch"] == epochs
    rows = np.concatenate([f["val_rows"] for f in folds])
    assert np.array_equal(np.sort(rows), np.arange(len(load_dataset("synthetic").train)))


@pytest.mark.slow
def test_a_trial_asha_stopped_is_promoted_by_finishing_its_schedule_on_fold_0(
    ray_module: Path, tiny: list[str]
) -> None:
    """One trial at a time: the first runs its 3 epochs, the second (a learning rate that cannot
    learn) scores below it at one of ASHA's rungs (epoch 1 or 2) and is stopped there. Promoted
    anyway (select=score, top_k=2), its fold 0 continues from the search's checkpoint to epoch 3,
    not from scratch, and the search's checkpoint is left as it was."""
    name, epochs = "promote-stopped", 3
    outcome = run_search(
        load_config(
            [*tiny, "space=quick", f"experiment={name}", "trainable.epochs=3", f"trainable.k={K}",
             "search.lr={loguniform: [1.0e-7, 1.0e-1]}", "tune.num_samples=2",
             "tune.points_to_evaluate=[{lr: 0.01, aug: {cutmix: 0.0}}, {lr: 1.0e-7, aug: {cutmix: 0.0}}]",
             "scheduler.name=asha", "scheduler.grace_period=1", "scheduler.reduction_factor=2",
             "resources.cpu=2", "mlflow.enabled=false"]
        )  # fmt: skip
    )
    assert outcome.status == "finished"
    board = outcome.leaderboard
    assert sorted(board["status"]) == ["done", "stopped"], board
    stopped_id = str(board.loc[board["status"] == "stopped", "trial_id"].iloc[0])
    ray_path = load_record(search_dir(runs_dir(), name)).ray_path
    search_checkpoint = last_checkpoint(ray_path, stopped_id)
    before = sorted(p.name for p in Path(search_checkpoint).iterdir())

    result = run_oof(load_oof_config(name, [("mode", "promote"), ("select", "score"), ("top_k", 2)]))

    assert result.complete and len(result.results) == 2
    model = next(r for r in result.results if r.model.trial_id == stopped_id)
    folds = [read_fold_result(fold_result_path(model.directory, f)) for f in range(K)]
    stopped_at = int(read_meta(search_checkpoint)["epoch"])
    assert 1 <= stopped_at < epochs
    assert folds[0]["fit"]["resumed_from_epoch"] == folds[0]["search_epochs"] == stopped_at
    assert [f["fit"]["epoch"] for f in folds] == [epochs] * K  # the full schedule on every fold
    assert [f["fit"]["resumed_from_epoch"] for f in folds[1:]] == [0] * (K - 1)
    assert sorted(p.name for p in Path(search_checkpoint).iterdir()) == before  # the search's own is kept
    at_stop = create_trainable("timm").predict(
        None, search_checkpoint, split="train", rows=folds[0]["val_rows"], tta_flip=True
    )
    assert not np.allclose(folds[0]["val_probs"], at_stop, atol=1e-4)  # fold 0 trained on past epoch 1
    finished = next(r for r in result.results if r.model.trial_id != stopped_id)
    assert read_fold_result(fold_result_path(finished.directory, 0))["fit"] == {"trained_by": "search trial"}

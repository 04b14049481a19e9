"""The OOF stage: a real tiny search on the built-in set, refit on 3 folds under Ray, then checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ensemble import find_artifacts
from ensemble.artifacts import SUM_TOLERANCE, read_artifact
from search.config import ConfigError, load_config
from search.oof import load_oof_config, oof_dir, run_oof
from search.oof_fold import fold_result_path, fold_work_dir, make_job, read_fold_result, run_fold
from search.oof_select import select_models
from search.runner import run_search
from search.search_result import from_leaderboard
from trainables.config import resolve_config
from trainables.data import folds_for, load_dataset
from trainables.registry import default_config
from trainables.split import trial_rows

K = 3
EXPERIMENT = "oof-e2e"


# ------------------------------------------------------------------------------- selection (fast)


def _board(rows: list[tuple[str, float, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["trial_id", "val_acc", "status", "best_epoch"])
    return frame.sort_values("val_acc", ascending=False, kind="stable")


def test_selection_takes_the_best_usable_distinct_trials_with_a_cap_per_backbone() -> None:
    board = _board(
        [
            ("a", 0.9, "done", 4),
            ("b", 0.89, "done", 3),  # same config as a: counted once
            ("c", 0.88, "error", 2),  # errored: its score is not to be trusted
            ("d", 0.87, "stopped", 1),  # ASHA stopped it: still a scored model
            ("e", 0.86, "done", 5),
            ("f", math.nan, "done", 0),
        ]
    )
    configs = {
        "a": {"backbone": "convnext", "lr": 1e-3, "epochs": 5},
        "b": {"backbone": "convnext", "lr": 1e-3, "epochs": 5},
        "c": {"backbone": "resnet", "lr": 1e-3, "epochs": 5},
        "d": {"backbone": "convnext", "lr": 3e-4, "epochs": 5},
        "e": {"backbone": "resnet", "lr": 3e-4, "epochs": 5},
        "f": {"backbone": "vit", "lr": 3e-4, "epochs": 5},
    }
    found = from_leaderboard(board, configs, "val_acc")
    picked = select_models(found, trainable="timm", top_k=5)
    assert [m.trial_id for m in picked] == ["a", "d", "e"]
    assert [m.epochs for m in picked] == [4, 1, 5]  # the epoch the search found best
    assert picked[0].model_id == "convnext-a"

    capped = select_models(found, trainable="timm", top_k=2, max_per_backbone=1)
    assert [m.trial_id for m in capped] == ["a", "e"]

    fixed = select_models(found, trainable="timm", top_k=1, epochs=7)
    assert fixed[0].epochs == 7

    with pytest.raises(ValueError, match="no trial of the search can be refit") as raised:
        errored = from_leaderboard(board[board.status == "error"], configs, "val_acc")
        select_models(errored, trainable="timm", top_k=2)
    assert "more time" not in str(raised.value)

    # a time cap that ended every trial before its first score: the message says what to give
    cut = _board([("a", math.nan, "cut", 0), ("b", math.nan, "cut", 0)])
    with pytest.raises(ValueError, match=r"\{'cut': 2\}.*give it more time \(a larger budget="):
        select_models(from_leaderboard(cut, configs, "val_acc"), trainable="timm", top_k=2)


def test_promotion_with_no_trial_checkpoint_here_refits_instead(caplog: pytest.LogCaptureFixture) -> None:
    """Trials whose checkpoints are not on this machine (remote storage) cannot be promoted or
    continued: the flow refits them, and says so."""
    from search.oof import _select

    board = _board([("a", 0.5, "cut", 3), ("b", 0.4, "stopped", 2)])
    configs = {"a": {"lr": 1e-3, "epochs": 6}, "b": {"lr": 3e-4, "epochs": 6}}
    cfg = load_config(["oof.mode=promote", "oof.select=gain", "oof.top_k=2"])
    with caplog.at_level("WARNING", logger="search.oof"):
        models, promotion = _select(cfg, from_leaderboard(board, configs, "val_acc"))
    assert [(m.trial_id, m.epochs) for m in models] == [("a", 3), ("b", 2)] and not promotion.models
    assert "refitting the best 2 on every fold instead" in caplog.text


# --------------------------------------------------------------------------- a real refit (slow)


@pytest.fixture(scope="module")
def refit(ray_module: Path, tiny: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-trial search, then the OOF stage over 3 folds of its 2 models (both under one local Ray)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    cfg = load_config(
        [
            *tiny,
            "space=quick",
            f"experiment={EXPERIMENT}",
            "trainable.epochs=2",
            f"trainable.k={K}",
            "search.aug.cutmix=null",
            "tune.points_to_evaluate=[]",
            "tune.num_samples=2",
            "scheduler.name=fifo",
            f"mlflow.tracking_uri={uri}",
        ]
    )
    outcome = run_search(cfg)
    assert outcome.status == "finished"
    oof_cfg = load_oof_config(EXPERIMENT, [("top_k", 2), ("tta_flip", True)])
    result = run_oof(oof_cfg)
    return {"cfg": oof_cfg, "outcome": outcome, "oof": result, "uri": uri}


@pytest.mark.slow
def test_every_train_row_is_predicted_once_in_train_csv_order(refit: dict) -> None:
    result = refit["oof"]
    assert result.complete and len(result.results) == 2
    ds = load_dataset(refit["cfg"].data)
    folds = folds_for(ds, k=K, seed=0)
    for model in result.results:
        rows = np.concatenate(
            [read_fold_result(fold_result_path(model.directory, f))["val_rows"] for f in range(K)]
        )
        assert np.array_equal(np.sort(rows), np.arange(len(ds.train)))  # each row once, none missed
        art = read_artifact(model.directory)
        assert art.n_train == len(ds.train)
        assert np.array_equal(art.targets, ds.train["target"].to_numpy())  # train.csv order
        assert np.array_equal(art.folds, folds["fold"].to_numpy())
        assert list(art.classes) == list(ds.classes)
        assert art.data_hash == ds.fingerprint


@pytest.mark.slow
def test_meta_scores_equal_the_accuracy_recomputed_from_oof_npy(refit: dict) -> None:
    for model in refit["oof"].results:
        art = read_artifact(model.directory)
        oof = np.load(model.directory / "oof.npy")
        meta = json.loads((model.directory / "meta.json").read_text())
        per_fold = [
            float((oof[art.folds == f].argmax(1) == art.targets[art.folds == f]).mean()) for f in range(K)
        ]
        assert meta["fold_scores"] == pytest.approx(per_fold, abs=0)
        assert meta["cv_mean"] == pytest.approx(np.mean(per_fold), abs=1e-12)
        assert meta["cv_std"] == pytest.approx(np.std(per_fold), abs=1e-12)
        assert meta["extra"]["oof_accuracy"] == float((oof.argmax(1) == art.targets).mean())
        assert meta["extra"]["tta_flip"] is True


@pytest.mark.slow
def test_test_rows_are_distributions_and_the_submission_follows_test_csv(refit: dict) -> None:
    ds = load_dataset(refit["cfg"].data)
    for model in refit["oof"].results:
        test = np.load(model.directory / "test.npy").astype(np.float64)
        assert test.shape == (len(ds.test), len(ds.classes))
        assert (test >= 0).all()
        assert np.abs(test.sum(1) - 1).max() <= SUM_TOLERANCE[np.dtype(np.float16)]
        sub = pd.read_csv(model.submission)
        assert list(sub.columns) == ["ID", "image_path", "target"]
        assert sub["ID"].tolist() == list(range(len(ds.test)))
        assert sub["image_path"].tolist() == ds.test["image_path"].tolist()
        assert np.array_equal(sub["target"].to_numpy(), test.argmax(1))
    # the ensemble finds them by experiment
    assert {a.model_id for a in find_artifacts(EXPERIMENT)} == {
        r.model.model_id for r in refit["oof"].results
    }


@pytest.mark.slow
def test_a_folds_validation_rows_never_appear_in_its_training_rows(refit: dict) -> None:
    ds = load_dataset(refit["cfg"].data)
    folds = folds_for(ds, k=K, seed=0)
    for model in refit["oof"].results:
        for fold in range(K):
            saved = read_fold_result(fold_result_path(model.directory, fold))
            cfg = resolve_config(default_config("timm"), {**model.model.config, "fold": fold})
            split = trial_rows(cfg, folds)
            assert np.array_equal(np.sort(saved["val_rows"]), np.sort(split.val_rows))
            assert not set(split.train_rows.tolist()) & set(saved["val_rows"].tolist())


@pytest.mark.slow
def test_each_model_is_logged_to_its_trials_mlflow_run(refit: dict) -> None:
    client = MlflowClient(tracking_uri=refit["uri"])
    parent = refit["outcome"].parent_run_id
    for model in refit["oof"].results:
        meta = json.loads((model.directory / "meta.json").read_text())
        run = client.get_run(meta["mlflow_run_id"])
        assert run.data.tags["trial_id"] == model.model.trial_id
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.metrics["oof_cv_mean"] == pytest.approx(meta["cv_mean"])
        logged = {f.path for f in client.list_artifacts(run.info.run_id, "oof")}
        assert {"oof/oof.npy", "oof/test.npy", "oof/meta.json", "oof/submission.csv"} <= logged
        folds = client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        )
        by_name = {f.info.run_name: f for f in folds}  # the fold fits, nested under the model's run
        assert sorted(by_name) == [f"fold {k}" for k in range(K)]
        for k in range(K):
            assert by_name[f"fold {k}"].data.metrics["fold_acc"] == pytest.approx(meta["fold_scores"][k])
            assert by_name[f"fold {k}"].data.metrics["epochs"] == meta["extra"]["refit_epochs"][k]
    assert "oof/leaderboard.csv" in {f.path for f in client.list_artifacts(parent, "oof")}


@pytest.mark.slow
def test_rerunning_an_interrupted_refit_fits_only_the_missing_fold(refit: dict) -> None:
    model = refit["oof"].results[0]
    meta_before = json.loads((model.directory / "meta.json").read_text())
    kept = {f: fold_result_path(model.directory, f).stat().st_mtime_ns for f in (0, 2)}
    other = refit["oof"].results[1]
    other_meta = (other.directory / "meta.json").stat().st_mtime_ns
    fold_result_path(model.directory, 1).unlink()  # as if the refit died during fold 1

    again = run_oof(refit["cfg"])

    assert again.complete
    assert {f: fold_result_path(model.directory, f).stat().st_mtime_ns for f in (0, 2)} == kept
    assert fold_result_path(model.directory, 1).is_file()
    meta = json.loads((model.directory / "meta.json").read_text())
    assert meta["fold_scores"][0] == meta_before["fold_scores"][0]
    assert meta["fold_scores"][2] == meta_before["fold_scores"][2]
    # the seeded refit of fold 1 lands where it did before
    assert meta["fold_scores"][1] == pytest.approx(meta_before["fold_scores"][1], abs=0.05)
    # the complete model is left as it was, not rewritten (nor logged again)
    assert (other.directory / "meta.json").stat().st_mtime_ns == other_meta
    assert [r.reused for r in again.results] == [False, True]


@pytest.mark.slow
def test_a_fold_that_crashed_mid_training_continues_from_its_checkpoint(refit: dict, tmp_path: Path) -> None:
    """Run a fold inline, crash it after epoch 1, run it again: it trains epoch 2 only."""
    model = refit["oof"].results[0].model
    ds = load_dataset(refit["cfg"].data)
    folds = folds_for(ds, k=K, seed=0)
    rows = np.flatnonzero(folds["fold"].to_numpy() == 0)
    job = make_job(
        model_id=model.model_id,
        model_dir=tmp_path / model.model_id,
        trainable="timm",
        config=model.config,
        fold=0,
        epochs=2,
        val_rows=rows,
        val_targets=folds["target"].to_numpy()[rows],
        predict_test=False,
        tta_flip=False,
    )

    class Crash(Exception):
        pass

    def crash_after_first(metrics: dict) -> None:
        raise Crash(metrics)

    with pytest.raises(Crash) as first:
        run_fold(job, forward=crash_after_first)
    assert (fold_work_dir(job["model_dir"], 0) / "checkpoint_0001").is_dir()
    # a fold is scored by its predictions: only its last epoch is validated
    assert "val_acc" not in first.value.args[0] and first.value.args[0]["train_loss"] > 0
    seen: list[dict] = []
    result = run_fold(job, forward=seen.append)
    assert [m["epoch"] for m in seen] == [2] and 0 <= seen[0]["val_acc"] <= 1
    assert not result["skipped"]
    assert not fold_work_dir(job["model_dir"], 0).exists()  # checkpoints go once predictions are saved
    assert run_fold(job)["skipped"]


@pytest.mark.slow
def test_fold_results_travel_through_ray_storage_when_nodes_do_not_share_runs(
    refit: dict, tmp_path: Path
) -> None:
    """``ray.storage`` as a URI: the folds work in the node's staging dir and reach the driver via Ray.

    The same models refit this way give the same probabilities as the shared-disk refit.
    """
    from common.io import runs_dir

    storage = tmp_path / "bucket"
    cfg = load_oof_config(EXPERIMENT, [("top_k", 2), ("tta_flip", True), ("ray.storage", storage.as_uri())])
    assert cfg.oof.ship_results == "auto"
    shipped = run_oof(cfg, out_name=f"{EXPERIMENT}-shipped", log_prefix="shipped")
    assert shipped.complete
    plain = {r.model.model_id: r for r in refit["oof"].results}
    for result in shipped.results:
        before = read_artifact(plain[result.model.model_id].directory)
        after = read_artifact(result.directory)
        assert np.array_equal(after.oof, before.oof) and np.array_equal(after.test, before.test)
        for fold in range(K):
            uploaded = list(
                storage.glob(
                    f"{EXPERIMENT}-shipped-oof/{result.model.model_id}-fold{fold}/checkpoint_*/fold_{fold}.npz"
                )
            )
            assert len(uploaded) == 1, "the fold's result did not go through Ray's storage"
    staging = runs_dir() / "oof-staging" / f"{EXPERIMENT}-shipped"
    assert not list(staging.rglob("*.npz")), "a node kept a result it had shipped"


@pytest.mark.slow
def test_the_ensemble_stage_writes_a_submission_from_the_refit(refit: dict) -> None:
    from ensemble.stage import run_stage

    cfg = refit["cfg"].copy()
    cfg.ensemble.method = "mean"
    path = Path(run_stage(cfg, refit["outcome"]))
    sub = pd.read_csv(path)
    assert list(sub.columns) == ["ID", "image_path", "target"]
    assert len(sub) == len(load_dataset(refit["cfg"].data).test)


def test_a_refit_of_an_unknown_search_is_refused() -> None:
    with pytest.raises(ConfigError, match="no such search|no search"):
        load_oof_config("no-such-search")


@pytest.mark.slow
def test_refit_overrides_are_limited_to_how_it_runs(refit: dict) -> None:
    with pytest.raises(ConfigError, match="may change only"):
        load_oof_config(EXPERIMENT, [("trainable.lr", 0.1)])
    with pytest.raises(ConfigError, match="oof.top_k"):
        load_oof_config(EXPERIMENT, [("top_k", 0)])
    cfg = load_oof_config(EXPERIMENT, [("max_per_backbone", 1), ("resources.cpu", 2)])
    assert cfg.oof.max_per_backbone == 1 and cfg.resources.cpu == 2
    assert oof_dir(Path("/r"), "x") == Path("/r/oof/x")


# ------------------------------------------------------------------------- pseudo-labelling round


def test_pseudo_rows_by_threshold_or_top_fraction_per_class() -> None:
    from search.pseudo import select_pseudo

    proba = np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.45, 0.55], [0.7, 0.3]])
    rows, labels, conf = select_pseudo(proba, threshold=0.8)
    assert rows.tolist() == [0, 2, 3] and labels.tolist() == [0, 1, 1]
    assert conf.tolist() == [0.95, 0.8, 0.9]
    rows, labels, _ = select_pseudo(proba, threshold=None, top_fraction=0.5)
    # class 0 is predicted for rows 0, 1, 5 (keep 2: 0 and 5); class 1 for 2, 3, 4 (keep 2: 3 and 2)
    assert rows.tolist() == [0, 2, 3, 5] and labels.tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="exactly one"):
        select_pseudo(proba, threshold=0.9, top_fraction=0.5)
    with pytest.raises(ValueError, match="threshold"):
        select_pseudo(proba, threshold=1.5)


@pytest.fixture(scope="module")
def pseudo(refit: dict) -> dict:
    """The ensemble stage (mean) over the refit, then one pseudo-labelling round from it."""
    from ensemble.stage import run_stage
    from search.pseudo import run_pseudo

    cfg = refit["cfg"].copy()
    cfg.ensemble.method = "mean"
    run_stage(cfg, refit["outcome"])
    outcome = run_pseudo(cfg, threshold=None, top_fraction=0.5)
    return {"cfg": cfg, "outcome": outcome}


@pytest.mark.slow
def test_pseudo_labels_are_the_ensembles_confident_test_predictions(pseudo: dict, refit: dict) -> None:
    from search.pseudo import find_ensemble

    out = pseudo["outcome"]
    ds = load_dataset(refit["cfg"].data)
    proba = np.load(find_ensemble(refit["outcome"].out_dir.parent.parent, EXPERIMENT) / "test_proba.npy")
    labels = pd.read_csv(out.labels)
    assert len(labels) == out.n_added and 0 < out.n_added < len(ds.test)
    position = {p: i for i, p in enumerate(ds.test["image_path"])}
    rows = np.array([position[p] for p in labels["image_path"]])
    assert np.array_equal(labels["target"].to_numpy(), proba[rows].argmax(1))
    # fold-honest: fold k's rows are labelled by the fold-k models' mean test prediction only
    assert out.honest
    for fold in range(K):
        fold_proba = np.mean(
            [
                read_fold_result(fold_result_path(r.directory, fold))["test_probs"]
                for r in refit["oof"].results
            ],
            axis=0,
        )
        fold_labels = pd.read_csv(out.labels.parent / f"pseudo_labels_fold{fold}.csv")
        assert len(fold_labels) == out.n_added_per_fold[fold]
        fold_rows = np.array([position[p] for p in fold_labels["image_path"]])
        assert np.array_equal(fold_labels["target"].to_numpy(), fold_proba[fold_rows].argmax(1))


@pytest.mark.slow
def test_no_pseudo_labelled_row_ever_lands_in_a_validation_fold(pseudo: dict, refit: dict) -> None:
    out = pseudo["outcome"]
    assert out.refit.complete and out.refit.experiment == f"{EXPERIMENT}-pseudo"
    plain = {r.model.model_id: r for r in refit["oof"].results}
    for result in out.refit.results:
        before = plain[result.model.model_id]
        for fold in range(K):
            with_pseudo = read_fold_result(fold_result_path(result.directory, fold))
            without = read_fold_result(fold_result_path(before.directory, fold))
            # validation: the same train.csv rows, nothing from the test set
            assert np.array_equal(with_pseudo["val_rows"], without["val_rows"])
            # training: the same rows plus every pseudo-labelled test image
            assert with_pseudo["fit"]["n_train"] == without["fit"]["n_train"] + out.n_added_per_fold[fold]
        art = read_artifact(result.directory)
        assert art.n_train == len(load_dataset(refit["cfg"].data).train)
        assert art.config["pseudo_labels"] == str(
            out.labels.parent.resolve() / "pseudo_labels_fold{fold}.csv"
        )


@pytest.mark.slow
def test_the_round_reports_oof_before_and_after(pseudo: dict) -> None:
    out = pseudo["outcome"]
    table = out.comparison
    assert set(table.index) == {r.model.model_id for r in out.refit.results} | {"mean ensemble"}
    assert np.allclose(table["change"], table["after"] - table["before"])
    assert "OOF before" in out.report.read_text()

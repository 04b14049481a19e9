"""The command end to end: files written, submission order, MLflow run, refusals, no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.tracking import DEFAULT_EXPERIMENT, get_or_create_experiment
from ensemble.artifacts import read_artifact, write_artifact
from ensemble.optimize import main

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--trials", "40", "--generations", "5", "--caruana-iters", "20", "-q"]


def _copy_experiment(digits_oof, dest: Path, **meta_overrides: dict) -> Path:
    """Copy the digits artifacts to dest/<experiment>; per model, optionally rewrite some fields."""
    exp = dest / digits_oof.experiment
    shutil.copytree(digits_oof.experiment_dir, exp)
    for model_id, overrides in meta_overrides.items():
        art = read_artifact(exp / model_id)
        kwargs = {
            "oof": np.asarray(art.oof),
            "targets": np.asarray(art.targets),
            "folds": np.asarray(art.folds),
            "classes": list(art.classes),
            "test": None if art.test is None else np.asarray(art.test),
            "test_image_paths": art.test_image_paths,
            "data_hash": art.data_hash,
            "fold_scores": art.fold_scores,
            "dtype": str(art.oof.dtype),
        }
        kwargs.update(overrides)
        write_artifact(exp / model_id, **kwargs)
    return exp


def test_all_methods_end_to_end(digits_oof, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "--runs",
            *map(str, digits_oof.model_dirs),
            "--method",
            "all",
            "--out",
            str(out),
            "--no-mlflow",
            *QUICK,
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        "submission.csv",
        "test_proba.npy",
        "weights.json",
        "report.md",
        "weights.png",
    }

    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.columns) == ["ID", "image_path", "target"]
    assert sub["ID"].tolist() == list(range(len(digits_oof.y_test)))
    assert sub["image_path"].tolist() == digits_oof.test_image_paths  # test.csv order
    assert sub["target"].between(0, 9).all()
    assert np.mean(sub["target"].to_numpy() == digits_oof.y_test) > 0.9  # the held-out digits, for real
    proba = np.load(out / "test_proba.npy")
    assert proba.shape == (len(digits_oof.y_test), 10)
    assert np.allclose(proba.sum(1), 1, atol=1e-4)

    doc = json.loads((out / "weights.json").read_text())
    assert set(doc["methods"]) == {
        "best",
        "mean",
        "vote",
        "caruana",
        "bayesian",
        "genetic",
        "logloss",
        "stacking",
    }
    nested = {name: m["nested_mean"] for name, m in doc["methods"].items()}
    assert nested[doc["winner_out_of_sample"]] == max(nested.values())
    # Submitted: the simplest method within one standard error of the best nested score.
    assert doc["method"] == doc["choice"]["within_one_se"][0]
    assert nested[doc["method"]] >= doc["choice"]["threshold"]
    assert sum(doc["weights"].values()) == pytest.approx(1.0)
    assert list(doc["weights"]) == digits_oof.model_ids
    report = (out / "report.md").read_text()
    assert f"Submitted method: **{doc['method']}**" in report
    assert f"Best nested accuracy: **{doc['winner_out_of_sample']}**" in report and "standard error" in report
    assert (out / "weights.png").read_bytes()[:4] == b"\x89PNG"


def test_default_experiment_and_output_dir(
    digits_oof, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    _copy_experiment(digits_oof, runs / "oof")
    monkeypatch.setenv("RUNS_DIR", str(runs))
    assert main(["--method", "caruana", "--no-mlflow", *QUICK]) == 0
    out = runs / "ensembles" / digits_oof.experiment / "caruana"
    doc = json.loads((out / "weights.json").read_text())
    assert doc["method"] == "caruana" and set(doc["methods"]) == {"best", "mean", "caruana"}


def test_same_seed_same_submission(digits_oof, tmp_path: Path) -> None:
    runs = [str(d) for d in digits_oof.model_dirs]
    for name in ("a", "b"):
        assert (
            main(
                [
                    "--runs",
                    *runs,
                    "--method",
                    "bayesian",
                    "--seed",
                    "3",
                    "--out",
                    str(tmp_path / name),
                    "--no-mlflow",
                    *QUICK,
                ]
            )
            == 0
        )
    a, b = (json.loads((tmp_path / n / "weights.json").read_text()) for n in ("a", "b"))
    assert a["weights"] == b["weights"]
    assert (tmp_path / "a" / "submission.csv").read_bytes() == (
        tmp_path / "b" / "submission.csv"
    ).read_bytes()


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # inside MLflow
def test_mlflow_run_links_the_source_runs(
    digits_oof, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("models", artifact_location=(tmp_path / "model_artifacts").as_uri())
    sources = {m: client.create_run(exp_id, run_name=m).info.run_id for m in digits_oof.model_ids}
    # The search's parent run, as search.runner logs it (tag ``experiment``), in the default experiment;
    # a run of another search with a nested child must not be taken for it.
    search_exp = get_or_create_experiment(client, DEFAULT_EXPERIMENT, uri)
    other = client.create_run(search_exp, run_name="other", tags={"experiment": "other"}).info.run_id
    client.create_run(search_exp, tags={"experiment": digits_oof.experiment, "mlflow.parentRunId": other})
    parent = client.create_run(search_exp, run_name="search", tags={"experiment": digits_oof.experiment})
    exp = _copy_experiment(
        digits_oof, tmp_path / "oof", **{m: {"mlflow_run_id": r} for m, r in sources.items()}
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    out = tmp_path / "out"
    assert main(["--runs", str(exp), "--method", "caruana", "--out", str(out), *QUICK]) == 0

    ensemble_exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)  # the search's, by default
    assert ensemble_exp.artifact_location.startswith((tmp_path / "mlartifacts").as_uri())
    (run,) = client.search_runs([ensemble_exp.experiment_id], "tags.`sketchsearch.stage` = 'ensemble'")
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "caruana" and run.data.params["metric"] == "accuracy"
    assert run.data.params["models"] == ",".join(digits_oof.model_ids)
    for key in (
        "in_sample",
        "nested_mean",
        "nested_std",
        "caruana.nested_mean",
        "best.nested_mean",
        "mean.in_sample",
    ):
        assert key in run.data.metrics, key
    weights = json.loads((out / "weights.json").read_text())["methods"]["caruana"]
    assert run.data.metrics["nested_mean"] == pytest.approx(weights["nested_mean"])
    for model_id, run_id in sources.items():
        assert run.data.tags[f"source_run.{model_id}"] == run_id
        assert client.get_run(run_id).info.run_name == model_id  # the links resolve in the same store
    assert set(run.data.tags["source_run_ids"].split(",")) == set(sources.values())
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert logged == {
        "submission.csv",
        "test_proba.npy",
        "weights.json",
        "report.md",
        "weights.png",
        "ensemble_methods.json",  # the methods table the UI browses
    }
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested under its search
    assert ensemble_exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on runs
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "ensemble_methods.json")).read_text())
    assert "caruana" in [row[table["columns"].index("method")] for row in table["data"]]


def test_incompatible_artifacts_exit_2_naming_the_culprit(
    digits_oof, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reordered = [*digits_oof.classes[1::-1], *digits_oof.classes[2:]]
    art = read_artifact(digits_oof.model_dirs[0])
    swap = np.r_[1, 0, 2:10]
    exp = _copy_experiment(
        digits_oof,
        tmp_path,
        **{
            art.model_id: {
                "classes": reordered,
                "oof": np.asarray(art.oof)[:, swap],
                "test": np.asarray(art.test)[:, swap],
            }
        },
    )
    assert (
        main(["--runs", str(exp), "--method", "mean", "--no-mlflow", "--out", str(tmp_path / "o"), "-q"]) == 2
    )
    err = capsys.readouterr().err
    assert "class order differs" in err and repr(art.model_id) in err
    assert not (tmp_path / "o").exists()


def test_model_without_test_is_excluded(digits_oof, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dropped = digits_oof.model_ids[-1]
    exp = _copy_experiment(digits_oof, tmp_path / "oof")
    (exp / dropped / "test.npy").unlink()
    out = tmp_path / "out"
    assert main(["--runs", str(exp), "--method", "caruana", "--no-mlflow", "--out", str(out), *QUICK]) == 0
    assert f"excluding model {dropped!r}" in capsys.readouterr().err
    doc = json.loads((out / "weights.json").read_text())
    assert doc["excluded"] == [dropped] and dropped not in doc["models"]


def test_unknown_method_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["--method", "magic", "--no-mlflow"]) == 2
    assert "valid: " in capsys.readouterr().err


def test_no_torch_ray_or_timm(digits_oof, tmp_path: Path) -> None:
    """Importing ensemble.optimize, and a whole run, leave torch, ray and timm unimported."""
    code = f"""
import sys
import ensemble.optimize
loaded = [m for m in ("torch", "ray", "timm") if m in sys.modules]
assert not loaded, f"import pulled in {{loaded}}"
rc = ensemble.optimize.main(["--runs", {str(digits_oof.experiment_dir)!r}, "--method", "all", "--trials", "5",
                             "--generations", "1", "--caruana-iters", "3", "--no-mlflow", "-q", "--out", {str(tmp_path)!r}])
import ensemble._mlflow, mlflow.tracking  # the report-logging path too
loaded = [m for m in ("torch", "ray", "timm") if m in sys.modules]
assert rc == 0 and not loaded, (rc, loaded)
"""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_dead_tracking_server_costs_a_warning_not_the_submission(
    digits_oof, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "out"
    assert (
        main(["--runs", *map(str, digits_oof.model_dirs), "--method", "mean", "--out", str(out), *QUICK]) == 0
    )
    assert (out / "submission.csv").is_file() and (out / "test_proba.npy").is_file()
    assert "but not logged" in " ".join(capsys.readouterr().err.split())  # rich wraps at the path's length


def test_one_model_is_submitted_as_it_is_without_a_table_of_ties(
    digits_oof, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """With one model every method is its predictions: the run says so and scores it once
    (a compete run fitted eight methods on one model and printed eight equal rows)."""
    out = tmp_path / "out"
    assert main(["--runs", str(digits_oof.model_dirs[0]), "--no-mlflow", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 model x" in captured.err and "one model, nothing to weigh" in captured.err
    doc = json.loads((out / "weights.json").read_text())
    assert doc["method"] == "mean" and list(doc["methods"]) == ["mean"]
    art = read_artifact(digits_oof.model_dirs[0])
    assert doc["methods"]["mean"]["nested_mean"] == pytest.approx(np.mean(art.fold_scores), abs=1e-6)
    submission = pd.read_csv(out / "submission.csv")
    np.testing.assert_array_equal(submission["target"].to_numpy(), np.asarray(art.test).argmax(1))
    # no chart of one bar at weight 1: the report says why
    assert not (out / "weights.png").exists()
    assert "nothing to weigh (no chart)" in (out / "report.md").read_text()

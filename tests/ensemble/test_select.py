"""``--method auto``: the simplest method within one standard error of the best nested score.

Crafted OOF probabilities (:mod:`ensemble.synthetic`) written as real artifacts, run through the
real command; the rule itself also on hand-set fold scores, where its arithmetic is checkable.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from ensemble import MeanEnsemble, MethodResult, ProbStack, choose_method, create_method, evaluate_method
from ensemble._defaults import DEFAULT_METHOD, DEFAULT_TRIALS
from ensemble.artifacts import write_artifact
from ensemble.optimize import build_parser, main, out_dir
from ensemble.options import EnsembleOptions
from ensemble.stage import stage_options
from ensemble.synthetic import make_folds, make_probs

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--trials", "40", "--generations", "5", "--caruana-iters", "20", "--no-mlflow"]


def _write(root: Path, probs: list[np.ndarray], y: np.ndarray, folds: np.ndarray) -> list[str]:
    """The probabilities as real OOF artifacts (test = OOF: only the choice is under test here)."""
    dirs = []
    for m, p in enumerate(probs):
        d = root / f"model_{m}"
        write_artifact(
            d,
            oof=p,
            targets=y,
            folds=folds,
            classes=[f"c{c}" for c in range(p.shape[1])],
            test=p,
            test_image_paths=[f"test/{i}.png" for i in range(len(y))],
            fold_scores=[0.5] * int(folds.max() + 1),
            data_hash="crafted",
        )
        dirs.append(str(d))
    return dirs


def _run_auto(tmp_path: Path, probs: list[np.ndarray], y: np.ndarray) -> tuple[dict, str]:
    folds = make_folds(y, 5)
    dirs = _write(tmp_path / "oof" / "crafted", probs, y, folds)
    out = tmp_path / "out"
    assert main(["--runs", *dirs, "--out", str(out), *QUICK]) == 0  # no --method: auto is the default
    return json.loads((out / "weights.json").read_text()), (out / "report.md").read_text()


def test_mean_within_one_se_of_a_better_complex_method_is_chosen(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Six similar models with correlated errors: a fitted method scores a little above the plain
    mean out of sample, by less than the folds' noise, so the mean is submitted."""
    probs, y = make_probs(600, 20, [0.45, 0.47, 0.49, 0.51, 0.53, 0.55], shared=0.7, seed=0)
    doc, report = _run_auto(tmp_path, probs, y)
    nested = {name: m["nested_mean"] for name, m in doc["methods"].items()}
    assert set(nested) == {"mean", "vote", "best", "logloss", "caruana", "bayesian", "genetic", "stacking"}
    choice = doc["choice"]
    assert doc["method"] == "mean"
    assert choice["best_nested"] != "mean" and nested[choice["best_nested"]] > nested["mean"]
    assert nested["mean"] >= choice["threshold"]  # within one SE ...
    assert nested[choice["best_nested"]] - choice["standard_error"] == pytest.approx(choice["threshold"])
    assert choice["within_one_se"][0] == "mean"  # ... and the simplest there
    # The report and the terminal say why: the scores, the SE, the rule.
    for text in (report, choice["reason"], capsys.readouterr().out):
        flat = " ".join(text.split())  # rich wraps the terminal's lines
        assert f"Best nested accuracy: {choice['best_nested']}" in flat.replace("**", "")
        assert "standard error" in flat and "the simplest method within one standard error" in flat
        assert "mean < vote < best < logloss < caruana < bayesian = genetic < stacking" in flat
    assert "Submitted: **mean**" in report and "Submitted method: **mean**" in report


def test_the_method_table_fits_an_80_column_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a narrow terminal the timing columns are left out and named, not every header cut."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the captured stream as a terminal
    probs, y = make_probs(300, 10, [0.45, 0.5], shared=0.5, seed=1)
    _run_auto(tmp_path, probs, y)
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    table = [line for line in out.splitlines() if "┃" in line or "│" in line]
    assert table and max(len(line) for line in table) <= 80
    assert "…" not in "\n".join(table), f"rich squeezed a column:\n{out}"
    header = next(line for line in table if "method" in line)
    assert "nested" in header and "1 SE" in header
    hidden = re.search(r"left out to fit 80 columns: (.*); report.md has every column", out)
    assert hidden is not None and "nested s" in hidden.group(1)


def test_a_clearly_better_fitted_method_is_chosen(tmp_path: Path) -> None:
    """Two good, independent models and four junk ones that agree on a random class: the mean and
    the vote follow the junk, the best single model misses what the second good model knows, and
    a fitted blend wins by many standard errors."""
    good, y = make_probs(1000, 20, [0.5, 0.5], shared=0.0, seed=0)
    rng = np.random.default_rng(1)
    junk_class = rng.integers(0, 20, len(y))
    junk = []
    for _ in range(4):
        p = rng.dirichlet(np.full(20, 0.3), len(y)) * 0.2
        p[np.arange(len(y)), junk_class] += 0.8
        junk.append(p.astype(np.float32))
    doc, report = _run_auto(tmp_path, [*good, *junk], y)
    nested = {name: m["nested_mean"] for name, m in doc["methods"].items()}
    choice = doc["choice"]
    chosen = doc["method"]
    assert chosen not in ("mean", "vote", "best")
    assert chosen == choice["within_one_se"][0]
    se = choice["standard_error"]
    assert nested[chosen] - nested["best"] > 3 * se and nested[chosen] - nested["mean"] > 10 * se
    assert sum(doc["weights"][f"model_{m}"] for m in (2, 3, 4, 5)) < 0.05  # the junk is left out
    assert f"Submitted method: **{chosen}**" in report


def _result(name: str, scores: list[float]) -> MethodResult:
    method = MeanEnsemble().fit(np.full((2, 3, 2), 0.5), np.array([0, 1, 0]))
    return MethodResult(name, method, "accuracy", in_sample=max(scores), fold_scores=scores)


def test_rule_arithmetic_ties_and_direction() -> None:
    # Best: stacking, mean 0.70, sample std 0.0158 over 5 folds -> SE 0.00707, threshold 0.6929.
    results = [
        _result("mean", [0.68, 0.69, 0.69, 0.69, 0.70]),  # 0.690: outside
        _result("genetic", [0.68, 0.69, 0.70, 0.70, 0.70]),  # 0.694: inside
        _result("bayesian", [0.69, 0.69, 0.70, 0.70, 0.70]),  # 0.696: inside, better than genetic
        _result("stacking", [0.68, 0.69, 0.70, 0.71, 0.72]),  # 0.700: the best
    ]
    choice = choose_method(results, "accuracy")
    assert choice.best.name == "stacking"
    assert choice.se == pytest.approx(np.std([0.68, 0.69, 0.70, 0.71, 0.72], ddof=1) / np.sqrt(5))
    assert choice.eligible == ["bayesian", "genetic", "stacking"]  # equal rank: better score first
    assert choice.chosen.name == "bayesian"
    # Log-loss: lower is better, the threshold lies above the best.
    losses = [_result("logloss", [1.00, 1.02, 1.04]), _result("caruana", [0.99, 1.00, 1.01])]
    choice = choose_method(losses, "logloss")
    assert choice.best.name == "caruana" and choice.threshold > choice.best.nested_mean
    assert choice.chosen.name == "caruana"  # 1.02 is more than one SE (0.0058) above 1.00
    # A method named by the user is submitted; the reason says what the rule would pick.
    choice = choose_method(results, "accuracy", requested="stacking")
    assert choice.chosen.name == "stacking" and "the rule would pick **bayesian**" in choice.reason()
    # A method the rule does not know ranks after stacking.
    odd = [_result("my_method", [0.70, 0.70]), _result("stacking", [0.70, 0.70])]
    assert choose_method(odd, "accuracy").chosen.name == "stacking"


def test_stacking_at_sketchy125_shape_is_class_wise_and_honest() -> None:
    """6 models x 1,735 rows x 125 classes: the shape where dense stacking took 392 s and scored
    1.000 in-sample, 0.267 out of sample. Timing lives in bench/bench_ensemble_auto.py; here the
    behaviour that makes it fast and honest."""
    probs, y = make_probs(1735, 125, list(np.linspace(0.26, 0.33, 6)), seed=0)
    stack, folds = ProbStack(probs), make_folds(y, 5)
    result = evaluate_method(create_method("stacking"), stack, y, folds, "accuracy")
    method = result.method
    assert method.features_ == "classwise" and not hasattr(method, "best_params_")  # no inner grid
    assert method.meta_[-1].coef_.shape == (1, 6)  # one coefficient per model, whatever the classes
    assert abs(result.in_sample - result.nested_mean) < 0.02  # nothing memorised
    mean = evaluate_method(create_method("mean"), stack, y, folds, "accuracy")
    assert result.nested_mean > mean.nested_mean - 0.02  # takes part on merit, not as a straw man
    assert result.nested_seconds < 60  # about 1 s measured on 2 busy cores; 392 s before


def test_one_default_for_method_and_trials() -> None:
    defaults = yaml.safe_load((REPO / "search" / "defaults.yaml").read_text())["ensemble"]
    assert defaults["trials"] == DEFAULT_TRIALS and defaults["method"] == DEFAULT_METHOD == "auto"
    args = build_parser().parse_args([])
    assert args.trials == DEFAULT_TRIALS and args.method == DEFAULT_METHOD
    assert create_method("bayesian").n_trials == DEFAULT_TRIALS


def test_stage_passes_the_method_and_falls_back_to_the_defaults() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"ensemble": {"method": "auto", "metric": "accuracy", "trials": 77}, "mlflow": {"enabled": False}}
    )
    options = stage_options(cfg, "exp")
    assert options.method == "auto" and options.trials == 77 and not options.mlflow
    # paths=False: search.run, not the stage, says where the files are
    assert options == EnsembleOptions(experiment="exp", trials=77, mlflow=False, paths=False)
    assert out_dir(options, "exp").parts[-3:] == ("ensembles", "exp", "auto")
    bare = OmegaConf.create({"ensemble": {"metric": "accuracy"}, "mlflow": {"enabled": False}})
    options = stage_options(bare, "exp")
    assert options.method == DEFAULT_METHOD and options.trials == DEFAULT_TRIALS
    # the command line with no flags and the stage of a bare config run the same ensemble
    command = EnsembleOptions.from_args(build_parser().parse_args(["--experiment", "exp", "--no-mlflow"]))
    assert replace(command, paths=False) == options

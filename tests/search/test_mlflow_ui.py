"""What a user sees in MLflow's UI and in the HTML report, driven in a real headless Chromium.

A tiny real search (2 trials) with its OOF refit and ensemble stages logs to a real ``mlflow
server`` on loopback; Playwright drives Debian's ``chromium`` (no browser download) over the UI.
Screenshots go to ``$RUNS_DIR/ui_screenshots`` (kept with the test's temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from common.tracking import DEFAULT_EXPERIMENT, ui_url
from search.report import report_path
from search.run import main

EXPERIMENT = "ui-e2e"
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    return next((path for name in _CHROMIUM_NAMES if (path := shutil.which(name))), None)


CHROMIUM = _chromium()
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium on this machine: `apt-get install chromium` (make test does so as root), "
        "or set CHROMIUM=/path/to/chrome",
    ),
]


@pytest.fixture(scope="module")
def flow(ray_module: Path, mlflow_server: str) -> dict[str, Any]:
    """A 2-trial search, its OOF refit of both models over 3 folds and the ensemble, on the server."""
    code = main(
        [
            "trainable.backbone=test_efficientnet",
            "trainable.image_size=32",
            "trainable.pretrained=false",
            "trainable.batch_size=32",
            "trainable.warmup_epochs=0",
            "verbose=1",
            "leak_audit=false",
            "space=quick",
            f"experiment={EXPERIMENT}",
            "trainable.epochs=2",
            "trainable.k=3",
            "search.aug.cutmix=null",
            "tune.points_to_evaluate=[]",
            "tune.num_samples=2",
            "scheduler.name=fifo",
            f"mlflow.tracking_uri={mlflow_server}",
            "stages=[oof,ensemble]",
            "oof.top_k=2",
            "ensemble.trials=20",
        ]
    )
    assert code == 0
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    (parent,) = [r for r in runs if r.data.tags.get("experiment") == EXPERIMENT and "mlflow.parentRunId" not in r.data.tags]
    return {"uri": mlflow_server, "client": client, "exp": exp, "runs": runs, "parent": parent, "runs_dir": ray_module}


@pytest.fixture(scope="module")
def page(flow: dict[str, Any]) -> Iterator[Any]:
    """A headless Chromium page, 1400x1000."""
    with playwright_api.sync_playwright() as p:
        # Chromium keeps a Unix socket in TMPDIR (SingletonSocket, at most 107 bytes of path): under a
        # deep TMPDIR it cannot start, so it gets /tmp, as Ray does (common.sockets).
        env = {**os.environ, "TMPDIR": "/tmp"}
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"], env=env)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _shot(page: Any, flow: dict[str, Any], name: str) -> Path:
    folder = flow["runs_dir"] / "ui_screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _children(flow: dict[str, Any], run_id: str) -> list[Any]:
    return [r for r in flow["runs"] if r.data.tags.get("mlflow.parentRunId") == run_id]


def test_the_store_is_laid_out_as_the_flow(flow: dict[str, Any]) -> None:
    """Parent > trials (named by what differs) > fold fits; the ensemble under the same parent."""
    assert flow["exp"].tags["mlflow.experimentKind"] == "custom_model_development"
    children = _children(flow, flow["parent"].info.run_id)
    trials = [r for r in children if "trial_id" in r.data.tags]
    ensembles = [r for r in children if r.data.tags.get("sketchsearch.stage") == "ensemble"]
    assert len(trials) == 2 and len(ensembles) == 1
    for trial in trials:
        assert trial.info.run_name.startswith("lr="), trial.info.run_name  # quick space: lr searched
        assert trial.info.run_name != trial.data.tags["trial_id"]
        assert "epoch" not in trial.data.metrics  # the step, not a chart of its own
        folds = _children(flow, trial.info.run_id)
        assert sorted(r.info.run_name for r in folds) == ["fold 0", "fold 1", "fold 2"]
        assert all({"fold_acc", "epochs"} <= set(r.data.metrics) for r in folds)
    logged = {f.path for f in flow["client"].list_artifacts(flow["parent"].info.run_id)}
    assert {"report.html", "search_leaderboard.json", "oof_leaderboard.json"} <= logged
    assert any(p.startswith("ensemble_") and p.endswith("_methods.json") for p in logged)


def _hide_assistant(page: Any) -> None:
    """Close MLflow 3's assistant pane when it shows (it takes a third of the screen in screenshots)."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    with contextlib.suppress(playwright_api.Error):
        close.first.click(timeout=3_000)


def _expand(page: Any, run_name: str) -> None:
    """Click the +/- beside a run's name in the runs table (shows or hides its nested runs)."""
    row = page.locator("[role=row]", has_text=run_name).first
    row.locator("[col-id*='Run Name'] button").first.click()


def test_the_experiment_opens_on_the_nested_training_runs(page: Any, flow: dict[str, Any]) -> None:
    """The experiment link shows the runs table: the search; under it its trials by name and the ensemble."""
    page.goto(ui_url(flow["uri"], flow["exp"].experiment_id))
    page.get_by_text(EXPERIMENT, exact=True).first.wait_for(timeout=60_000)
    _hide_assistant(page)
    assert page.get_by_role("heading", name="Runs").count() == 1  # not the GenAI overview
    trials = sorted(
        (r for r in _children(flow, flow["parent"].info.run_id) if "trial_id" in r.data.tags),
        key=lambda r: r.info.run_name,
    )
    assert page.get_by_text(trials[0].info.run_name, exact=True).count() == 0  # nested: folded at first
    _expand(page, EXPERIMENT)
    for trial in trials:
        page.get_by_text(trial.info.run_name, exact=True).first.wait_for(timeout=30_000)
    page.get_by_text("ensemble-", exact=False).first.wait_for(timeout=30_000)
    _expand(page, trials[0].info.run_name)  # its OOF fold fits
    for fold in ("fold 0", "fold 1", "fold 2"):
        page.get_by_text(fold, exact=True).first.wait_for(timeout=30_000)
    _shot(page, flow, "experiment")


def test_a_trial_page_shows_its_metric_charts(page: Any, flow: dict[str, Any]) -> None:
    """A trial's run page charts its metrics against the epoch (the step), and no chart of ``epoch`` itself."""
    trial = next(r for r in _children(flow, flow["parent"].info.run_id) if "trial_id" in r.data.tags)
    url = ui_url(flow["uri"], flow["exp"].experiment_id, trial.info.run_id)
    page.goto(url.replace("?", "/model-metrics?"))
    search = page.get_by_placeholder("Search metric charts")
    search.wait_for(timeout=60_000)
    _hide_assistant(page)
    page.get_by_role("heading", name=trial.info.run_name).first.wait_for(timeout=30_000)
    search.fill("epoch")  # the charts whose name holds "epoch": the trial's summary, never a step chart
    page.get_by_text("best_epoch", exact=True).first.wait_for(timeout=30_000)
    assert page.get_by_text("epoch", exact=True).count() == 0
    search.fill("val_")
    page.get_by_text("val_acc", exact=True).first.wait_for(timeout=30_000)
    page.locator("svg.main-svg").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1_000)  # let the charts draw their lines before the screenshot
    assert page.get_by_text("Step", exact=True).count() >= 1  # a line chart over epochs, not a bar
    _shot(page, flow, "trial_metrics")


def test_the_leaderboard_is_a_table_in_the_parent_runs_artifacts(page: Any, flow: dict[str, Any]) -> None:
    """The parent run's Artifacts tab shows the leaderboard as a table (MLflow's "View as table")."""
    url = ui_url(flow["uri"], flow["exp"].experiment_id, flow["parent"].info.run_id)
    page.goto(url.replace("?", "/artifacts/search_leaderboard.json?"))
    page.get_by_text("View as table").first.wait_for(timeout=60_000)
    _hide_assistant(page)
    trial_id = next(r.data.tags["trial_id"] for r in _children(flow, flow["parent"].info.run_id) if "trial_id" in r.data.tags)
    page.get_by_role("cell", name=trial_id).first.wait_for(timeout=30_000)
    _shot(page, flow, "parent_leaderboard_table")


def test_the_html_report_renders_self_contained(page: Any, flow: dict[str, Any]) -> None:
    """report.html: the leaderboard, plots (data URIs), the CV table, the ensemble and the submission."""
    path = report_path(EXPERIMENT, flow["runs_dir"])
    text = path.read_text()
    assert "src='http" not in text and 'src="http' not in text and "<link" not in text
    assert ui_url(flow["uri"], flow["exp"].experiment_id, flow["parent"].info.run_id) in text  # links to MLflow
    page.goto(path.as_uri())
    for heading in ("Submission", "Leaderboard", "Plots", "Search score vs cross-validation (OOF refit)", "Ensemble"):
        page.get_by_role("heading", name=heading).wait_for(timeout=10_000)
    images = page.locator("img")
    assert images.count() >= 2
    assert all(images.nth(i).evaluate("i => i.naturalWidth > 0") for i in range(images.count()))
    _shot(page, flow, "report")

"""common.tracking against a real MLflow sqlite store: the experiment, the search's parent run, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from common.tracking import (
    DEFAULT_EXPERIMENT,
    EXPERIMENT_KIND,
    find_search_run,
    get_or_create_experiment,
    log_table,
    ui_url,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri), uri


def test_the_search_logs_to_the_default_experiment_by_default() -> None:
    defaults = OmegaConf.load(Path(__file__).parents[2] / "search" / "defaults.yaml")
    assert defaults.mlflow.experiment == DEFAULT_EXPERIMENT  # search, OOF and ensemble share one


def test_the_experiment_is_tagged_as_training_runs_when_made_or_found(store: tuple[MlflowClient, str]) -> None:
    client, uri = store
    made = get_or_create_experiment(client, "new", uri)
    assert client.get_experiment(made).tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    old = client.create_experiment("old")  # as an older version made it: no kind, so the GenAI view
    assert get_or_create_experiment(client, "old", uri) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND[0]] == "custom_model_development"


def test_find_search_run_takes_the_newest_top_level_run_of_that_search(store: tuple[MlflowClient, str]) -> None:
    client, uri = store
    exp = get_or_create_experiment(client, DEFAULT_EXPERIMENT, uri)
    assert find_search_run(client, exp, "s1") is None
    first = client.create_run(exp, tags={"experiment": "s1"}, start_time=1_000).info.run_id
    newer = client.create_run(exp, tags={"experiment": "s1"}, start_time=2_000).info.run_id
    client.create_run(exp, tags={"experiment": "s1", "mlflow.parentRunId": first}, start_time=3_000)  # a trial
    client.create_run(exp, tags={"experiment": "s2"}, start_time=4_000)
    assert find_search_run(client, exp, "s1") == newer


def test_log_table_replaces_the_table_and_lists_it_once(
    store: tuple[MlflowClient, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, uri = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # load_table searches through the global store
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    log_table(client, run, pd.DataFrame({"model": ["a", "b"], "score": [0.5, None]}), "board.json")
    log_table(client, run, pd.DataFrame({"model": ["a", "b", "c"], "score": [0.5, 0.6, 0.7]}), "board.json")
    table = json.loads(Path(client.download_artifacts(run, "board.json", str(tmp_path))).read_text())
    assert table["columns"] == ["model", "score"] and [r[0] for r in table["data"]] == ["a", "b", "c"]
    logged = json.loads(client.get_run(run).data.tags["mlflow.loggedArtifacts"])
    assert logged == [{"path": "board.json", "type": "table"}]
    # MLflow's own reader reads it back (what its UI and load_table use)
    assert list(client.load_table(exp, "board.json", run_ids=[run])["model"]) == ["a", "b", "c"]


def test_ui_url_opens_a_server_on_training_runs() -> None:
    assert ui_url("http://h:5000/", "3") == "http://h:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert ui_url("http://h:5000", "3", "r1") == "http://h:5000/#/experiments/3/runs/r1?workflowType=machine_learning"
    assert ui_url("sqlite:///x.db", "3") is None

"""``space=compete`` with a tiny budget runs the whole flow on the built-in set: plan, search, OOF, ensemble."""

from __future__ import annotations

import pandas as pd
import pytest

from common.io import read_json, runs_dir
from search.budget import IMAGE_SIZES
from search.config import read_config
from search.records import list_experiments, search_dir
from search.run import main
from trainables.features import feature_cache_dir

pytestmark = pytest.mark.slow


def test_a_tiny_budget_runs_the_compete_flow_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "space=compete",
        "budget=4m",  # 3m capped the search at 40 s: a loaded machine (3 test runs on 2 cores) cut every trial in its first epoch
        "data=synthetic",
        # the timm test model stands in for Lite0/1/2 (CI has 2 cores); every other key is compete's
        "trainable.backbone=test_efficientnet",
        "trainable.pretrained=false",
        "search.backbone=null",
        "trainable.k=3",
        "leak_audit=false",
        "experiment=compete-tiny",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "budget 4 min on" in out and "estimate:" in out  # the plan is said before the search
    folder = search_dir(runs_dir(), "compete-tiny")
    plan = (folder / "budget_plan.txt").read_text()  # and kept, as said, in the folder and the report
    assert plan.startswith("budget 4 min on") and plan.splitlines()[0] in out
    assert "<h2>Budget plan</h2>" in (folder / "report.html").read_text()
    cfg = read_config(folder / "config.yaml")
    assert cfg.trainable.image_size in IMAGE_SIZES and cfg.tune.time_budget_s <= 240
    assert "compete-tiny" in list_experiments(runs_dir())
    submission = runs_dir() / "ensembles" / "compete-tiny" / "auto" / "submission.csv"
    frame = pd.read_csv(submission)
    assert list(frame.columns) == ["ID", "image_path", "target"] and len(frame) == 240
    assert "Where everything is:" in out and str(submission) in out
    # compete freezes 3 stages: fold fits read the search's frozen-stage caches, gone once it ends
    assert "fold fits read the frozen stages' outputs the search cached" in out
    sidecars = [read_json(p) or {} for p in feature_cache_dir().glob("*.json")]
    assert not [s for s in sidecars if (s.get("spec") or {}).get("kind") == "frozen-stages"]

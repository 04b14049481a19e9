"""Deterministic errors are not retried: a real Ray search with max_failures=2 runs such a trial once.

Retries are for crashes (tests/search/test_run.py kills a worker and sees the trial resume).
``python -m search.run`` refuses these configs in its preflight, before Ray; ``run_search`` is
called directly here to get the errors into trials, as when data go bad after the check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from search.config import load_config
from search.run import failure_reason
from search.runner import run_search

pytestmark = pytest.mark.slow


def _competition_with_a_corrupt_image(root: Path) -> Path:
    """3 classes x 4 real PNGs, one of which is not an image at all."""
    rng = np.random.default_rng(0)
    rows = []
    for target, name in enumerate(["apple", "bus", "cat"]):
        for k in range(4):
            rel = f"{name}/{name}_{k}.png"
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "train" / rel)
            rows.append((name, rel, target))
    (root / "train" / "bus" / "bus_2.png").write_bytes(b"this is not a png")
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(root / "train.csv", index=False)
    return root


CASES = {
    "unknown-backbone": (
        lambda tmp: ["trainable.backbone=no_such_backbone_xyz"],
        "ValueError: unknown timm backbone 'no_such_backbone_xyz'",
    ),
    "bad-data": (
        lambda tmp: [f"data={_competition_with_a_corrupt_image(tmp / 'comp')}", "trainable.k=2"],
        "BadDataError: 1 image file(s)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_deterministic_error_runs_once_and_its_message_reaches_the_leaderboard(
    ray_local: None, tiny: list[str], tmp_path: Path, case: str
) -> None:
    overrides, expected = CASES[case]
    name = f"retry-{case}"
    argv: list[str] = [
        *tiny, "space=quick", f"experiment={name}", "search=null", "tune.points_to_evaluate=[]",
        "tune.num_samples=1", "max_failures=2", "mlflow.enabled=false", *overrides(tmp_path),
    ]  # fmt: skip
    outcome = run_search(load_config(argv))
    assert outcome.status == "failed"

    (trial_dir,) = Path(outcome.ray_path).glob("trial_*")
    # Ray appends "Failure # n" to the trial's error.txt once per failed attempt.
    failures = (trial_dir / "error.txt").read_text().count("Failure #")
    assert failures == 1, f"the trial ran {failures} times; a deterministic error must not be retried"

    board = pd.read_csv(outcome.out_dir / "leaderboard.csv")
    assert board.status.tolist() == ["error"]
    error = board.error.iloc[0]
    assert error.startswith(expected), error
    if case == "bad-data":
        assert "bus/bus_2.png" in error and "trainable.skip_bad=true" in error
    assert expected in failure_reason(outcome)  # what search.run prints last

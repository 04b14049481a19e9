"""Fixtures of the trainables tests: a small real dataset and one shared trained checkpoint."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

TINY_CLASSES = 8
TINY_TEST_ROWS = 20


def tiny_config(data: Path, **overrides: Any) -> dict[str, Any]:
    """A config that trains in seconds on CPU: a timm test model at 32 px, from scratch."""
    base: dict[str, Any] = {
        "data": str(data),
        "backbone": "test_resnet",
        "pretrained": False,
        "image_size": 32,
        "epochs": 5,
        "batch_size": 16,
        "lr": 3e-3,
        "warmup_epochs": 0,
        "num_workers": 0,
        "k": 4,
    }
    return {**base, **overrides}


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Any:
    """One intra-op thread: on 2 shared cores two OpenMP threads can run 20x slower than one."""
    torch = sys.modules.get("torch")  # never import it for the numpy-only data-layer tests
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_root() -> Path:
    """The built-in sketch set (generated once per test session under the shared RUNS_DIR)."""
    from trainables.data import load_dataset

    return Path(load_dataset("synthetic").root)


@pytest.fixture(scope="session")
def tiny_data(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 8 classes of the built-in set, in the competition layout (about 240 rows)."""
    root = tmp_path_factory.mktemp("tiny") / "tiny8"
    train = pd.read_csv(synthetic_root / "train.csv")
    train = train[train["target"] < TINY_CLASSES].reset_index(drop=True)
    for rel in train["image_path"]:
        (root / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(synthetic_root / "train" / rel, root / "train" / rel)
    test = pd.read_csv(synthetic_root / "test.csv").head(TINY_TEST_ROWS)
    for rel in test["image_path"]:
        (root / "test" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(synthetic_root / "test" / rel, root / "test" / rel)
    train.to_csv(root / "train.csv", index=False)
    test[["image_path"]].to_csv(root / "test.csv", index=False)
    return root


@pytest.fixture(scope="session")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 5-epoch fit on fold 0 of the tiny set: its config, final metrics and checkpoint."""
    from trainables import create_trainable
    from trainables.session import InlineSession

    config = tiny_config(tiny_data)
    session = InlineSession(tmp_path_factory.mktemp("trained"))
    metrics = create_trainable("timm").fit(config, session)
    return {
        "config": config,
        "metrics": metrics,
        "checkpoint": session.latest_checkpoint(),
        "session": session,
    }

"""``skip_bad``: a trial trains on the rows whose image files are readable, listing the others."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.trainables.conftest import tiny_config
from trainables import create_trainable
from trainables.checkpoint import read_meta
from trainables.data import BadDataError
from trainables.session import InlineSession

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["timm", "dino"])
def test_skip_bad_trains_without_a_truncated_png(
    name: str, tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "tiny_bad"
    shutil.copytree(tiny_data, root)
    rel = str(pd.read_csv(root / "train.csv")["image_path"][3])
    png = root / "train" / rel
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])  # a PNG cut off mid-stream
    config = tiny_config(root, epochs=1, **_dino_keys(name))
    trainable = create_trainable(name)

    with pytest.raises(BadDataError, match=Path(rel).name):
        trainable.fit(config, InlineSession(tmp_path / "strict", verbose=False))

    session = InlineSession(tmp_path / "skipping", verbose=False)
    with caplog.at_level(logging.WARNING):
        final = trainable.fit({**config, "skip_bad": True}, session)
    assert Path(rel).name in caplog.text  # the skipped file is listed in a warning
    assert final["epoch"] == 1 and np.isfinite(final["train_loss"]) and final["val_acc"] >= 0
    assert read_meta(session.latest_checkpoint())["config"]["skip_bad"] is True


def _dino_keys(name: str) -> dict[str, object]:
    """A tiny ViT for ``dino`` (its head on cached features), nothing extra for ``timm``."""
    if name != "dino":
        return {}
    return {"backbone": "test_vit", "pretrained": False, "attn_heads": 2, "mlp_hidden": 32}

"""The leaderboard as printed: every score whole, however many keys were searched."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from search.leaderboard import print_leaderboard


def _board(n_keys: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        row = {"trial_id": f"{i:08x}", "backbone": "tf_efficientnet_lite2"}
        row.update({f"aug.a_rather_long_key_{k}": float(rng.random()) for k in range(n_keys)})
        row.update({"val_acc": 0.3 + i / 100, "val_f1": 0.2, "best_epoch": 3, "epochs": 6, "status": "done"})
        row.update({"time_s": 12.5, "error": np.nan})
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values("val_acc", ascending=False)
    frame.index = pd.RangeIndex(1, 6, name="rank")
    return frame


@pytest.mark.parametrize("n_keys", [1, 12])
def test_scores_are_printed_whole_and_what_does_not_fit_is_named(
    n_keys: int, capsys: pytest.CaptureFixture[str]
) -> None:
    print_leaderboard(_board(n_keys), title="Leaderboard")
    out = capsys.readouterr().out
    for score in ("0.3400", "0.3000"):
        assert score in out, f"a score was cut:\n{out}"
    assert "…" not in out, f"rich squeezed a column:\n{out}"
    assert "lite2" in out and "tf_efficientnet_lite2" not in out
    assert "| error" not in out and "┃ error" not in out  # no error to show
    hidden = re.search(r"left out to fit \d+ columns: (.*); leaderboard.csv", out)
    if n_keys == 1:
        assert hidden is None and "a_rather_long_key_0" in out and "aug.a_rather" not in out
    else:
        assert hidden is not None and "val_f1" in hidden.group(1) and "aug.a_rather_long_key_11" in hidden.group(1)

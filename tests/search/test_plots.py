"""The search figures, drawn from real leaderboard frames: which PNGs, their sizes, readable axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from search.plots import (
    _curve_legend,
    _draw_trials,
    _numeric_axis,
    plot_ablation,
    plot_curves,
    plot_parallel,
    plot_params,
    write_plots,
)
from search.space import parse_search

SPACES = {
    "one_log_key": {"lr": {"loguniform": [3e-4, 3e-3]}},
    "one_flag": {"aug.sketch_ab": {"grid": [False, True]}},
    "quick": {"lr": {"loguniform": [3e-4, 3e-3]}, "aug.cutmix": {"choice": [0.0, 0.5]}},
    "flags_grid": {
        "aug.sketch_ab": {"grid": [False, True]},
        "aug.edge": {"grid": [False, True]},
        "aug.randaug_balance": {"grid": [False, True]},
        "aug.cutmix": {"grid": [0.0, 0.5]},
    },
    "sampled_mixed": {
        "lr": {"loguniform": [1e-5, 1e-2]},
        "weight_decay": {"uniform": [0.0, 0.1]},
        "batch_size": {"choice": [32, 64, 128]},
        "schedule": {"choice": ["cosine", "step", "plateau"]},
        "warmup_epochs": {"randint": [0, 4]},
    },
    "long_names": {
        "backbone": {"grid": ["vit_small_patch16_224.dino", "vit_small_patch14_dinov2.lvd142m"]},
        "head": {"grid": ["linear", "mlp", "attention"]},
        "finetune_blocks": {"grid": [0, 1, 2]},
    },
}
EXPECTED = {
    "one_log_key": {"params", "curves"},
    "one_flag": {"ablation", "curves"},
    "quick": {"params", "ablation", "curves"},
    "flags_grid": {"ablation", "parallel", "curves"},
    "sampled_mixed": {"params", "ablation", "parallel", "curves"},
    "long_names": {"ablation", "parallel", "curves"},
}


def _board(space: dict, n: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A leaderboard and per-epoch histories shaped like build_leaderboard's, with stopped and failed trials."""
    rng = np.random.default_rng(seed)
    rows, histories = [], {}
    dims = parse_search(space)
    for t in range(n):
        row: dict = {"trial_id": f"trial_{t:04d}_with_a_long_name"}
        for path, dim in dims.items():
            a = dim.args
            if dim.kind in ("grid", "choice"):
                row[path] = a[t % len(a)]
            elif dim.is_log:
                row[path] = float(np.exp(rng.uniform(np.log(a[0]), np.log(a[1]))))
            elif "int" in dim.kind:
                row[path] = int(rng.integers(a[0], a[1]))
            else:
                row[path] = float(rng.uniform(a[0], a[1]))
        status = ["done", "stopped", "done", "error"][t % 4] if n > 1 else "done"
        epochs = {"done": 6, "stopped": 1 + t % 3, "error": 0}[status]
        acc = 0.1 + np.cumsum(rng.uniform(0, 0.1, epochs))
        histories[row["trial_id"]] = pd.DataFrame({"epoch": np.arange(1, epochs + 1), "val_acc": acc})
        row.update(val_acc=float(acc.max()) if epochs else np.nan, epochs=epochs, status=status)
        rows.append(row)
    return pd.DataFrame(rows), histories


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("name", list(SPACES))
@pytest.mark.parametrize("n", [1, 24])
def test_write_plots_draws_what_fits_the_keys(tmp_path: Path, name: str, n: int) -> None:
    space = SPACES[name]
    board, histories = _board(space, n)
    dims = parse_search(space)
    base = {"aug.sketch_ab": False, "aug.cutmix": 0.0, "head": "linear", "batch_size": 64}
    files = write_plots(
        board, histories, dims, base, tmp_path, title=f"{name} (an-experiment-20261129-101010)"
    )
    assert {f.stem for f in files} == EXPECTED[name] and all(f.parent == tmp_path for f in files)
    for path in files:
        width, height = _size(path)
        assert 400 <= width <= 2400 and 250 <= height <= 1600, (path.name, width, height)


@pytest.mark.parametrize("name", list(SPACES))
def test_each_figure_draws_any_number_of_keys(tmp_path: Path, name: str) -> None:
    """Whatever write_plots picks, each figure also draws 1, 2 or 3+ keys of any kind."""
    board, histories = _board(SPACES[name], 9)
    dims = parse_search(SPACES[name])
    paths = [
        plot_params(board, dims, tmp_path / "params.png", mode="min"),
        plot_parallel(board, dims, tmp_path / "parallel.png"),
        plot_curves(histories, tmp_path / "curves.png"),
    ]
    if any(d.kind in ("grid", "choice") for d in dims.values()):
        paths.append(plot_ablation(board, dims, {}, tmp_path / "ablation.png", mode="min"))
    for path in paths:
        width, height = _size(path)
        assert 400 <= width <= 2400 and 250 <= height <= 1600, (path.name, width, height)


def test_nothing_is_drawn_when_no_trial_scored(tmp_path: Path) -> None:
    board, histories = _board(SPACES["quick"], 4)
    board["val_acc"] = np.nan
    assert write_plots(board, histories, parse_search(SPACES["quick"]), {}, tmp_path) == []
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bounds", [(3e-4, 3e-3), (1e-5, 1e-2), (1e-9, 3e-3), (1e-4, 2e-4)])
def test_log_axis_labels_are_few_and_never_overlap(bounds: tuple[float, float]) -> None:
    dim = parse_search({"lr": {"loguniform": list(bounds)}})["lr"]
    fig, ax = plt.subplots(figsize=(4.0, 3.3), layout="constrained")
    x = np.geomspace(*bounds, 7)
    ax.scatter(x, np.arange(7))
    _numeric_axis(ax, dim, x)
    fig.canvas.draw()
    low, high = ax.get_xlim()
    shown = [t for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    minor = [t for t in ax.get_xticklabels(minor=True) if t.get_text()]
    boxes = [t.get_window_extent() for t in shown]
    plt.close(fig)
    assert 1 <= len(shown) <= 8 and not minor, [t.get_text() for t in shown]
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), [t.get_text() for t in shown]
    assert all("10^" not in t.get_text() and "times" not in t.get_text() for t in shown)


def test_a_trial_stopped_after_one_epoch_is_a_labelled_marker() -> None:
    histories = {
        "a": pd.DataFrame({"epoch": [1, 2, 3], "val_acc": [0.2, 0.4, 0.6]}),
        "b": pd.DataFrame({"epoch": [1, 2, 3], "val_acc": [0.1, 0.3, 0.5]}),
        "c": pd.DataFrame({"epoch": [1], "val_acc": [0.15]}),
    }
    fig, ax = plt.subplots()
    counts, single = _draw_trials(ax, histories, "a", {"c": "stopped"}, 3, "val_acc")
    assert (counts, single) == ({"done": 2, "stopped": 1}, 1)
    assert len(ax.collections) == 1 and len(ax.lines) == 1  # c is a marker, b a line, a (best) skipped
    plt.close(fig)
    labels = [label for _, label in _curve_legend("best: a (0.600)", counts, single)]
    assert labels == ["best: a (0.600)", "done (2)", "stopped early (1)", "one epoch only (no line)"]


def test_curves_with_many_trials_and_min_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    histories = {
        f"t{i}": pd.DataFrame({"epoch": np.arange(1, n + 1), "loss": rng.uniform(0.5, 2.0, n)})
        for i, n in enumerate(rng.integers(1, 30, 80))
    }
    histories["never_reported"] = pd.DataFrame()
    path = plot_curves(histories, tmp_path / "curves.png", metric="loss", mode="min")
    width, height = _size(path)
    assert width < 1400 and height < 700  # the legend names statuses, not 80 trials


def test_parallel_coordinates_minimise_and_read_back_from_csv(tmp_path: Path) -> None:
    board, _ = _board(SPACES["flags_grid"], 16)
    board.to_csv(tmp_path / "leaderboard.csv", index=False)
    again = pd.read_csv(tmp_path / "leaderboard.csv")  # flags come back as bools, cutmix as floats
    path = plot_parallel(again, parse_search(SPACES["flags_grid"]), tmp_path / "p.png", mode="min")
    width, height = _size(path)
    assert 800 <= width <= 2400 and 300 <= height <= 900


def test_an_ablation_panel_above_an_empty_cell_shows_its_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three flags on a 2-column grid leave the bottom-right cell empty; the panel above it is its
    column's last, so it shows the shared score scale and its label (a compete run's aug.edge
    panel had neither: shared x had hidden them for the cell below)."""
    import search.plots as plots

    space = {k: {"choice": [False, True]} for k in ("aug.sketch_ab", "aug.edge", "aug.randaug_balance")}
    board, _ = _board(space, 9)
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or Path(path))
    plot_ablation(board, parse_search(space), {}, tmp_path / "ablation.png")
    axes = [ax for ax in drawn[0].axes if ax.get_visible() and ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in axes] == ["aug.sketch_ab", "aug.edge", "aug.randaug_balance"]
    drawn[0].canvas.draw()
    for ax in axes[1:]:  # the top-right panel and the bottom-left one end their columns
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert labels and ax.get_xlabel().startswith("best val_acc per trial"), ax.get_title(loc="left")
    assert not [t for t in axes[0].get_xticklabels() if t.get_visible() and t.get_text()]  # the one above a panel
    plt.close(drawn[0])

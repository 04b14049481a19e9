"""Parallel coordinates of a search: one vertical axis per searched key and one for the score.

Hand-rolled rather than ``pandas.plotting.parallel_coordinates``, which puts every column on one
shared linear scale: here each axis is scaled to 0..1 over its key's searched range (log keys in
log space, categorical keys one step per level) and labelled in the key's own units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from search.plot_style import is_categorical, level_index, level_name, save_figure, sci
from search.space import Dimension

Ticks = list[tuple[float, str]]


def plot_parallel(
    frame: pd.DataFrame,
    dims: Mapping[str, Dimension],
    path: str | Path,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    title: str = "",
) -> Path:
    """Each trial a line across the axes, coloured by its score; the best one outlined on top.

    Args:
        frame: The leaderboard.
        dims: The searched keys.
        path: The PNG to write.
        metric: The score column.
        mode: ``max`` or ``min``: which trial is the best.
        title: Figure title.

    Returns:
        ``path``.
    """
    data = frame.dropna(subset=[metric])
    columns, ticks = (
        zip(*(_normalize(data[key], dims[key]) for key in dims), strict=True) if dims else ((), ())
    )
    scores = data[metric].to_numpy(dtype=float)
    lo, hi = float(scores.min()), float(scores.max())
    if hi == lo:  # one score: the middle of its axis, and a colour scale around it
        lo, hi = lo - 0.01, hi + 0.01
    span = hi - lo
    matrix = np.column_stack([*columns, (scores - lo) / span])
    marks = np.linspace(lo, hi, 3) if scores.min() < scores.max() else scores[:1]
    ticks = [*ticks, [((v - lo) / span, f"{v:.3f}") for v in marks]]
    n_axes = matrix.shape[1]
    fig, ax = plt.subplots(figsize=(1.9 * n_axes + 1.8, 4.8), layout="constrained")
    cmap = plt.get_cmap("viridis" if mode == "max" else "viridis_r")
    norm = Normalize(lo, hi)
    order = np.argsort(scores if mode == "max" else -scores)  # best drawn last, on top
    xs = np.arange(n_axes)
    for i in order[:-1]:
        ax.plot(xs, matrix[i], color=cmap(norm(scores[i])), alpha=0.7, linewidth=1.2)
    top = order[-1]
    ax.plot(xs, matrix[top], color="black", linewidth=3.6, zorder=4)
    ax.plot(xs, matrix[top], color=cmap(norm(scores[top])), linewidth=2.0, zorder=5)
    ax.plot([], [], color="black", linewidth=3.6, label=f"best trial ({scores[top]:.3f}), outlined")
    _draw_axes(ax, ticks)
    names = [_axis_name(key, dim) for key, dim in dims.items()] + [f"best {metric}"]
    ax.set_xticks(xs, names, fontsize=8)
    ax.set_xlim(-0.15, n_axes - 0.35)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"best {metric}", shrink=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.14), fontsize=8, frameon=False)
    ax.set_title(title or f"{metric} over every searched key ({len(data)} trials)", loc="left", fontsize=11)
    return save_figure(fig, path)


def _normalize(values: pd.Series, dim: Dimension) -> tuple[np.ndarray, Ticks]:
    """Positions in 0..1 of a key's values on its axis, and the axis's ``(position, label)`` ticks."""
    if is_categorical(dim):
        levels = list(dim.args)
        step = 1.0 / max(len(levels) - 1, 1)
        at = [i * step if len(levels) > 1 else 0.5 for i in range(len(levels))]
        pos = np.array(
            [at[level_index(v, levels)] if level_index(v, levels) >= 0 else np.nan for v in values]
        )
        # a little jitter fans out the lines sharing a level, else the last one drawn hides the rest
        jitter = np.random.default_rng(0).uniform(-1, 1, len(pos)) * min(0.03, step * 0.15)
        return pos + jitter, [(a, level_name(v)) for a, v in zip(at, levels, strict=True)]
    x = values.astype(float).to_numpy()
    low, high = float(min(dim.args[0], np.nanmin(x))), float(max(dim.upper(), np.nanmax(x)))
    scale = np.log10 if dim.is_log else (lambda v: v)
    lo, hi = scale(low), scale(high)
    span = (hi - lo) or 1.0
    marks = np.geomspace(low, high, 4) if dim.is_log else np.linspace(low, high, 3)
    label = sci if dim.is_log else (lambda v: f"{v:.3g}")
    return (scale(x) - lo) / span, [((scale(m) - lo) / span, label(m)) for m in marks]


def _axis_name(key: str, dim: Dimension) -> str:
    # break at the dots so long dotted keys stack instead of running into the next axis
    return key.replace(".", ".\n") + ("\n(log)" if dim.is_log else "")


def _draw_axes(ax: Any, ticks: Sequence[Ticks]) -> None:
    """A vertical line per axis, its tick labels right of it on a light box (lines pass under them)."""
    box = {"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.75, "linewidth": 0}
    for x, tick in enumerate(ticks):
        ax.axvline(x, color="#404040", linewidth=0.8, zorder=1)
        for y, text in tick:
            ax.text(x + 0.04, y, text, fontsize=7, va="center", ha="left", zorder=6, bbox=box)

"""Figures of a search: score by level of each categorical key, score against each searched key,
parallel coordinates (:mod:`search.plot_parallel`), learning curves.

Every figure uses constrained layout with its legend outside the panels and is saved cropped to
its content (:func:`search.plot_style.save_figure`), so no label is clipped. :func:`write_plots`
picks the figures that fit a search's keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from search.plot_parallel import plot_parallel
from search.plot_style import (
    OTHER_COLOR,
    STATUS_COLORS,
    is_categorical,
    level_index,
    level_name,
    same_value,
    save_figure,
    sci,
    status_label,
    status_legend,
    statuses_of,
)
from search.space import Dimension

__all__ = ["plot_ablation", "plot_curves", "plot_parallel", "plot_params", "write_plots"]


def write_plots(
    frame: pd.DataFrame,
    histories: Mapping[str, pd.DataFrame],
    dims: Mapping[str, Dimension],
    base: Mapping[str, Any],
    out_dir: Path,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    title: str = "",
) -> list[Path]:
    """Every figure that fits the search; none when no trial scored.

    ``params.png`` when a key is sampled from a range, ``ablation.png`` when one is a grid or a
    choice, ``parallel.png`` for three or more keys, ``curves.png`` always.

    Args:
        frame: The leaderboard.
        histories: ``{trial_id: per-epoch frame}``.
        dims: The searched keys.
        base: The base config's value of each searched key (marked on the ablation chart).
        out_dir: Folder of the PNGs.
        metric: The score column.
        mode: ``max`` or ``min``: which way is better.
        title: Title of every figure.

    Returns:
        The PNGs written.
    """
    if frame.empty or metric not in frame or not frame[metric].notna().any():
        return []
    kw: dict[str, Any] = {"metric": metric, "mode": mode, "title": title}
    files = []
    if not all(is_categorical(d) for d in dims.values()):  # else the ablation's dots say it all
        files.append(plot_params(frame, dims, out_dir / "params.png", **kw))
    if any(is_categorical(d) for d in dims.values()):
        files.append(plot_ablation(frame, dims, base, out_dir / "ablation.png", **kw))
    if len(dims) >= 3:
        files.append(plot_parallel(frame, dims, out_dir / "parallel.png", **kw))
    statuses = dict(zip(frame["trial_id"], frame["status"], strict=True)) if "status" in frame else None
    files.append(plot_curves(histories, out_dir / "curves.png", statuses=statuses, **kw))
    return files


def plot_ablation(
    frame: pd.DataFrame,
    dims: Mapping[str, Dimension],
    base: Mapping[str, Any],
    path: str | Path,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    title: str = "",
) -> Path:
    """One panel per grid or choice key: the mean score of each of its levels, with the spread.

    Each bar is the mean over every trial that ran the level (whatever the other keys were); the
    whisker spans their min to max and the dots are the trials, coloured by status. The level the
    base config uses is grey and marked ``(base)``; the best level's bar has a black edge.

    Args:
        frame: The leaderboard.
        dims: The searched keys; only grid and choice keys get a panel.
        base: The base config's value of each searched key.
        path: The PNG to write.
        metric: The score column.
        mode: ``max`` or ``min``: which way is better.
        title: Figure title.

    Returns:
        ``path``.
    """
    keys = [k for k, d in dims.items() if is_categorical(d)]
    data = frame.dropna(subset=[metric])
    cols = min(len(keys), 2)
    heights = [
        0.42 * max(len(dims[k].args) for k in keys[r : r + cols]) + 1.3 for r in range(0, len(keys), cols)
    ]
    fig, axes = plt.subplots(
        len(heights),
        cols,
        figsize=(5.2 * cols + 0.6, sum(heights) + 0.8),
        squeeze=False,
        sharex=True,
        height_ratios=heights,
        layout="constrained",
    )
    for ax, key in zip(axes.flat, keys, strict=False):
        _ablation_panel(ax, data, key, list(dims[key].args), base, metric=metric, mode=mode)
    lo, hi = float(data[metric].min()), float(data[metric].max())
    pad = max((hi - lo) * 0.1, 0.01)
    # room right of the highest whisker for its "mean (n=..)" label; bars start at 0 when it is close
    axes[0, 0].set_xlim(lo - pad if lo - pad > 0 or lo < 0 else 0.0, hi + 4.5 * pad)
    xlabel = f"best {metric} per trial (bar: mean, whisker: min to max)"
    for ax in axes[-1, :]:
        ax.set_xlabel(xlabel, fontsize=9)
    for i in range(len(keys), axes.size):
        axes.flat[i].set_visible(False)
        # The panel above an empty cell is its column's last: shared x hid its scale, give it back.
        above = axes.flat[i - cols]
        above.tick_params(axis="x", labelbottom=True)
        above.set_xlabel(xlabel, fontsize=9)
    status_legend(fig, data)
    fig.suptitle(title or f"{metric} by level of each searched key", x=0.01, ha="left", fontsize=11)
    return save_figure(fig, path)


def _ablation_panel(
    ax: Any,
    data: pd.DataFrame,
    key: str,
    levels: list[Any],
    base: Mapping[str, Any],
    *,
    metric: str,
    mode: str,
) -> None:
    """The bars, whiskers, trial dots and labels of one key's levels, the first level on top."""
    index = np.array([level_index(v, levels) for v in data[key]])
    scores = data[metric].to_numpy(dtype=float)
    status = statuses_of(data)
    means = [scores[index == i].mean() if (index == i).any() else math.nan for i in range(len(levels))]
    finite = [m for m in means if not math.isnan(m)]
    best = means.index((max if mode == "max" else min)(finite)) if finite else -1
    is_base = [key in base and same_value(v, base[key]) for v in levels]
    rng = np.random.default_rng(0)
    y = np.arange(len(levels))[::-1]
    for i, mine in enumerate(scores[index == i] for i in range(len(levels))):
        if not len(mine):
            ax.text(
                0.01,
                y[i],
                "no trial",
                va="center",
                fontsize=8,
                color=OTHER_COLOR,
                transform=ax.get_yaxis_transform(),
            )
            continue
        ax.barh(y[i], means[i], height=0.6, color="#b0b0b0" if is_base[i] else "#4c72b0", alpha=0.85,
                edgecolor="black" if i == best else "none", linewidth=1.4)  # fmt: skip
        whisker = [[means[i] - mine.min()], [mine.max() - means[i]]]
        ax.errorbar(means[i], y[i], xerr=whisker, color="black", capsize=3, linewidth=1)
        colors = [STATUS_COLORS.get(s, OTHER_COLOR) for s in status[index == i]]
        jitter = rng.uniform(-0.18, 0.18, len(mine))
        ax.scatter(mine, y[i] + jitter, s=14, zorder=3, edgecolor="white", linewidth=0.4, color=colors)
        ax.annotate(f"{means[i]:.3f} (n={len(mine)})", (mine.max(), y[i]), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    labels = [level_name(v, 40) + ("  (base)" if b else "") for v, b in zip(levels, is_base, strict=True)]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(-0.7, len(levels) - 0.3)
    ax.set_title(key, fontsize=10, loc="left")
    ax.grid(axis="x", alpha=0.3)


def plot_params(
    frame: pd.DataFrame,
    dims: Mapping[str, Dimension],
    path: str | Path,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    title: str = "",
) -> Path:
    """One scatter per searched key: each trial's best score against the value it was given.

    Numeric keys get a numeric axis over the searched range (log where the space is log, ticks
    thinned so they never overlap), categorical keys one column per value with a little jitter.
    Colour is the trial's status, so trials a scheduler stopped early read apart from finished
    ones; a star marks the best.

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
    keys = list(dims)
    cols = min(len(keys), 3)
    rows = -(-len(keys) // cols)
    size = (4.0 * cols + 1.6, 3.3 * rows + 0.5)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, sharey=True, layout="constrained")
    data = frame.dropna(subset=[metric])
    best = data.index.get_loc(data[metric].idxmax() if mode == "max" else data[metric].idxmin())
    rng = np.random.default_rng(0)
    status = statuses_of(data)
    for ax, key in zip(axes.flat, keys, strict=False):
        dim = dims[key]
        if is_categorical(dim):
            x = np.array([level_index(v, dim.args) for v in data[key]], dtype=float)
            x += rng.uniform(-0.12, 0.12, size=len(x))
            _level_axis(ax, list(dim.args))
        else:
            x = data[key].astype(float).to_numpy()
            _numeric_axis(ax, dim, x)
        colors = [STATUS_COLORS.get(s, OTHER_COLOR) for s in status]
        ax.scatter(x, data[metric], s=28, color=colors, alpha=0.8, edgecolor="white", linewidth=0.5)
        best_xy = ([x[best]], [data[metric].iloc[best]])
        ax.scatter(*best_xy, marker="*", s=220, color="gold", edgecolor="black", zorder=5)
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"best {metric}")
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    star = Line2D([], [], marker="*", markersize=13, color="gold", markeredgecolor="black", linestyle="")
    status_legend(fig, data, extra=[(star, "best trial")])
    fig.suptitle(title or f"{metric} by searched key", x=0.01, ha="left", fontsize=11)
    return save_figure(fig, path)


def _level_axis(ax: Any, levels: list[Any]) -> None:
    """One tick per level; slanted when the names would not fit side by side."""
    names = [level_name(v) for v in levels]
    slant = sum(map(len, names)) > 28
    ax.set_xticks(range(len(levels)), names, rotation=30 if slant else 0, ha="right" if slant else "center")
    ax.set_xlim(-0.5, len(levels) - 0.5)


def _numeric_axis(ax: Any, dim: Dimension, x: np.ndarray) -> None:
    """Limits over the searched range and a few readable ticks (log keys: 1-2-3-5 steps or decades).

    matplotlib's own log axis labels minor ticks as ``3×10⁻⁴`` when the range spans under a
    decade, and they run into each other; here minor ticks carry no label.
    """
    low, high = float(min(dim.args[0], np.nanmin(x))), float(max(dim.upper(), np.nanmax(x)))
    if not dim.is_log:
        pad = (high - low) * 0.05 or 1.0
        ax.set_xlim(low - pad, high + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        return
    ax.set_xscale("log")
    ax.set_xlim(low / 1.15, high * 1.15)
    decades = math.log10(high / low)
    subs = (1.0, 2.0, 3.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3 else (1.0,)
    # past 6 decades even one label per decade crowds the axis: every other decade
    locator = (
        LogLocator(base=100, numticks=12) if decades > 6 else LogLocator(base=10, subs=subs, numticks=12)
    )
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: sci(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_curves(
    histories: Mapping[str, pd.DataFrame],
    path: str | Path,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    title: str = "",
    statuses: Mapping[str, str] | None = None,
) -> Path:
    """The metric per epoch of every trial, coloured by status; the best trial bold and named.

    A trial stopped after its first epoch has no line to draw: it is a diamond at epoch 1. The
    legend names statuses (with counts), not trials, so it stays readable with many trials.

    Args:
        histories: ``{trial_id: per-epoch frame}``.
        path: The PNG to write.
        metric: The metric on the y axis.
        mode: ``max`` or ``min`` (which trial is best).
        title: Figure title.
        statuses: ``{trial_id: status}`` from the leaderboard; without it a trial that ran fewer
            epochs than the longest one counts as stopped.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(8.5, 4.4), layout="constrained")
    scored = {
        t: h.dropna(subset=[metric])
        for t, h in histories.items()
        if metric in h and "epoch" in h and h[metric].notna().any()
    }
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda t: pick(scored[t][metric]), default=None)
    longest = max((int(h["epoch"].max()) for h in scored.values()), default=1)
    counts, single = _draw_trials(ax, scored, best, statuses or {}, longest, metric)
    if best is not None:
        hist = scored[best]
        ax.plot(hist["epoch"], hist[metric], marker="o", markersize=5, linewidth=2.6, color="black", zorder=4)
    best_label = f"best: {level_name(best)} ({pick(scored[best][metric]):.3f})" if best is not None else ""
    handles = _curve_legend(best_label, counts, single)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(longest, 12)))
    ax.set_xlim(0.6, longest + 0.4)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per epoch ({len(scored)} trials)", loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    if handles:
        fig.legend(*zip(*handles, strict=True), loc="outside right upper", fontsize=8, frameon=False)
    return save_figure(fig, path)


def _curve_legend(best_label: str, counts: Mapping[str, int], single: int) -> list[tuple[Any, str]]:
    """Legend entries of the curves: the best trial, each status with its count, the diamonds."""
    handles: list[tuple[Any, str]] = []
    if best_label:
        handles.append((Line2D([], [], color="black", linewidth=2.6, marker="o"), best_label))
    for status, n in counts.items():
        line = Line2D([], [], color=STATUS_COLORS.get(status, OTHER_COLOR), marker="o", markersize=3)
        handles.append((line, status_label(status, n)))
    if single:
        diamond = Line2D([], [], marker="D", color=OTHER_COLOR, markeredgecolor="black", linestyle="")
        # The marker's meaning, not a second count: the status entries above count these trials.
        handles.append((diamond, "one epoch only (no line)"))
    return handles


def _draw_trials(
    ax: Any,
    scored: Mapping[str, pd.DataFrame],
    best: str | None,
    statuses: Mapping[str, str],
    longest: int,
    metric: str,
) -> tuple[dict[str, int], int]:
    """Every trial but the best: a line, or a diamond for one epoch. Returns the status counts and the diamonds."""
    counts: dict[str, int] = {}
    single = 0
    for tid, hist in scored.items():
        status = statuses.get(tid) or ("done" if int(hist["epoch"].max()) >= longest else "stopped")
        counts[status] = counts.get(status, 0) + 1
        color = STATUS_COLORS.get(status, OTHER_COLOR)
        if tid == best:
            continue
        if len(hist) == 1:
            single += 1
            ax.scatter(hist["epoch"], hist[metric], marker="D", s=34, color=color, edgecolor="black",
                       linewidth=0.5, alpha=0.85, zorder=3)  # fmt: skip
        else:
            ax.plot(
                hist["epoch"], hist[metric], marker="o", markersize=3, linewidth=1.0, alpha=0.6, color=color
            )
    return counts, single

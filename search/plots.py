"""Figures of a search: ablation bars, score against each searched param, learning curves.

matplotlib with the Agg backend (no display needed); every figure is written atomically as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from common.io import atomic_path  # noqa: E402
from search.space import Dimension  # noqa: E402

_STATUS_COLORS = {"done": "#1f77b4", "stopped": "#ff7f0e", "error": "#d62728"}


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
    """Horizontal bars: the score of each flag combination, best at the top, baseline marked.

    Repeats of a combination (``num_samples`` > 1) are averaged; whiskers show their min and max.

    Args:
        frame: The leaderboard.
        dims: The searched (grid) keys.
        base: The base config's value of each searched key (what "baseline" means).
        path: The PNG to write.
        metric: The score column.
        mode: ``max`` or ``min``: which way is better.
        title: Figure title.

    Returns:
        ``path``.
    """
    keys = list(dims)
    data = frame.dropna(subset=[metric]).copy()
    data["_label"] = [_combo_label(row, keys, base) for _, row in data.iterrows()]
    stats = (
        data.groupby("_label")[metric]
        .agg(["mean", "min", "max", "count"])
        .sort_values("mean", ascending=mode == "max")
    )
    baseline = stats["mean"].get("baseline")
    height = max(2.5, 0.38 * len(stats) + 1.4)
    fig, ax = plt.subplots(figsize=(8.5, height))
    if baseline is None:
        colors = ["#4c72b0"] * len(stats)
    else:
        better = (lambda m: m >= baseline) if mode == "max" else (lambda m: m <= baseline)
        colors = [
            "#7f7f7f" if lab == "baseline" else ("#2ca02c" if better(m) else "#d62728")
            for lab, m in stats["mean"].items()
        ]
    y = np.arange(len(stats))
    repeated = bool((stats["count"] > 1).any())
    xerr = np.vstack([stats["mean"] - stats["min"], stats["max"] - stats["mean"]]) if repeated else None
    ax.barh(y, stats["mean"], color=colors, xerr=xerr, capsize=3 if repeated else 0)
    ax.set_yticks(y, stats.index)
    lo, hi = float(stats["min"].min()), float(stats["max"].max())
    pad = max((hi - lo) * 0.15, 0.01)
    ax.set_xlim(max(0.0, lo - 3 * pad), hi + 2 * pad)
    for yi, (m, top, n) in enumerate(zip(stats["mean"], stats["max"], stats["count"], strict=True)):
        # right of the whisker, so the number never sits on it
        ax.text(top + pad * 0.15, yi, f"{m:.3f}" + (f" (n={n})" if repeated else ""), va="center", fontsize=8)
    if baseline is not None:
        ax.axvline(baseline, color="#7f7f7f", linestyle="--", linewidth=1, label="baseline")
        ax.legend(
            handles=[
                matplotlib.patches.Patch(color="#2ca02c", label="as good as the baseline or better"),
                matplotlib.patches.Patch(color="#d62728", label="worse than the baseline"),
            ],
            loc="lower right",
            fontsize=8,
            frameon=False,
        )
    ax.set_xlabel(f"best {metric}" + (" (mean of repeats)" if repeated else ""))
    ax.set_title(title or f"{metric} by setting", loc="left")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


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

    Numeric keys get a numeric (log where the space is log) axis, categorical keys one column per
    value with a little jitter. Colour is the trial's status, so trials a scheduler stopped early
    read apart from finished ones; a star marks the best trial.

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
    keys = list(dims) or ["trial_id"]
    n = len(keys)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    data = frame.dropna(subset=[metric])
    best = (data[metric].idxmax() if mode == "max" else data[metric].idxmin()) if len(data) else None
    rng = np.random.default_rng(0)
    for ax, key in zip(axes.flat, keys, strict=False):
        dim = dims.get(key)
        categorical = dim is None or dim.kind in ("grid", "choice")
        if categorical:
            levels = [str(v) for v in (dim.args if dim is not None else data[key].unique())]
            x = np.array([levels.index(str(v)) if str(v) in levels else -1 for v in data[key]], dtype=float)
            x = x + rng.uniform(-0.12, 0.12, size=len(x))
            ax.set_xticks(
                range(len(levels)), levels, rotation=30 if max(map(len, levels), default=0) > 6 else 0
            )
            ax.set_xlim(-0.5, len(levels) - 0.5)
        else:
            x = data[key].astype(float).to_numpy()
            if dim.is_log:
                ax.set_xscale("log")
        for status, color in _STATUS_COLORS.items():
            mask = (data["status"] == status).to_numpy()
            if mask.any():
                ax.scatter(
                    x[mask],
                    data[metric][mask],
                    s=28,
                    color=color,
                    alpha=0.8,
                    label=status,
                    edgecolor="white",
                    linewidth=0.5,
                )
        if best is not None:
            i = data.index.get_loc(best)
            ax.scatter(
                [x[i]],
                [data[metric].iloc[i]],
                marker="*",
                s=220,
                color="gold",
                edgecolor="black",
                zorder=5,
                label="best",
            )
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"best {metric}")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(title or f"{metric} by searched param", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    return _save(fig, path)


def plot_curves(
    histories: Mapping[str, pd.DataFrame],
    path: str | Path,
    *,
    metric: str = "val_acc",
    mode: str = "max",
    title: str = "",
) -> Path:
    """The metric per epoch of every trial; the best trial bold, short lines are stopped trials.

    Args:
        histories: ``{trial_id: per-epoch frame}``.
        path: The PNG to write.
        metric: The metric on the y axis.
        mode: ``max`` or ``min`` (which trial is best).
        title: Figure title.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    scored = {t: h for t, h in histories.items() if metric in h and "epoch" in h and h[metric].notna().any()}
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda t: pick(scored[t][metric].dropna()), default=None)
    for tid, hist in scored.items():
        is_best = tid == best
        ax.plot(
            hist["epoch"],
            hist[metric],
            marker="o",
            markersize=3,
            linewidth=2.4 if is_best else 1.0,
            alpha=1.0 if is_best else 0.55,
            color="black" if is_best else None,
            label=f"{tid} (best)" if is_best else None,
            zorder=3 if is_best else 2,
        )
    epochs = [int(h["epoch"].max()) for h in scored.values()]
    if epochs:
        ax.set_xticks(range(1, max(epochs) + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per epoch ({len(scored)} trials)", loc="left")
    ax.grid(alpha=0.3)
    if best is not None:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _combo_label(row: pd.Series, keys: Sequence[str], base: Mapping[str, Any]) -> str:
    parts = []
    for key in keys:
        value, default = row[key], base.get(key)
        if _same(value, default):
            continue
        short = key.split(".")[-1]
        if isinstance(value, (bool, np.bool_)):
            parts.append(short if value else f"no {short}")
        else:
            parts.append(f"{short}={value:g}" if isinstance(value, float) else f"{short}={value}")
    return " + ".join(parts) or "baseline"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return bool(a) == bool(b) and isinstance(a, (bool, np.bool_)) == isinstance(b, (bool, np.bool_))
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def _save(fig: Any, path: str | Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        return Path(path)
    finally:
        plt.close(fig)

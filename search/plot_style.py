"""What every figure of a search shares: status colours and legend, level names, the PNG writer.

Importing this module selects matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from common.io import atomic_path  # noqa: E402
from search.space import Dimension  # noqa: E402

STATUS_COLORS = {
    "done": "#1f77b4",
    "stopped": "#ff7f0e",
    "cut": "#8c564b",
    "error": "#d62728",
    "interrupted": "#9467bd",
}
OTHER_COLOR = "#7f7f7f"
LABEL_CHARS = 24  # longest level name printed whole on a crowded axis; longer ones lose their middle
_STATUS_LABELS = {"stopped": "stopped early", "cut": "cut by time cap"}


def status_label(status: str, count: int) -> str:
    """The legend's name of a trial status, with how many trials have it."""
    return f"{_STATUS_LABELS.get(status, status)} ({count})"


def status_legend(fig: Any, data: pd.DataFrame, extra: Sequence[tuple[Any, str]] = ()) -> None:
    """A figure legend right of the panels: ``extra`` entries, then each trial status present."""
    counts = data["status"].value_counts() if "status" in data else pd.Series({"done": len(data)})
    dot = {"marker": "o", "linestyle": "", "markeredgecolor": "white"}
    handles = [*extra] + [
        (Line2D([], [], color=color, **dot), status_label(status, int(counts[status])))
        for status, color in STATUS_COLORS.items()
        if status in counts
    ]
    fig.legend(*zip(*handles, strict=True), loc="outside right upper", fontsize=8, frameon=False)


def statuses_of(data: pd.DataFrame) -> np.ndarray:
    """Each row's trial status (``done`` for a frame without the column)."""
    return data["status"].to_numpy() if "status" in data else np.array(["done"] * len(data))


def is_categorical(dim: Dimension) -> bool:
    """Whether a searched key takes listed values (grid, choice) rather than a range."""
    return dim.kind in ("grid", "choice")


def level_index(value: Any, levels: Sequence[Any]) -> int:
    """Position of ``value`` among a categorical key's levels (-1: none of them)."""
    return next((i for i, level in enumerate(levels) if same_value(value, level)), -1)


def level_name(value: Any, limit: int = LABEL_CHARS) -> str:
    """A level as an axis label: ``0.5``, ``True``, a name shortened in the middle past ``limit``."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[-keep:]}"


def sci(value: float) -> str:
    """``3e-4`` rather than ``0.0003`` or a superscript: short, and readable at small font sizes."""
    mantissa, exponent = f"{value:.1e}".split("e")
    if -3 <= int(exponent) <= 3:
        return f"{value:.2g}"
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def same_value(a: Any, b: Any) -> bool:
    """Whether a trial's value is this level: ``0`` is ``0.0``, ``True`` is not ``1``."""
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        if isinstance(a, str) or isinstance(b, str):  # a leaderboard read back from CSV gives "True"
            return str(a) == str(b)
        return bool(a) == bool(b) and isinstance(a, (bool, np.bool_)) == isinstance(b, (bool, np.bool_))
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG, atomically, cropped to its content (labels included), and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight", pad_inches=0.15)
        return Path(path)
    finally:
        plt.close(fig)

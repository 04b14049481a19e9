"""The weights chart: one horizontal bar per model and method, sized to its model names.

Horizontal bars put the model names on the y-axis, where they read left to right at full
length instead of being rotated and cut at the figure's edge; the figure grows with the number
of models (height) and the longest name (width), and the legend sits outside the axes, so it
never covers a bar.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from ensemble._evaluate import MethodResult

__all__ = ["FIXED_WEIGHTS", "weights_figure"]

FIXED_WEIGHTS = frozenset({"mean", "vote"})  # uniform by definition: nothing to show in a weights chart
_BAR_IN = 0.13  # height of one bar, inches
_GAP_IN = 0.22  # space between two models' groups, inches
_CHAR_IN = 0.075  # width of one character of a tick label at 9 pt, inches (about)
_AXES_IN = 5.5  # width of the plotting area, inches


def _label(r: MethodResult, chosen: str, best: str) -> str:
    return (
        r.name
        + ("" if r.method.blends else " (importance)")
        + (" *" if r.name == best else "")
        + (" (submitted)" if r.name == chosen else "")
    )


def weights_figure(
    experiment: str, model_ids: Sequence[str], results: Sequence[MethodResult], chosen: str, best: str
) -> Any:
    """Grouped horizontal bars of each method's weight per model; error bars = std over nested folds.

    Args:
        experiment: Named in the title.
        model_ids: One bar group per model, top to bottom in this order.
        results: The methods; ``mean`` and ``vote`` (uniform weights) are drawn as one dashed line.
        chosen: The submitted method's name (marked "(submitted)").
        best: The best nested method's name (marked "*").

    Returns:
        A matplotlib figure with constrained layout; save it with ``bbox_inches="tight"``.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.name not in FIXED_WEIGHTS]
    n_models, n_shown = len(model_ids), max(1, len(shown))
    longest = max((len(m) for m in model_ids), default=1)
    width = _AXES_IN + 2.2 + _CHAR_IN * longest  # axes + legend + names
    height = 1.3 + n_models * (n_shown * _BAR_IN + _GAP_IN)
    fig, ax = plt.subplots(figsize=(width, max(2.6, height)), layout="constrained")
    y = np.arange(n_models)
    bar = 0.8 / n_shown
    for i, r in enumerate(shown):
        std = np.std(np.vstack(r.fold_weights), axis=0) if r.fold_weights else np.zeros(n_models)
        # A weight cannot go below 0; zero-length error bars would still draw their caps.
        err = np.vstack([np.minimum(std, r.weights), std]) if std.any() else None
        ax.barh(
            y + (i - (n_shown - 1) / 2) * bar,
            r.weights,
            bar,
            xerr=err,
            capsize=2,
            label=_label(r, chosen, best),
            hatch=None if r.method.blends else "//",
        )
    fixed = [_label(r, chosen, best) for r in results if r.name in FIXED_WEIGHTS]
    ax.axvline(1.0 / n_models, color="grey", lw=0.8, ls="--", label="uniform: " + (", ".join(fixed) or "1/M"))
    ax.set_yticks(y, model_ids, fontsize=9)
    ax.invert_yaxis()  # first model on top, as in the report's table
    ax.set_xlabel("weight (importance for a meta-learner)")
    ax.set_xlim(left=0)
    title = f"{experiment}: weights per model (* best nested score; error bars: std over nested folds)"
    ax.set_title("\n".join(textwrap.wrap(title, width=int((width - 1) / 0.07))), fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    return fig

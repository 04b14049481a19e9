"""The weights chart: every name, the title and the legend inside the image; the legend off the bars."""

from __future__ import annotations

import pytest

from ensemble import create_method, evaluate_method
from ensemble._plot import weights_figure

LONG = "convnext_small.fb_in22k_ft_in1k-lr3e-4-mixup0.2-cutmix0.5-trial_00017"


def _evaluate(stack, y, folds) -> list:  # noqa: ANN001
    return [
        evaluate_method(create_method(name), stack, y, folds, "accuracy")
        for name in ("mean", "best", "logloss", "stacking")
    ]


@pytest.fixture(scope="module")
def results(digits_stack: tuple) -> list:
    return _evaluate(*digits_stack)


def _inside(inner, outer, slack: float = 0.5) -> bool:  # noqa: ANN001 - matplotlib Bboxes
    return (
        inner.x0 >= outer.x0 - slack
        and inner.y0 >= outer.y0 - slack
        and inner.x1 <= outer.x1 + slack
        and inner.y1 <= outer.y1 + slack
    )


@pytest.mark.parametrize("names", ["short", "long"])
def test_nothing_is_clipped_and_the_legend_is_off_the_bars(results: list, names: str) -> None:
    import matplotlib.pyplot as plt

    n = results[0].weights.size
    ids = [f"m{i}" for i in range(n)] if names == "short" else [f"{LONG}-{i}" for i in range(n)]
    fig = weights_figure("digits", ids, results, chosen="logloss", best="stacking")
    try:
        fig.canvas.draw()  # runs the constrained layout
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend()
        for artist in [*ax.get_yticklabels(), *ax.get_xticklabels(), ax.title, legend, ax.xaxis.label]:
            assert _inside(artist.get_window_extent(renderer), fig.bbox), artist
        # The legend lies right of the plotting area, so it covers no bar.
        assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
        assert [t.get_text() for t in ax.get_yticklabels()] == ids  # full names, not shortened
        texts = [t.get_text() for t in legend.get_texts()]
        assert "logloss (submitted)" in texts and "stacking (importance) *" in texts
        assert any(t.startswith("uniform: mean") for t in texts)
    finally:
        plt.close(fig)


def test_figure_grows_with_names_and_models(results: list, digits_oof) -> None:  # noqa: ANN001
    import matplotlib.pyplot as plt

    from ensemble import ProbStack, find_artifacts

    n = results[0].weights.size
    two = ProbStack.from_artifacts(find_artifacts(digits_oof.experiment, root=digits_oof.root)[:2])
    short = weights_figure("e", [f"m{i}" for i in range(n)], results, "mean", "mean")
    long = weights_figure("e", [f"{LONG}-{i}" for i in range(n)], results, "mean", "mean")
    few = weights_figure("e", ["m0", "m1"], _evaluate(two, digits_oof.y, digits_oof.folds), "mean", "mean")
    try:
        assert long.get_figwidth() > short.get_figwidth() + 3
        assert short.get_figheight() > few.get_figheight()
    finally:
        for fig in (short, long, few):
            plt.close(fig)

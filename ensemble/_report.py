"""Outputs of an ensemble run: submission, weights JSON, markdown report, weights chart, console table.

Every file is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common.console import make_console
from common.io import atomic_path, atomic_write_text
from ensemble._evaluate import MethodResult
from ensemble._metrics import METRICS
from ensemble._select import Choice
from ensemble.artifacts import Artifact, _jsonable
from ensemble.submission import write_submission

__all__ = ["RunSummary", "comparison_rows", "print_comparison", "write_outputs"]


@dataclass
class RunSummary:
    """Everything an ensemble run reports.

    Attributes:
        experiment: Experiment name (the artifacts' directory).
        metric: The metric of every score.
        artifacts: The models ensembled, in weight order.
        results: Every method evaluated, baselines first.
        chosen: The method whose predictions make the submission.
        winner: The method with the best nested estimate.
        test_labels: Predicted class index per test row (None without a submission).
        excluded: Model ids left out (no test probabilities).
        test_proba: The chosen method's (n_test, C) test probabilities (None without a submission).
        choice: How ``chosen`` was picked (the one-standard-error rule's scores and verdict).
    """

    experiment: str
    metric: str
    artifacts: list[Artifact]
    results: list[MethodResult]
    chosen: MethodResult
    winner: MethodResult
    test_labels: np.ndarray | None = None
    excluded: Sequence[str] = ()
    test_proba: np.ndarray | None = None
    choice: Choice | None = None

    @property
    def model_ids(self) -> list[str]:
        return [a.model_id for a in self.artifacts]

    @property
    def weighs(self) -> bool:
        """Whether there is anything to weigh: more than one model (one model is its own submission)."""
        return len(self.artifacts) > 1

    def result(self, name: str) -> MethodResult | None:
        return next((r for r in self.results if r.name == name), None)


def _fmt(value: float | None, digits: int = 4) -> str:
    # round() + 0.0 turns -0.0 into 0.0, so a zero gap never prints as "-0.0000"
    return "-" if value is None else f"{round(value, digits) + 0.0:.{digits}f}"


def _signed(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{round(value, digits) + 0.0:+.{digits}f}"


def comparison_rows(summary: RunSummary) -> list[dict[str, Any]]:
    """One row per method: in-sample, nested mean/std, optimism gap and gain over the best single model."""
    sign = 1.0 if METRICS[summary.metric] else -1.0
    best = summary.result("best")
    base = None if best is None else best.nested_mean
    rows = []
    for r in summary.results:
        rows.append(
            {
                "method": r.name,
                "in_sample": r.in_sample,
                "nested_mean": r.nested_mean,
                "nested_std": r.nested_std,
                # Positive = in-sample looks better than it is out of sample.
                "optimism": None if r.nested_mean is None else sign * (r.in_sample - r.nested_mean),
                "gain_vs_best_single": None
                if (base is None or r.nested_mean is None)
                else sign * (r.nested_mean - base),
                "fit_seconds": r.fit_seconds,
                "nested_seconds": r.nested_seconds,
                "within_one_se": summary.choice is not None and r.name in summary.choice.eligible,
            }
        )
    return rows


# The comparison's columns, and the order they are left out in when the console is too narrow
# (rich would otherwise squeeze every header to a few characters, "in-samp…", "nest…").
_COLUMNS = ("method", "in-sample", "nested", "± std", "1 SE", "optimism", "Δ best", "fit s", "nested s")
_DROPPABLE = ("nested s", "fit s", "optimism", "in-sample", "± std")


def print_comparison(summary: RunSummary, file: Any = None) -> None:
    """Print the comparison table with rich (to stdout unless ``file`` is given).

    The table fits the console: the timing and optimism columns are left out first, with a line
    naming them (report.md has every column).
    """
    console = make_console(file=file)
    rows = comparison_rows(summary)
    shown = list(_COLUMNS)
    droppable = list(_DROPPABLE)
    table = _comparison_table(summary, rows, shown)
    unbounded = console.options.update_width(10_000)  # measure() is capped at the console's width
    while droppable and console.measure(table, options=unbounded).maximum > console.width:
        shown.remove(droppable.pop(0))
        table = _comparison_table(summary, rows, shown)
    console.print(table)
    hidden = [c for c in _COLUMNS if c not in shown]
    if hidden:
        console.print(f"(left out to fit {console.width} columns: {', '.join(hidden)}; report.md has every column)")
    if summary.choice is not None:
        # The markdown's **bold** as rich's markup; the method names need no escaping.
        parts = summary.choice.reason().split("**")
        console.print("".join(f"[bold]{p}[/]" if i % 2 else p for i, p in enumerate(parts)), highlight=False)


def _comparison_table(summary: RunSummary, rows: list[dict[str, Any]], shown: list[str]) -> Any:
    from rich.table import Table

    direction = "higher" if METRICS[summary.metric] else "lower"
    table = Table(
        title=f"{summary.experiment}: {summary.metric}, {direction} is better",
        caption="nested: fit on K-1 folds, scored on the held-out fold; bold: best nested score; "
        "1 SE: within one standard error of it; ✓: submitted",
    )
    for col in shown:
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for row in rows:
        name = row["method"]
        cells = {
            "method": name + (" ✓" if name == summary.chosen.name else ""),
            "in-sample": _fmt(row["in_sample"]),
            "nested": _fmt(row["nested_mean"]),
            "± std": _fmt(row["nested_std"]),
            "1 SE": "yes" if row["within_one_se"] else "",
            "optimism": _fmt(row["optimism"]),
            "Δ best": _signed(row["gain_vs_best_single"]),
            "fit s": f"{row['fit_seconds']:.1f}",
            "nested s": f"{row['nested_seconds']:.1f}",
        }
        table.add_row(*(cells[c] for c in shown), style="bold green" if name == summary.winner.name else None)
    return table


def _verdict(summary: RunSummary) -> str:
    if summary.choice is not None:
        return summary.choice.reason()
    w, m = summary.winner, summary.metric
    if w.nested_mean is None:
        return f"Nested CV was not run; by in-sample {m} the best method is **{w.name}** ({w.in_sample:.4f})."
    text = f"Out of sample, **{w.name}** wins: nested {m} {w.nested_mean:.4f} ± {w.nested_std:.4f}"
    extras = []
    for label, name in (("best single model", "best"), ("plain mean", "mean")):
        r = summary.result(name)
        if r is not None and r.name != w.name and r.nested_mean is not None:
            extras.append(f"{label} {r.nested_mean:.4f}")
    if extras:
        text += " (vs " + ", ".join(extras) + ")"
    text += "."
    if summary.chosen.name != w.name:
        c = summary.chosen
        text += f" The submission uses **{c.name}** as requested (nested {_fmt(c.nested_mean)})."
    return text


def report_markdown(summary: RunSummary) -> str:
    """The markdown report: the run's facts, the methods compared, the models' weights, the files."""
    lines = _report_header(summary) + _methods_table(summary) + _models_table(summary)
    chosen = summary.chosen
    lines += ["", "## Weights", ""]
    if not summary.weighs:
        lines += ["One model: its predictions are the submission, with nothing to weigh (no chart).", ""]
    else:
        if not chosen.method.blends:
            lines += [
                f"`{chosen.name}` is a meta-learner: its numbers are per-model importances, not blend weights.",
                "",
            ]
        lines += ["![weights](weights.png)", ""]
    lines += [
        "## Files",
        "",
        "- `submission.csv`: `ID,image_path,target` in test.csv order (target = class index, `classes[target]`)",
        "- `test_proba.npy`: the submitted method's test probabilities (n_test, C), float32, test.csv order",
        "- `weights.json`: weights and scores of every method",
        *(["- `weights.png`: the weights chart"] if summary.weighs else []),
        "",
    ]
    return "\n".join(lines)


def _report_header(summary: RunSummary) -> list[str]:
    """The title, the run's facts and the verdict."""
    a0 = summary.artifacts[0]
    lines = [
        f"# Ensemble report: {summary.experiment}",
        "",
        f"- Created: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- Metric: {summary.metric} ({'higher' if METRICS[summary.metric] else 'lower'} is better)",
        f"- Models: {len(summary.artifacts)}; train rows: {a0.n_train}; classes: {a0.n_classes}; "
        f"folds: {np.unique(a0.folds).size}; test rows: {a0.n_test}",
        f"- Submitted method: **{summary.chosen.name}**",
    ]
    if summary.excluded:
        lines.append(f"- Excluded (no test probabilities): {', '.join(summary.excluded)}")
    return lines + ["", _verdict(summary)]


def _methods_table(summary: RunSummary) -> list[str]:
    """How the scores were taken, and every method's in-sample and nested scores."""
    lines = [
        "",
        "In-sample scores are fit and scored on the same OOF rows; nested scores fit each method on",
        "K-1 of the models' folds and score it on the held-out fold (mean ± std over folds).",
        "The submission is chosen on the nested column (the rule above); the optimism column is how much",
        "in-sample flatters a method.",
        "",
        "## Methods",
        "",
        "| method | in-sample | nested mean | nested std | within 1 SE | optimism | vs best single | fit s | nested s |",
        "|---|---:|---:|---:|:---:|---:|---:|---:|---:|",
    ]
    for row in comparison_rows(summary):
        gain = row["gain_vs_best_single"]
        lines.append(
            f"| {row['method']} | {_fmt(row['in_sample'])} | {_fmt(row['nested_mean'])} | {_fmt(row['nested_std'])} "
            f"| {'yes' if row['within_one_se'] else ''} "
            f"| {_fmt(row['optimism'])} | {_signed(gain)} "
            f"| {row['fit_seconds']:.1f} | {row['nested_seconds']:.1f} |"
        )
    return lines


def _models_table(summary: RunSummary) -> list[str]:
    """Each model's weight (or importance) in the submitted method, its spread over folds and its own scores."""
    chosen = summary.chosen
    kind = "weight" if chosen.method.blends else "importance"
    best = summary.result("best")
    singles = getattr(best.method, "model_scores_", None) if best is not None else None
    lines = [
        "",
        "## Models",
        "",
        f"| model | {chosen.name} {kind} | fold-to-fold {kind} std | OOF {summary.metric} | reported CV | MLflow run |",
        "|---|---:|---:|---:|---:|---|",
    ]
    fold_std = np.std(np.vstack(chosen.fold_weights), axis=0) if chosen.fold_weights else None
    for m, a in enumerate(summary.artifacts):
        cv = "-" if a.cv_mean is None else f"{a.cv_mean:.4f} ± {a.cv_std or 0:.4f} ({a.metric})"
        lines.append(
            f"| {a.model_id} | {chosen.weights[m]:.4f} | {'-' if fold_std is None else f'{fold_std[m]:.4f}'} "
            f"| {'-' if singles is None else f'{singles[m]:.4f}'} | {cv} | {a.mlflow_run_id or '-'} |"
        )
    return lines


def weights_document(summary: RunSummary) -> dict[str, Any]:
    """The weights JSON: the submitted method's weights first, then every method's details."""
    ids = summary.model_ids

    def describe(r: MethodResult) -> dict[str, Any]:
        return {
            "kind": "weights" if r.method.blends else "importances",
            "weights": dict(zip(ids, map(float, r.weights), strict=True)),
            "in_sample": r.in_sample,
            "nested_mean": r.nested_mean,
            "nested_std": r.nested_std,
            "fold_scores": r.fold_scores,
            "fold_weights": [list(map(float, w)) for w in r.fold_weights],
            "params": _jsonable(r.method.get_params()),
            "fit_seconds": r.fit_seconds,
        }

    return {
        "experiment": summary.experiment,
        "metric": summary.metric,
        "method": summary.chosen.name,
        "winner_out_of_sample": summary.winner.name,
        "choice": None if summary.choice is None else _choice_document(summary.choice),
        "models": ids,
        "classes": list(summary.artifacts[0].classes),
        "weights": dict(zip(ids, map(float, summary.chosen.weights), strict=True)),
        "source_runs": {a.model_id: a.mlflow_run_id for a in summary.artifacts if a.mlflow_run_id},
        "excluded": list(summary.excluded),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "methods": {r.name: describe(r) for r in summary.results},
    }


def _choice_document(choice: Choice) -> dict[str, Any]:
    return {
        "rule": choice.rule,
        "best_nested": choice.best.name,
        "standard_error": choice.se,
        "threshold": choice.threshold,
        "within_one_se": choice.eligible,
        "requested": choice.requested,
        "reason": choice.reason().replace("**", ""),
    }


def plot_weights(summary: RunSummary, path: Path) -> Path:
    """The weights chart (:func:`ensemble._plot.weights_figure`), written atomically, nothing clipped."""
    import matplotlib.pyplot as plt

    from ensemble._plot import weights_figure

    fig = weights_figure(
        summary.experiment, summary.model_ids, summary.results, summary.chosen.name, summary.winner.name
    )
    with atomic_path(path) as tmp:
        # bbox_inches="tight": the saved image grows to hold the legend and the longest name.
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_outputs(summary: RunSummary, out_dir: Path) -> dict[str, Path]:
    """Write submission.csv (when there are test labels), weights.json, report.md and weights.png
    (with more than one model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if summary.test_labels is not None:
        paths = summary.artifacts[0].test_image_paths or [str(i) for i in range(len(summary.test_labels))]
        files["submission"] = write_submission(out_dir / "submission.csv", paths, summary.test_labels)
    if summary.test_proba is not None:
        with atomic_path(out_dir / "test_proba.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(summary.test_proba, dtype=np.float32), allow_pickle=False)
        files["test_proba"] = out_dir / "test_proba.npy"
    files["weights"] = atomic_write_text(
        out_dir / "weights.json", json.dumps(weights_document(summary), indent=1) + "\n"
    )
    if summary.weighs:  # one model's chart would be one bar at 1
        files["plot"] = plot_weights(summary, out_dir / "weights.png")
    else:
        (out_dir / "weights.png").unlink(missing_ok=True)  # a rerun's stale chart
    files["report"] = atomic_write_text(out_dir / "report.md", report_markdown(summary))
    return files

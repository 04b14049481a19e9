"""What a refit reports: its ``leaderboard.csv`` and the terminal table of its models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from common.console import make_console
from common.io import atomic_path

if TYPE_CHECKING:
    from search.oof import OofOutcome

__all__ = ["print_summary", "save_leaderboard"]


def print_summary(outcome: OofOutcome, *, where: bool = True) -> None:
    """A table of the refit models and (``where``) where their files are."""
    from rich.table import Table

    console = make_console()
    table = Table(title=f"OOF refit: {outcome.experiment}", title_justify="left", header_style="bold")
    for column in ("model", "search", "cv mean", "cv std", "oof acc", "epochs", "status"):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for r in outcome.results:
        status = "done" if r.complete else f"missing folds {r.missing_folds}"
        table.add_row(
            r.model.model_id,
            f"{r.model.search_score:.4f}",
            _fmt(r.cv_mean),
            _fmt(r.cv_std),
            _fmt(r.oof_accuracy),
            str(r.model.epochs),
            status,
        )
    console.print(table)
    if not where:
        return
    console.print(f"artifacts:   {outcome.out_dir}", highlight=False)
    for r in outcome.results:
        if r.submission:
            console.print(f"submission:  {r.submission}", highlight=False)
    if outcome.tracking_uri:
        console.print(f"mlflow store: {outcome.tracking_uri}", highlight=False)
    if outcome.complete:
        console.print(
            f"ensemble them: python -m ensemble.optimize --experiment {outcome.experiment}",
            highlight=False,
        )


def save_leaderboard(outcome: OofOutcome) -> Path:
    """Write ``<out_dir>/leaderboard.csv``: one row per refit model, atomically; return its path."""
    rows = [
        {
            "model_id": r.model.model_id,
            "trial_id": r.model.trial_id,
            "backbone": r.model.backbone,
            "search_score": r.model.search_score,
            "cv_mean": r.cv_mean,
            "cv_std": r.cv_std,
            "oof_acc": r.oof_accuracy,
            "epochs": r.model.epochs,
            "complete": r.complete,
            "artifact": str(r.directory),
            "submission": str(r.submission) if r.submission else "",
            "mlflow_run_id": r.mlflow_run_id or "",
        }
        for r in outcome.results
    ]
    frame = pd.DataFrame(rows)
    outcome.out_dir.mkdir(parents=True, exist_ok=True)
    path = outcome.out_dir / "leaderboard.csv"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

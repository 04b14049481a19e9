"""The leaderboard of a search: one row per trial, best first; printed with rich, saved as CSV."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence, Set
from pathlib import Path
from typing import Any

import pandas as pd

from common.console import make_console
from common.io import atomic_path
from search.failures import describe_error
from search.space import select

TRIAL_DIR_PREFIX = "trial_"
ERROR_SHOWN = 300  # characters of an error shown in the printed table
STATUS_DONE, STATUS_STOPPED, STATUS_ERROR, STATUS_INTERRUPTED = "done", "stopped", "error", "interrupted"
STATUS_CUT = "cut"  # ended before its schedule by the search's time cap (tune.time_budget_s), not judged


def ray_statuses(experiment_path: str) -> dict[str, str]:
    """Ray's saved status of each trial (``TERMINATED``, ``ERROR``, ``RUNNING``, ``PAUSED``, ``PENDING``).

    Read from the experiment state on disk, written before Tune's cleanup: after a Ctrl-C the
    trials in memory have been stopped, but the saved state still says which ones were running.

    Args:
        experiment_path: Ray Tune's experiment directory (path or URI).

    Returns:
        ``{trial_id: status}``; empty when the state cannot be read (then only errors and epoch
        counts decide a trial's status).
    """
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(experiment_path).trials
    except Exception:  # an unreadable state must not cost the leaderboard
        return {}
    return {str(t.trial_id): str(t.status) for t in trials}


def trial_histories(results: Iterable[Any]) -> dict[str, pd.DataFrame]:
    """Per-trial metric history (one row per reported epoch) from a Ray ``ResultGrid``.

    Args:
        results: A ``ResultGrid`` (or any iterable of ``ray.tune.Result``).

    Returns:
        ``{trial_id: DataFrame}``; an empty frame for a trial that never reported.
    """
    out: dict[str, pd.DataFrame] = {}
    for result in results:
        frame = result.metrics_dataframe
        frame = frame.copy() if frame is not None else pd.DataFrame()
        if "epoch" in frame:
            # a trial retried from a checkpoint may re-report an epoch; the last report counts
            frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
        out[_trial_id(result)] = frame
    return out


def build_leaderboard(
    results: Iterable[Any],
    searched: Sequence[str],
    *,
    metric: str = "val_acc",
    mode: str = "max",
    max_epochs: int | None = None,
    histories: Mapping[str, pd.DataFrame] | None = None,
    statuses: Mapping[str, str] | None = None,
    ended: Set[str] | None = None,
) -> pd.DataFrame:
    """One row per trial: id, the searched params, best score and the epoch it came at, status.

    Args:
        results: A Ray ``ResultGrid``.
        searched: Dotted keys of the searched params (columns, in this order).
        metric: The metric to rank by; its best value over epochs is the trial's score.
        mode: ``max`` or ``min``.
        max_epochs: Epochs a full trial runs; a trial that ran fewer without error is ``stopped``.
        histories: Output of :func:`trial_histories` when already computed.
        statuses: Ray's trial statuses (:func:`ray_statuses`); a trial neither terminated nor
            errored (the search was interrupted) is ``interrupted``.
        ended: Trials that Tune completed normally (:mod:`search.trial_ends`); a short trial
            missing from it was ``cut`` by the time cap rather than ``stopped`` by the scheduler.
            None: no record, every short trial is ``stopped``.

    Returns:
        A frame ranked best first (index ``rank`` from 1), columns ``trial_id``, the searched
        params, ``<metric>``, ``val_acc`` and ``val_f1`` (at the best epoch), ``best_epoch``, ``epochs``,
        ``status`` (done, stopped, cut, error, interrupted), ``time_s``, ``error``.
    """
    results = list(results)
    histories = dict(histories) if histories is not None else trial_histories(results)
    rows = [
        _trial_row(
            result, histories, searched, metric, mode, max_epochs, (statuses or {}).get(_trial_id(result)), ended
        )
        for result in results
    ]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="rank")
    return frame


def _trial_row(
    result: Any,
    histories: Mapping[str, pd.DataFrame],
    searched: Sequence[str],
    metric: str,
    mode: str,
    max_epochs: int | None,
    ray_status: str | None,
    ended: Set[str] | None,
) -> dict[str, Any]:
    """One trial's leaderboard row: its searched params, scores at its best epoch, status and time."""
    tid = _trial_id(result)
    hist = histories.get(tid, pd.DataFrame())
    config = result.config or {}
    row: dict[str, Any] = {"trial_id": tid}
    for path in searched:
        row[path] = select(config, path)
    best = _best_row(hist, metric, mode)
    row[metric] = to_float(best.get(metric)) if best is not None else math.nan
    for extra in ("val_acc", "val_f1"):  # the scores at the chosen epoch, whatever ranks them
        if extra != metric:
            row[extra] = to_float(best.get(extra)) if best is not None else math.nan
    row["best_epoch"] = _int(best.get("epoch")) if best is not None else None
    epochs = _int(hist["epoch"].max()) if "epoch" in hist and len(hist) else 0
    row["epochs"] = epochs
    if result.error is not None or ray_status == "ERROR":
        row["status"] = STATUS_ERROR
    elif ray_status not in (None, "TERMINATED"):
        row["status"] = STATUS_INTERRUPTED
    elif max_epochs is not None and epochs < max_epochs:
        row["status"] = STATUS_CUT if ended is not None and tid not in ended else STATUS_STOPPED
    else:
        row["status"] = STATUS_DONE
    row["time_s"] = (
        round(float(hist["time_total_s"].max()), 1) if "time_total_s" in hist and len(hist) else None
    )
    row["error"] = describe_error(result.error)
    return row


def total_epochs(histories: Mapping[str, pd.DataFrame]) -> int:
    """Trial-epochs spent by a search: the sum over trials of the epochs each ran."""
    return int(sum(int(h["epoch"].max()) for h in histories.values() if "epoch" in h and len(h)))


def save_leaderboard(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the leaderboard as CSV (with the ``rank`` column), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=True)
    return Path(path)


def print_leaderboard(
    frame: pd.DataFrame, *, title: str = "Leaderboard", metric: str = "val_acc", limit: int = 30
) -> None:
    """Print the leaderboard as a rich table (best ``limit`` rows), the best row highlighted.

    The table must fit the console: rich squeezes every column of a too-wide table to a few
    characters, scores included. So headers are the last part of a dotted key, backbone names
    lose their family prefix, and when it is still too wide the least useful columns are left
    out (the secondary metrics first, then the searched keys from the last), with a line naming
    them; ``leaderboard.csv`` keeps every column.
    """
    console = make_console()
    if frame.empty:
        console.print(f"[bold]{title}[/]: no trials")
        return
    # A CSV's empty cell reads back as NaN, which is truthy: only a message counts as an error.
    errors = "error" in frame and frame["error"].map(lambda v: isinstance(v, str) and v != "").any()
    columns = [c for c in frame.columns if c != "error" or errors]
    rows = frame.head(limit)
    searched = columns[1 : columns.index(metric)] if metric in columns and "trial_id" in columns else []
    droppable = [c for c in ("val_f1", "time_s", "best_epoch", "error") if c in columns and c != metric]
    droppable += [c for c in reversed(searched) if c != "backbone"]
    shown = list(columns)
    table = _leaderboard_table(rows, shown, title, metric)
    unbounded = console.options.update_width(10_000)  # measure() is capped at the console's width
    while droppable and console.measure(table, options=unbounded).maximum > console.width:
        shown.remove(droppable.pop(0))
        table = _leaderboard_table(rows, shown, title, metric)
    console.print(table)
    hidden = [c for c in columns if c not in shown]
    if hidden:
        console.print(f"(left out to fit {console.width} columns: {', '.join(hidden)}; leaderboard.csv has every column)")
    if len(frame) > limit:
        console.print(f"... {len(frame) - limit} more rows in the CSV")


def _leaderboard_table(rows: pd.DataFrame, columns: Sequence[str], title: str, metric: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right")
    lasts = [c.rsplit(".", 1)[-1] for c in columns]
    for column, last in zip(columns, lasts, strict=True):
        numeric = pd.api.types.is_numeric_dtype(rows[column])
        header = last if lasts.count(last) == 1 else column  # aug.cutmix -> cutmix, unless ambiguous
        table.add_column(header, justify="right" if numeric else "left", no_wrap=column != "error")
    for rank, row in rows.iterrows():
        cells = [str(rank)] + [_cell(row[c], c == metric) for c in columns]
        for i, column in enumerate(columns, start=1):
            if column == "backbone":
                cells[i] = short_backbone(cells[i])
            if column == "error" and len(cells[i]) > ERROR_SHOWN:  # the CSV keeps the whole message
                cells[i] = cells[i][: ERROR_SHOWN - 3] + "..."
        table.add_row(*cells, style="bold green" if rank == 1 else None)
    return table


def short_backbone(name: str) -> str:
    """``tf_efficientnet_lite0`` -> ``lite0``: the part that differs between the offline backbones."""
    return name.replace("tf_efficientnet_", "")


def _best_row(hist: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    if metric not in hist or hist[metric].notna().sum() == 0:
        return None
    idx = hist[metric].idxmax() if mode == "max" else hist[metric].idxmin()
    return hist.loc[idx]


def _trial_id(result: Any) -> str:
    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return str(tid)
    # A trial that never reported has no metrics; search.run names its directory trial_<trial_id>.
    return Path(str(result.path)).name.removeprefix(TRIAL_DIR_PREFIX)


def _cell(value: Any, is_metric: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if is_metric:
            return f"{value:.4f}"
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def to_float(value: Any) -> float:
    """``float(value)``, or NaN for what is not a number (a CSV's empty cell, None, text)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

"""One self-contained HTML page per search: ``runs/search/<experiment>/report.html``.

It gathers what the search and its stages wrote (the leaderboard, the plots, the leak audit, the
OOF search-vs-CV table, the ensemble's methods and weights, where the submission is) into a page
with no external assets (images are base64 data URIs), so it can be mailed or opened offline. It
is rewritten after the search and after every stage, and logged to the search's MLflow parent run
with the tables MLflow's UI browses.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from common.io import atomic_write_text, runs_dir
from search.records import PLAN_FILE

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
# Where `mlflow ui` serves a local store by default.
LOCAL_UI = "http://127.0.0.1:5000"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;padding:1em;overflow:auto}
.muted{color:#777}code{background:#f4f4f4;padding:0 .2em}
"""


def report_path(experiment: str, runs: Path | None = None) -> Path:
    """Where the report of search ``experiment`` is written."""
    return (runs or runs_dir()) / "search" / experiment / REPORT_FILE


def write_report(experiment: str, runs: Path | None = None, mlflow_url: str | None = None) -> Path:
    """Write (or rewrite) the search's HTML report from the files its stages left.

    Args:
        experiment: The search's name (its folder under ``<runs>/search``).
        runs: The runs folder (default ``$RUNS_DIR``).
        mlflow_url: The search's page in the MLflow UI, linked from the report (None: not linked).

    Returns:
        The report's path.

    Raises:
        FileNotFoundError: The search folder does not exist.
    """
    runs = runs or runs_dir()
    folder = runs / "search" / experiment
    if not folder.is_dir():
        raise FileNotFoundError(f"no search folder {folder}; run the search first (python -m search.run)")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<h1>Search <code>{_e(experiment)}</code></h1>",
        f"<p class='muted'>written {when} from {_e(folder)}</p>",
        f"<p>MLflow: <a href='{_e(mlflow_url)}'>{_e(mlflow_url)}</a></p>" if mlflow_url else "",
        _submission_section(runs, experiment),
        _text_section("Budget plan", folder / PLAN_FILE),
        _table_section("Leaderboard", folder / "leaderboard.csv"),
        _plots_section(folder),
        _table_section(
            "Search score vs cross-validation (OOF refit)",
            runs / "oof" / experiment / "leaderboard.csv",
            drop=("artifact", "submission", "mlflow_run_id"),  # long paths and ids: in the CSV
        ),
        _ensemble_section(runs / "ensembles" / experiment),
        _text_section("Leak audit", folder / "leak_audit.txt"),
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>sketchsearch: {_e(experiment)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(p for p in parts if p)
        + "</body></html>\n"
    )
    return atomic_write_text(folder / REPORT_FILE, page)


def tables(experiment: str, runs: Path | None = None) -> dict[str, pd.DataFrame]:
    """The report's tables by MLflow artifact name (``search_leaderboard.json``, ...), those that exist."""
    runs = runs or runs_dir()
    found: dict[str, pd.DataFrame] = {}
    for name, path in (
        ("search_leaderboard.json", runs / "search" / experiment / "leaderboard.csv"),
        ("oof_leaderboard.json", runs / "oof" / experiment / "leaderboard.csv"),
    ):
        if path.is_file():
            found[name] = pd.read_csv(path)
    for weights in sorted((runs / "ensembles" / experiment).glob("*/weights.json")):
        found[f"ensemble_{weights.parent.name}_methods.json"] = _methods_frame(json.loads(weights.read_text()))
    return found


def publish(outcome: Any, runs: Path | None = None) -> Path | None:
    """Rewrite the report and log it, with the tables, to the search's MLflow parent run (if tracked).

    Args:
        outcome: The search's :class:`search.runner.SearchOutcome` (experiment, tracking URI, parent run).
        runs: The runs folder (default ``$RUNS_DIR``).

    Returns:
        The report's path, or None when it could not be written (a warning says why).
    """
    uri, parent = getattr(outcome, "tracking_uri", None), getattr(outcome, "parent_run_id", None)
    try:
        path = write_report(str(outcome.experiment), runs, mlflow_url=search_page(uri, parent))
    except (OSError, ValueError) as err:  # a report is a convenience: never fail a stage over it
        log.warning("the HTML report of %s was not written: %s", outcome.experiment, err)
        return None
    if uri and parent:
        from common.tracking import log_table
        from search.tracking import Tracker

        tracker = Tracker(str(uri))
        tracker.call(lambda c: c.log_artifact(parent, str(path)))
        for name, frame in tables(str(outcome.experiment), runs).items():
            tracker.call(lambda c, f=frame, n=name: log_table(c, parent, f, n))
        tracker.flush()
    return path


def search_page(uri: str | None, parent_run_id: str | None, local_ui: str = LOCAL_UI) -> str | None:
    """The search's parent run in the MLflow UI, opened on training runs (see :func:`common.tracking.ui_url`).

    Args:
        uri: The tracking URI; a local store is shown by ``mlflow ui`` at ``local_ui``.
        parent_run_id: The search's parent run.
        local_ui: Where ``mlflow ui`` serves a local store (its default address).

    Returns:
        The address, or None when untracked or the store does not answer.
    """
    if not (uri and parent_run_id):
        return None
    from common.tracking import ui_url
    from search.tracking import Tracker

    experiment_id = Tracker(str(uri)).call(lambda c: c.get_run(parent_run_id).info.experiment_id, queue=False)
    server = str(uri) if str(uri).startswith(("http://", "https://")) else local_ui
    return ui_url(server, experiment_id, parent_run_id) if experiment_id else None


# ---- sections ---------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table_section(title: str, csv: Path, max_rows: int = 50, drop: tuple[str, ...] = ()) -> str:
    if not csv.is_file():
        return ""
    frame = pd.read_csv(csv)
    frame = frame.drop(columns=[c for c in drop if c in frame])
    more = f"<p class='muted'>first {max_rows} of {len(frame)} rows; all in {_e(csv)}</p>" if len(frame) > max_rows else ""
    body = frame.head(max_rows).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)
    return f"<h2>{_e(title)}</h2>{body}{more}<p class='muted'>{_e(csv)}</p>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<figure><img alt='{_e(path.stem)}' src='data:image/png;base64,{data}'><figcaption class='muted'>{_e(path.name)}</figcaption></figure>"


def _plots_section(folder: Path) -> str:
    pngs = sorted(folder.glob("*.png"))
    return "<h2>Plots</h2>" + "".join(_img(p) for p in pngs) if pngs else ""


def _text_section(title: str, path: Path) -> str:
    return f"<h2>{_e(title)}</h2><pre>{_e(path.read_text())}</pre>" if path.is_file() else ""


def _methods_frame(doc: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, method in doc.get("methods", {}).items():
        row = {"method": name, "chosen": name == doc.get("method")}
        row.update({k: method.get(k) for k in ("in_sample", "nested_mean", "nested_std")})
        row.update({f"w.{m}": round(float(w), 4) for m, w in method.get("weights", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _ensemble_section(folder: Path) -> str:
    parts = []
    for weights in sorted(folder.glob("*/weights.json")):
        doc = json.loads(weights.read_text())
        frame = _methods_frame(doc)
        parts.append(f"<h3>{_e(weights.parent.name)}: submitted <code>{_e(doc.get('method'))}</code></h3>")
        if not frame.empty:
            parts.append(frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0))
        chosen = doc.get("weights", {})
        if chosen:
            rows = "".join(f"<tr><td>{_e(m)}</td><td>{w:.4f}</td></tr>" for m, w in chosen.items())
            parts.append(f"<table><tr><th>model</th><th>weight</th></tr>{rows}</table>")
        if (weights.parent / "weights.png").is_file():
            parts.append(_img(weights.parent / "weights.png"))
    return "<h2>Ensemble</h2>" + "".join(parts) if parts else ""


def _submission_section(runs: Path, experiment: str) -> str:
    ensembles = sorted((runs / "ensembles" / experiment).glob("*/submission.csv"))
    models = sorted((runs / "oof" / experiment).glob("*/submission.csv"))
    if ensembles:
        where, note = ensembles, "the ensemble's"
    elif models:
        where, note = models, "each refit model's (no ensemble yet)"
    else:
        return "<h2>Submission</h2><p>none yet: run the <code>oof</code> and <code>ensemble</code> stages.</p>"
    items = "".join(f"<li><code>{_e(p)}</code></li>" for p in where)
    return f"<h2>Submission</h2><p>{note}:</p><ul>{items}</ul>"

"""``python -m search.pseudo experiment=<name> threshold=0.9``: one pseudo-labelling round.

An ensemble's test probabilities (``runs/ensembles/<experiment>/<method>/test_proba.npy``, written
by ``ensemble.optimize``) give a label to every test image; the confident ones (probability at
least ``threshold``, or the ``top_fraction`` most confident of each predicted class) become
extra training rows. The search's refit models are fit again on every fold with those rows added
to the training side only (validation rows stay the labelled train.csv rows, so the OOF scores
before and after compare like for like), into ``runs/oof/<experiment>-pseudo/``.

Fold-honest by default: fold ``k``'s extra rows are labelled by the test predictions of the fold
``k`` models alone (saved by the refit), which never saw fold ``k``'s validation rows. Labels from
the full ensemble carry what the other folds' models learnt from those very rows, and an OOF
score measured with them is optimistic (``honest=false`` shows by how much). The ensemble's own
labels (``pseudo_labels_fold-1.csv``) are what a final fit on every row uses. The report
(``runs/pseudo/<experiment>/report.md``) puts each model's CV score and the mean ensemble's OOF
accuracy before and after side by side.

Examples::

    python -m search.pseudo                                     # latest search, its latest ensemble, threshold 0.9
    python -m search.pseudo experiment=my-search top_fraction=0.3
    python -m search.pseudo experiment=my-search ensemble=runs/ensembles/my-search/auto threshold=0.8
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from common.io import atomic_path, atomic_write_text, runs_dir
from common.metrics import accuracy
from ensemble import find_artifacts, read_artifact
from search.config import ConfigError, parse_overrides, set_key
from search.oof import OofOutcome, load_oof_config, oof_dir, print_summary, run_oof
from search.oof_fold import fold_result_path, read_fold_result
from search.preflight import preflight
from search.progress import setup_logging
from search.schema import PseudoSchema

log = logging.getLogger("search.pseudo")

PSEUDO_FILE = "pseudo_labels_fold{fold}.csv"  # {fold}: the trainable reads its fold's file; -1 = all rows
# key=value arguments of this command (the rest go to the refit, as for search.oof)
OWN_KEYS = tuple(f.name for f in fields(PseudoSchema))


@dataclass
class PseudoOutcome:
    """A pseudo-labelling round: what was added and what it changed.

    Attributes:
        labels: The ensemble's labels (``pseudo_labels_fold-1.csv``): test ``image_path``,
            ``target``, ``class_name``, ``confidence``; the per-fold files sit beside it.
        n_added: Rows in that file.
        n_added_per_fold: Rows added to each fold's training side.
        honest: Whether each fold's labels came from its own models only.
        comparison: One row per model plus ``mean ensemble``: ``before``, ``after``, ``change``.
        refit: The refit with pseudo-labels.
        report: ``report.md``.
    """

    labels: Path
    n_added: int
    n_added_per_fold: list[int]
    honest: bool
    comparison: pd.DataFrame
    refit: OofOutcome
    report: Path


def find_ensemble(runs: Path, experiment: str, ensemble: str | None = None) -> Path:
    """The ensemble output directory whose ``test_proba.npy`` to use.

    Args:
        runs: The output root.
        experiment: The OOF experiment the ensemble was made of.
        ensemble: A directory; None picks the newest ``runs/ensembles/<experiment>/*/test_proba.npy``.

    Raises:
        FileNotFoundError: No ensemble with test probabilities; the message says how to make one.
    """
    if ensemble:
        path = Path(ensemble)
        if not (path / "test_proba.npy").is_file():
            raise FileNotFoundError(f"ensemble={path}: no test_proba.npy there (run ensemble.optimize again)")
        return path
    found = sorted(
        (runs / "ensembles" / experiment).glob("*/test_proba.npy"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise FileNotFoundError(
            f"no ensemble of {experiment} with test probabilities under {runs / 'ensembles' / experiment}; "
            f"make one with: python -m ensemble.optimize --experiment {experiment}"
        )
    return found[-1].parent


def select_pseudo(
    proba: np.ndarray, *, threshold: float | None = 0.9, top_fraction: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick the test rows to pseudo-label.

    Args:
        proba: (n_test, C) ensemble probabilities.
        threshold: Keep rows whose top probability is at least this.
        top_fraction: Instead, keep this fraction of each predicted class, most confident first
            (at least one row per class that is predicted at all), which keeps the classes
            balanced where a threshold would favour the easy ones.

    Returns:
        ``(rows, labels, confidence)``, rows ascending.

    Raises:
        ValueError: Neither or both rules given, or a value out of range.
    """
    if (threshold is None) == (top_fraction is None):
        raise ValueError("give exactly one of threshold (e.g. 0.9) or top_fraction (e.g. 0.3)")
    labels, confidence = proba.argmax(1), proba.max(1)
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold={threshold}: use a probability in (0, 1]")
        rows = np.flatnonzero(confidence >= threshold)
    else:
        if not 0.0 < float(top_fraction) <= 1.0:  # type: ignore[arg-type]
            raise ValueError(f"top_fraction={top_fraction}: use a fraction in (0, 1]")
        keep = []
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            n = max(1, int(round(len(members) * float(top_fraction))))  # type: ignore[arg-type]
            keep.append(members[np.argsort(-confidence[members], kind="stable")[:n]])
        rows = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return rows, labels[rows], confidence[rows]


def run_pseudo(
    cfg: DictConfig,
    *,
    threshold: float | None = 0.9,
    top_fraction: float | None = None,
    ensemble: str | None = None,
    name: str | None = None,
    honest: bool = True,
) -> PseudoOutcome:
    """Run one round: label, refit with the labels, compare.

    Args:
        cfg: From :func:`search.oof.load_oof_config` for the search whose models to refit.
        threshold: See :func:`select_pseudo`.
        top_fraction: See :func:`select_pseudo`.
        ensemble: The ensemble directory; None for the newest of the experiment.
        name: The refit's OOF experiment (default ``<experiment>-pseudo``).
        honest: Label fold ``k``'s extra rows with the fold-``k`` models' mean test prediction
            (see the module docstring); False uses the ensemble's labels in every fold.

    Raises:
        FileNotFoundError: No ensemble, or the plain refit (the "before") is missing.
        ValueError: No test row is confident enough.
    """
    runs = runs_dir()
    experiment = str(cfg.experiment)
    source = find_ensemble(runs, experiment, ensemble)
    proba = np.load(source / "test_proba.npy")
    before = _complete_artifacts(oof_dir(runs, experiment))
    ref = before[0]
    if ref.test_image_paths is None or len(ref.test_image_paths) != len(proba):
        raise ValueError(
            f"{source}/test_proba.npy has {len(proba)} rows, the OOF artifacts' test set another count"
        )
    out = runs / "pseudo" / experiment
    rule = dict(threshold=threshold, top_fraction=top_fraction)
    labels_path, n_added, per_fold = _write_all_labels(out, proba, before, rule, honest)
    log.info(
        "pseudo-labelling %s test rows of %d per fold (%s, %s) from %s",
        per_fold, len(proba), f"threshold {threshold}" if threshold is not None else f"top {top_fraction} per class",
        "each fold's own models" if honest else "the ensemble", source,
    )  # fmt: skip

    refit = run_oof(
        cfg,
        out_name=name or f"{experiment}-pseudo",
        config_overrides={"pseudo_labels": str((out / PSEUDO_FILE).resolve())},
        log_prefix="pseudo",
    )
    comparison = compare(before, [r for r in refit.results if r.complete])
    report = atomic_write_text(
        out / "report.md",
        report_markdown(experiment, source, labels_path, n_added, per_fold, len(proba), honest, comparison),
    )
    with atomic_path(out / "comparison.csv") as tmp:
        comparison.to_csv(tmp)
    return PseudoOutcome(labels_path, n_added, per_fold, honest, comparison, refit, report)


def _write_all_labels(
    out: Path, proba: np.ndarray, before: Sequence[Any], rule: dict[str, Any], honest: bool
) -> tuple[Path, int, list[int]]:
    """Write the ensemble's labels, then each fold's (its own models' when ``honest``).

    Returns:
        The ensemble's labels file, how many rows it labels, and how many each fold's file labels.
    """
    ref = before[0]
    labels_path, n_added = _write_labels(out, -1, proba, ref, rule)
    per_fold = []
    for fold in range(int(np.unique(ref.folds).size)):
        fold_proba = _fold_test_proba(before, fold) if honest else proba
        per_fold.append(_write_labels(out, fold, fold_proba, ref, rule)[1])
    return labels_path, n_added, per_fold


def _fold_test_proba(artifacts: Sequence[Any], fold: int) -> np.ndarray:
    """The mean test prediction of the fold-``fold`` models of the refit (from its fold files)."""
    probs = []
    for art in artifacts:
        path = fold_result_path(art.path, fold)
        saved = read_fold_result(path) if path.is_file() else {"test_probs": None}
        if saved["test_probs"] is None:
            raise FileNotFoundError(
                f"{path} has no test predictions, which fold-honest labels need; "
                "rerun the refit (python -m search.oof) or pass honest=false"
            )
        probs.append(saved["test_probs"].astype(np.float64))
    return np.mean(probs, axis=0)


def _write_labels(
    out: Path, fold: int, proba: np.ndarray, ref: Any, rule: dict[str, Any]
) -> tuple[Path, int]:
    """Write the fold's pseudo-label CSV; returns its path and row count."""
    rows, labels, confidence = select_pseudo(proba, **rule)
    if len(rows) == 0:
        raise ValueError(
            f"no test row reaches threshold={rule['threshold']} (top probability max {proba.max(1).max():.3f}); "
            "lower the threshold or use top_fraction"
        )
    frame = pd.DataFrame(
        {
            "image_path": [ref.test_image_paths[r] for r in rows],
            "target": labels.astype(np.int64),
            "class_name": [ref.classes[t] for t in labels],
            "confidence": confidence.astype(np.float64),
        }
    )
    path = out / PSEUDO_FILE.replace("{fold}", str(fold))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path, len(frame)


def compare(before: Sequence[Any], after: Sequence[Any]) -> pd.DataFrame:
    """Per model CV (mean of fold accuracies) before and after, and the mean ensemble's OOF accuracy."""
    by_id = {a.model_id: a for a in before}
    rows: dict[str, dict[str, float]] = {}
    pairs = []
    for result in after:
        old = by_id.get(result.model.model_id)
        if old is None:
            continue
        new = read_artifact(result.directory)
        pairs.append((old, new))
        rows[old.model_id] = {"before": float(old.cv_mean), "after": float(new.cv_mean)}
    if pairs:
        y = pairs[0][0].targets
        mean_before = np.mean([o.oof.astype(np.float32) for o, _ in pairs], axis=0)
        mean_after = np.mean([n.oof.astype(np.float32) for _, n in pairs], axis=0)
        rows["mean ensemble"] = {
            "before": accuracy(mean_before, y),
            "after": accuracy(mean_after, y),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    if not frame.empty:
        frame["change"] = frame["after"] - frame["before"]
    return frame


def report_markdown(
    experiment: str,
    source: Path,
    labels: Path,
    n_added: int,
    per_fold: Sequence[int],
    n_test: int,
    honest: bool,
    comparison: pd.DataFrame,
) -> str:
    """The round's report: what was added, and the OOF accuracy before and after."""
    labelled_by = "each fold's own models (fold-honest)" if honest else "the ensemble (optimistic OOF)"
    lines = [
        f"# Pseudo-labelling round: {experiment}",
        "",
        f"- ensemble: `{source}`; its labels for a final fit: `{labels}` ({n_added} of {n_test} test rows)",
        f"- rows added per fold: {list(per_fold)}, labelled by {labelled_by}",
        "- added to the training side of every fold; validation rows are train.csv's only",
        "",
        "| model | OOF before | OOF after | change |",
        "|---|---:|---:|---:|",
    ]
    for model, row in comparison.iterrows():
        lines.append(f"| {model} | {row['before']:.4f} | {row['after']:.4f} | {row['change']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; 0 ok, 1 when the refit is incomplete, 2 on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(textwrap.dedent(__doc__ or "").strip())
        return 0
    setup_logging()
    try:
        pairs = parse_overrides(argv)
        own = OmegaConf.structured(PseudoSchema)  # typed: threshold=high fails here, not mid-run
        for key, value in pairs:
            if key in OWN_KEYS:
                set_key(own, key, value, "command line")
        cfg = load_oof_config(own.experiment, [(k, v) for k, v in pairs if k not in OWN_KEYS])
        preflight(cfg, stages=False)  # data, backbones, resources, ensemble keys: before Ray starts
        threshold = own.threshold if own.threshold is not None or own.top_fraction is not None else 0.9
        outcome = run_pseudo(
            cfg,
            threshold=threshold,
            top_fraction=own.top_fraction,
            ensemble=own.ensemble,
            name=own.name,
            honest=own.honest,
        )
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(outcome.refit)
    print()
    print(outcome.comparison.to_string(float_format=lambda x: f"{x:.4f}"))
    print(f"\npseudo-labels: {outcome.labels} ({outcome.n_added} rows; per fold {outcome.n_added_per_fold})")
    print(f"report:        {outcome.report}")
    return 0 if outcome.refit.complete else 1


def _complete_artifacts(directory: Path) -> list[Any]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: the plain refit is missing; run python -m search.oof first")
    return find_artifacts(runs=[directory])


if __name__ == "__main__":
    raise SystemExit(main())

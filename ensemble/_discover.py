"""Finding OOF artifacts on disk: one experiment's, the latest experiment's, or named directories."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from ensemble._validate import ArtifactError, ArtifactWarning
from ensemble.artifacts import META_FILE, OOF_FILE, Artifact, oof_root, read_artifact

__all__ = ["find_artifacts", "latest_experiment"]


def latest_experiment(root: str | Path | None = None) -> str:
    """The experiment under ``root`` (default :func:`oof_root`) whose artifacts were written last."""
    root = Path(root if root is not None else oof_root())
    best: tuple[float, str] | None = None
    for exp in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        stamps = [m.stat().st_mtime for m in exp.glob(f"*/{META_FILE}")]
        if stamps and (best is None or max(stamps) > best[0]):
            best = (max(stamps), exp.name)
    if best is None:
        raise ArtifactError(
            f"no OOF artifacts under {root} (set RUNS_DIR, run the OOF stage, or pass --runs DIR ...)"
        )
    return best[1]


def find_artifacts(
    experiment: str | None = None,
    runs: Iterable[str | Path] | None = None,
    root: str | Path | None = None,
) -> list[Artifact]:
    """Find complete artifacts: one experiment's, or those named by ``runs``.

    Directories without ``meta.json`` are incomplete (a crashed or running writer) and are
    skipped with an :class:`ArtifactWarning`.

    Args:
        experiment: Experiment name under ``root``; None or ``"latest"`` picks the experiment
            whose artifacts were written most recently. Ignored when ``runs`` is given.
        runs: Artifact directories (or experiment directories, which are expanded) to use instead.
        root: Where experiments live; defaults to ``$RUNS_DIR/oof``.

    Returns:
        The artifacts, in the order given (``runs``) or sorted by model directory name.

    Raises:
        ArtifactError: When nothing complete is found or a named directory does not exist.
    """
    if runs is not None:
        dirs: list[Path] = []
        for run in runs:
            run = Path(run)
            if not run.is_dir():
                raise ArtifactError(f"--runs {run}: no such directory")
            if (run / META_FILE).is_file() or (run / OOF_FILE).is_file():
                dirs.append(run)
            else:  # an experiment directory: take its models
                dirs.extend(sorted(p for p in run.iterdir() if p.is_dir()))
        where = ", ".join(str(r) for r in runs)
    else:
        root = Path(root if root is not None else oof_root())
        if experiment in (None, "latest"):
            experiment = latest_experiment(root)
        exp_dir = root / experiment
        if not exp_dir.is_dir():
            known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise ArtifactError(f"experiment {experiment!r} not found under {root}; known: {known or 'none'}")
        dirs = sorted(p for p in exp_dir.iterdir() if p.is_dir())
        where = str(exp_dir)

    artifacts = []
    for d in dirs:
        if not (d / META_FILE).is_file():
            warnings.warn(
                f"skipping {d}: no {META_FILE}, so the artifact is incomplete (writer crashed or still running)",
                ArtifactWarning,
                stacklevel=2,
            )
            continue
        artifacts.append(read_artifact(d))
    if not artifacts:
        raise ArtifactError(f"no complete OOF artifacts in {where}")
    return artifacts

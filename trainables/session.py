"""Where a trial reports to: inline (a printed table and a local checkpoint dir) or a Ray Tune trial.

The training core only sees the :class:`Session` protocol, so the same ``fit`` runs without Ray
for debugging and inside ``ray.tune.Tuner``. A session takes ownership of the checkpoint
directory handed to ``report``: it may move it or delete it once it has what it needs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from common.io import atomic_write_json, runs_dir

CHECKPOINT_PREFIX = "checkpoint_"
_TABLE_KEYS = ("epoch", "train_loss", "val_loss", "val_acc", "val_f1", "lr", "img_per_s")


@runtime_checkable
class Session(Protocol):
    """The two calls a trainable makes on whoever runs it.

    A session may also have ``progress(epoch, done, total)`` (progress inside an epoch) and
    ``validate_every_epoch = False`` (validate only the last epoch); the training core asks
    for both with ``getattr``, so a session without them shows no progress and validates every epoch.
    """

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        """Record one epoch's metrics; take ownership of ``checkpoint_dir`` if given."""
        ...

    def latest_checkpoint(self) -> str | None:
        """A checkpoint directory to resume from, or None to start from scratch."""
        ...


class InlineSession:
    """A session without Ray: prints a row per epoch and keeps only the latest checkpoint.

    Checkpoints live in ``out_dir/checkpoint_<epoch>``; an earlier one is deleted once the next is
    in place, so a crash always leaves one whole checkpoint. A new session on the same
    ``out_dir`` resumes from the checkpoint found there (``resume=False`` ignores it).

    Args:
        out_dir: Directory for checkpoints and ``metrics.json``; created if missing.
        resume: Whether :meth:`latest_checkpoint` returns a checkpoint already in ``out_dir``.
        verbose: Print the per-epoch table.
        stream: Where the table goes (stdout by default).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        resume: bool = True,
        verbose: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # New checkpoints are written here under a hidden temp name, so moving them in is a rename.
        self.scratch_dir = self.out_dir
        self.verbose = verbose
        self.stream = stream
        self.history: list[dict[str, Any]] = []
        self._printed_header = False
        self._latest: Path | None = _newest_checkpoint(self.out_dir) if resume else None
        for partial in self.out_dir.glob(".ckpt-*"):  # half-written by a run that crashed
            shutil.rmtree(partial, ignore_errors=True)
        old = self.out_dir / "metrics.json"
        if self._latest is not None and old.is_file():
            # Rows past the checkpoint (a crash between the two writes) will be reported again.
            last = int(self._latest.name[len(CHECKPOINT_PREFIX) :])
            self.history = [h for h in json.loads(old.read_text()) if int(h.get("epoch", 0)) <= last]

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        """Record metrics, move ``checkpoint_dir`` into ``out_dir`` and drop the previous one."""
        metrics = _plain(metrics)
        if self.verbose:
            if not self._printed_header:
                self._print(_row(_TABLE_KEYS, header=True))
                self._printed_header = True
            self._print(_row([metrics.get(k) for k in _TABLE_KEYS]))
        self.history.append(metrics)
        atomic_write_json(
            self.out_dir / "metrics.json", self.history, indent=1, sort_keys=False, allow_nan=True
        )
        if checkpoint_dir is not None:
            dest = self.out_dir / f"{CHECKPOINT_PREFIX}{int(metrics.get('epoch', len(self.history))):04d}"
            if dest.exists():
                shutil.rmtree(dest)
            # A rename within one filesystem is atomic; a copy is the fallback across filesystems.
            shutil.move(checkpoint_dir, dest)
            previous, self._latest = self._latest, dest
            if previous is not None and previous != dest and previous.exists():
                shutil.rmtree(previous)

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint directory written (or found at start), or None."""
        return str(self._latest) if self._latest is not None else None

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)


# Set (to anything but 0) to have each Ray trial write when it reached each phase to
# :func:`phases_path` (bench/bench_overhead.py reads them).
TRACE_PHASES_ENV = "SKETCHSEARCH_TRACE_PHASES"
_worker_started: list[float] = []  # this worker process's start, until its first trial traced it


class RaySession:
    """The session of a Ray Tune function trial.

    ``report`` calls ``ray.tune.report`` with a ``ray.tune.Checkpoint`` of the directory (Ray
    persists a copy to the run's storage, then the local directory is deleted); how many
    checkpoints are kept is the ``CheckpointConfig`` of the Tuner. ``latest_checkpoint`` is
    ``ray.tune.get_checkpoint()``: set when Ray restores a failed or paused trial.

    With ``SKETCHSEARCH_TRACE_PHASES`` set, :meth:`mark` records the time of each phase (the worker
    process's start, the fit's start, set-up done, first batch, each epoch's end and report).
    """

    def __init__(self) -> None:
        import ray.tune  # noqa: F401  (fail here, clearly, where Ray is not installed)

        self._shown = 0.0
        self._batches = 0
        self._trace: Path | None = None
        if os.environ.get(TRACE_PHASES_ENV, "0") not in ("", "0"):
            context = ray.tune.get_context()
            self._trace = phases_path(context.get_experiment_name(), context.get_trial_id())
            if not _worker_started:
                import psutil

                _worker_started.append(psutil.Process().create_time())
                self.mark("worker process start", _worker_started[0])
            self.mark("fit start")

    def mark(self, phase: str, when: float | None = None) -> None:
        """Record that the trial reached ``phase`` now (or at ``when``), when tracing phases."""
        if self._trace is None:
            return
        with contextlib.suppress(OSError):  # tracing never fails a trial
            self._trace.parent.mkdir(parents=True, exist_ok=True)  # a reused worker's new trial: not yet made
            with self._trace.open("a") as f:
                f.write(json.dumps({"phase": phase, "time": time.time() if when is None else when}) + "\n")

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        """Report to Ray Tune, with the checkpoint if given."""
        import ray.tune

        self.mark("epoch done (val, checkpoint written)")
        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(_plain(metrics), checkpoint=checkpoint)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        self.mark("reported (checkpoint persisted)")

    def progress(self, epoch: int, done: int, total: int) -> None:
        """Record how far the epoch is, at most once a second, for the driver's live table."""
        self._batches += 1
        if self._batches == 1:
            self.mark("first batch done")
        now = time.monotonic()
        if done < total and now - self._shown < 1.0:
            return
        self._shown = now
        import ray.tune

        context = ray.tune.get_context()
        path = progress_path(context.get_experiment_name(), context.get_trial_id())
        write_progress(path, epoch, done, total)

    def latest_checkpoint(self) -> str | None:
        """A local directory holding the trial's latest checkpoint, or None."""
        import pyarrow.fs
        import ray.tune

        self.mark("set-up done (data, model, loaders)")
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            return None
        if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
            return checkpoint.path
        return checkpoint.to_directory()  # remote storage: download to a local temp dir


def progress_path(experiment: str, trial_id: str) -> Path:
    """Where a Ray trial records its progress inside the current epoch (read by ``search.progress``)."""
    return runs_dir() / "progress" / experiment / f"{trial_id}.json"


def phases_path(experiment: str, trial_id: str) -> Path:
    """Where a Ray trial records its phases' times when ``SKETCHSEARCH_TRACE_PHASES`` is set.

    Not the trial's directory: a reused worker's later trials write theirs to a local working
    directory that Ray need not copy to the storage before the trial ends.
    """
    return runs_dir() / "phases" / experiment / f"{trial_id}.jsonl"


def write_progress(path: Path, epoch: int, done: int, total: int) -> None:
    """A plain overwrite (a torn read costs the reader one frame of its progress bar)."""
    with contextlib.suppress(OSError):  # progress is a nicety; it never fails a trial
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"epoch": epoch, "batch": done, "batches": total, "time": time.time()}))


def _newest_checkpoint(out_dir: Path) -> Path | None:
    found = [
        p
        for p in out_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)
    ]
    return max(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), default=None)


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Numpy/torch scalars to Python numbers, so Ray, MLflow and json take them as they are."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and callable(value.item):
            value = value.item()
        out[key] = value
    return out


def _row(values: Any, header: bool = False) -> str:
    cells = []
    for value in values:
        if header or isinstance(value, str):
            cells.append(f"{value!s:>10}")
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            cells.append(f"{'-':>10}")
        elif isinstance(value, int):
            cells.append(f"{value:>10d}")
        elif abs(value) < 1e-2 and value != 0:
            cells.append(f"{value:>10.2e}")
        else:
            cells.append(f"{value:>10.4f}")
    return " ".join(cells)

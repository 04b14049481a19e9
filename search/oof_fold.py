"""One fold of one refit: train on the other folds, predict the fold's rows and the test set, save.

A fold job is a plain dict (it travels as a Ray trial's config). Its result is
``<model_dir>/folds/fold_<k>.npz``, written atomically; a job whose result exists is done, which is
how an interrupted refit skips its finished folds. While it trains, the fold keeps its latest
checkpoint in ``<model_dir>/folds/fold_<k>/``, so a retry (Ray's ``max_failures``) or a rerun of
the stage continues the fold from its last epoch instead of starting it over.

Nodes that do not share the driver's run directory (Ray storage on S3, ``/runs`` per host) get
``ship`` jobs: the fold works under the node's own ``<RUNS_DIR>/oof-staging/`` and hands its
result file to Ray as the trial's checkpoint, which Ray uploads to its storage; the driver then
copies it into ``<model_dir>/folds/`` (:func:`fetch_shipped`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from common.io import atomic_path, runs_dir
from common.metrics import accuracy
from trainables.session import InlineSession

FOLDS_DIR = "folds"
STAGING_DIR = "oof-staging"  # under a node's own RUNS_DIR, for ship jobs


def fold_result_path(model_dir: str | Path, fold: int) -> Path:
    """Where the fold's predictions land: ``<model_dir>/folds/fold_<fold>.npz``."""
    return Path(model_dir) / FOLDS_DIR / f"fold_{fold}.npz"


def fold_work_dir(model_dir: str | Path, fold: int) -> Path:
    """The fold's checkpoint directory while it trains."""
    return Path(model_dir) / FOLDS_DIR / f"fold_{fold}"


def make_job(
    *,
    model_id: str,
    model_dir: Path,
    trainable: str,
    config: dict[str, Any],
    fold: int,
    epochs: int,
    val_rows: np.ndarray,
    val_targets: np.ndarray,
    predict_test: bool,
    tta_flip: bool,
    keep_checkpoint: bool = False,
    ship: bool = False,
    checkpoint: str | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """The config of one fold trial (JSON-safe: it is Ray's trial config and ``params.json``).

    ``ship``: the node running it may not see ``model_dir``; see the module docstring.
    ``checkpoint``: a model already trained on this fold (the search trial's own, when promoted):
    the job only predicts from it, it trains nothing.
    ``resume``: a checkpoint of this fold's model from earlier in the same schedule (a promoted
    search trial that ASHA stopped): the fold continues from it to the end of the schedule.
    """
    model_dir = Path(model_dir).resolve()
    return {
        "model_id": model_id,
        "fold": int(fold),
        "model_dir": str(model_dir),
        "ship": bool(ship),
        "staging": f"{STAGING_DIR}/{model_dir.parent.name}/{model_dir.name}",
        "trainable": trainable,
        "config": {**config, "fold": int(fold), "epochs": int(epochs)},
        "val_rows": [int(r) for r in val_rows],
        "val_targets": [int(t) for t in val_targets],
        "predict_test": bool(predict_test),
        "tta_flip": bool(tta_flip),
        "keep_checkpoint": bool(keep_checkpoint),
        "checkpoint": checkpoint,
        "resume": resume,
    }


class FoldSession(InlineSession):
    """An inline session (checkpoints in the fold's work dir) that also forwards metrics to a reporter.

    The checkpoints stay on the fold's own directory rather than in Ray's storage: the fold is
    finished by its predictions, not by a checkpoint, and keeping one copy halves the disk a
    refit of many models needs.

    Only the last epoch is validated: the fold is scored by its predictions after the fit, and an
    epoch's validation only draws a curve, at about 8% of a fold's time when the early stages are
    frozen (a step is cheaper, a prediction is not).
    """

    validate_every_epoch = False

    def __init__(self, out_dir: Path, forward: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(out_dir, resume=True, verbose=forward is None)
        self.forward = forward

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        if self.forward is not None:
            self.forward(dict(self.history[-1]))


def job_dir(job: dict[str, Any]) -> Path:
    """Where the fold writes: the model's directory, or this node's staging copy of it for ship jobs."""
    if not job.get("ship"):
        return Path(job["model_dir"])
    return runs_dir() / job["staging"]


def run_fold(job: dict[str, Any], forward: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fit one fold (resuming its checkpoint), predict, and save ``fold_<k>.npz``.

    Args:
        job: From :func:`make_job`.
        forward: Receives each epoch's metrics (Ray's ``tune.report``); None prints a table.

    Returns:
        ``{"fold", "fold_acc", "epochs", "n_val", "skipped"}``; ``skipped`` when the fold was already done.
    """
    from trainables import create_trainable

    model_dir, fold = job_dir(job), int(job["fold"])
    out = fold_result_path(model_dir, fold)
    if out.is_file():
        saved = read_fold_result(out)
        return {
            "fold": fold,
            "fold_acc": saved["fold_acc"],
            "epochs": saved["epochs"],
            "n_val": len(saved["val_rows"]),
            "skipped": True,
        }
    work = fold_work_dir(model_dir, fold)
    trainable = create_trainable(job["trainable"])
    checkpoint, final = job.get("checkpoint"), {"trained_by": "search trial"}
    search_epochs = _seed_from_search(job["resume"], work) if job.get("resume") else 0
    if checkpoint is None:
        session = FoldSession(work, forward)
        final = trainable.fit(dict(job["config"]), session)
        checkpoint = session.latest_checkpoint()
    if checkpoint is None:
        raise RuntimeError(f"{job['model_id']} fold {fold}: the fit reported no checkpoint to predict from")
    val_rows = np.asarray(job["val_rows"], dtype=np.int64)
    tta = bool(job["tta_flip"])
    val_probs = trainable.predict(None, checkpoint, split="train", rows=val_rows, tta_flip=tta)
    test_probs = (
        trainable.predict(None, checkpoint, split="test", tta_flip=tta) if job["predict_test"] else None
    )
    fold_acc = accuracy(val_probs, np.asarray(job["val_targets"]))
    summary = {
        "fold": fold,
        "epochs": int(job["config"]["epochs"]),
        "fold_acc": fold_acc,
        "fit": {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "checkpoint": checkpoint if job["keep_checkpoint"] or job.get("checkpoint") else None,
        # Epochs of this model the search trained (counted there): a stopped trial continued here.
        "search_epochs": search_epochs,
    }
    save_fold_result(out, val_rows, val_probs, test_probs, summary)
    if not job["keep_checkpoint"]:
        shutil.rmtree(work, ignore_errors=True)  # never the search trial's own checkpoint
    return {
        "fold": fold,
        "fold_acc": fold_acc,
        "epochs": summary["epochs"],
        "n_val": len(val_rows),
        "skipped": False,
    }


def _seed_from_search(search_checkpoint: str, work: Path) -> int:
    """Copy a stopped search trial's checkpoint into the fold's work dir, unless the fold already
    has a checkpoint of its own there (a retry continues from that); the search's epoch count."""
    from trainables.checkpoint import new_checkpoint_dir, read_meta
    from trainables.session import CHECKPOINT_PREFIX

    epoch = int(read_meta(search_checkpoint)["epoch"])
    if not any(work.glob(f"{CHECKPOINT_PREFIX}[0-9]*")):
        staged = new_checkpoint_dir(work)  # a hidden temp name: the session drops it if we die
        shutil.copytree(search_checkpoint, staged, dirs_exist_ok=True)
        staged.rename(work / f"{CHECKPOINT_PREFIX}{epoch:04d}")
    return epoch


def ray_fold_trial(config: dict[str, Any]) -> None:
    """Ray Tune's function trainable for a fold job: epochs stream to Tune, the result to disk.

    A ship job's result file also goes to Ray's storage, as the trial's checkpoint.
    """
    import ray.tune

    from trainables.raytrial import deterministic_errors

    job = config["job"]
    with deterministic_errors():
        result = run_fold(job, forward=lambda metrics: ray.tune.report(metrics))
    if not job.get("ship"):
        ray.tune.report({**result, "fold_done": True})
        return
    path = fold_result_path(job_dir(job), int(job["fold"]))
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(path, Path(tmp) / path.name)
        # report() has uploaded the directory when it returns, so the temporary copy may go.
        ray.tune.report({**result, "fold_done": True}, checkpoint=ray.tune.Checkpoint.from_directory(tmp))
    path.unlink()
    for folder in (path.parent, path.parent.parent):  # folds/ and the model's, once nothing else is left
        with contextlib.suppress(OSError):
            folder.rmdir()


def fetch_shipped(results: Iterable[Any]) -> list[Path]:
    """Copy ship jobs' result files from Ray's storage into their model directories.

    Args:
        results: Ray Tune ``Result`` objects of fold trials (a ``ResultGrid``).

    Returns:
        The fold files written; a fold already in place is left as it is.
    """
    written = []
    for result in results:
        job = (result.config or {}).get("job", {})
        if not job.get("ship") or result.checkpoint is None:
            continue
        dest = fold_result_path(job["model_dir"], int(job["fold"]))
        if dest.is_file():
            continue
        with result.checkpoint.as_directory() as got:
            src = Path(got) / dest.name
            if src.is_file():
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
                written.append(dest)
    return written


def save_fold_result(
    path: Path,
    val_rows: np.ndarray,
    val_probs: np.ndarray,
    test_probs: np.ndarray | None,
    summary: dict[str, Any],
) -> Path:
    """Write a fold's predictions atomically (temp name, then rename)."""
    arrays = {
        "val_rows": np.asarray(val_rows, dtype=np.int64),
        "val_probs": np.asarray(val_probs, dtype=np.float32),
    }
    if test_probs is not None:
        arrays["test_probs"] = np.asarray(test_probs, dtype=np.float32)
    arrays["summary"] = np.frombuffer(json.dumps(summary).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def read_fold_result(path: Path) -> dict[str, Any]:
    """A fold's saved predictions: ``val_rows``, ``val_probs``, ``test_probs`` (or None) and its summary keys."""
    with np.load(path, allow_pickle=False) as data:
        out: dict[str, Any] = json.loads(bytes(data["summary"]).decode())
        out["val_rows"] = data["val_rows"]
        out["val_probs"] = data["val_probs"]
        out["test_probs"] = data["test_probs"] if "test_probs" in data.files else None
    return out

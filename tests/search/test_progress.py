"""What the terminal shows around a search: Ray's noise is filtered, real failures are not."""

from __future__ import annotations

import logging

import pytest

from search.progress import setup_logging


def _state_save_error(error: Exception) -> None:
    try:
        raise error
    except type(error):
        logging.getLogger("ray.tune.execution.experiment_state").error(
            "Saving experiment state to storage at '/runs/ray/x' failed with exception: ", exc_info=True
        )


def test_a_superseded_state_sync_is_not_shown_but_a_real_save_failure_is(caplog: pytest.LogCaptureFixture) -> None:
    setup_logging(verbose=1)
    setup_logging(verbose=1)  # idempotent: one filter
    assert len(logging.getLogger("ray.tune.execution.experiment_state").filters) == 1
    race = FileNotFoundError(
        "[Errno 2] Failed to open local file '/tmp/ray/session_x/artifacts/e/driver_artifacts/"
        ".0b70-tmp-searcher-state-2026-11-29_17-34-20.pkl'. Detail: [errno 2] No such file or directory"
    )
    with caplog.at_level(logging.ERROR):
        _state_save_error(race)
        assert caplog.records == []
        _state_save_error(PermissionError("[Errno 13] Permission denied: '/runs/ray/x'"))
        _state_save_error(FileNotFoundError("[Errno 2] No such file or directory: '/runs/ray/x'"))
    assert len(caplog.records) == 2


def test_a_refit_fold_line_says_what_the_fold_did() -> None:
    """A fold that trains shows its epochs; a promoted trial's fold 0, which trains nothing (it
    predicts with the search trial's own model), says so instead of "epoch 0/6"."""
    from types import SimpleNamespace

    from search.progress import LiveReporter

    reporter = LiveReporter(title="t", paths=[], metric="val_acc", mode="max", max_epochs=6, group="job.model_id")

    def fold(number: int, epochs: int, checkpoint: str | None, result: dict | None = None) -> SimpleNamespace:
        job = {"model_id": "lite0-a", "fold": number, "checkpoint": checkpoint}
        return SimpleNamespace(
            trial_id=f"f{number}", status="TERMINATED" if result is None else "RUNNING", config={"job": job},
            last_result=result or {"fold_acc": 0.5}, metric_analysis={"epoch": {"max": epochs}},
        )  # fmt: skip

    assert "fold 1: done, epoch 6/6, val_acc 0.5" in reporter.line(fold(1, 6, None))
    # before its last epoch a fold is not validated: its line shows the training loss instead
    training = reporter.line(fold(2, 3, None, {"epoch": 3, "train_loss": 2.5}))
    assert "fold 2: running, epoch 3/6, train_loss 2.5000 (val_acc at its end)" in training
    assert "fold 2: running, epoch 6/6, val_acc 0.51" in reporter.line(fold(2, 6, None, {"val_acc": 0.51}))
    promoted = reporter.line(fold(0, 0, "/runs/ray/x/checkpoint_000005"))
    assert "fold 0: done, the search trial's model, val_acc 0.5" in promoted and "epoch" not in promoted

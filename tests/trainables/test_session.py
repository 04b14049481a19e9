"""Sessions: the inline one keeps the latest checkpoint and resumes; under Ray Tune a crashed trial resumes."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from tests.trainables.conftest import tiny_config
from trainables.session import InlineSession, Session


def _ckpt(tmp: Path, name: str) -> str:
    d = tmp / name
    d.mkdir()
    (d / "model.pt").write_text(name)
    return str(d)


def test_inline_session_keeps_only_the_latest_checkpoint_and_prints_rows(tmp_path: Path) -> None:
    out = io.StringIO()
    s = InlineSession(tmp_path / "run", stream=out)
    assert isinstance(s, Session) and s.latest_checkpoint() is None
    s.report({"epoch": 1, "val_acc": 0.5, "train_loss": 1.0}, _ckpt(tmp_path, "a"))
    s.report({"epoch": 2, "val_acc": float("nan"), "train_loss": 0.5}, _ckpt(tmp_path, "b"))
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint_*")) == ["checkpoint_0002"]
    assert Path(s.latest_checkpoint(), "model.pt").read_text() == "b"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "val_acc" in lines[0] and "0.5000" in lines[1]
    # A new session on the same directory resumes from there, history included.
    again = InlineSession(tmp_path / "run", verbose=False)
    assert again.latest_checkpoint() == s.latest_checkpoint() and len(again.history) == 2
    assert InlineSession(tmp_path / "run", resume=False).latest_checkpoint() is None


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    # Workers must write where this test session does (the built-in set and caches are there).
    env = {"RUNS_DIR": os.environ["RUNS_DIR"]}
    # Another test package may have left its session-wide Ray up; this test needs its own env vars.
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_trial_reports_every_epoch_and_resumes_after_a_crash(
    ray_cluster: Any, tiny_data: Path, tmp_path: Path
) -> None:
    from ray import tune

    from trainables import create_trainable, ray_trainable

    marker = tmp_path / "crashed-once"

    def crash_once(config: dict[str, Any]) -> None:
        # The real RaySession, failing right after its first checkpoint is persisted, once.
        from trainables.session import RaySession

        class CrashOnce(RaySession):
            def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
                super().report(metrics, checkpoint_dir)
                if metrics["epoch"] == 1 and not marker.exists():
                    marker.touch()
                    raise RuntimeError("simulated node failure")

        create_trainable("timm").fit(config, CrashOnce())

    config = tiny_config(tiny_data, epochs=2)
    storage = tmp_path / "ray"
    results = {}
    for name, fn in (("plain", ray_trainable("timm")), ("crash", crash_once)):
        tuner = tune.Tuner(
            tune.with_resources(fn, {"cpu": 1}),
            param_space=config,
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=1),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,
            ),
        )
        grid = tuner.fit()
        assert not grid.errors, grid.errors
        results[name] = grid[0]

    plain, crash = results["plain"], results["crash"]
    assert marker.exists()
    assert plain.metrics["epoch"] == 2 and plain.metrics["training_iteration"] == 2
    for key in ("val_acc", "val_f1", "val_loss", "train_loss", "lr", "img_per_s"):
        assert key in plain.metrics
    # The restarted trial went on from epoch 2, and ended exactly where the uninterrupted one did.
    epochs = crash.metrics_dataframe["epoch"].tolist()
    assert epochs.count(1) == 1 and epochs[-1] == 2
    for key in ("val_acc", "val_loss", "train_loss"):
        assert crash.metrics[key] == plain.metrics[key], key
    with plain.checkpoint.as_directory() as ckpt:
        assert {"model.pt", "train_state.pt", "meta.json"} <= set(os.listdir(ckpt))
        probs = create_trainable("timm").predict(None, ckpt, split="test")
    assert probs.shape[1] == 8


@pytest.mark.slow
def test_a_reused_worker_runs_the_next_trials_exactly_as_a_fresh_one(
    ray_cluster: Any, tiny_data: Path, tmp_path: Path
) -> None:
    from ray import tune

    from trainables import ray_trainable

    # One trial at a time, so the first trial's worker runs the other two: seed 0 again last.
    space = {**tiny_config(tiny_data, epochs=1), "seed": tune.grid_search([0, 1, 0])}
    tuner = tune.Tuner(
        tune.with_resources(ray_trainable("timm"), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="reuse", storage_path=str(tmp_path / "ray"), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    results = sorted(grid, key=lambda r: r.path)
    assert len({r.metrics["pid"] for r in results}) == 1, "the worker was not reused"
    first, _, again = results
    for key in ("val_acc", "val_loss", "train_loss"):
        assert again.metrics[key] == first.metrics[key], key

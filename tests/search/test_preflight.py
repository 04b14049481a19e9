"""Every mistake a user can make fails ``search.run`` with exit 2 and its message, before Ray starts.

Each case is a real folder of real PNG files (or a real config typo) run through ``main`` as a
user would; the test checks the message, that Ray was never started and that nothing was written
under the output root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from PIL import Image

from search.records import SearchRecord, list_experiments, save_record, search_dir
from search.run import main

CLASSES = ["cat", "dog", "owl"]


def _competition(root: Path, per_class: int = 6) -> Path:
    """A small competition folder: train.csv (class_name,image_path,target) and real PNGs."""
    rng = np.random.default_rng(0)
    rows = []
    for target, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{name}_{i}.png")
            rows.append({"class_name": name, "image_path": f"{name}/{name}_{i}.png", "target": target})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty output root of this test's own, to prove nothing is written there."""
    out = tmp_path / "runs"
    monkeypatch.setenv("RUNS_DIR", str(out))
    return out


def _fails_before_ray(
    argv: list[str], runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> str:
    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for an input error")

    monkeypatch.setattr(ray, "init", no_ray)  # (a Ray left running by another test is not started here)
    assert main(["trainable.pretrained=false", "trainable.backbone=test_efficientnet", *argv]) == 2
    left = sorted(p.relative_to(runs) for p in runs.rglob("*")) if runs.exists() else []
    assert not [p for p in left if p.parts[0] in ("search", "ray", "oof") or p.name == "mlflow.db"], left
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    return err


def test_missing_folder(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _fails_before_ray([f"data={tmp_path / 'no-such-folder'}"], runs, capsys, monkeypatch)
    assert "does not exist" in err and "no-such-folder" in err


def test_wrong_columns(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _competition(tmp_path / "comp")
    frame = pd.read_csv(root / "train.csv").rename(columns={"class_name": "klass"})
    frame.to_csv(root / "train.csv", index=False)
    err = _fails_before_ray([f"data={root}"], runs, capsys, monkeypatch)
    assert "class_name" in err


def test_truncated_image(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _competition(tmp_path / "comp")
    broken = root / "train" / "dog" / "dog_3.png"
    broken.write_bytes(broken.read_bytes()[:60])
    err = _fails_before_ray([f"data={root}"], runs, capsys, monkeypatch)
    assert "dog_3.png" in err and "trainable.skip_bad=true" in err


def test_class_and_target_disagree_with_line_numbers(
    tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _competition(tmp_path / "comp")
    frame = pd.read_csv(root / "train.csv")
    frame.loc[4, "target"] = 2  # a cat labelled as the owl's target
    frame.to_csv(root / "train.csv", index=False)
    err = _fails_before_ray([f"data={root}"], runs, capsys, monkeypatch)
    assert "cat" in err and "6" in err  # row 4 is line 6 of the file (header is line 1)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainable.backbone=resnet999", "is not a timm model; similar names: resnet"),
        ("ensemble.method=bayes", "ensemble.method='bayes'"),
        ("tune.metric=val_accuracy", "use one of val_acc"),
        ("tune.metric=val_loss", "set tune.mode=min"),
        ("resources.cpu=4096", "resources.cpu=4096"),
        ("trainable.pretrained_path=/no/such/weights.pth", "/no/such/weights.pth"),
    ],
)
def test_config_mistakes(
    override: str,
    expected: str,
    runs: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = _fails_before_ray([override], runs, capsys, monkeypatch)
    assert expected in err, err


def test_every_config_mistake_is_listed_at_once(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _fails_before_ray(["ensemble.method=bayes", "tune.metric=val_accuracy"], runs, capsys, monkeypatch)
    assert "ensemble.method" in err and "tune.metric" in err


def test_freezing_more_stages_than_a_backbone_has_fails_before_ray(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A searched value counts too: every backbone of the space is checked against the largest."""
    space = "search.backbone={choice: [test_efficientnet, test_resnet]}"
    err = _fails_before_ray([space, "search.freeze_stages={choice: [0, 5]}"], runs, capsys, monkeypatch)
    # test_efficientnet has 5 stages before its head, test_resnet 4 (timm's coarse groups)
    assert "freeze_stages=5: test_resnet has a stem and 4 stages before its classifier; use 0 to 4" in err
    assert "test_efficientnet" not in err


def test_offline_backbone_without_weights_says_what_to_do(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["trainable.backbone=convnext_tiny", "trainable.pretrained=true"]) == 2
    err = capsys.readouterr().err
    assert "convnext_tiny" in err and "trainable.pretrained=false" in err and "tf_efficientnet_lite0" in err


def test_resume_true_never_picks_a_failed_search(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, status, created in [("older-ok", "finished", 1.0), ("newer-failed", "failed", 2.0)]:
        directory = search_dir(runs, name)
        directory.mkdir(parents=True)
        save_record(directory, SearchRecord(experiment=name, ray_path="", status=status, created=created))
    assert list_experiments(runs) == ["newer-failed", "older-ok"]
    assert list_experiments(runs, resumable=True) == ["older-ok"]
    search_dir(runs, "older-ok").joinpath("state.json").unlink()
    assert main(["resume=true"]) == 2
    assert "failed searches are not resumed" in capsys.readouterr().err

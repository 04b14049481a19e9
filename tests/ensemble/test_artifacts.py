"""The OOF artifact contract: writer and reader round trip, atomicity, discovery, refusals."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from ensemble._compat import check_compatible
from ensemble._discover import find_artifacts, latest_experiment
from ensemble.artifacts import (
    ArtifactError,
    ArtifactWarning,
    IncompatibleArtifactsError,
    hash_folds,
    read_artifact,
    write_artifact,
)

N, C, N_TEST = 90, 6, 20
CLASSES = [f"c{i}" for i in range(C)]


def _probs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.dirichlet(np.full(C, 0.3), size=n)


def _write(directory: Path, seed: int = 0, **overrides: object) -> Path:
    rng = np.random.default_rng(seed)
    kwargs: dict[str, object] = {
        "oof": _probs(rng, N),
        "targets": np.arange(N) % C,
        "folds": np.arange(N) % 3,
        "classes": CLASSES,
        "test": _probs(rng, N_TEST),
        "test_image_paths": [f"test/{i}.png" for i in range(N_TEST)],
        "fold_scores": [0.5, 0.6, 0.7],
        "config": {"lr": np.float32(0.1), "layers": (1, 2)},
        "data_hash": "d1",
        "mlflow_run_id": "run123",
    }
    kwargs.update(overrides)
    return write_artifact(directory, **kwargs)  # type: ignore[arg-type]


def test_round_trip_is_memory_mapped_and_keeps_meta(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    oof = _probs(rng, N)
    path = _write(tmp_path / "exp" / "m1", oof=oof)
    art = read_artifact(path)

    assert isinstance(art.oof, np.memmap) and isinstance(art.test, np.memmap)
    assert not art.oof.flags.writeable
    assert art.oof.dtype == np.float16 and art.oof.shape == (N, C)
    np.testing.assert_allclose(art.oof, oof, atol=1e-3)
    assert art.model_id == "m1" and art.classes == tuple(CLASSES)
    assert art.folds_hash == hash_folds(np.arange(N) % 3)
    assert art.cv_mean == pytest.approx(0.6) and art.cv_std == pytest.approx(np.std([0.5, 0.6, 0.7]))
    assert art.test_image_paths == [f"test/{i}.png" for i in range(N_TEST)]
    assert art.config == {"lr": pytest.approx(0.1), "layers": [1, 2]}
    assert art.mlflow_run_id == "run123" and art.data_hash == "d1"
    assert {p.name for p in path.iterdir()} == {
        "oof.npy",
        "test.npy",
        "targets.npy",
        "folds.npy",
        "meta.json",
    }


def test_float32_storage_keeps_precision(tmp_path: Path) -> None:
    oof = _probs(np.random.default_rng(1), N)
    art = read_artifact(_write(tmp_path / "m", oof=oof, dtype="float32"))
    assert art.oof.dtype == np.float32
    np.testing.assert_allclose(art.oof, oof, rtol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"oof": np.full((N, C), 0.5)}, "sum to 1"),
        ({"oof": np.where(np.eye(N, C) > 0, np.nan, 1.0 / C)}, "NaN"),
        ({"targets": np.full(N, C)}, "targets must lie"),
        ({"folds": np.zeros(N, dtype=int)}, "at least two folds"),
        ({"test_image_paths": ["a.png"]}, "test_image_paths"),
        ({"oof": np.full((N, C + 1), 1.0 / (C + 1))}, "match classes"),
        ({"classes": CLASSES[:-1] + ["c0"]}, "distinct"),
    ],
)
def test_writer_refuses_bad_input_and_writes_nothing(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        _write(tmp_path / "bad", **overrides)
    assert not (tmp_path / "bad" / "meta.json").exists()


def test_incomplete_directory_is_skipped_with_a_warning(tmp_path: Path) -> None:
    _write(tmp_path / "exp" / "good")
    crashed = tmp_path / "exp" / "crashed"
    crashed.mkdir()
    np.save(crashed / "oof.npy", np.zeros((N, C), np.float16))  # arrays landed, meta.json never did
    with pytest.warns(ArtifactWarning, match="crashed.*incomplete"):
        arts = find_artifacts("exp", root=tmp_path)
    assert [a.model_id for a in arts] == ["good"]
    with pytest.raises(ArtifactError, match="incomplete"):
        read_artifact(crashed)


def test_rewrite_invalidates_first_and_drops_stale_test(tmp_path: Path) -> None:
    path = _write(tmp_path / "m")
    _write(path, seed=3, test=None, test_image_paths=None)
    art = read_artifact(path)
    assert art.test is None and not (path / "test.npy").exists()
    assert not any(p.name.startswith(".") for p in path.iterdir()), "temporary files left behind"


def test_latest_experiment_and_missing_experiment(tmp_path: Path) -> None:
    old = _write(tmp_path / "old_exp" / "m")
    _write(tmp_path / "new_exp" / "m")
    past = time.time() - 3600
    os.utime(old / "meta.json", (past, past))
    assert latest_experiment(tmp_path) == "new_exp"
    assert find_artifacts(root=tmp_path)[0].path.parent.name == "new_exp"
    with pytest.raises(ArtifactError, match="known: \\['new_exp', 'old_exp'\\]"):
        find_artifacts("nope", root=tmp_path)
    with pytest.raises(ArtifactError, match="no OOF artifacts"):
        latest_experiment(tmp_path / "empty")


def test_runs_accepts_model_and_experiment_directories(tmp_path: Path) -> None:
    a = _write(tmp_path / "e1" / "a")
    _write(tmp_path / "e2" / "b")
    _write(tmp_path / "e2" / "c")
    arts = find_artifacts(runs=[a, tmp_path / "e2"])
    assert [x.model_id for x in arts] == ["a", "b", "c"]
    with pytest.raises(ArtifactError, match="no such directory"):
        find_artifacts(runs=[tmp_path / "missing"])


# ------------------------------------------------------------------------------ check_compatible


def _pair(tmp_path: Path, **bad: object) -> list:
    _write(tmp_path / "good1", seed=1)
    _write(tmp_path / "good2", seed=2)
    _write(tmp_path / "odd", seed=3, **bad)
    return find_artifacts(runs=[tmp_path / "good1", tmp_path / "good2", tmp_path / "odd"])


def test_compatible_set_passes(tmp_path: Path) -> None:
    arts = _pair(tmp_path)
    assert check_compatible(arts) == arts


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {
                "oof": _probs(np.random.default_rng(5), N + 3),
                "targets": np.arange(N + 3) % C,
                "folds": np.arange(N + 3) % 3,
            },
            r"train rows differ: model\(s\) 'odd' have 93 train rows, not 90 unlike 'good1', 'good2'",
        ),
        ({"targets": (np.arange(N) + 1) % C}, r"'odd' have different targets \(first at row 0\)"),
        (
            {"classes": ["c1", "c0", *CLASSES[2:]]},
            r"class order differs: model\(s\) 'odd' have the same classes in a different order \(column 0",
        ),
        ({"classes": [*CLASSES[:-1], "zebra"]}, r"'odd' have different classes .*extra \['zebra'\]"),
        ({"folds": np.arange(N) % 5}, r"folds differ: model\(s\) 'odd' have folds hash"),
        ({"data_hash": "d2"}, r"data differs: model\(s\) 'odd' have data hash d2"),
        (
            {"test": _probs(np.random.default_rng(6), 7), "test_image_paths": list("abcdefg")},
            r"test rows differ: model\(s\) 'odd' predict 7",
        ),
    ],
)
def test_disagreeing_artifacts_are_refused_naming_the_culprit(
    tmp_path: Path, bad: dict, message: str
) -> None:
    with pytest.raises(IncompatibleArtifactsError, match=message):
        check_compatible(_pair(tmp_path, **bad))


def test_corrupt_probabilities_are_refused(tmp_path: Path) -> None:
    """A file that bypassed the writer (NaN, logits) is caught on the reading side too."""
    arts = _pair(tmp_path)
    rng = np.random.default_rng(0)
    nan = _probs(rng, N).astype(np.float16)
    nan[17, 2] = np.nan
    np.save(arts[1].path / "oof.npy", nan)
    logits = rng.normal(size=(N_TEST, C)).astype(np.float32)
    np.save(arts[2].path / "test.npy", logits)
    arts = find_artifacts(runs=[a.path for a in arts])
    with pytest.raises(IncompatibleArtifactsError) as err:
        check_compatible(arts)
    text = str(err.value)
    assert "model 'good2': oof.npy has NaN/inf in 1 row(s) (first rows [17])" in text
    assert "model 'odd': test.npy rows must sum to 1" in text and "not logits" in text


def test_float16_rounding_is_tolerated_but_real_drift_is_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    many = rng.dirichlet(np.full(500, 0.05), size=200)  # 500 classes: worst case for float16 sums
    wide = write_artifact(
        tmp_path / "wide",
        oof=many,
        targets=np.arange(200) % 500,
        folds=np.arange(200) % 2,
        classes=[f"k{i}" for i in range(500)],
    )
    assert check_compatible([read_artifact(wide)], require_test=False)
    drift = many * 1.003
    np.save(wide / "oof.npy", drift.astype(np.float16))
    with pytest.raises(IncompatibleArtifactsError, match="sum to 1 \\(tolerance 0.001 for float16\\)"):
        check_compatible([read_artifact(wide)], require_test=False)


def test_model_without_test_is_excluded_with_a_warning(tmp_path: Path) -> None:
    arts = _pair(tmp_path, test=None, test_image_paths=None)
    with pytest.warns(ArtifactWarning, match="excluding model 'odd'.*no test.npy"):
        kept = check_compatible(arts)
    assert [a.model_id for a in kept] == ["good1", "good2"]
    assert check_compatible(arts, require_test=False) == arts  # OOF-only analysis keeps it


def test_no_test_anywhere_is_an_error(tmp_path: Path) -> None:
    art = read_artifact(_write(tmp_path / "m", test=None, test_image_paths=None))
    with (
        pytest.warns(ArtifactWarning),
        pytest.raises(IncompatibleArtifactsError, match="no artifact has test"),
    ):
        check_compatible([art])


def test_duplicate_model_ids_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "e1" / "m")
    _write(tmp_path / "e2" / "m")
    with pytest.raises(IncompatibleArtifactsError, match="model id 'm' appears 2 times"):
        check_compatible(find_artifacts(runs=[tmp_path / "e1" / "m", tmp_path / "e2" / "m"]))


def test_meta_json_is_plain_json_with_the_documented_fields(tmp_path: Path) -> None:
    meta = json.loads((_write(tmp_path / "m") / "meta.json").read_text())
    for key in (
        "model_id",
        "classes",
        "folds_hash",
        "data_hash",
        "config",
        "fold_scores",
        "cv_mean",
        "cv_std",
        "metric",
        "test_image_paths",
        "created",
        "mlflow_run_id",
        "n_train",
        "n_test",
        "dtype",
        "format_version",
    ):
        assert key in meta, key
    # A copied artifact reads back the same (paths inside are relative to its directory).
    copy = shutil.copytree(tmp_path / "m", tmp_path / "copy")
    assert read_artifact(copy).model_id == "m"

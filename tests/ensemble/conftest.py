"""Real OOF artifacts for the ensemble tests: scikit-learn classifiers on scikit-learn's digits.

Six classifiers of different families and quality are fit with 5 stratified folds on 80% of
digits; the other 20% plays test.csv. Each classifier sees its own random 24 of the 64 pixels
(Ho's random subspace method), so no single model saturates the task and, as with real
backbones, an ensemble has something to gain. The artifacts are written with the production
writer, ``ensemble.artifacts.write_artifact``, half float16 and half float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from ensemble.artifacts import artifact_dir, write_artifact

N_FOLDS = 5
EXPERIMENT = "digits"


def _columns(est: object, cols: np.ndarray) -> object:
    return make_pipeline(FunctionTransformer(lambda a, c=cols: a[:, c]), est)


def _classifiers(seed: int = 0) -> dict[str, tuple[object, str]]:
    rng = np.random.default_rng(seed)
    specs = {
        "gnb": (GaussianNB(), "float16"),
        "logreg": (make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500)), "float32"),
        "knn": (KNeighborsClassifier(n_neighbors=10), "float16"),
        "tree": (DecisionTreeClassifier(max_depth=8, random_state=0), "float16"),
        "forest": (RandomForestClassifier(n_estimators=30, max_depth=10, random_state=0), "float32"),
        "svc": (CalibratedClassifierCV(SVC(), ensemble=False), "float32"),
    }
    return {
        name: (_columns(est, np.sort(rng.choice(64, 24, replace=False))), dtype)
        for name, (est, dtype) in specs.items()
    }


@dataclass(frozen=True)
class DigitsOOF:
    """Where the digits artifacts are and what they hold."""

    runs: Path  # a RUNS_DIR whose oof/ holds EXPERIMENT/
    root: Path  # runs / "oof"
    experiment: str
    model_ids: list[str]
    y: np.ndarray
    folds: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    test_image_paths: list[str]

    @property
    def experiment_dir(self) -> Path:
        return self.root / self.experiment

    @property
    def model_dirs(self) -> list[Path]:
        return [self.experiment_dir / m for m in self.model_ids]


@pytest.fixture(scope="session")
def digits_oof(tmp_path_factory: pytest.TempPathFactory) -> DigitsOOF:
    """Six real OOF artifacts over digits (about 5 s to build, once per session)."""
    X, y = load_digits(return_X_y=True)
    X, X_test, y, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    folds = np.empty(len(y), dtype=np.int64)
    for f, (_, val) in enumerate(StratifiedKFold(N_FOLDS, shuffle=True, random_state=0).split(X, y)):
        folds[val] = f
    classes = [f"digit_{d}" for d in range(10)]
    test_paths = [f"test/{i}.png" for i in range(len(y_test))]
    runs = tmp_path_factory.mktemp("runs")
    root = runs / "oof"
    ids = []
    for name, (est, dtype) in _classifiers().items():
        oof = np.zeros((len(y), 10))
        test = np.zeros((len(y_test), 10))
        scores = []
        for f in range(N_FOLDS):
            fit_rows, val_rows = folds != f, folds == f
            model = clone(est).fit(X[fit_rows], y[fit_rows])
            oof[val_rows] = model.predict_proba(X[val_rows])
            test += model.predict_proba(X_test) / N_FOLDS  # fold models averaged, as the OOF stage does
            scores.append(float(np.mean(oof[val_rows].argmax(1) == y[val_rows])))
        write_artifact(
            artifact_dir(EXPERIMENT, name, root=root),
            oof=oof,
            targets=y,
            folds=folds,
            classes=classes,
            test=test,
            test_image_paths=test_paths,
            config={"estimator": type(est[-1]).__name__},
            fold_scores=scores,
            data_hash="sklearn-digits",
            dtype=dtype,
        )
        ids.append(name)
    return DigitsOOF(runs, root, EXPERIMENT, sorted(ids), y, folds, y_test, classes, test_paths)


@pytest.fixture(scope="session")
def digits_stack(digits_oof: DigitsOOF):
    """The digits artifacts as a ProbStack (memory-mapped) with labels and folds."""
    from ensemble import ProbStack, find_artifacts

    arts = find_artifacts(digits_oof.experiment, root=digits_oof.root)
    return ProbStack.from_artifacts(arts), digits_oof.y, digits_oof.folds

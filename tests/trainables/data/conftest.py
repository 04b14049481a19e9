"""Fixtures of the data-layer tests: the built-in set (made once per session) and small image files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainables.data import Dataset, load_dataset

_LOADED: dict[str, Dataset] = {}


@pytest.fixture
def synthetic() -> Dataset:
    """The default built-in set, generated and checked once per session.

    Function-scoped on purpose: the root conftest sets RUNS_DIR in a function-scoped autouse
    fixture, which runs before this one but after any session-scoped fixture would.
    """
    key = os.environ["RUNS_DIR"]
    if key not in _LOADED:
        _LOADED[key] = load_dataset("synthetic")
    return _LOADED[key]


def sketch(h: int = 48, w: int = 40, seed: int = 0) -> np.ndarray:
    """A small RGB drawing: a few dark random strokes on white, different for every seed."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.uint8)
    for _ in range(4):
        pts = (rng.random((3, 2)) * [w - 1, h - 1]).round().astype(np.int32)
        cv2.polylines(img, [pts], False, (20, 20, 20), max(1, min(h, w) // 16))
    return img


ImageWriter = Callable[..., Path]


@pytest.fixture
def write_png() -> ImageWriter:
    """``write_png(path, seed=0, h=48, w=40, mode="RGB")``: write a small real PNG, return its path."""

    def write(path: Path, seed: int = 0, h: int = 48, w: int = 40, mode: str = "RGB") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sketch(h, w, seed)).convert(mode).save(path)
        return path

    return write


@pytest.fixture
def competition(tmp_path: Path, write_png: ImageWriter) -> Path:
    """A tiny competition-layout dataset: 3 classes x 4 train images, 3 test images."""
    root = tmp_path / "comp"
    rows = []
    for target, name in enumerate(["apple", "bus", "cat"]):
        for k in range(4):
            rel = f"{name}/{name}_{k}.png"
            write_png(root / "train" / rel, seed=10 * target + k)
            rows.append((name, rel, target))
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(root / "train.csv", index=False)
    for k in range(3):
        write_png(root / "test" / f"{k}.png", seed=100 + k)
    pd.DataFrame({"image_path": [f"{k}.png" for k in range(3)]}).to_csv(root / "test.csv", index=False)
    return root

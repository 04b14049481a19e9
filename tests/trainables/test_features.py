"""The feature cache: computed once per (data, split, size, spec), both views, atomic, shared by later calls."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trainables.augment import edge_map
from trainables.data import decoded_images, load_dataset
from trainables.features import (
    VIEWS,
    cached_features,
    feature_cache_path,
    feature_sidecar,
    feature_stats,
)


def _profile(images: np.ndarray) -> np.ndarray:
    """A real (if simple) extractor: per-column mean intensity, which a mirror reverses."""
    return images.astype(np.float32).mean(axis=(1, 3)) / 255.0


def test_features_are_computed_once_and_hold_both_views(tiny_data: Path) -> None:
    ds = load_dataset(str(tiny_data))
    spec = {"extractor": "column-profile", "test": "once"}
    before = feature_stats()
    first = cached_features(ds, "train", 32, spec, _profile, batch_size=50)
    after_build = feature_stats()
    assert after_build["builds"] == before["builds"] + 1
    assert after_build["computed"] == before["computed"] + len(ds.train)

    images = decoded_images(ds, "train", size=32)
    assert first.shape == (len(ds.train), len(VIEWS), 32) and first.dtype == np.float16
    np.testing.assert_allclose(first[:, 0], _profile(np.asarray(images)), atol=1e-3)
    np.testing.assert_allclose(first[:, 1], first[:, 0, ::-1], atol=1e-3)  # view 1 is the mirror

    again = cached_features(ds, "train", 32, spec, _never_called)
    assert feature_stats()["computed"] == after_build["computed"], "a cache hit ran the extractor"
    assert feature_stats()["hits"] == after_build["hits"] + 1
    np.testing.assert_array_equal(again, first)

    path = feature_cache_path(ds, "train", 32, spec)
    side = feature_sidecar(path)
    assert path.is_file() and side["spec"] == spec and side["shape"] == list(first.shape)
    assert path.parent.parent == decoded_images_dir_parent(ds), "features live beside the decoded cache"
    assert not [p for p in os.listdir(path.parent) if ".tmp" in p], "a temporary file was left behind"


def test_another_spec_size_or_split_is_another_cache(tiny_data: Path) -> None:
    ds = load_dataset(str(tiny_data))
    spec = {"extractor": "column-profile", "test": "keys"}
    paths = {
        feature_cache_path(ds, "train", 32, spec),
        feature_cache_path(ds, "train", 32, {**spec, "weights": "other"}),
        feature_cache_path(ds, "train", 48, spec),
        feature_cache_path(ds, "test", 32, spec),
    }
    assert len(paths) == 4
    test_feats = cached_features(ds, "test", 32, spec, _profile, dtype="float32")
    assert test_feats.shape == (len(ds.test), 2, 32) and test_feats.dtype == np.float32


def test_preprocess_runs_before_the_extractor(tiny_data: Path) -> None:
    ds = load_dataset(str(tiny_data))
    plain = cached_features(ds, "train", 32, {"test": "pre", "edge": False}, _profile)
    edges = cached_features(ds, "train", 32, {"test": "pre", "edge": True}, _profile, preprocess=edge_map)
    first = np.asarray(decoded_images(ds, "train", size=32)[:1])
    np.testing.assert_allclose(edges[0, 0], _profile(edge_map(first[0])[None])[0], atol=1e-3)
    assert not np.allclose(plain[:, 0], edges[:, 0])


def test_a_failed_build_leaves_no_cache(tiny_data: Path) -> None:
    ds = load_dataset(str(tiny_data))
    spec = {"test": "crash"}

    def crash(images: np.ndarray) -> np.ndarray:
        raise RuntimeError("extractor failed")

    with pytest.raises(RuntimeError, match="extractor failed"):
        cached_features(ds, "train", 32, spec, crash)
    path = feature_cache_path(ds, "train", 32, spec)
    assert not path.exists() and feature_sidecar(path) is None
    assert not [p for p in os.listdir(path.parent) if p.startswith(f".{path.stem}")]


def _never_called(images: np.ndarray) -> np.ndarray:
    raise AssertionError("the extractor ran on a cache hit")


def decoded_images_dir_parent(ds: object) -> Path:
    from trainables.data import cache_path

    return cache_path(ds, "train", 32).parent.parent

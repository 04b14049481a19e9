"""The feature cache: a frozen backbone's outputs for every image of a split, computed once, on disk.

A trial whose backbone is frozen and whose inputs are not randomly augmented sees the same
features every epoch, and so does every other trial on the same backbone, weights and image
size. Those features are computed once per ``(dataset, split, image size, spec)`` into a ``.npy``
beside the decoded cache (``runs_dir()/cache/features``) and memory-mapped by every later trial:
head trials then train on them without running the backbone at all.

Two views are stored per image: the image as decoded and its horizontal mirror, so a head trial
keeps random horizontal flips, the flipped copies that fill short classes, and flip TTA. With
``augment`` one view is stored instead: each row through a random transform seeded by its row
(one epoch's augmented copies of the images, shared by every fold and trial that would draw them:
:mod:`trainables.frozen`).

The ``spec`` is a JSON-able mapping naming everything the features depend on besides the data:
backbone, a hash of its frozen weights, which layer and summary is stored, deterministic
preprocessing (edge maps), precision. Its hash is part of the file name, so a change of any of
them is a different file, never a stale hit. A build is written under a temporary name and
renamed when whole, under a lock, so concurrent trials wait for one builder; a JSON sidecar
records the spec, shape and build time. Numpy only: the extractor is the caller's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from common.io import (
    atomic_path,
    atomic_write_json,
    file_lock,
    open_memmap_with_room,
    read_json,
    runs_dir,
    short_hash,
)
from trainables.data import Dataset, decoded_images

log = logging.getLogger(__name__)

# Bump when what is stored changes meaning (views, layout), so old caches are not reused.
FEATURE_CACHE_VERSION = 1
VIEWS = ("original", "hflip")

_lock = threading.Lock()
_STATS = {"hits": 0, "builds": 0, "computed": 0}

Extractor = Callable[[np.ndarray], np.ndarray]
"""``(B, S, S, 3)`` uint8 RGB images -> ``(B, *feature_shape)`` float features."""
Augment = Callable[[np.ndarray, int], np.ndarray]
"""``(image, row) -> image``: a random per-image transform seeded by the row it is applied to."""


def feature_stats() -> dict[str, int]:
    """This process's counters: cache ``hits``, ``builds`` and images ``computed`` through an extractor.

    A trial that finds its features cached adds a hit and computes nothing; tests use this to
    show that a second head trial never runs the backbone.
    """
    with _lock:
        return dict(_STATS)


def weights_digest(state: Mapping[str, Any], skip: str | None = None) -> str:
    """A hash of a module's ``state_dict`` (names and values), for a spec's ``weights``: the
    features a frozen computation caches change whenever its weights do. Names starting with
    ``skip`` are left out (a classifier the features do not go through)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        if skip is not None and name.startswith(skip):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def feature_key(spec: Mapping[str, Any]) -> str:
    """The short stable hash of a spec (part of the cache file name)."""
    return short_hash(json.dumps(dict(spec), sort_keys=True, default=str), FEATURE_CACHE_VERSION)


def feature_cache_dir() -> Path:
    """Where feature caches live: ``runs_dir()/cache/features``."""
    return runs_dir() / "cache" / "features"


def feature_cache_path(ds: Dataset, split: str, size: int, spec: Mapping[str, Any]) -> Path:
    """Where the features of ``ds``'s ``split`` at ``size`` px for ``spec`` live (may not exist yet)."""
    name = f"{ds.name}-{ds.fingerprint}-{split}-{int(size)}px-{feature_key(spec)}.npy"
    return feature_cache_dir() / name


def cached_features(
    ds: Dataset,
    split: str,
    size: int,
    spec: Mapping[str, Any],
    extract: Extractor,
    *,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    augment: Augment | None = None,
    batch_size: int = 64,
    dtype: str = "float16",
) -> np.memmap:
    """The split's features for ``spec``, computing and storing them on the first call.

    Args:
        ds: A dataset from ``load_dataset``.
        split: ``"train"`` or ``"test"``.
        size: Side of the decoded images fed to ``extract``.
        spec: Everything the features depend on besides the data (see the module doc).
        extract: The frozen computation, called on batches of decoded images (both views).
        preprocess: Deterministic per-image step before ``extract`` (e.g. an edge map).
        augment: A random per-row transform instead of ``preprocess``: one view per row is
            stored, that row's augmented image (the spec must name the draw, e.g. seed and epoch).
        batch_size: Images per ``extract`` call (each call sees twice as many: both views).
        dtype: Storage dtype; ``float16`` halves the disk and page-cache footprint of token maps.

    Returns:
        Read-only ``np.memmap`` ``(N, 2, *feature_shape)``: row ``i`` is the split's row ``i``,
        view 0 the image, view 1 its mirror (with ``augment``: ``(N, 1, ...)``, the augmented image).
    """
    if augment is not None and preprocess is not None:
        raise ValueError("give preprocess or augment, not both (an augment does its own preprocessing)")
    path = feature_cache_path(ds, split, size, spec)
    features = _open(path)
    if features is None:
        with file_lock(path.with_suffix(".lock")):
            features = _open(path)  # another trial may have built it while this one waited
            if features is None:
                images = decoded_images(ds, split, size=int(size))
                _build(
                    path, images, spec, extract, preprocess, augment, batch_size, np.dtype(dtype),
                    f"{ds.name} {split}",
                )  # fmt: skip
                features = _open(path)
                assert features is not None, f"feature cache {path} unreadable right after it was written"
                _count("builds")
                return features
    _count("hits")
    log.debug("feature cache hit: %s", path)  # a build is news (it takes time); a hit is not
    return features


def feature_sidecar(path: Path) -> dict[str, Any] | None:
    """The JSON written beside a feature cache (spec, shape, build time), or None if not built."""
    return read_json(path.with_suffix(".json"))


def _count(key: str, n: int = 1) -> None:
    with _lock:
        _STATS[key] += n


def _open(path: Path) -> np.memmap | None:
    if not path.is_file() or feature_sidecar(path) is None:
        return None
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable feature cache %s (%s); rebuilding it", path, exc)
        return None


def _build(
    path: Path,
    images: np.ndarray,
    spec: Mapping[str, Any],
    extract: Extractor,
    preprocess: Callable[[np.ndarray], np.ndarray] | None,
    augment: Augment | None,
    batch_size: int,
    dtype: np.dtype,
    what: str,
) -> None:
    start = time.perf_counter()
    n = len(images)
    stored = ("augmented",) if augment is not None else VIEWS
    out: np.memmap | None = None
    # The sidecar goes last: a cache file without one (a crash between the two) is rebuilt.
    with atomic_path(path) as tmp:
        bar = tqdm(total=n, desc=f"features {what}", unit="img", disable=None)
        with bar:
            for lo in range(0, n, batch_size):
                batch = np.ascontiguousarray(images[lo : lo + batch_size])
                if augment is not None:
                    batch = np.stack([augment(image, lo + j) for j, image in enumerate(batch)])
                elif preprocess is not None:
                    batch = np.stack([preprocess(image) for image in batch])
                views = batch if augment is not None else np.concatenate([batch, batch[:, :, ::-1]])
                feats = np.asarray(extract(np.ascontiguousarray(views)))
                if out is None:
                    shape = (n, len(stored), *feats.shape[1:])
                    out = open_memmap_with_room(tmp, dtype, shape, f"{what} feature")
                half = len(batch)
                for view in range(len(stored)):
                    out[lo : lo + half, view] = feats[view * half : (view + 1) * half]
                bar.update(half)
        if out is None:  # an empty split: nothing to extract, store an empty array
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(0, len(stored)))
        out.flush()
        stored_shape = list(out.shape)
        del out  # unmap before the rename
    _count("computed", n)
    seconds = time.perf_counter() - start
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "spec": dict(spec),
            "shape": stored_shape,
            "dtype": dtype.name,
            "views": list(stored),
            "version": FEATURE_CACHE_VERSION,
            "build_seconds": round(seconds, 2),
        },
    )
    log.info("built feature cache %s: %d images in %.1fs", path, n, seconds)

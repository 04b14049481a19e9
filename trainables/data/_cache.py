"""The decoded cache: every image decoded once into a memory-mapped uint8 array, shared by all trials."""

from __future__ import annotations

import functools
import logging
import operator
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.io import atomic_path, atomic_write_json, file_lock, open_memmap_with_room, read_json, runs_dir

from ._dataset import Dataset
from ._errors import BadDataError
from ._images import load_square
from ._io import default_workers

log = logging.getLogger(__name__)

# Bump when the decoding or resizing changes, so stale caches are not reused.
CACHE_VERSION = 1
_CHUNK = 32  # images per task: large enough to amortise scheduling, small enough for a smooth bar

_stats_lock = threading.Lock()
_STATS = {"hits": 0, "builds": 0, "decoded": 0}


def cache_stats() -> dict[str, int]:
    """Counters of this process: cache ``hits``, cache ``builds`` and images ``decoded`` into caches.

    A load that finds its cache adds one hit and decodes nothing; that is how the tests observe
    that a second load reuses the first one's work.
    """
    with _stats_lock:
        return dict(_STATS)


def cache_path(ds: Dataset, split: str, size: int) -> Path:
    """Where the decoded cache of ``ds``'s ``split`` at ``size`` px lives (it may not exist yet)."""
    return (
        runs_dir() / "cache" / "decoded" / f"{ds.name}-{ds.fingerprint}-{split}-{size}px-v{CACHE_VERSION}.npy"
    )


def decoded_images(
    ds: Dataset, split: str = "train", size: int = 128, *, workers: int | None = None
) -> np.memmap:
    """The split's images decoded, resized and padded to ``size`` px, as a read-only memory map.

    Each image is resized keeping its aspect ratio so that its long side is ``size``
    (``cv2.INTER_AREA`` when shrinking) and centred on a white square, white being a sketch's
    background, so shapes are never stretched. Modes, transparency and EXIF rotation are handled
    as in :func:`trainables.data.read_rgb`.

    The first call decodes every image (in ``workers`` threads, with a progress bar) into a
    ``.npy`` file under ``runs_dir()/cache/decoded`` keyed by the dataset fingerprint, split and
    size; the file is written under a temporary name and renamed when whole, while a lock makes
    concurrent callers wait for one builder. Every later call, in any process, maps the same
    file: pages are shared through the OS page cache, not copied per trial. Index it with row
    numbers of ``ds.train``/``ds.test`` and copy batches out (``np.ascontiguousarray(imgs[idx])``)
    before handing them to code that writes in place. Do not pickle the array into worker
    processes (NumPy pickles a memmap as a full in-memory copy): pass the Dataset and call this
    function in the worker, where it is a cache hit that maps the same pages.

    Args:
        ds: A dataset from :func:`load_dataset`.
        split: ``"train"`` or ``"test"``.
        size: Side of the square images, in pixels.
        workers: Decoding threads for a build; default: the cores available.

    Returns:
        ``np.memmap`` of shape ``(len(rows), size, size, 3)``, dtype uint8, RGB; row ``i`` is the
        split's row ``i``.

    Raises:
        BadDataError: Files changed since ``load_dataset`` checked them and no longer decode.
    """
    try:
        size = operator.index(size)  # numpy integers from a search space are fine; 128.0 is not
    except TypeError:
        raise ValueError(f"size={size!r} must be an integer number of pixels") from None
    if size < 8:
        raise ValueError(f"size={size} is too small; use at least 8 pixels")
    rows = ds.split(split)
    path = cache_path(ds, split, size)
    shape = (len(rows), size, size, 3)
    images = _open(path, shape)
    if images is None:
        with file_lock(path.with_suffix(".lock")):
            images = _open(path, shape)  # another process may have built it while we waited
            if images is None:
                _build(path, list(rows["path"]), size, ds, split, workers or default_workers())
                images = _open(path, shape)
                assert images is not None, f"cache {path} unreadable right after it was written"
                _count("builds")
                return images
    _count("hits")
    log.debug("decoded cache hit: %s", path)  # a build is news (it takes time); a hit is not
    return images


def _count(key: str, n: int = 1) -> None:
    with _stats_lock:
        _STATS[key] += n


def _open(path: Path, shape: tuple[int, ...]) -> np.memmap | None:
    if not path.is_file():
        return None
    try:
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable cache %s (%s); rebuilding it", path, exc)
        return None
    if images.shape != shape or images.dtype != np.uint8:
        log.warning("ignoring cache %s of shape %s (expected %s); rebuilding it", path, images.shape, shape)
        return None
    return images


def _build(path: Path, files: list[str], size: int, ds: Dataset, split: str, workers: int) -> None:
    start = time.perf_counter()
    problems: list[tuple[str, str]] = []
    with atomic_path(path) as tmp:
        shape = (len(files), size, size, 3)
        out = open_memmap_with_room(tmp, np.uint8, shape, f"decoded {ds.name} {split} {size}px image")
        starts = range(0, len(files), _CHUNK)

        bar = tqdm(total=len(files), desc=f"decoding {ds.name} {split} at {size}px", unit="img", disable=None)
        with bar, ThreadPoolExecutor(workers) as pool:
            for lo, bad in zip(
                starts, pool.map(functools.partial(_fill, out, files, size), starts), strict=True
            ):
                problems += bad
                bar.update(min(_CHUNK, len(files) - lo))
        if problems:
            raise BadDataError(
                problems, where=f"{ds.root} (they changed after load_dataset checked them; load it again)"
            )
        out.flush()
        del out  # unmap before the rename
        _count("decoded", len(files))
        seconds = time.perf_counter() - start
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "dataset": ds.name,
                "root": str(ds.root),
                "fingerprint": ds.fingerprint,
                "split": split,
                "size": size,
                "shape": [len(files), size, size, 3],
                "dtype": "uint8",
                "layout": "RGB, aspect kept, long side = size, centred on white",
                "version": CACHE_VERSION,
                "build_seconds": round(seconds, 2),
            },
        )
    log.info("built decoded cache %s: %d images in %.1fs", path, len(files), seconds)


def _fill(out: np.ndarray, files: list[str], size: int, lo: int) -> list[tuple[str, str]]:
    """Decode files ``lo .. lo + _CHUNK`` into ``out``; return the ones that failed, with why."""
    bad = []
    for i in range(lo, min(lo + _CHUNK, len(files))):
        try:
            out[i] = load_square(files[i], size)
        except Exception as exc:  # every failure is reported together by the caller
            bad.append((files[i], f"cannot decode: {type(exc).__name__}: {exc}"))
    return bad


def cache_sidecar(ds: Dataset, split: str, size: int) -> dict | None:
    """The JSON written beside a cache (shape, size, fingerprint, build time), or None if not built."""
    return read_json(cache_path(ds, split, size).with_suffix(".json"))

"""Object split: a sketch holding several separate objects, cut into one crop per object.

The reference team's "object split": a training sketch that shows several objects on a white
background (three fish, two cups) is cut by connected components into extra training samples
of its class. Ink is thresholded on a small working copy, dilated so that the strokes of one
object (broken lines, an eye inside a face) join, and labelled with
``cv2.connectedComponentsWithStats``; components whose boxes overlap are one object, a part much
smaller than the largest joins its nearest object, and specks are dropped. Objects that touch
stay one object: the split is conservative. Measured on the built-in set: its 8 planted
two-object training sketches give 2 crops each, 3 of its 727 single-object ones are split (a
cloud drawn in two pieces twice, a flower's detached stem); on sketchy125, 6 of 1,735.

:func:`object_crops` builds the crops of a dataset's training split once, into a memmap cache
beside the decoded one; trainables add the crops of their own training rows (never validation
or test rows) with ``aug.object_split=true``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from common.io import atomic_path, atomic_write_json

from ._cache import cache_path
from ._dataset import Dataset
from ._images import WHITE, fit_square, read_rgb
from ._io import default_workers, file_lock

log = logging.getLogger(__name__)

OBJECTS_VERSION = 1  # bump on any change to how objects are found or cut: the cache key changes
WORK_SIDE = 256  # long side of the working copy the objects are found on (scale-free thresholds)
INK_BELOW = 230  # gray level below which a pixel is ink (light pencil lines of small sketches included)
JOIN = 0.015  # dilation radius, as a fraction of the working long side: joins a broken stroke
SPECK = 0.01  # parts with less than this share of the ink are specks, dropped
OBJECT_INK = 0.25  # an object has at least this share of the largest part's ink ...
OBJECT_SIDE = 0.3  # ... and a box at least this share of its long side; smaller parts join the nearest object
MARGIN = 0.04  # white border kept around a crop, as a fraction of the image's long side

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in image pixels
Rows = TypeVar("Rows")


def find_objects(image: np.ndarray) -> list[Box]:
    """The boxes of the separate objects of a sketch on white, largest ink first.

    Parts are the connected components of the dilated ink, those whose boxes overlap taken as
    one (an eye inside a face). A part much smaller than the largest (a star beside a moon, rain
    under a cloud, a handle broken off an umbrella) belongs to the nearest object rather than
    being one; specks are dropped.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8, ink dark on a light background.

    Returns:
        One box per object in ``image`` pixels (empty for a blank image).
    """
    h, w = image.shape[:2]
    gray = image if image.ndim == 2 else image.min(axis=2)  # coloured ink is ink too
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale < 1.0:  # INTER_AREA keeps a thin stroke as a lighter line rather than dropping it
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), cv2.INTER_AREA)
    ink = (gray < INK_BELOW).astype(np.uint8)
    total = int(ink.sum())
    if not total:
        return []
    r = max(1, round(JOIN * max(ink.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(ink, kernel), connectivity=8)
    amounts = np.bincount(labels[ink > 0], minlength=n)
    # Each component's box less the dilation: the box of its ink, which is what may overlap.
    parts = _merge_overlapping(
        [
            ((x + r, y + r, x + bw - r, y + bh - r), int(amounts[i]))
            for i, (x, y, bw, bh) in enumerate(stats[:, :4].tolist())
            if i and amounts[i] >= SPECK * total  # label 0 is the background
        ]
    )
    if not parts:  # nothing but specks: no object to cut out
        return []
    big_ink = max(amount for _, amount in parts)
    big_side = max(_long_side(box) for box, amount in parts if amount == big_ink)
    is_object = [a >= OBJECT_INK * big_ink and _long_side(b) >= OBJECT_SIDE * big_side for b, a in parts]
    objects = [part for part, ok in zip(parts, is_object, strict=True) if ok]
    for (box, amount), ok in zip(parts, is_object, strict=True):
        if not ok:
            k = min(range(len(objects)), key=lambda i: _gap(objects[i][0], box))
            objects[k] = (_union(objects[k][0], box), objects[k][1] + amount)
    objects = sorted(_merge_overlapping(objects), key=lambda part: -part[1])
    return [
        (int(x0 / scale), int(y0 / scale), min(w, int(np.ceil(x1 / scale))), min(h, int(np.ceil(y1 / scale))))
        for (x0, y0, x1, y1), _ in objects
    ]


def split_objects(image: np.ndarray) -> list[np.ndarray]:
    """Crops of each separate object of a sketch on white, largest first, with a white margin.

    A sketch of one object gives one crop (it is not split); a blank one gives none.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8.

    Returns:
        The crops, each padded with white where the margin runs past the image.
    """
    h, w = image.shape[:2]
    pad = round(MARGIN * max(h, w))
    crops = []
    for x0, y0, x1, y1 in find_objects(image):
        crop = image[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad]
        top, left = pad - min(pad, y0), pad - min(pad, x0)
        bottom, right = max(0, y1 + pad - h), max(0, x1 + pad - w)
        crops.append(
            cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(WHITE,) * 3)
        )
    return crops


def _merge_overlapping(parts: list[tuple[Box, int]]) -> list[tuple[Box, int]]:
    """Union parts whose boxes overlap (a part inside or across another's box), summing their ink."""
    groups = list(parts)
    i = 0
    while i < len(groups):
        j = next((j for j in range(i + 1, len(groups)) if _overlap(groups[i][0], groups[j][0])), None)
        if j is None:
            i += 1
            continue
        (a, ink_a), (b, ink_b) = groups[i], groups.pop(j)
        groups[i] = (_union(a, b), ink_a + ink_b)
        i = 0  # the grown box may now overlap one seen before
    return groups


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _gap(a: Box, b: Box) -> float:
    """Distance between two boxes (0 when they touch or overlap)."""
    dx = max(0, a[0] - b[2], b[0] - a[2])
    dy = max(0, a[1] - b[3], b[1] - a[3])
    return float(np.hypot(dx, dy))


def _long_side(box: Box) -> int:
    return max(box[2] - box[0], box[3] - box[1])


def object_crops(ds: Dataset, size: int, *, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The objects cut out of every multi-object training image, fitted to ``size`` px squares.

    Built once per dataset fingerprint and size (under a lock, written atomically) next to the
    decoded cache, then memory-mapped like it. Single-object images contribute nothing.

    Args:
        ds: A dataset from :func:`load_dataset`.
        size: Side of the squares, the trial's ``image_size``.
        workers: Decoding threads for a build; default: the cores available.

    Returns:
        ``(crops, sources)``: ``(M, size, size, 3)`` uint8 images (a read-only memmap when
        ``M > 0``) and the train-split row each came from, ``(M,)`` int64.
    """
    path = cache_path(ds, "train", size).with_name(
        f"{ds.name}-{ds.fingerprint}-objects-{size}px-v{OBJECTS_VERSION}.npy"
    )
    found = _open(path, size)
    if found is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_suffix(".lock")):
            found = _open(path, size)
            if found is None:
                _build(path, list(ds.train["path"]), size, workers or default_workers())
                found = _open(path, size)
                assert found is not None, f"object crops {path} unreadable right after they were written"
    return found


def with_object_crops(ds: Dataset, rows: Rows, offset: int, size: int, kind: int) -> tuple[np.ndarray, Rows]:
    """A trial's rows plus the object crops of its training originals; validation is never split.

    Args:
        ds: The trial's dataset.
        rows: A ``trainables.split.TrialRows`` (any dataclass with its ``train_*`` arrays).
        offset: Where the crops start among the trial's cached images (after train and any test rows).
        size: The trial's ``image_size``.
        kind: The sample kind of an original (``trainables.augment.ORIGINAL``); crops train as originals.

    Returns:
        ``(crops, rows)``: all crops of the dataset (stack them after the other images) and the
        rows with this trial's crops appended to the training side, labelled as their sketches.
    """
    crops, sources = object_crops(ds, size)
    train: Any = rows
    take = np.flatnonzero(np.isin(sources, train.train_rows[train.train_kinds == kind]))
    extra = {
        "train_rows": offset + take,
        "train_labels": ds.train["target"].to_numpy()[sources[take]],
        "train_kinds": np.full(len(take), kind, train.train_kinds.dtype),
    }
    added = {name: np.concatenate([getattr(train, name), values]) for name, values in extra.items()}
    return crops, dataclasses.replace(train, **added)


def _open(path: Path, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    sidecar = path.with_suffix(".json")
    if not (path.is_file() and sidecar.is_file()):
        return None
    sources = np.asarray(json.loads(sidecar.read_text())["sources"], dtype=np.int64)
    if not len(sources):
        return np.zeros((0, size, size, 3), np.uint8), sources
    crops = np.load(path, mmap_mode="r")
    if crops.shape != (len(sources), size, size, 3):
        log.warning("ignoring object crops %s of shape %s; rebuilding them", path, crops.shape)
        return None
    return crops, sources


def _build(path: Path, files: list[str], size: int, workers: int) -> None:
    def cut(i: int) -> list[np.ndarray]:
        crops = split_objects(read_rgb(files[i]))
        return [fit_square(c, size) for c in crops] if len(crops) > 1 else []

    with ThreadPoolExecutor(workers) as pool:
        per_image = list(pool.map(cut, range(len(files))))
    sources = [i for i, crops in enumerate(per_image) for _ in crops]
    stacked = np.stack([c for crops in per_image for c in crops]) if sources else np.zeros((0, size, size, 3))
    # The sidecar first: a reader takes the crops as whole once the .npy appears.
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "sources": sources,
            "images_split": int(sum(bool(c) for c in per_image)),
            "version": OBJECTS_VERSION,
        },
    )
    with atomic_path(path) as tmp:
        np.save(tmp, stacked.astype(np.uint8))
    log.info(
        "object split: %d crops from %d of %d training images", len(sources), len(set(sources)), len(files)
    )

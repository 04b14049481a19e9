"""The built-in sketch set (``data=synthetic``): drawn deterministically, written in the competition layout.

24 classes of everyday objects (see ``_shapes``), each drawing different: proportions and parts
vary per recipe, and the hand varies per image (slant, scale, position, wobbly and broken
strokes, pen thickness and colour). Images are 400-800 px with aspect 0.8-1.2 on white, about
one in six saved as grayscale (``L``) PNG, the rest RGB PNG with some JPEG. Planted on purpose,
so every preprocessing step has work: flipped and resized copies of a few training images inside
their class, and a few images holding two objects. ``synthetic.json`` records the planted sets;
``test_labels.csv`` holds the test answers (the competition layout has none; the built-in set
keeps them so an end-to-end run can be scored).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from common.io import file_lock, runs_dir

from ._io import default_workers
from ._shapes import RECIPES, Strokes

log = logging.getLogger(__name__)

SYNTHETIC_VERSION = 1  # bump on any change to what is drawn: the folder name and so every cache key change
SYNTHETIC_NAME = f"synthetic-v{SYNTHETIC_VERSION}"
# Inks: mostly near-black pens, some coloured ones (RGB files only).
_INKS = [(20, 20, 20), (40, 40, 45), (25, 45, 140), (130, 35, 30), (30, 100, 45), (95, 95, 100)]


def synthetic_root() -> Path:
    """Where the default built-in set lives: ``runs_dir()/data/synthetic-v1``."""
    return runs_dir() / "data" / SYNTHETIC_NAME


def ensure_synthetic() -> Path:
    """Generate the default built-in set on first use (a few seconds) and return its folder.

    Generation writes into a temporary folder and renames it into place under a lock, so
    processes that race here see either no set or a whole one.
    """
    root = synthetic_root()
    if (root / "train.csv").is_file():
        return root
    with file_lock(root.with_name(root.name + ".lock")):
        if not (root / "train.csv").is_file():
            start = time.perf_counter()
            generate_synthetic(root)
            log.info("generated the built-in sketch set at %s in %.1fs", root, time.perf_counter() - start)
    return root


def generate_synthetic(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    classes: list[str] | None = None,
    n_train: int = 30,
    n_test: int = 10,
    n_duplicate_sets: int = 12,
    n_multi: int = 8,
    workers: int | None = None,
) -> Path:
    """Draw a sketch set into ``out`` (which must not exist) in the competition layout.

    The output depends only on the arguments: every image has its own random generator seeded by
    ``(seed, split, class, index)``, so threads may draw them in any order.

    Args:
        out: Folder to create.
        seed: Seed of everything random.
        classes: Subset of the recipe names (default: all 24), for small test sets.
        n_train: Training drawings per class (planted copies come on top).
        n_test: Test drawings per class.
        n_duplicate_sets: Training images that get flipped and/or resized copies in their class.
        n_multi: Training images holding two objects (the label is the larger one); a quarter as
            many in the test split.
        workers: Drawing threads (OpenCV releases the GIL); default: the cores available.

    Returns:
        ``out``.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; generate_synthetic writes a new folder")
    names = sorted(classes or RECIPES)
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        raise ValueError(f"unknown synthetic class(es) {unknown}; valid: {sorted(RECIPES)}")
    plan = _plan(names, seed, n_train, n_test, n_duplicate_sets, n_multi)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with ThreadPoolExecutor(workers or default_workers()) as pool:
            list(pool.map(lambda job: _write_job(tmp, names, job), plan["jobs"]))
        _write_tables(tmp, names, plan)
        os.rename(tmp, out)  # atomic: the set appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _plan(names: list[str], seed: int, n_train: int, n_test: int, n_dup: int, n_multi: int) -> dict[str, Any]:
    """Decide every file: its name, class, drawing seed, format and planted role."""
    rng = np.random.default_rng([seed, 1])
    jobs: list[dict[str, Any]] = []
    for target, name in enumerate(names):
        for k in range(n_train):
            jobs.append(
                {"split": "train", "target": target, "index": k, "file": f"train/{name}/{name}_{k:03d}"}
            )
    train_ids = np.arange(len(jobs))
    multi = set(rng.choice(train_ids, size=min(n_multi, len(jobs)), replace=False).tolist())
    # Duplicates come from single-object images, one source per class where possible.
    per_class = [
        [i for i in train_ids if jobs[i]["target"] == t and i not in multi] for t in range(len(names))
    ]
    order = rng.permutation(len(names))
    sources = [int(rng.choice(per_class[t])) for t in order[: min(n_dup, len(names))] if per_class[t]]
    sources += [
        int(i)
        for i in rng.choice(
            [i for i in train_ids if i not in multi and i not in sources],
            size=max(0, n_dup - len(sources)),
            replace=False,
        )
    ]
    duplicates, duplicate_kinds, copies = _plan_copies(jobs, sources, names, n_train, rng)
    for target, _name in enumerate(names):
        for k in range(n_test):
            jobs.append({"split": "test", "target": target, "index": k})
    test_ids = [i for i, j in enumerate(jobs) if j["split"] == "test"]
    multi |= set(rng.choice(test_ids, size=min((n_multi + 3) // 4, len(test_ids)), replace=False).tolist())
    for n, i in enumerate(rng.permutation(test_ids)):
        jobs[int(i)]["file"] = f"test/{n}"
    for i, job in enumerate(jobs):
        job["seed"] = [seed, 0 if job["split"] == "train" else 1, job["target"], job["index"]]
        job["multi"] = i in multi
        job["copies"] = [c for c in copies if c["copy_of"] == i]
    return {
        "jobs": jobs,
        "duplicates": duplicates,
        "duplicate_kinds": duplicate_kinds,
        "copies": copies,
        "seed": seed,
    }


def _plan_copies(
    jobs: list[dict[str, Any]], sources: list[int], names: list[str], n_train: int, rng: np.random.Generator
) -> tuple[list[list[str]], list[list[str]], list[dict[str, Any]]]:
    """Plan the planted duplicates: flipped and/or resized copies of each source drawing.

    Returns:
        Each duplicate set's files (the original first), each set's kinds, and the copies' jobs.
    """
    kinds = ["flip", "resize", "flip+resize"]
    duplicates: list[list[str]] = []
    duplicate_kinds: list[list[str]] = []
    copies: list[dict[str, Any]] = []
    for j, src in enumerate(sources):
        job = jobs[src]
        variants = [kinds[j % 3]] + (["resize"] if j % 4 == 3 else [])
        members = [job["file"]]
        for v, kind in enumerate(variants):
            k = n_train + 10 * j + v  # copies get ordinary-looking names after the originals
            name = names[job["target"]]
            copy = {**job, "index": k, "file": f"train/{name}/{name}_{k:03d}", "copy_of": src, "kind": kind}
            copy["u"], copy["grow"] = float(rng.random()), bool(rng.random() < 0.5)
            copy["jpeg"] = v == 1
            copies.append(copy)
            members.append(copy["file"])
        duplicates.append(members)
        duplicate_kinds.append(["original", *variants])
    return duplicates, duplicate_kinds, copies


def _write_job(root: Path, names: list[str], job: dict[str, Any]) -> None:
    rng = np.random.default_rng(job["seed"])
    image, gray, fmt = _draw_image(rng, names, job["target"], job["multi"])
    job["ext"] = _save(root / job["file"], image, fmt)
    for copy in job["copies"]:
        dup = image[:, ::-1] if "flip" in copy["kind"] else image
        if "resize" in copy["kind"]:
            h, w = dup.shape[:2]
            s = _copy_scale(h, w, copy["u"], copy["grow"])
            dup = cv2.resize(
                dup, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
            )
        copy["ext"] = _save(root / copy["file"], np.ascontiguousarray(dup), "jpg" if copy["jpeg"] else fmt)


def _copy_scale(h: int, w: int, u: float, grow: bool) -> float:
    """A scale at least 15% away from 1 that keeps both sides within 400..800 px."""
    lo, hi = 400 / min(h, w), 800 / max(h, w)
    down, up = (lo, min(0.85, hi)), (max(1.15, lo), hi)
    ranges = [r for r in ((up, down) if grow else (down, up)) if r[0] <= r[1]]
    a, b = ranges[0] if ranges else (lo, hi)
    return a + u * (b - a)


def _draw_image(
    rng: np.random.Generator, names: list[str], target: int, multi: bool
) -> tuple[np.ndarray, bool, str]:
    """One drawing: ``(pixels (H, W) or (H, W, 3), is_gray, "png"|"jpg")``."""
    while True:  # 400..800 px sides with aspect 0.8..1.2
        w, h = (int(v) for v in rng.integers(400, 801, size=2))
        if 0.8 <= w / h <= 1.2:
            break
    gray = rng.random() < 1 / 6
    fmt = "jpg" if not gray and rng.random() < 0.12 else "png"
    canvas = np.full((h, w) if gray else (h, w, 3), 255, dtype=np.uint8)
    pen = _pen(rng, gray, w, h)
    if not multi:
        _draw_object(
            canvas, RECIPES[names[target]](rng), rng, pen, box=(0.0, 0.0, 1.0, 1.0), fill=(0.65, 0.95)
        )
    else:
        other = (
            target
            if rng.random() < 0.5 or len(names) == 1
            else int(rng.choice([t for t in range(len(names)) if t != target]))
        )
        left = rng.random() < 0.5
        main_box, side_box = (
            ((0.0, 0.0, 0.62, 1.0), (0.62, 0.3, 1.0, 0.75))
            if left
            else ((0.38, 0.0, 1.0, 1.0), (0.0, 0.3, 0.38, 0.75))
        )
        _draw_object(canvas, RECIPES[names[target]](rng), rng, pen, box=main_box, fill=(0.75, 0.9))
        _draw_object(canvas, RECIPES[names[other]](rng), rng, pen, box=side_box, fill=(0.55, 0.8))
    return canvas, gray, fmt


def _pen(rng: np.random.Generator, gray: bool, w: int, h: int) -> dict[str, Any]:
    if gray:
        v = int(rng.integers(0, 90))
        ink: tuple[int, ...] = (v,)
    else:
        base = (
            _INKS[int(rng.integers(0, 2))] if rng.random() < 0.75 else _INKS[int(rng.integers(2, len(_INKS)))]
        )
        ink = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in base)
    side = min(w, h)
    return {
        "ink": ink,
        "thickness": side * rng.uniform(0.005, 0.016),  # 2..13 px: 0.6..2 px once the cache shrinks it to 128
        "wobble": side * rng.uniform(0.002, 0.008),
        "p_break": rng.uniform(0.0, 0.35),
    }


def _draw_object(
    canvas: np.ndarray,
    strokes: Strokes,
    rng: np.random.Generator,
    pen: dict[str, Any],
    box: tuple[float, ...],
    fill: tuple[float, float],
) -> None:
    """Place the strokes in ``box`` (fractions of the canvas) with a random pose, then draw them by hand."""
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    theta = np.deg2rad(rng.uniform(-15, 15))
    aniso = rng.uniform(0.88, 1.12)
    flip = -1.0 if rng.random() < 0.5 else 1.0  # drawn facing left or right
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag(
        [flip * aniso, 1 / aniso]
    )
    pts = [s @ rot.T for s in strokes]
    allp = np.vstack(pts)
    lo, hi = allp.min(0), allp.max(0)
    scale = rng.uniform(*fill) * min((x1 - x0) / (hi - lo)[0], (y1 - y0) / (hi - lo)[1])
    size = (hi - lo) * scale
    offset = np.array([rng.uniform(x0, max(x0, x1 - size[0])), rng.uniform(y0, max(y0, y1 - size[1]))])
    for s in pts:
        _draw_stroke(canvas, (s - lo) * scale + offset, rng, pen)


def _draw_stroke(canvas: np.ndarray, pts: np.ndarray, rng: np.random.Generator, pen: dict[str, Any]) -> None:
    dense = _resample(pts, step=3.0)
    n = len(dense)
    # Wobble: a slow random drift along the stroke plus a little tremor, and a whole-stroke offset.
    k = max(2, n // 25)
    anchors = rng.normal(0, pen["wobble"], size=(k, 2))
    t = np.linspace(0, k - 1, n)
    drift = np.stack([np.interp(t, np.arange(k), anchors[:, d]) for d in (0, 1)], axis=1)
    dense = (
        dense
        + drift
        + rng.normal(0, pen["wobble"] * 0.15, size=(n, 2))
        + rng.normal(0, pen["wobble"], size=2)
    )
    pieces = [dense]
    if n > 20 and rng.random() < pen["p_break"]:  # a broken stroke: the pen lifts for a moment
        at, gap = int(rng.integers(n // 5, 4 * n // 5)), max(2, int(n * rng.uniform(0.03, 0.1)))
        pieces = [dense[:at], dense[at + gap :]]
    thickness = max(1, round(pen["thickness"] * rng.uniform(0.8, 1.2)))
    color = pen["ink"] if canvas.ndim == 3 else pen["ink"][0]
    for piece in pieces:
        if len(piece) >= 2:
            fixed = np.round(piece * 16).astype(np.int32).reshape(-1, 1, 2)  # 4 fractional bits
            cv2.polylines(canvas, [fixed], False, color, thickness, cv2.LINE_AA, shift=4)


def _resample(pts: np.ndarray, step: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    dist = np.concatenate([[0.0], np.cumsum(seg)])
    if dist[-1] < step:
        return pts
    d = np.linspace(0, dist[-1], int(dist[-1] / step) + 1)
    return np.stack([np.interp(d, dist, pts[:, 0]), np.interp(d, dist, pts[:, 1])], axis=1)


def _save(stem: Path, image: np.ndarray, fmt: str) -> str:
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_suffix("." + fmt)
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    # RLE suits large white areas; encoding to memory releases the GIL, so threads overlap.
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, 90]
        if fmt == "jpg"
        else [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    )
    ok, data = cv2.imencode(path.suffix, bgr, params)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(data.tobytes())
    return path.suffix


def _write_tables(root: Path, names: list[str], plan: dict[str, Any]) -> None:
    jobs, copies = plan["jobs"], plan["copies"]
    train = [j for j in jobs if j["split"] == "train"] + copies
    train.sort(key=lambda j: (j["target"], j["index"]))
    rel = {id(j): j["file"] + j["ext"] for j in jobs + copies}
    pd.DataFrame(
        {
            "class_name": [names[j["target"]] for j in train],
            "image_path": [rel[id(j)].removeprefix("train/") for j in train],
            "target": [j["target"] for j in train],
        }
    ).to_csv(root / "train.csv", index=False)
    test = sorted((j for j in jobs if j["split"] == "test"), key=lambda j: int(j["file"].split("/")[1]))
    test_paths = [rel[id(j)].removeprefix("test/") for j in test]
    pd.DataFrame({"image_path": test_paths}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image_path": test_paths, "target": [j["target"] for j in test]}).to_csv(
        root / "test_labels.csv", index=False
    )
    ext = {j["file"]: j["ext"] for j in jobs + copies}
    meta = {
        "version": SYNTHETIC_VERSION,
        "seed": plan["seed"],
        "classes": names,
        "duplicates": [
            [(f + ext[f]).removeprefix("train/") for f in members] for members in plan["duplicates"]
        ],
        "duplicate_kinds": plan["duplicate_kinds"],
        "multi_object": {
            "train": [
                rel[id(j)].removeprefix("train/") for j in jobs if j["multi"] and j["split"] == "train"
            ],
            "test": [rel[id(j)].removeprefix("test/") for j in jobs if j["multi"] and j["split"] == "test"],
        },
    }
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")


def synthetic_meta(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The planted facts of a generated set (``synthetic.json``): duplicate sets, multi-object images.

    Args:
        root: The set's folder; default: the built-in set (generated if needed).
    """
    folder = Path(root) if root is not None else ensure_synthetic()
    return json.loads((folder / "synthetic.json").read_text())

"""Loader benchmark: the decoded cache against decoding every image every epoch.

One epoch over a training split at 128 px on one core, with the sketch augmentation of the
trainables (horizontal flip, affine, elastic p=0.3, Gauss noise p=0.3, motion blur p=0.3):

* baseline: PIL open + convert("RGB") + aspect-keeping resize and white pad per sample, as a
  plain per-file Dataset does, then augment;
* cached: a row of the decoded memmap (``trainables.data.decoded_images``), then augment.

Both see the same files through a warm page cache (``load_dataset`` has just read every file),
so the difference is decoding and resizing, not disk. Also printed: the same two loaders
without augmentation (the pure loading cost) and the one-time cost of building the cache.

Usage::

    python bench/bench_loader.py                      # sketchy125 (if present) and the built-in set
    python bench/bench_loader.py --data /path/to/ds --size 128 --limit 500
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout without installing: the repository root is importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# One core, honestly: pin the process and keep OpenCV/BLAS from starting thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from trainables.data import cache_path, decoded_images, load_dataset  # noqa: E402

SKETCHY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sketchy125"


def sketch_augment(size: int, seed: int = 0) -> A.Compose:
    """The trainables' sketch augmentation at ``size`` px (white fill: the sketch background)."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.85, 1.15), translate_percent=(-0.06, 0.06), rotate=(-15, 15), fill=255, p=0.7),
            A.ElasticTransform(alpha=30, sigma=6, fill=255, p=0.3),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
            A.MotionBlur(blur_limit=(3, 7), p=0.3),
        ],
        seed=seed,
    )


def pil_load(path: str, size: int) -> np.ndarray:
    """The per-sample baseline: decode with PIL, keep the aspect ratio, pad with white."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        return np.asarray(
            ImageOps.pad(im, (size, size), method=Image.Resampling.BILINEAR, color=(255, 255, 255))
        )


def rate(n: int, fn: Callable[[int], np.ndarray], order: np.ndarray) -> float:
    """Images per second of ``fn`` over ``order`` (one warm-up sample first)."""
    fn(int(order[0]))
    start = time.perf_counter()
    checksum = 0
    for i in order[:n]:
        checksum += int(fn(int(i))[0, 0, 0])  # use the result, so nothing is skipped
    return n / (time.perf_counter() - start)


def bench(spec: str, size: int, limit: int | None) -> dict[str, float]:
    ds = load_dataset(spec)
    n = min(limit or len(ds.train), len(ds.train))
    order = np.random.default_rng(0).permutation(len(ds.train))
    paths = ds.train["path"].tolist()
    built = not cache_path(ds, "train", size).exists()
    start = time.perf_counter()
    images = decoded_images(ds, "train", size, workers=1)
    build_s = time.perf_counter() - start
    aug = sketch_augment(size)

    def cached(i: int) -> np.ndarray:
        return np.ascontiguousarray(images[i])

    def decoded(i: int) -> np.ndarray:
        return pil_load(paths[i], size)

    result = {
        "n": n,
        "build_img_s": len(ds.train) / build_s if built else float("nan"),
        "load_decode": rate(n, decoded, order),
        "load_cached": rate(n, cached, order),
        "aug_decode": rate(n, lambda i: aug(image=decoded(i))["image"], order),
        "aug_cached": rate(n, lambda i: aug(image=cached(i))["image"], order),
    }
    sides = [Image.open(p).size for p in paths[:200]]
    median_side = int(np.median([max(s) for s in sides]))
    print(
        f"\n{ds.name}: {n} of {len(ds.train)} training images (median long side {median_side} px) at {size} px, one core"
    )
    if built:
        print(f"  cache build, one-time, 1 thread: {build_s:6.1f} s  ({result['build_img_s']:.0f} img/s)")
    else:
        print("  cache build: reused an existing cache")
    for label, a, b in (
        ("load only", "load_decode", "load_cached"),
        ("load + augment", "aug_decode", "aug_cached"),
    ):
        print(
            f"  {label:15s} decode+resize {result[a]:8.0f} img/s   cached {result[b]:8.0f} img/s   "
            f"ratio {result[b] / result[a]:5.1f}x"
        )
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on each ``--data`` and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", nargs="+", default=None, help="datasets (default: sketchy125 if present, synthetic)"
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="images per epoch (default: all)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    specs = args.data or ([str(SKETCHY)] if (SKETCHY / "train.csv").is_file() else []) + ["synthetic"]
    print(f"augmentation: {', '.join(type(t).__name__ for t in sketch_augment(args.size).transforms)}")
    for spec in specs:
        bench(spec, args.size, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

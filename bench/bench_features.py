"""Feature-cache benchmark: a frozen-backbone head trial with the cache against one without it.

One ``dino`` trial (linear head on a frozen ViT-S/16, the reference DINO architecture) timed
three ways, in one run, on the same data, config and machine:

* baseline: ``feature_cache=false``: the backbone runs on every training and validation image
  every epoch (what a head trial costs without the cache);
* first cached trial: builds the feature cache (both views of every training image) and trains;
* cached trial: the cache exists (any later head trial on this backbone): the backbone never runs.

The headline is baseline / cached per trial; the target is at least 20x. Also printed: the
one-time build cost and after how many head trials the cache has paid for itself. Weights are
random (no hub here); a ViT's cost does not depend on its weights. The decoded image cache is
built before any timing.

Usage::

    python bench/bench_features.py                              # sketchy125 if present, else the built-in set
    python bench/bench_features.py --image-size 224 --epochs 5 --backbone vit_small_patch14_dinov2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing: the repository root is importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables import create_trainable  # noqa: E402
from trainables.data import decoded_images, load_dataset  # noqa: E402
from trainables.features import feature_stats  # noqa: E402
from trainables.session import InlineSession  # noqa: E402

SKETCHY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sketchy125"


def timed_trial(config: dict, out: Path) -> tuple[float, dict]:
    """Seconds of one ``dino`` fit (setup, data, every epoch, checkpoints) and its final metrics."""
    start = time.perf_counter()
    metrics = create_trainable("dino").fit(config, InlineSession(out, verbose=False, resume=False))
    return time.perf_counter() - start, metrics


def main(argv: list[str] | None = None) -> int:
    """Run the three trials and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default=None, help="dataset (default: sketchy125 if present, else synthetic)"
    )
    parser.add_argument("--backbone", default="vit_small_patch16_224.dino")
    parser.add_argument("--head", default="linear", choices=["linear", "mlp", "attention"])
    parser.add_argument(
        "--image-size", type=int, default=112, help="112 keeps a CPU run to minutes; 224 is the reference"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    data = args.data or (str(SKETCHY) if (SKETCHY / "train.csv").is_file() else "synthetic")

    ds = load_dataset(data)
    decoded_images(ds, "train", size=args.image_size)  # the decoded cache is not what is measured
    config = {
        "data": data,
        "backbone": args.backbone,
        "pretrained": False,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "head": args.head,
        "device": args.device,
        "seed": 0,
    }
    print(
        f"data {ds.name}: {len(ds.train)} training images, {len(ds.classes)} classes; {args.backbone} "
        f"(frozen, random weights) + {args.head} head at {args.image_size}px, {args.epochs} epochs, fold 0 of 5"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base_s, base = timed_trial({**config, "feature_cache": False}, Path(tmp) / "baseline")
        before = feature_stats()
        build_s, built = timed_trial(config, Path(tmp) / "build")
        computed = feature_stats()["computed"] - before["computed"]
        cached_s, cached = timed_trial(config, Path(tmp) / "cached")
    assert feature_stats()["computed"] == before["computed"] + computed, "the cached trial ran the backbone"

    ratio = base_s / cached_s
    # Trials n after which n * baseline >= build + (n - 1) * cached: the cache has paid for itself.
    extra = build_s - cached_s
    break_even = max(1, int(-(-extra // (base_s - cached_s)))) if base_s > cached_s else float("inf")
    print(f"{'trial':<34}{'seconds':>10}{'val_acc':>10}")
    print(f"{'baseline (no cache)':<34}{base_s:>10.2f}{base['val_acc']:>10.3f}")
    print(f"{'first cached (builds the cache)':<34}{build_s:>10.2f}{built['val_acc']:>10.3f}")
    print(f"{'cached (cache exists)':<34}{cached_s:>10.2f}{cached['val_acc']:>10.3f}")
    print(f"feature extraction: {computed} images x 2 views, {extra:.1f}s over a cached trial")
    print(f"speed-up per head trial once the cache exists: {ratio:.1f}x (target >= 20x)")
    print(f"the cache pays for itself from head trial {break_even} on (first trial included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

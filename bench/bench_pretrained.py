"""Transfer learning pays: pretrained vs from-scratch tf_efficientnet_lite0 on sketchy125, one run.

One fold-0 trial each (group-aware folds: sketches of one photo never straddle the split), same
config and seed except ``pretrained``; prints validation accuracy per epoch side by side and the
training throughput of both.

    python bench/bench_pretrained.py                      # 6 epochs at 128 px (~10 min on 2 CPU cores)
    python bench/bench_pretrained.py --epochs 3 --image-size 96
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sketchy125"


def run_trial(config: dict[str, Any], out: Path) -> tuple[list[dict[str, Any]], float]:
    """Fit one config inline; returns its per-epoch metrics and wall seconds."""
    from trainables import create_trainable
    from trainables.session import InlineSession

    session = InlineSession(out, resume=False, verbose=True)
    start = time.perf_counter()
    create_trainable("timm").fit(config, session)
    return session.history, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run both trials and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if not (args.data / "train.csv").is_file():
        print(f"no data at {args.data} (expects the competition layout with train.csv)", file=sys.stderr)
        return 1

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from common.io import runs_dir
    from trainables.data import SKETCHY_GROUP_PATTERN

    base = {
        "data": str(args.data.resolve()),
        "fold": 0,
        "group_pattern": SKETCHY_GROUP_PATTERN,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_epochs": 1,
        "seed": 0,
    }
    out = runs_dir() / "bench" / "pretrained" / time.strftime("%Y%m%d-%H%M%S")
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{args.backbone} on {args.data.name} fold 0, {args.image_size} px, {args.epochs} epochs, {device}")
    results = {}
    for name, pretrained in (("pretrained", True), ("scratch", False)):
        print(f"\n== {name} ==")
        results[name] = run_trial({**base, "pretrained": pretrained}, out / name)

    _print_comparison(results, args.data.name)
    return 0


def _print_comparison(results: dict[str, tuple[list[dict], float]], data_name: str) -> None:
    """Per-epoch scores side by side, then the best and final scores, speeds and wall times."""
    (pre, pre_s), (scr, scr_s) = results["pretrained"], results["scratch"]
    print(
        f"\n{'epoch':>5} {'pretrained val_acc':>19} {'scratch val_acc':>16} {'pretrained img/s':>17} {'scratch img/s':>14}"
    )
    for a, b in zip(pre, scr, strict=True):
        print(
            f"{a['epoch']:>5} {a['val_acc']:>19.4f} {b['val_acc']:>16.4f} {a['img_per_s']:>17.1f} {b['img_per_s']:>14.1f}"
        )
    best_pre, best_scr = max(h["val_acc"] for h in pre), max(h["val_acc"] for h in scr)
    ips_pre = sum(h["img_per_s"] for h in pre) / len(pre)
    ips_scr = sum(h["img_per_s"] for h in scr) / len(scr)
    n_classes = 125 if data_name == "sketchy125" else None
    chance = f", chance {1 / n_classes:.4f}" if n_classes else ""
    print(
        f"\nbest val_acc: pretrained {best_pre:.4f} vs scratch {best_scr:.4f} ({best_pre / max(best_scr, 1e-9):.1f}x{chance})"
    )
    print(f"final val_acc: pretrained {pre[-1]['val_acc']:.4f} vs scratch {scr[-1]['val_acc']:.4f}")
    print(
        f"mean train img/s: pretrained {ips_pre:.1f} vs scratch {ips_scr:.1f}; wall {pre_s:.0f}s vs {scr_s:.0f}s"
    )


if __name__ == "__main__":
    raise SystemExit(main())

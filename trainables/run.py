"""Run one trial inline, without Ray: ``python -m trainables.run key=value ...``.

Examples::

    python -m trainables.run backbone=test_efficientnet epochs=2 image_size=64 aug.cutmix=0.5
    python -m trainables.run data=../shared/data/sketchy125 fold=0 epochs=5      # pretrained Lite0
    python -m trainables.run --out runs/inline/my_run epochs=8                   # resumes if it has a checkpoint
    python -m trainables.run --show-config                                       # every key and its default

Overrides are ``key=value`` with YAML values (``aug.cutmix=0.5``, ``pretrained_path=null``, ``fold=-1``),
parsed by :func:`trainables.overrides.parse_overrides` like every other command's.
Prints a row per epoch and the final metrics; checkpoints and ``metrics.json`` go to
``--out`` (default ``runs_dir()/inline/<timestamp>``), which keeps only the latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from trainables.overrides import parse_overrides


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, fit one trial with an :class:`InlineSession`, print the final metrics."""
    parser = argparse.ArgumentParser(prog="python -m trainables.run", description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value (see trainables/config.py)")
    parser.add_argument("--trainable", default="timm", help="registered trainable name (default: timm)")
    parser.add_argument("--out", type=Path, default=None, help="output dir; resumes from a checkpoint in it")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from common.allocator import keep_freed_memory
    from trainables.registry import create_trainable
    from trainables.session import InlineSession

    keep_freed_memory()

    try:
        trainable = create_trainable(args.trainable)
        overrides = dict(parse_overrides(args.overrides))  # dotted keys: resolve folds them in
        config = trainable.resolve(overrides)
    except ValueError as err:
        parser.error(str(err))
    if args.show_config:
        print(json.dumps(config, indent=2))
        return 0
    out = args.out
    if out is None:
        from common.io import runs_dir

        out = runs_dir() / "inline" / time.strftime("%Y%m%d-%H%M%S")
    session = InlineSession(out)
    print(f"trial {args.trainable}: {config['backbone']} on {config['data']} fold {config['fold']} -> {out}")
    final = trainable.fit(config, session)
    print(json.dumps({"final": final, "checkpoint": session.latest_checkpoint()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

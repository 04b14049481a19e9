"""Command line of the data layer: check a dataset, cache its images, make its folds, audit them.

Commands::

    check    Validate every file; print the summary, the leakage groups found and the leak audit.
    folds    Assign group-aware stratified folds, write them as CSV; print the groups and the leak audit.
    cache    Build (or find) the decoded image cache.
    inspect  Write the EDA report (PNG plots + report.md).

Examples::

    python -m trainables.data check  /data/sketchy125
    python -m trainables.data folds  /data/sketchy125 --k 5 --seed 0 --out folds.csv
    python -m trainables.data folds  synthetic --group-pattern none --no-audit
    python -m trainables.data folds  /data/faces --group-column person
    python -m trainables.data cache  /data/sketchy125 --size 128 --split train test
    python -m trainables.data inspect synthetic --out runs/reports/eda

``<data>`` is ``synthetic`` or ``synthetic-factors`` (the built-in sets) or a dataset folder.
Leakage groups: a ``group`` column or ``--group-column`` wins; else ``--group-pattern auto``
(default) finds file-name families (``photo-1``, ``photo-2``, ...) when they look like groups;
``none`` keeps every row alone; ``sketchy`` or a regex names them. The leak audit (frozen
ImageNet features: are validation rows closer to training than to the test set?) needs torch and
the offline Lite0 weights; ``--no-audit`` skips it. ``--skip-bad`` drops missing or corrupt
files instead of stopping on them. Exit status: 0 done, 2 bad input (the message says what and
how to fix it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

import pandas as pd

from ._cache import cache_path, cache_stats, decoded_images
from ._dataset import Dataset, load_dataset
from ._errors import BadDataError, DataFormatError
from ._folds import folds_for, write_folds
from ._groups import AUTO, GROUP_PATTERNS, describe_grouping, resolve_groups
from ._inspect import inspect_dataset


def main(argv: list[str] | None = None) -> int:
    """Run one data command; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            ds = load_dataset(args.data, skip_bad=args.skip_bad)
            status = int(args.run(ds, args) or 0)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        return status
    except (BadDataError, DataFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad options (k, size, pattern): same clear exit, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python -m trainables.data",
        description=doc.split("\n\n")[0],
        epilog=doc[doc.index("Examples::") :].replace("Examples::", "examples:").replace("``", "'"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str, help_: str, run) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("data", help="'synthetic' or a dataset folder (competition CSVs or class folders)")
        p.add_argument(
            "--skip-bad", action="store_true", help="skip missing/corrupt files instead of failing"
        )
        p.add_argument("-v", "--verbose", action="store_true", help="log progress")
        p.set_defaults(run=run)
        return p

    p = command(
        "check",
        "Validate every file; print the summary, the leakage groups found and the leak audit.",
        _check,
    )
    _fold_options(p)
    p = command(
        "folds", "Assign group-aware stratified folds and write them as CSV; print groups and the leak audit.",
        _folds,
    )  # fmt: skip
    _fold_options(p)
    p.add_argument("--no-dedup", action="store_true", help="do not group near-duplicate copies")
    p.add_argument(
        "--drop-duplicates", action="store_true", help="leave out all but one image of each duplicate set"
    )
    p.add_argument("--out", default=None, help="CSV to write (default: the cache under runs/folds/)")

    p = command("cache", "Build (or find) the decoded image cache.", _cache)
    p.add_argument("--size", type=int, default=128, help="side of the square images (default 128)")
    p.add_argument("--split", nargs="+", default=["train", "test"], choices=["train", "test"])

    p = command("inspect", "Write the EDA report (PNG plots + report.md).", _inspect)
    p.add_argument("--out", default=None, help="output folder (default runs/reports/<name>-<fingerprint>)")
    return parser


def _fold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.add_argument(
        "--group-pattern",
        default=AUTO,
        help="leakage groups from file names: 'auto' (default: file-name families such as photo-1, "
        "photo-2 when they look like groups), 'none' (every row alone), a regex whose group 'group' "
        f"(or first group) is the key, or a name: {', '.join(f'{k} = {v}' for k, v in GROUP_PATTERNS.items())}",
    )
    p.add_argument(
        "--group-column", default=None, help="train.csv column naming the leakage group (e.g. a person id)"
    )
    p.add_argument("--no-audit", action="store_true", help="skip the leak audit (needs torch; ~1 min cold)")
    p.add_argument("--audit-fold", type=int, default=0, help="the fold the leak audit checks (default 0)")


def _folds(ds: Dataset, args: argparse.Namespace) -> int:
    df = folds_for(
        ds,
        args.k,
        args.seed,
        args.group_pattern,
        dedup=not args.no_dedup,
        drop_duplicates=args.drop_duplicates,
        group_column=args.group_column,
    )
    path = write_folds(df, args.out) if args.out else df.attrs["path"]
    sizes = df["fold"].value_counts().sort_index()
    print(
        f"{path}: {len(df)} rows, {df['group'].nunique()} groups, {df.attrs.get('duplicate_sets', 0)} duplicate set(s)"
    )
    _print_grouping(df)
    if len(sizes) <= 10:
        print("fold sizes: " + ", ".join(f"{f}: {n}" for f, n in sizes.items()))
    else:
        print(f"fold sizes: {sizes.min()} to {sizes.max()} rows over {len(sizes)} folds")
    print(f"folds hash: {df.attrs['hash']}  data fingerprint: {ds.fingerprint}")
    _audit(ds, df, args)
    return 0


def _print_grouping(df: pd.DataFrame) -> None:
    grouping = df.attrs.get("grouping")
    if grouping:  # folds cached before the grouping was recorded have none
        print(describe_grouping(grouping))


def _audit(ds: Dataset, folds: pd.DataFrame, args: argparse.Namespace) -> None:
    if args.no_audit:
        return
    try:
        # Imported here: the audit needs torch and timm, the rest of the data layer does not.
        from trainables.leak_audit import run_leak_audit

        audit = run_leak_audit(ds, folds, fold=args.audit_fold)
    except (ImportError, RuntimeError) as exc:
        print(f"leak audit skipped: {exc}")
        return
    print("\n".join(audit.lines()))


def _inspect(ds: Dataset, args: argparse.Namespace) -> int:
    print(inspect_dataset(ds, args.out))
    return 0


def _cache(ds: Dataset, args: argparse.Namespace) -> int:
    for split in args.split:
        if split == "test" and ds.test is None:
            continue
        before = cache_stats()["hits"]
        images = decoded_images(ds, split, args.size)
        state = "found" if cache_stats()["hits"] > before else "built"
        print(f"{split}: {images.shape} {state} {cache_path(ds, split, args.size)}")
    return 0


def _check(ds: Dataset, args: argparse.Namespace) -> int:
    print(ds)
    for path, reason in ds.skipped:
        print(f"skipped {path}: {reason}")
    if args.no_audit:
        print(describe_grouping(resolve_groups(ds, args.group_pattern, args.group_column).summary()))
        return 0
    folds = folds_for(ds, args.k, args.seed, args.group_pattern, group_column=args.group_column)
    _print_grouping(folds)
    _audit(ds, folds, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The EDA report: what the data looks like before anyone trains on it (PNG plots + report.md)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from common.io import atomic_path, atomic_write_text, runs_dir

from ._cache import decoded_images
from ._dataset import Dataset
from ._dedup import DEFAULT_MAX_DISTANCE, HASH_IMAGE_SIZE, close_pairs, find_duplicates, hash_images
from ._io import default_workers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

_THUMB = 64
_COLORS = ("#4C72B0", "#DD8452")  # train, test
_CLASSES_PER_PAGE = 25
_SAMPLES_PER_CLASS = 8
_INK_LEVEL = 128  # a pixel darker than this (mean of RGB) counts as ink


def inspect_dataset(
    ds: Dataset, out: str | os.PathLike[str] | None = None, *, max_distance: int = DEFAULT_MAX_DISTANCE
) -> Path:
    """Write an EDA report of ``ds``: PNG plots and a ``report.md`` that links them.

    Covers class counts, image sizes and aspect ratios, file modes (RGB vs grayscale, and RGB
    files that hold only gray pixels), brightness and ink coverage, near-duplicates (copies
    inside a class, across classes, and between train and test), and a grid of samples per class.
    Pixel statistics come from the 128 px decoded cache, which is built if needed and is the
    one training uses.

    Args:
        ds: The dataset.
        out: Output folder; default ``runs_dir()/reports/<name>-<fingerprint>``.
        max_distance: Near-duplicate threshold, as in :func:`find_duplicates`.

    Returns:
        The path of ``report.md``.
    """
    folder = Path(out) if out is not None else runs_dir() / "reports" / f"{ds.name}-{ds.fingerprint}"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": ds.train} | ({"test": ds.test} if ds.test is not None else {})
    meta = {name: _file_meta(rows["path"].tolist()) for name, rows in splits.items()}
    pixels = {name: _pixel_stats(decoded_images(ds, name, HASH_IMAGE_SIZE)) for name in splits}
    dups = _duplicates(ds, max_distance)
    md = [f"# Data report: {ds.name}", "", *_summary(ds, meta)]
    md += _class_section(ds, folder)
    md += _size_section(meta, folder)
    md += _mode_section(meta, pixels, folder)
    md += _brightness_section(pixels, folder)
    md += _duplicate_section(ds, dups, folder, max_distance)
    md += _samples_section(ds, folder)
    report = folder / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    log.info("wrote the data report %s", report)
    return report


# -- gathering -----------------------------------------------------------------------------------


def _header(path: str) -> tuple[int, int, str, str, int]:
    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF-rotated by 90 degrees: shown upright
            w, h = h, w
        return w, h, im.mode, im.format or "?", os.path.getsize(path)


def _file_meta(paths: list[str]) -> pd.DataFrame:
    with ThreadPoolExecutor(default_workers()) as pool:
        rows = list(pool.map(_header, paths))
    return pd.DataFrame(rows, columns=["width", "height", "mode", "format", "bytes"])


def _pixel_stats(images: np.ndarray, chunk: int = 512) -> pd.DataFrame:
    """Per image: mean brightness, ink fraction, and whether R == G == B everywhere."""
    out = []
    for lo in range(0, len(images), chunk):
        block = np.asarray(images[lo : lo + chunk], dtype=np.int16)
        gray = block.mean(axis=3)
        out.append(
            pd.DataFrame(
                {
                    "brightness": gray.mean(axis=(1, 2)),
                    "ink": (gray < _INK_LEVEL).mean(axis=(1, 2)),
                    "gray_pixels": (np.ptp(block, axis=3) <= 2).all(axis=(1, 2)),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def _duplicates(ds: Dataset, max_distance: int) -> dict[str, list]:
    within = find_duplicates(ds, max_distance=max_distance)
    plain, mirror = hash_images(ds, "train")
    targets = ds.train["target"].to_numpy()
    across = [
        (int(a), int(b)) for a, b in close_pairs(plain, mirror, max_distance) if targets[a] != targets[b]
    ]
    leaks: list[tuple[int, int]] = []
    if ds.test is not None:
        tp, tm = hash_images(ds, "test")
        n = len(plain)
        pairs = close_pairs(np.concatenate([plain, tp]), np.concatenate([mirror, tm]), max_distance)
        leaks = [(int(a), int(b) - n) for a, b in pairs if a < n <= b]
    return {"within": within, "across": across, "leaks": leaks}


# -- sections ------------------------------------------------------------------------------------


def _summary(ds: Dataset, meta: dict[str, pd.DataFrame]) -> list[str]:
    n_test = 0 if ds.test is None else len(ds.test)
    lines = [
        "| | |", "|---|---|",
        f"| root | `{ds.root}` |", f"| layout | {ds.layout} |", f"| fingerprint | `{ds.fingerprint}` |",
        f"| classes | {ds.num_classes} |", f"| train images | {len(ds.train)} |", f"| test images | {n_test} |",
        f"| skipped (bad files) | {len(ds.skipped)} |",
    ]  # fmt: skip
    for name, m in meta.items():
        lines.append(f"| {name} bytes on disk | {m['bytes'].sum() / 1e6:.1f} MB |")
    return [*lines, ""]


def _subplots(nrows: int = 1, ncols: int = 1, **kw: object) -> tuple[Figure, object]:
    # Figure objects, not pyplot: no global backend or state, so this never opens a window. Imported
    # here because matplotlib is slow to import and only the report needs it.
    from matplotlib.figure import Figure

    fig = Figure(figsize=kw.pop("figsize", None), layout="constrained")  # type: ignore[arg-type]
    return fig, fig.subplots(nrows, ncols, **kw)  # type: ignore[arg-type]


def _save(fig: Figure, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path.name


def _class_section(ds: Dataset, folder: Path) -> list[str]:
    counts = ds.train["target"].value_counts().reindex(range(ds.num_classes), fill_value=0)
    order = counts.sort_values(ascending=False)
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    ax1.bar(range(len(order)), order.to_numpy(), color="#4C72B0", width=0.85)
    if ds.num_classes <= 40:
        ax1.set_xticks(range(len(order)), [ds.classes[t] for t in order.index], rotation=70, fontsize=8)
    else:
        ax1.set_xlabel("classes, most to least frequent")
    ax1.set_ylabel("training images")
    ax1.set_title(f"Training images per class ({ds.num_classes} classes)")
    ax1.axhline(counts.mean(), color="k", lw=1, ls="--", label=f"mean {counts.mean():.1f}")
    ax1.legend()
    ax2.hist(counts, bins=min(30, max(5, counts.nunique())), color="#4C72B0")
    ax2.set_xlabel("images in a class")
    ax2.set_ylabel("classes")
    ax2.set_title("Distribution of class sizes")
    name = _save(fig, folder / "class_counts.png")
    small = order.tail(10)[::-1]
    return [
        "## Classes", "",
        f"Training images per class: min {counts.min()}, median {counts.median():.0f}, max {counts.max()} "
        f"(imbalance max/min {counts.max() / max(counts.min(), 1):.1f}x).", "",
        f"![class counts]({name})", "",
        "Smallest classes: " + ", ".join(f"{ds.classes[t]} ({n})" for t, n in small.items()), "",
    ]  # fmt: skip


def _size_section(meta: dict[str, pd.DataFrame], folder: Path) -> list[str]:
    fig, (ax1, ax2, ax3) = _subplots(1, 3, figsize=(15, 4.2))
    for (name, m), color in zip(meta.items(), _COLORS, strict=False):
        ax1.scatter(m["width"], m["height"], s=6, alpha=0.4, color=color, label=name)
        ax2.hist(np.maximum(m["width"], m["height"]), bins=30, alpha=0.6, color=color, label=name)
        ax3.hist(m["width"] / m["height"], bins=30, alpha=0.6, color=color, label=name)
    ax1.set(xlabel="width (px)", ylabel="height (px)", title="Image sizes")
    ax2.set(xlabel="long side (px)", ylabel="images", title="Long side")
    ax3.set(xlabel="aspect (width / height)", ylabel="images", title="Aspect ratio")
    for ax in (ax1, ax2, ax3):
        ax.legend()
    name = _save(fig, folder / "image_sizes.png")
    lines = [
        "## Image sizes",
        "",
        "| split | width min/median/max | height min/median/max | aspect min/max | formats |",
        "|---|---|---|---|---|",
    ]
    for split, m in meta.items():
        aspect = m["width"] / m["height"]
        formats = ", ".join(f"{f} {n}" for f, n in m["format"].value_counts().items())
        lines.append(
            f"| {split} | {m['width'].min()} / {m['width'].median():.0f} / {m['width'].max()} "
            f"| {m['height'].min()} / {m['height'].median():.0f} / {m['height'].max()} "
            f"| {aspect.min():.2f} / {aspect.max():.2f} | {formats} |"
        )
    return [*lines, "", f"![image sizes]({name})", ""]


def _mode_section(meta: dict[str, pd.DataFrame], pixels: dict[str, pd.DataFrame], folder: Path) -> list[str]:
    modes = sorted({mode for m in meta.values() for mode in m["mode"].unique()})
    fig, ax = _subplots(figsize=(7, 4))
    width = 0.8 / len(meta)
    for i, ((name, m), color) in enumerate(zip(meta.items(), _COLORS, strict=False)):
        counts = m["mode"].value_counts().reindex(modes, fill_value=0)
        bars = ax.bar(np.arange(len(modes)) + i * width, counts.to_numpy(), width, color=color, label=name)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(np.arange(len(modes)) + width * (len(meta) - 1) / 2, modes)
    ax.set(xlabel="PIL mode of the file", ylabel="images", title="Colour modes (L = grayscale)")
    ax.legend()
    name = _save(fig, folder / "color_modes.png")
    lines = [
        "## Colour",
        "",
        "| split | file modes | grayscale files (L, LA, I;16) | colour files holding only gray pixels |",
        "|---|---|---|---|",
    ]
    for split, m in meta.items():
        is_gray_file = m["mode"].isin(["L", "LA", "1", "I", "I;16", "I;16B", "F"])
        gray_pixels = pixels[split]["gray_pixels"].to_numpy() & ~is_gray_file.to_numpy()
        mode_list = ", ".join(f"{k} {v}" for k, v in m["mode"].value_counts().items())
        lines.append(
            f"| {split} | {mode_list} | {is_gray_file.sum()} ({is_gray_file.mean():.0%}) "
            f"| {gray_pixels.sum()} of {(~is_gray_file).sum()} |"
        )
    return [*lines, "", f"![colour modes]({name})", ""]


def _brightness_section(pixels: dict[str, pd.DataFrame], folder: Path) -> list[str]:
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(12, 4))
    for (name, p), color in zip(pixels.items(), _COLORS, strict=False):
        ax1.hist(p["brightness"], bins=40, alpha=0.6, color=color, label=name, density=True)
        ax2.hist(100 * p["ink"], bins=40, alpha=0.6, color=color, label=name, density=True)
    ax1.set(xlabel="mean brightness (0 black .. 255 white)", ylabel="density", title="Brightness per image")
    ax2.set(
        xlabel=f"ink: % of pixels darker than {_INK_LEVEL}", ylabel="density", title="Ink coverage per image"
    )
    ax1.legend()
    ax2.legend()
    name = _save(fig, folder / "brightness.png")
    lines = [
        "## Brightness and ink",
        "",
        "| split | brightness mean (std) | ink % median (5th-95th pct) |",
        "|---|---|---|",
    ]
    for split, p in pixels.items():
        q = 100 * p["ink"].quantile([0.05, 0.5, 0.95])
        lines.append(
            f"| {split} | {p['brightness'].mean():.1f} ({p['brightness'].std():.1f}) | {q[0.5]:.2f} ({q[0.05]:.2f}-{q[0.95]:.2f}) |"
        )
    return [
        *lines,
        "",
        "Measured on the 128 px decoded cache (white-padded to a square).",
        "",
        f"![brightness]({name})",
        "",
    ]


def _duplicate_section(ds: Dataset, dups: dict[str, list], folder: Path, max_distance: int) -> list[str]:
    within, across, leaks = dups["within"], dups["across"], dups["leaks"]
    lines = [
        "## Near-duplicates", "",
        f"Flip- and resize-invariant perceptual hash (phash 256 bits, threshold {max_distance}).", "",
        f"- inside a class: **{len(within)} set(s)** covering {sum(map(len, within))} images; "
        "folds keep each set in one group, and `drop_duplicates` keeps one image per set",
        f"- across classes (label noise?): **{len(across)} pair(s)**",
        f"- between train and test: **{len(leaks)} pair(s)**", "",
    ]  # fmt: skip
    if within:
        rows = [[ds.train["image_path"].iloc[i] for i in members] for members in within]
        lines += ["| class | images |", "|---|---|"]
        lines += [
            f"| {ds.train['class_name'].iloc[m[0]]} | {', '.join(f'`{p}`' for p in r)} |"
            for m, r in zip(within[:50], rows[:50], strict=True)
        ]
        if len(within) > 50:
            lines.append(f"| ... | {len(within) - 50} more sets |")
        lines.append("")
        lines += [f"![duplicate sets]({_duplicate_figure(ds, within, folder)})", ""]
    for title, pairs, other in (("Across classes", across, ds.train), ("Train vs test", leaks, ds.test)):
        if pairs:
            lines += [f"{title}:", ""]
            lines += [
                f"- `{ds.train['image_path'].iloc[a]}` ~ `{other['image_path'].iloc[b]}`"
                for a, b in pairs[:30]
            ]  # type: ignore[index]
            lines.append("")
    return lines


def _thumbs(images: np.ndarray, rows: list[int]) -> list[np.ndarray]:
    return [cv2.resize(np.asarray(images[i]), (_THUMB, _THUMB), interpolation=cv2.INTER_AREA) for i in rows]


def _duplicate_figure(ds: Dataset, sets: list[list[int]], folder: Path) -> str:
    images = decoded_images(ds, "train", HASH_IMAGE_SIZE)
    shown = sets[:12]
    width = max(len(s) for s in shown)
    fig, axes = _subplots(len(shown), width, figsize=(1.6 * width, 1.7 * len(shown)), squeeze=False)
    for r, members in enumerate(shown):
        for c in range(width):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(members):
                ax.imshow(np.asarray(images[members[c]]))
                ax.set_title(Path(ds.train["image_path"].iloc[members[c]]).name, fontsize=7)
    fig.suptitle("Near-duplicate sets inside a class (one set per row)")
    return _save(fig, folder / "duplicates.png")


def _samples_section(ds: Dataset, folder: Path) -> list[str]:
    images = decoded_images(ds, "train", HASH_IMAGE_SIZE)
    rng = np.random.default_rng(0)
    by_class = ds.train.groupby("target").indices
    names = []
    for page, lo in enumerate(range(0, ds.num_classes, _CLASSES_PER_PAGE)):
        targets = range(lo, min(lo + _CLASSES_PER_PAGE, ds.num_classes))
        strips = []
        for t in targets:
            rows = by_class.get(t, np.array([], dtype=int))
            pick = sorted(rng.choice(rows, size=min(_SAMPLES_PER_CLASS, len(rows)), replace=False).tolist())
            thumbs = _thumbs(images, pick) + [np.full((_THUMB, _THUMB, 3), 255, np.uint8)] * (
                _SAMPLES_PER_CLASS - len(pick)
            )
            strips.append(
                np.hstack([np.pad(t_, ((2, 2), (2, 2), (0, 0)), constant_values=200) for t_ in thumbs])
            )
        grid = np.vstack(strips)
        fig, ax = _subplots(figsize=(grid.shape[1] / 60 + 1.5, grid.shape[0] / 60))
        ax.imshow(grid)
        step = _THUMB + 4
        ax.set_yticks(
            np.arange(len(strips)) * step + step / 2,
            [f"{ds.classes[t]} ({len(by_class.get(t, []))})" for t in targets],
            fontsize=9,
        )
        ax.set_xticks([])
        ax.set_title(f"Training samples, classes {targets[0]}-{targets[-1]}")
        names.append(_save(fig, folder / f"samples_{page:02d}.png"))
    return ["## Samples per class", "", *(f"![samples]({n})" for n in names), ""]

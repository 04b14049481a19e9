"""Every augmentation flag does what it says, on real batches of the built-in set."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trainables.augment import FLIP_COPY, ORIGINAL, RANDAUG_COPY, SampleTransform, build_mixer, edge_map
from trainables.config import AUG_DEFAULTS, BASE_DEFAULTS, resolve_config
from trainables.loader import CachedImages, EpochSampler, make_loader
from trainables.runtime import resolve_runtime
from trainables.split import trial_rows

SIZE = 48
OFF = {**AUG_DEFAULTS, "hflip": False}


@pytest.fixture(scope="module")
def synthetic():
    from trainables.data import decoded_images, folds_for, load_dataset

    ds = load_dataset("synthetic")
    return ds, decoded_images(ds, "train", size=SIZE), folds_for(ds, k=5, seed=0)


def _batch(
    images: np.ndarray,
    labels: np.ndarray,
    aug: dict,
    n: int = 16,
    epoch: int = 0,
    workers: int = 0,
    step: int = 1,
):
    """The first batch of a training loader over rows 0, step, 2*step, ... (n of them)."""
    runtime = resolve_runtime(resolve_config(BASE_DEFAULTS, {"num_workers": workers, "device": "cpu"}))
    rows = np.arange(n) * step
    ds = CachedImages(images, rows, labels[rows], SampleTransform(aug, SIZE, train=True), seed=3)
    sampler = EpochSampler(n, seed=3, shuffle=False)
    sampler.set_epoch(epoch)
    x, y = next(iter(make_loader(ds, n, runtime, sampler)))
    return x.numpy(), y.numpy()


def test_all_flags_off_passes_the_cached_images_through(synthetic) -> None:
    ds, images, _ = synthetic
    x, y = _batch(images, ds.train["target"].to_numpy(), OFF)
    assert x.dtype == np.uint8 and x.shape == (16, 3, SIZE, SIZE)
    np.testing.assert_array_equal(x, images[:16].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(y, ds.train["target"].to_numpy()[:16])


def test_hflip_flips_some_images_and_leaves_the_others(synthetic) -> None:
    ds, images, _ = synthetic
    x, _ = _batch(images, ds.train["target"].to_numpy(), {**OFF, "hflip": True}, n=32)
    orig = images[:32].transpose(0, 3, 1, 2)
    same = [np.array_equal(a, b) for a, b in zip(x, orig, strict=True)]
    flipped = [np.array_equal(a, b[:, :, ::-1]) for a, b in zip(x, orig, strict=True)]
    assert all(s or f for s, f in zip(same, flipped, strict=True))
    assert 4 <= sum(flipped) <= 28 and sum(same) >= 4


def test_edge_gives_black_on_white_canny_maps(synthetic) -> None:
    ds, images, _ = synthetic
    x, _ = _batch(images, ds.train["target"].to_numpy(), {**OFF, "edge": True}, n=8)
    assert set(np.unique(x)) <= {0, 255}
    assert (x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all()
    for got, img in zip(x, images[:8], strict=True):
        gray = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (3, 3), 0)
        np.testing.assert_array_equal(got[0], 255 - cv2.Canny(gray, 50, 150))
        assert 0.005 < (got[0] == 0).mean() < 0.5  # some lines, mostly white paper
    # Edges are an input representation: evaluation sees them too.
    np.testing.assert_array_equal(
        SampleTransform({**OFF, "edge": True}, SIZE, train=False)(images[0]), edge_map(images[0])
    )


def test_sketch_ab_deforms_images_on_a_white_background(synthetic) -> None:
    ds, images, _ = synthetic
    x, _ = _batch(images, ds.train["target"].to_numpy(), {**OFF, "sketch_ab": True}, n=16)
    orig = images[:16].transpose(0, 3, 1, 2)
    changed = [not np.array_equal(a, b) for a, b in zip(x, orig, strict=True)]
    assert sum(changed) >= 10
    # Corners stay light: the geometric transforms fill with white, not black.
    corners = x[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].astype(float)
    assert corners.mean() > 200


def test_cutmix_pastes_a_box_and_mixes_the_labels_by_its_area(synthetic) -> None:
    ds, images, _ = synthetic
    labels = ds.train["target"].to_numpy()
    x, y = _batch(images, labels, OFF, n=16, step=45)  # rows of many classes
    assert (y != y[::-1]).all()
    mixer = build_mixer({**OFF, "cutmix": 1.0}, len(ds.classes), label_smoothing=0.0)
    np.random.seed(0)  # timm's Mixup draws from NumPy's global generator
    xt = torch.from_numpy(x).float()
    mixed, target = mixer(xt.clone(), torch.from_numpy(y))
    # Batch mode: one box for the whole batch, filled from the partner image (the batch reversed).
    changed = (mixed != xt).any(dim=1).any(dim=0).numpy()
    assert changed.any(), "no pasted box"
    ys, xs = np.nonzero(changed)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    torch.testing.assert_close(mixed[:, :, box[0], box[1]], xt.flip(0)[:, :, box[0], box[1]])
    # Rows sum to one and put weight lam on the own class, 1 - lam on the partner's.
    np.testing.assert_allclose(target.sum(1).numpy(), 1.0, atol=1e-6)
    lam = float(target[0, y[0]])
    area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) / SIZE**2
    assert 0 < lam < 1 and lam == pytest.approx(1 - area, abs=0.03)
    assert float(target[0, y[-1]]) == pytest.approx(1 - lam, abs=1e-6)
    assert ((target > 0).sum(1) == 2).all()


def test_mixup_blends_images_and_labels_with_one_ratio(synthetic) -> None:
    ds, images, _ = synthetic
    x, y = _batch(images, ds.train["target"].to_numpy(), OFF, n=16, step=45)
    mixer = build_mixer({**OFF, "mixup": 1.0, "mix_alpha": 0.4}, len(ds.classes), label_smoothing=0.0)
    np.random.seed(0)
    xt = torch.from_numpy(x).float()
    mixed, target = mixer(xt.clone(), torch.from_numpy(y))
    lam = float(target[0, y[0]])
    assert 0 < lam < 1
    np.testing.assert_allclose(target.numpy()[np.arange(16), y[::-1]], 1 - lam, atol=1e-6)
    torch.testing.assert_close(mixed, lam * xt + (1 - lam) * xt.flip(0), rtol=1e-4, atol=1e-3)


def test_no_mixer_without_cutmix_or_mixup() -> None:
    assert build_mixer(OFF, 10, 0.1) is None


def test_balance_fills_every_class_to_the_largest_with_flipped_copies(synthetic) -> None:
    ds, images, folds = synthetic
    cfg = resolve_config(BASE_DEFAULTS, {"fold": 0})
    rows = trial_rows(cfg, folds)
    counts = np.bincount(rows.train_labels, minlength=len(ds.classes))
    assert counts.min() == counts.max()
    assert set(np.unique(rows.train_kinds)) == {ORIGINAL, FLIP_COPY}
    copies = rows.train_kinds == FLIP_COPY
    assert set(rows.train_rows[copies]) <= set(rows.train_rows[~copies])
    t = SampleTransform(OFF, SIZE, train=True)
    r = rows.train_rows[copies][0]
    np.testing.assert_array_equal(t(images[r], FLIP_COPY, seed=0), images[r][:, ::-1])
    unbalanced = trial_rows(resolve_config(BASE_DEFAULTS, {"fold": 0, "aug.balance": False}), folds)
    assert (unbalanced.train_kinds == ORIGINAL).all() and len(unbalanced.train_rows) < len(rows.train_rows)


def test_randaug_balance_fills_with_augmented_copies(synthetic) -> None:
    ds, images, folds = synthetic
    cfg = resolve_config(BASE_DEFAULTS, {"fold": 0, "aug.randaug_balance": True, "aug.hflip": False})
    rows = trial_rows(cfg, folds)
    counts = np.bincount(rows.train_labels, minlength=len(ds.classes))
    assert counts.min() == counts.max()
    copies = np.flatnonzero(rows.train_kinds == RANDAUG_COPY)
    assert len(copies) and set(np.unique(rows.train_kinds)) == {ORIGINAL, RANDAUG_COPY}
    t = SampleTransform(cfg["aug"], SIZE, train=True)
    outs = [t(images[rows.train_rows[i]], RANDAUG_COPY, seed=int(i)) for i in copies[:8]]
    srcs = [images[rows.train_rows[i]] for i in copies[:8]]
    differ = [
        not np.array_equal(o, s) and not np.array_equal(o, s[:, ::-1])
        for o, s in zip(outs, srcs, strict=True)
    ]
    assert sum(differ) >= 6  # RandAugment ops (a few, like Equalize on a line drawing, may be no-ops)


def test_del_flip_drops_the_marked_duplicates_from_training_only(synthetic, synthetic_root: Path) -> None:
    ds, _, folds = synthetic
    keep = trial_rows(resolve_config(BASE_DEFAULTS, {"fold": 0, "aug.balance": False}), folds)
    drop = trial_rows(
        resolve_config(BASE_DEFAULTS, {"fold": 0, "aug.balance": False, "aug.del_flip": True}), folds
    )
    marked = np.flatnonzero(folds["duplicate"].to_numpy() & (folds["fold"].to_numpy() != 0))
    assert len(marked) > 0
    np.testing.assert_array_equal(np.sort(drop.dropped_duplicates), marked)
    assert set(drop.train_rows) == set(keep.train_rows) - set(marked)
    np.testing.assert_array_equal(drop.val_rows, keep.val_rows)
    # The dropped rows are copies the built-in set planted on purpose.
    planted = {
        p
        for group in json.loads((synthetic_root / "synthetic.json").read_text())["duplicates"]
        for p in group
    }
    assert set(folds["image_path"].to_numpy()[marked]) <= planted


def test_a_batch_depends_on_seed_and_epoch_only_not_on_workers(synthetic) -> None:
    ds, images, _ = synthetic
    labels = ds.train["target"].to_numpy()
    aug = {**AUG_DEFAULTS, "sketch_ab": True}
    a, _ = _batch(images, labels, aug, n=8, epoch=2)
    b, _ = _batch(images, labels, aug, n=8, epoch=2, workers=1)
    c, _ = _batch(images, labels, aug, n=8, epoch=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    s = EpochSampler(10, seed=5)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    second = list(s)
    s.set_epoch(1)
    assert list(s) == first
    assert sorted(k - 10 for k in first) == list(range(10)) and sorted(k - 20 for k in second) == list(
        range(10)
    )
    assert [k - 10 for k in first] != [k - 20 for k in second]

"""The decoded cache: right pixels in the right rows, built once, then only mapped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import trainables.data
from trainables.data import (
    cache_path,
    cache_sidecar,
    cache_stats,
    decoded_images,
    fit_square,
    load_dataset,
    read_rgb,
)


def test_fit_square_keeps_aspect_and_pads_white() -> None:
    img = np.zeros((100, 50, 3), np.uint8)  # black, twice as tall as wide
    out = fit_square(img, 64)
    assert out.shape == (64, 64, 3)
    assert (out[:, 16:48] == 0).all()  # 32 px wide image, centred
    assert (out[:, :16] == 255).all() and (out[:, 48:] == 255).all()
    assert fit_square(np.zeros((64, 64, 3), np.uint8), 64).sum() == 0  # right size: untouched
    up = fit_square(np.zeros((10, 20, 3), np.uint8), 40)  # upscaled, 40x20 centred
    assert (up[10:30] == 0).all() and (up[:10] == 255).all()


def test_rows_match_their_files(competition: Path) -> None:
    ds = load_dataset(competition)
    imgs = decoded_images(ds, "train", 32)
    assert isinstance(imgs, np.memmap) and imgs.shape == (12, 32, 32, 3) and imgs.dtype == np.uint8
    assert not imgs.flags.writeable
    for i in (0, 5, 11):
        assert np.array_equal(imgs[i], fit_square(read_rgb(ds.train["path"].iloc[i]), 32))
    test = decoded_images(ds, "test", 32)
    assert test.shape == (3, 32, 32, 3)
    assert np.array_equal(test[2], fit_square(read_rgb(ds.test["path"].iloc[2]), 32))  # type: ignore[index]


def test_second_load_hits_the_cache(competition: Path) -> None:
    ds = load_dataset(competition)
    decoded_images(ds, "train", 40)
    before = cache_stats()
    again = decoded_images(load_dataset(competition), "train", 40)
    after = cache_stats()
    assert after["hits"] == before["hits"] + 1
    assert after["decoded"] == before["decoded"] and after["builds"] == before["builds"]
    assert again.filename is not None and Path(again.filename) == cache_path(ds, "train", 40)
    side = cache_sidecar(ds, "train", 40)
    assert side is not None and side["shape"] == [12, 40, 40, 3] and side["fingerprint"] == ds.fingerprint
    # A different size is a different cache.
    decoded_images(ds, "train", 24)
    assert cache_stats()["builds"] == after["builds"] + 1


def test_concurrent_processes_build_once_and_later_ones_only_map(competition: Path) -> None:
    """Trials start together: one process decodes, the other waits on the lock and maps its file."""
    code = (
        "import json, sys; from trainables.data import load_dataset, decoded_images, cache_stats;"
        "imgs = decoded_images(load_dataset(sys.argv[1]), 'train', 44);"
        "print(json.dumps({**cache_stats(), 'file': str(imgs.filename), 'sum': int(imgs.sum())}))"
    )
    repo = Path(trainables.data.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(competition)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=repo,
        )
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o["builds"] for o in outs) == [0, 1] and sorted(o["hits"] for o in outs) == [0, 1]
    assert sum(o["decoded"] for o in outs) == 12
    assert outs[0]["file"] == outs[1]["file"] and outs[0]["sum"] == outs[1]["sum"]
    ds = load_dataset(competition)
    before = cache_stats()
    assert str(decoded_images(ds, "train", 44).filename) == outs[0]["file"]
    assert cache_stats()["decoded"] == before["decoded"] and cache_stats()["hits"] == before["hits"] + 1


def test_a_damaged_cache_is_rebuilt(competition: Path) -> None:
    ds = load_dataset(competition)
    path = cache_path(ds, "train", 20)
    decoded_images(ds, "train", 20)
    path.write_bytes(b"garbage")
    assert decoded_images(ds, "train", 20).shape == (12, 20, 20, 3)


def test_files_broken_after_loading_give_the_same_clear_error(competition: Path) -> None:
    ds = load_dataset(competition)
    victim = Path(ds.train["path"].iloc[3])
    victim.write_bytes(victim.read_bytes()[:60])  # corrupted after the check, before the build
    with pytest.raises(ValueError, match=r"1 image file\(s\).*\n.*" + victim.name):
        decoded_images(ds, "train", 36)
    assert not cache_path(ds, "train", 36).exists()  # nothing half-written left behind


def test_bad_size_is_rejected(competition: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        decoded_images(load_dataset(competition), "train", 4)


def test_large_jpeg_uses_reduced_decoding_and_matches(tmp_path: Path) -> None:
    """JPEG draft decoding (DCT scaling) must give nearly the pixels a full decode would."""
    rng = np.random.default_rng(0)
    big = np.full((800, 640, 3), 255, np.uint8)
    for _ in range(40):
        y, x = rng.integers(0, 760), rng.integers(0, 600)
        big[y : y + 40, x : x + 6] = 0
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=92)
    fast = fit_square(read_rgb(path, min_side=64), 64).astype(int)
    full = fit_square(read_rgb(path), 64).astype(int)
    assert np.abs(fast - full).mean() < 3

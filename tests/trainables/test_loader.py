"""The training loader's workers start under any temp folder, however deep."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Builds a loader with one worker over random images and takes one batch.
_CHILD = """
import numpy as np, tempfile
from trainables.augment import SampleTransform
from trainables.config import AUG_DEFAULTS, BASE_DEFAULTS, resolve_config
from trainables.loader import CachedImages, EpochSampler, make_loader
from trainables.runtime import resolve_runtime
images = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
runtime = resolve_runtime(resolve_config(BASE_DEFAULTS, {"num_workers": 1, "device": "cpu"}))
ds = CachedImages(images, np.arange(8), np.zeros(8, dtype=np.int64), SampleTransform(AUG_DEFAULTS, 32, train=False), seed=0)
x, y = next(iter(make_loader(ds, 8, runtime, EpochSampler(8, seed=0, shuffle=False))))
print(tuple(x.shape), tempfile.gettempdir())
"""


def test_a_loader_with_workers_starts_under_a_temp_folder_too_long_for_sockets() -> None:
    """A Unix socket path holds at most 107 bytes; multiprocessing puts its sockets in the temp folder."""
    deep = Path(tempfile.mkdtemp(prefix="t", dir="/tmp")) / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(deep), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:4] == ["(8,", "3,", "32,", "32)"] and done.stdout.split()[-1] == "/tmp"

"""glibc's allocator, told to keep the memory a training step frees for the next step.

By default glibc (Linux) serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it
on ``free``, and a thread other than the main one allocates from arenas of 64 MiB at most. A
convolution's output at 192 px (Lite0's stem at batch 32: 38 MiB) is then mapped, zeroed by the
kernel page by page, and unmapped again on every batch. On a CPU that was most of a trial's time:
Lite0's frozen stages took 20.7 ms an image at batch 64, 16 of them in the kernel, against 4.3 ms
with the memory kept, and a whole training step 1.4x as long (``bench/bench_allocator.py``).

The remedy is glibc's own settings: one arena, and mmap and trim thresholds of 1 GiB, so freed
blocks stay in the heap for the next batch (a process keeps its peak, which it reaches on every
batch anyway). glibc reads them when a process starts, so :func:`keep_freed_memory` puts them in
the environment every process a run starts inherits (Ray's workers, the loaders' workers), and
applies the thresholds to the running process with ``mallopt``. A user's own ``MALLOC_*``
settings win. Other C libraries (macOS, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import os
import platform

_THRESHOLD = 1 << 30
# glibc's environment names for its malloc tunables (mallopt(3)).
ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(_THRESHOLD),
}
# mallopt(3) parameters: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX.
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}


def glibc() -> bool:
    """Whether this process runs on glibc, the C library these settings are for."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def allocator_env() -> dict[str, str]:
    """The settings to pass to processes started elsewhere (a joined Ray cluster's workers): the
    user's own values where set; empty off glibc."""
    return {name: os.environ.get(name, value) for name, value in ALLOCATOR_ENV.items()} if glibc() else {}


def keep_freed_memory() -> bool:
    """Keep freed memory in this process and in every process it starts from now on.

    Returns:
        Whether the settings apply (False off glibc, where nothing is changed).
    """
    if not glibc():
        return False
    libc = ctypes.CDLL("libc.so.6")
    for name, value in allocator_env().items():
        os.environ[name] = value
        libc.mallopt(_MALLOPT[name], int(value))
    return True

"""The data layer's decoding threads. Hashes, cache reads and locks are :mod:`common.io`."""

from __future__ import annotations

import os


def default_workers() -> int:
    """Threads for decoding: the cores this process may use (PIL and cv2 release the GIL)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)

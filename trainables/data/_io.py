"""Helpers of the data layer's caches: stable hashes, tolerant JSON reads, one builder at a time.

Where outputs live and how files are written atomically is :mod:`common.io`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # POSIX only; elsewhere concurrent builders still produce whole files, just redundantly.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def short_hash(*parts: object, length: int = 16) -> str:
    """A stable blake2b hex digest of ``parts`` (bytes as they are, anything else through ``str``)."""
    h = hashlib.blake2b(digest_size=32)
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is absent or unreadable (treated as a cache miss)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the block.

    Trials start together; the lock makes the first one build a shared artifact while the others
    wait and then reuse it, instead of every process decoding the same images at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def default_workers() -> int:
    """Threads for decoding: the cores this process may use (PIL and cv2 release the GIL)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)

"""Where outputs live, and how they are written: atomically, and one builder at a time."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # POSIX only; elsewhere concurrent builders still produce whole files, just redundantly.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def runs_dir() -> Path:
    """The root of every output: ``$RUNS_DIR`` if set, else ``./runs``; created on demand.

    The path is made absolute at call time. Ray Tune changes a trial's working directory, so a
    driver that relies on the relative default should export ``RUNS_DIR`` as an absolute path
    before it starts trials.

    Returns:
        The absolute, existing output root.
    """
    root = Path(os.environ.get("RUNS_DIR") or "runs").expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    return root


def short_hash(*parts: object, length: int = 16) -> str:
    """A stable blake2b hex digest of ``parts`` (bytes as they are, anything else through ``str``)."""
    h = hashlib.blake2b(digest_size=32)
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary file keeps the final suffix so writers that look at it (``np.save``,
    ``savefig``) behave the same. On error the temporary file is removed and ``path`` is left as
    it was, so a crash leaves a file whole or absent, never half.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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

"""Where outputs live, how every file is written (atomically, with the usual permissions), and the
small helpers of shared caches: stable hashes, tolerant JSON reads, one builder at a time.

A writer gets a temporary name in the destination's folder; the bytes are flushed to disk and
the name is renamed onto the destination (one ``os.replace``, atomic on POSIX), so a crash
leaves the old file whole or the new one whole, never half. The file gets ``0666 & ~umask``
(0644 under the common umask 022) like any file ``open()`` creates, not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_lock",
    "read_json",
    "runs_dir",
    "short_hash",
]


def runs_dir() -> Path:
    """The root of every output: ``$RUNS_DIR`` if set, else ``./runs``; absolute, created on demand.

    The path is made absolute at call time. Ray Tune changes a trial's working directory, so a
    driver that relies on the relative default exports ``RUNS_DIR`` as an absolute path before
    it starts trials (``search.cluster`` does).

    Returns:
        The absolute, existing output root.
    """
    root = Path(os.environ.get("RUNS_DIR") or "runs").expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _umask() -> int:
    """The process's umask, read per file so a change is followed."""
    # Linux shows it in /proc without changing it; os.umask can only read it by setting it,
    # which would race with threads creating files meanwhile.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    The temporary name keeps the destination's suffix (``.x.<random>.tmp.npy``), so writers that
    look at it (``np.save``, ``savefig``, ``torch.save``) behave the same. The block may write
    the path in any way (open it, hand it to a library). On error the temporary file is removed
    and ``path`` keeps what it held.

    Args:
        path: The final destination; its folder is created if needed.

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
    try:
        yield tmp
        # Flush to disk before the rename, so the new name never points at unwritten blocks.
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Room left beside a new file: a disk filled to the last byte fails whatever writes next.
_SPARE_BYTES = 256 * 2**20


def open_memmap_with_room(path: Path, dtype: Any, shape: tuple[int, ...], what: str) -> Any:
    """``np.lib.format.open_memmap(path, "w+")``, refused with a clear error when the disk lacks room.

    A memory-mapped file is sparse until written: on a full disk the write that needs a block kills
    the process with SIGBUS, no traceback, after minutes of work. Checking first turns that into
    an error that says what is needed, where, and what to do.

    Raises:
        OSError: ``ENOSPC``, with the sizes and the fix.
    """
    import numpy as np

    need = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    free = shutil.disk_usage(path.parent).free
    if need + _SPARE_BYTES > free:
        raise OSError(
            errno.ENOSPC,
            f"not enough disk for the {what} cache: it needs {need / 1e9:.2f} GB in {path.parent} and "
            f"{free / 1e9:.2f} GB is free; free some space there (caches under {runs_dir() / 'cache'} "
            "are rebuilt when needed) or point RUNS_DIR at a larger disk",
        )
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path`` as a Path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int = 2, **dumps: Any) -> Path:
    """Write ``data`` as JSON (sorted keys, trailing newline) to ``path`` atomically.

    Args:
        path: The destination.
        data: Anything ``json.dumps`` takes.
        indent: Indentation.
        **dumps: Further ``json.dumps`` options (``default=str``, ``allow_nan=False``).

    Returns:
        ``path`` as a Path.
    """
    dumps.setdefault("sort_keys", True)
    return atomic_write_text(path, json.dumps(data, indent=indent, **dumps) + "\n")


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


def remove_abandoned_temporaries(directory: Path) -> int:
    """Delete what killed builders left: :func:`atomic_path` temporaries of a cache written under
    :func:`file_lock` of ``<file>.lock`` whose lock nobody holds any more. A build in progress holds
    its lock, so its temporary stays.

    Returns:
        Bytes freed.
    """
    freed = 0
    for tmp in sorted(Path(directory).rglob(".*.tmp.*")):
        final = tmp.with_name(tmp.name[1:].split(".")[0] + tmp.suffix)  # .<stem>.<hex>.tmp<suffix>
        lock = final.with_suffix(".lock")
        if fcntl is None or not tmp.is_file() or not lock.is_file():
            continue
        with open(lock, "a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its builder is alive
            try:
                size = tmp.stat().st_size
                tmp.unlink(missing_ok=True)
                freed += size
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return freed

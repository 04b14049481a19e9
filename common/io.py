"""Where outputs live, and how every file is written: atomically, with the usual permissions.

A writer gets a temporary name in the destination's folder; the bytes are flushed to disk and
the name is renamed onto the destination (one ``os.replace``, atomic on POSIX), so a crash
leaves the old file whole or the new one whole, never half. The file gets ``0666 & ~umask``
(0644 under the common umask 022) like any file ``open()`` creates, not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "runs_dir"]


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

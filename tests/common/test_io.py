"""common.io: the one output root and the one atomic writer (permissions, crash safety)."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    open_memmap_with_room,
    remove_abandoned_temporaries,
    runs_dir,
)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_runs_dir_honours_runs_dir_and_defaults_to_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "elsewhere"))
    assert runs_dir() == tmp_path / "elsewhere" and runs_dir().is_dir()
    monkeypatch.delenv("RUNS_DIR")
    monkeypatch.chdir(tmp_path)
    assert runs_dir() == tmp_path / "runs" and runs_dir().is_absolute()


@pytest.mark.parametrize(
    "write",
    [
        lambda p: atomic_write_text(p, "text\n"),
        lambda p: atomic_write_bytes(p, b"\x00\x01"),
        lambda p: atomic_write_json(p, {"a": 1}),
        lambda p: _via_path(p),
    ],
    ids=["text", "bytes", "json", "path"],
)
def test_files_get_the_umask_mode_not_0600(tmp_path: Path, umask: None, write) -> None:
    path = tmp_path / "sub" / "file.npy"
    write(path)
    assert _mode(path) == 0o644
    os.umask(0o027)  # another umask is followed, not remembered from import time
    write(path)
    assert _mode(path) == 0o640


def _via_path(path: Path) -> None:
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == path.suffix and tmp != path
        np.save(tmp, np.arange(3))


def test_a_crash_mid_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    atomic_write_text(path, "old report\n")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk on fire")
    assert path.read_text() == "old report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"], "the temporary file was left behind"


def test_a_writer_that_writes_nothing_fails_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_json(path, {"v": 1})
    with pytest.raises(FileNotFoundError), atomic_path(path):
        pass
    assert json.loads(path.read_text()) == {"v": 1}


def test_a_cache_larger_than_the_free_disk_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    # A memory map on a full disk dies of SIGBUS at the first block it cannot get, with no traceback.
    petabytes = (10**8, 10**7)  # 2 PB of float16: more than any disk this runs on
    with pytest.raises(OSError, match="RUNS_DIR") as err:
        open_memmap_with_room(tmp_path / "x.npy", np.float16, petabytes, "sketches train feature")
    assert err.value.errno == errno.ENOSPC and "sketches train feature cache" in str(err.value)
    assert not list(tmp_path.iterdir())
    small = open_memmap_with_room(tmp_path / "y.npy", np.float16, (4, 3), "tiny")
    assert small.shape == (4, 3)


_BUILDER = """
import sys, time
from pathlib import Path
from common.io import atomic_path, file_lock
path = Path(sys.argv[1])
with file_lock(path.with_suffix(".lock")), atomic_path(path) as tmp:
    tmp.write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def test_what_a_killed_cache_builder_left_is_removed_and_a_live_build_is_not(tmp_path: Path) -> None:
    def builder(name: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _BUILDER, str(tmp_path / name)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"writing"
        return proc

    killed, alive = builder("killed.npy"), builder("alive.npy")
    try:
        killed.send_signal(signal.SIGKILL)  # no cleanup runs: its temporary stays
        killed.wait(10)
        left = sorted(p.name for p in tmp_path.glob(".*.tmp.npy"))
        assert len(left) == 2 and left[0].startswith(".alive.") and left[1].startswith(".killed.")
        assert remove_abandoned_temporaries(tmp_path) == 1000
        assert [p.name for p in tmp_path.glob(".*.tmp.npy")] == [left[0]]  # the live build keeps its file
    finally:
        alive.kill()
        alive.wait(10)
    # its builder killed too, nothing holds that lock any more: its file goes now
    assert remove_abandoned_temporaries(tmp_path) == 1000 and not list(tmp_path.glob(".*.tmp.*"))

"""common.io: the one output root and the one atomic writer (permissions, crash safety)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, runs_dir


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

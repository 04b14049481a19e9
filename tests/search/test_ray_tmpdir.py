"""A local Ray starts under a long TMPDIR (a deep checkout): its socket paths would exceed 107 bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEEP = "a/very/deep/temporary/folder/as/a/fresh/clone/of/a/user/might/have/it"


def test_ray_starts_under_a_long_tmpdir(tmp_path: Path) -> None:
    deep = tmp_path / DEEP
    deep.mkdir(parents=True)
    code = (
        "import ray\n"
        "from search.cluster import short_ray_tmpdir\n"
        "short_ray_tmpdir()\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
        "print(ray.get(ray.remote(lambda: 41 + 1).remote()))\n"
        "ray.shutdown()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(deep), "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("42")


@pytest.mark.parametrize(("tmp", "expected"), [("/tmp", None), ("/tmp/" + DEEP, "/tmp")])
def test_only_a_long_tmpdir_is_replaced(tmp: str, expected: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from search.cluster import short_ray_tmpdir

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", tmp)
    short_ray_tmpdir()
    import os

    assert os.environ.get("RAY_TMPDIR") == expected

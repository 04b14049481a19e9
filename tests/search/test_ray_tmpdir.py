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
        "from common.sockets import RAY_TEMP_MAX, short_socket_temp\n"
        "short_socket_temp('RAY_TMPDIR', RAY_TEMP_MAX)\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
        "print(ray.get(ray.remote(lambda: 41 + 1).remote()))\n"
        "ray.shutdown()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(deep), "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("42")


@pytest.mark.parametrize(
    ("tmp", "ray_tmpdir", "expected"),
    [
        ("/tmp", None, None),  # short: left alone
        ("/tmp/" + DEEP, None, "/tmp"),
        ("/tmp/" + DEEP, "/var/tmp", "/var/tmp"),  # set by hand and short enough: kept
        ("/tmp", "/tmp/" + DEEP, "/tmp"),  # set by hand but too long: Ray could not start
    ],
)
def test_only_a_temp_folder_too_long_for_sockets_is_replaced(
    tmp: str, ray_tmpdir: str | None, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import tempfile

    from common.sockets import RAY_TEMP_MAX, short_socket_temp

    if ray_tmpdir is None:
        monkeypatch.delenv("RAY_TMPDIR", raising=False)
    else:
        monkeypatch.setenv("RAY_TMPDIR", ray_tmpdir)
    monkeypatch.setattr(tempfile, "tempdir", tmp)
    short_socket_temp("RAY_TMPDIR", RAY_TEMP_MAX)
    assert os.environ.get("RAY_TMPDIR") == expected

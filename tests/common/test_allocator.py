"""common.allocator: freed blocks stay in the heap, in threads and in the processes a run starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.allocator import ALLOCATOR_ENV, allocator_env, glibc

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not glibc(), reason="the settings are glibc's")

# How many bytes a 100 MiB allocation made in a new thread adds to the blocks glibc mmaps for it
# (mallinfo2's hblkhd): all of them by default, none once the memory is kept.
_PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys, threading
    from common.allocator import keep_freed_memory
    if sys.argv[1] == "keep":
        keep_freed_memory()

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    libc.malloc.restype = ctypes.c_void_p
    out = {}

    def allocate():
        before = libc.mallinfo2().hblkhd
        block = libc.malloc(100 << 20)
        out["mmapped"] = libc.mallinfo2().hblkhd - before
        libc.free(ctypes.c_void_p(block))

    thread = threading.Thread(target=allocate)  # Tune runs a trial in a thread of its worker
    thread.start()
    thread.join()
    child = "import os, json; print(json.dumps(os.environ.get('MALLOC_ARENA_MAX')))"
    out["child_arena_max"] = json.loads(
        __import__("subprocess").run([sys.executable, "-c", child], capture_output=True, text=True).stdout
    )
    print(json.dumps(out))
    """
)


def _probe(mode: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_a_large_block_in_a_thread_comes_from_the_heap_and_children_inherit_the_settings() -> None:
    default = _probe("default", _clean_env())
    kept = _probe("keep", _clean_env())
    assert default["mmapped"] >= 100 << 20  # glibc's default: a fresh mapping, paged in anew
    assert default["child_arena_max"] is None
    assert kept["mmapped"] == 0
    assert kept["child_arena_max"] == "1"  # Ray's workers and the loaders' workers start with them


def test_a_users_own_settings_win() -> None:
    env = {**_clean_env(), "MALLOC_ARENA_MAX": "4"}
    assert _probe("keep", env)["child_arena_max"] == "4"
    os.environ["MALLOC_ARENA_MAX"] = "4"
    try:
        assert allocator_env()["MALLOC_ARENA_MAX"] == "4"
    finally:
        del os.environ["MALLOC_ARENA_MAX"]


def test_a_local_rays_workers_start_with_the_settings(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, os, sys
        from pathlib import Path
        import ray
        from search.cluster import ray_session
        from search.config import load_config
        cfg = load_config(["ray.num_cpus=1"])

        @ray.remote
        def worker_env():
            return {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}

        with ray_session(cfg, Path(sys.argv[1])):
            print(json.dumps(ray.get(worker_env.remote())))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=_clean_env(), capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}

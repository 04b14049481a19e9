"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.sockets import RAY_TEMP_MAX, short_socket_temp

# Under a long TMPDIR (a deep fresh clone) a local Ray cannot create its sockets; the product
# points Ray at /tmp then, and so do the tests that start Ray themselves.
short_socket_temp("RAY_TMPDIR", RAY_TEMP_MAX)

# ../shared/data beside the checkout: real, human-made images for tests (see its README).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder beside the checkout; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (only present inside this workplace)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sketchy125(shared_data: Path) -> Path:
    path = shared_data / "sketchy125"
    if not (path / "train.csv").is_file():
        pytest.skip(f"{path}/train.csv not found")
    return path


@pytest.fixture(scope="session")
def session_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's RUNS_DIR, for module-scoped fixtures that run before the per-test one applies."""
    return _session_runs(tmp_path_factory)


@pytest.fixture(autouse=True)
def _isolated_runs_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test writes under a temporary RUNS_DIR unless it sets its own.

    One directory for the whole session, so the expensive built-in data set and decoded caches are
    generated once and reused by every test, as they are by every trial in real use.
    """
    monkeypatch.setenv("RUNS_DIR", str(_session_runs(tmp_path_factory)))


_RUNS: list[Path] = []


def _session_runs(factory: pytest.TempPathFactory) -> Path:
    if not _RUNS:
        _RUNS.append(factory.mktemp("runs"))
    return _RUNS[0]

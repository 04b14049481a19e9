"""The leak audit at the start of a search: it flags leaky folds on real data and says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.config import load_config
from search.runner import leak_audit

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("pattern", "verdict"), [("auto", "ok"), ("none", "leak")])
def test_the_search_audits_its_folds_before_it_starts(
    sketchy125: Path, tmp_path: Path, pattern: str, verdict: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config([f"data={sketchy125}", f"trainable.group_pattern={pattern}"])
    assert cfg.leak_audit is True  # on by default
    audit = leak_audit(cfg, tmp_path)
    assert audit is not None and audit.verdict == verdict
    saved = (tmp_path / "leak_audit.txt").read_text()
    assert verdict.upper() in saved
    metrics = audit.as_metrics()
    assert metrics["leak_audit_leak"] == float(verdict == "leak") and "leak_audit_closer_share" in metrics
    if verdict == "leak":  # a leak is warned about, with advice
        assert any(r.levelname == "WARNING" for r in caplog.records)

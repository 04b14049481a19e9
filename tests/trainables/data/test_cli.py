"""``python -m trainables.data``: folds, inspect, cache, check."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from trainables.data import Dataset
from trainables.data.__main__ import main


def test_folds_command_writes_the_csv(
    synthetic: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "folds.csv"
    assert main(["folds", "synthetic", "--k", "5", "--seed", "0", "--out", str(out), "--no-audit"]) == 0
    df = pd.read_csv(out)
    assert df.columns[:4].tolist() == ["image_path", "target", "group", "fold"]
    assert len(df) == len(synthetic.train) and sorted(df["fold"].unique()) == [0, 1, 2, 3, 4]
    printed = capsys.readouterr().out
    assert "folds hash:" in printed and synthetic.fingerprint in printed
    # what grouping was used, said and recorded: the built-in names are its classes' numbering
    assert "groups: rows (auto: of file-name families, 24 are naming schemes" in printed
    assert "leak audit" not in printed
    assert json.loads(out.with_suffix(".json").read_text())["grouping"]["rule"] == "rows"


def test_help_lists_the_commands_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in ("check", "folds", "cache", "inspect"):
        assert f"python -m trainables.data {command}" in text
    assert "Validate every file" in text and "--group-pattern none" in text and "--no-audit" in text


def test_inspect_command_writes_the_report(synthetic: Dataset, tmp_path: Path) -> None:
    assert main(["inspect", "synthetic", "--out", str(tmp_path / "eda")]) == 0
    report = (tmp_path / "eda" / "report.md").read_text()
    for name in ("class_counts", "image_sizes", "color_modes", "brightness", "duplicates", "samples_00"):
        assert (tmp_path / "eda" / f"{name}.png").stat().st_size > 5000, name
        assert f"({name}.png)" in report
    assert "12 set(s)" in report and "| train | RGB" in report


def test_cache_and_check_commands(competition: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", str(competition), "--size", "30"]) == 0
    assert main(["cache", str(competition), "--size", "30", "--split", "train"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "built" in out[0] and "found" in out[2]
    assert main(["check", str(competition)]) == 0
    printed = capsys.readouterr().out
    assert "fingerprint=" in printed and "groups: rows" in printed
    # the audit ran for real (12 rows of 3 classes: too few to judge)
    assert "leak audit of fold 0" in printed and "UNKNOWN" in printed and "too few rows" in printed


def test_bad_data_exits_2_with_the_message(competition: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (competition / "train" / "bus" / "bus_0.png").write_text("oops")
    assert main(["check", str(competition)]) == 2
    err = capsys.readouterr().err
    assert "bus_0.png" in err and "skip_bad" in err
    assert main(["check", str(competition), "--skip-bad"]) == 0
    assert "skipped" in capsys.readouterr().out

"""Messages printed through the shared rich console stay on one line when the output is not a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from common.console import make_console


def _message(tmp_path: Path) -> str:
    deep = tmp_path.joinpath(*[f"a-rather-long-folder-name-{i}" for i in range(6)])
    return f"warning: MLflow at http://127.0.0.1:1 failed; the ensemble's files are written in {deep} but not logged"


def test_a_long_message_to_a_stream_is_one_line(tmp_path: Path) -> None:
    message = _message(tmp_path)
    assert len(message) > 200
    stream = io.StringIO()
    make_console(file=stream).print(message, highlight=False)
    assert stream.getvalue() == message + "\n"


@pytest.mark.parametrize("stderr", [False, True])
def test_a_long_message_to_captured_stdout_or_stderr_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stderr: bool
) -> None:
    message = _message(tmp_path)
    make_console(stderr=stderr).print(f"[yellow]{message}[/]")
    out, err = capsys.readouterr()
    assert (err if stderr else out) == message + "\n"


def test_tables_off_a_terminal_are_not_squeezed_to_80_columns() -> None:
    from rich.table import Table

    table = Table()
    for i in range(6):
        table.add_column(f"column number {i}", no_wrap=True)
    table.add_row(*[f"value {i}" * 2 for i in range(6)])
    stream = io.StringIO()
    make_console(file=stream).print(table)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 and max(map(len, lines)) > 80  # one row, headers whole

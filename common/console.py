"""The rich console every command prints through: prose is never hard-wrapped, tables fit their content.

Rich wraps printed text at the console width, 80 columns when the output is not a terminal, so
a message with a long path broke mid-sentence in logs and captured output (and a test matching
"but not logged" failed or passed with the length of a temp path). With ``soft_wrap`` text goes
out as one line and the terminal or viewer wraps it; tables, which need a width, get
:data:`PIPE_WIDTH` columns when not on a terminal and never grow wider than their content.
"""

from __future__ import annotations

from typing import IO, Any

__all__ = ["PIPE_WIDTH", "make_console"]

# Width for tables when the output is a pipe or a file (rich's default there is 80).
PIPE_WIDTH = 160


def make_console(*, stderr: bool = False, file: IO[str] | None = None, quiet: bool = False) -> Any:
    """A ``rich.console.Console`` that soft-wraps prose and sizes tables sensibly off a terminal.

    Args:
        stderr: Write to standard error instead of standard output.
        file: Write to this stream instead (wins over ``stderr``).
        quiet: Print nothing (progress output under ``--quiet``).

    Returns:
        The console.
    """
    from rich.console import Console

    console = Console(stderr=stderr, file=file, quiet=quiet, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    return console

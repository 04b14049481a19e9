"""The errors the data layer raises: one clear message for everything wrong with the input."""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import DeterministicError

# Long lists are cut here in messages; the full list stays on the exception object.
_MAX_LISTED = 50


class DataFormatError(DeterministicError, ValueError):
    """The dataset's layout or CSV files are wrong (columns, targets, class names, paths)."""


class BadDataError(DeterministicError, ValueError):
    """Some image files are missing or cannot be decoded.

    Attributes:
        problems: Every ``(path, reason)`` found, not only the first.
        where: The data set the files belong to, as given.
    """

    def __init__(self, problems: Sequence[tuple[str, str]], *, where: str = "") -> None:
        self.problems = [(str(path), str(reason)) for path, reason in problems]
        self.where = where
        lines = [f"  {path}: {reason}" for path, reason in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more (see BadDataError.problems)")
        head = f"{len(self.problems)} image file(s){' in ' + where if where else ''} are missing or corrupt:"
        fix = (
            "Fix or remove these files (and their rows in the CSV), or skip them: "
            "load_dataset(..., skip_bad=True), `--skip-bad` for `python -m trainables.data`, "
            "skip_bad=true for `python -m trainables.run`, trainable.skip_bad=true for `python -m search.run`; "
            "skipped rows are listed in Dataset.skipped."
        )
        super().__init__("\n".join([head, *lines, fix]))


def listing(items: Sequence[object], limit: int = 10) -> str:
    """``a, b, c ... (N in all)``: a short, readable list for error messages."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown if len(items) <= limit else f"{shown} ... ({len(items)} in all)"

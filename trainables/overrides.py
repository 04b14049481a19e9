"""``key=value`` command-line overrides: the one parser of every command.

``search.run``, ``search.oof``, ``search.pseudo`` and ``trainables.run`` all read their
arguments with :func:`parse_overrides` (it lives here, in the lowest layer, so ``trainables``
needs nothing from ``search``). Values are YAML, as OmegaConf's dotlist reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from common.errors import DeterministicError


class ConfigError(DeterministicError, ValueError):
    """The config, a space file or an override is wrong; the message says what to do."""


def parse_overrides(argv: Sequence[str]) -> list[tuple[str, Any]]:
    """Split ``key=value`` arguments; values are parsed as YAML (``3``, ``1e-3``, ``[a, b]``, ``null``).

    Args:
        argv: Command-line arguments after the module name (a leading ``--`` is dropped).

    Returns:
        ``(dotted key, value)`` pairs in order.

    Raises:
        ConfigError: An argument is not ``key=value``.
    """
    out = []
    for arg in argv:
        key, sep, raw = arg.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(f"argument {arg!r} is not key=value (e.g. tune.num_samples=8); see --help")
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw}"]))["v"]
        out.append((key, value))
    return out

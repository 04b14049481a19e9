"""Typed schemas of the trainables' configs, generated from their defaults (never written twice).

A trainable's :meth:`default_config` stays the one place for its defaults; this module turns a
defaults dict into an OmegaConf structured-config dataclass whose field types follow the
default values:

============== ====================== =================================================================
default        field type             why
============== ====================== =================================================================
bool           ``Optional[bool]``     flags
int            ``Optional[int]``      counts; ``None`` where the key allows it (``fold``) is the value check's call
float          ``Optional[float]``    an int is widened (``lr=1``)
str, None,     ``Any``                a string default also takes a number or a flag (``num_workers: auto | 2``,
list                                  ``amp: auto | false``); a None default takes the key's own kind
dict           a nested schema        ``aug``, ``targets``
============== ====================== =================================================================

:data:`CommonSchema` holds the keys every trainable shares (``COMMON_DEFAULTS``, with ``aug``);
:func:`trainable_schema` extends it with one trainable's own keys (``backbone``, ``targets`` of
the factor heads, CLIP's ``text_tower``, DINO's ``head``...) and its own defaults of common keys.
Value checks (ranges, choices) stay in each trainable's ``validate_config``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import field, fields, make_dataclass
from typing import Any, Optional

from trainables.config import COMMON_DEFAULTS


def _field_type(name: str, value: Any, prefix: str) -> Any:
    """The field type of a default value (see the module table)."""
    if isinstance(value, Mapping):
        return schema_from_defaults(f"{prefix}{name.title().replace('_', '')}", value)
    if isinstance(value, bool):
        return Optional[bool]  # noqa: UP045 - OmegaConf reads typing.Optional, not ``X | None``
    if isinstance(value, int):
        return Optional[int]  # noqa: UP045
    if isinstance(value, float):
        return Optional[float]  # noqa: UP045
    return Any


def _field(name: str, value: Any, prefix: str) -> tuple[str, Any, Any]:
    kind = _field_type(name, value, prefix)
    if isinstance(value, Mapping):
        return name, kind, field(default_factory=kind)
    if isinstance(value, (list, dict)):
        return name, kind, field(default_factory=lambda v=value: copy.deepcopy(v))
    return name, kind, field(default=value)


def schema_from_defaults(name: str, defaults: Mapping[str, Any], base: type | None = None) -> type:
    """A structured-config dataclass whose fields are ``defaults``' keys, typed by their values.

    Args:
        name: The class name (shows in OmegaConf's error messages as ``object_type``).
        defaults: Key -> default value; a mapping becomes a nested schema.
        base: A schema to extend: its fields are kept, ``defaults`` adds or re-defaults fields.

    Returns:
        The dataclass; ``OmegaConf.structured(it)`` is the typed config with these defaults.
    """
    inherited = {f.name for f in fields(base)} if base is not None else set()
    own = [_field(key, value, name) for key, value in defaults.items()]
    redefined = [f for f in own if f[0] in inherited]
    new = [f for f in own if f[0] not in inherited]
    return make_dataclass(name, redefined + new, bases=(base,) if base is not None else ())


#: The keys every trainable takes (``trainables.config.COMMON_DEFAULTS``), typed.
CommonSchema = schema_from_defaults("TrainableCommon", COMMON_DEFAULTS)


def trainable_schema(name: str, defaults: Mapping[str, Any]) -> type:
    """The schema of one trainable: :data:`CommonSchema` extended by its own keys and defaults.

    Args:
        name: The trainable's registered name (``timm``, ``clip``, ``dino``), for the class name.
        defaults: Its ``default_config()``.

    Returns:
        A dataclass extending :data:`CommonSchema`.
    """
    changed = {k: v for k, v in defaults.items() if k not in COMMON_DEFAULTS or v != COMMON_DEFAULTS[k]}
    return schema_from_defaults(f"{name.title()}Trainable", changed, base=CommonSchema)

"""The ``--help`` text of ``python -m search.run``: usage, the spaces, and every key with the value
that run would use and what it means.

Values are the effective config (``search/defaults.yaml``, then the space file, then any other
``key=value`` given with ``--help``), built by :func:`search.config.load_config` as a run builds it.
Meanings have one source each: the trailing ``# comment`` of a key in ``search/defaults.yaml``,
and for ``trainable.*`` keys the key table in the trainable's module docstring (the ``timm``
table in :mod:`trainables.config` for the keys a trainable shares with it).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from search.config import DEFAULTS_FILE, ConfigError, dimensions, list_spaces, load_config, load_space
from search.space import DISTRIBUTIONS

HELP_ARGS = ("-h", "--help", "help", "help=true")
UNDOCUMENTED = "(undocumented)"
_KEY_COLUMN = 44  # "key = value" is padded to this width, then the meaning follows
_HIDDEN = ("description", "trainable.data")  # set by each space / copied from the top-level `data`

_INTRO = """\
usage: python -m search.run [space=<name>] [key=value ...]

Runs a hyperparameter search (Ray Tune) over one space, prints and saves its leaderboard and
plots under <runs>/search/<experiment>, then the stages after it (out-of-fold refits, ensemble).
Values are YAML: 3, 1e-3, true, null, [oof, ensemble], {cutmix: 0.5}.

Examples:
  python -m search.run                                   the quick demo space on the built-in set
  python -m search.run space=aug_ablation data=/data/sketch trainable.epochs=8
  python -m search.run space=lr tune.num_samples=32 resources.gpu=0.5
  python -m search.run resume=true                       continue the latest interrupted search
  python -m search.run ray.address=auto space=backbones  join a running Ray cluster
  python -m search.run space=lr --help                   this text, with the values of space lr"""


def usage(argv: Sequence[str] = ()) -> str:
    """The help text for the command line ``argv`` (its ``space=`` and other overrides).

    Args:
        argv: The command line; help flags in it are ignored, the rest shapes the values shown.

    Returns:
        Plain text (no markup): usage, spaces, distributions, then every key with its effective
        value and meaning. A bad override is reported at the top and the space's values shown.
    """
    pairs = [a for a in argv if a not in HELP_ARGS]
    lines = [_INTRO, ""]
    try:
        cfg = load_config(pairs)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        lines += [f"error in the arguments: {err}", "(showing the values of the default space)", ""]
        pairs = []
        cfg = load_config([])
    space = str(cfg.space)
    lines += _spaces(space)
    lines += ["", "Searched keys: search.<key>={distribution: args} (search.<key>=null stops searching it):"]
    lines += [f"  {name:<12} {meaning}" for name, meaning in DISTRIBUTIONS.items()]
    where = f"search/defaults.yaml, then spaces/{space}.yaml" + (", then the command line" if pairs else "")
    lines += ["", f"Keys and the values this run would use ({where}):"]
    lines += key_lines(cfg, experiment_given=any(a.startswith("experiment=") for a in pairs))
    return "\n".join(lines)


def key_lines(cfg: DictConfig, *, experiment_given: bool = False) -> list[str]:
    """``key = value  meaning`` for every settable key of ``cfg``, a blank line between sections.

    Args:
        cfg: A config from :func:`search.config.load_config`.
        experiment_given: Whether the name was chosen; else it shows ``null`` (named at start).

    Returns:
        The lines; a searched trainable key shows its distribution instead of a value.
    """
    meanings = descriptions(str(cfg.trainable.name))
    searched = {f"trainable.{path}": dim.describe() for path, dim in dimensions(cfg).items()}
    lines: list[str] = []
    section = ""
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if key in _HIDDEN or key == "search" or key.startswith("search."):
            continue
        if key == "experiment" and not experiment_given:
            value = None  # load_config names it <space>-<time>; that name belongs to the run
        group = key.split(".")[0] if "." in key else ""  # top-level scalars stay together
        if group != section and lines:
            lines.append("")
        section = group
        shown = f"searched: {searched[key]}" if key in searched else _yaml(value)
        left = f"  {key} = {shown}"
        meaning = meanings.get(key, UNDOCUMENTED)
        if len(left) < _KEY_COLUMN:
            lines.append(f"{left:<{_KEY_COLUMN}}{meaning}")
        else:
            lines += [left, f"{'':<{_KEY_COLUMN}}{meaning}"]
    return lines


def descriptions(trainable: str) -> dict[str, str]:
    """The one-line meaning of every documented key: ``defaults.yaml`` comments and trainable tables.

    Args:
        trainable: The trainable whose ``trainable.*`` keys to describe.

    Returns:
        ``{dotted key: meaning}``.
    """
    import trainables
    from trainables import config as timm_config

    own = sys.modules[type(trainables.create_trainable(trainable)).__module__].__doc__ or ""
    table = {**doc_table(timm_config.__doc__ or ""), **doc_table(own)}
    return {**yaml_comments(DEFAULTS_FILE), **{f"trainable.{k}": v for k, v in table.items()}}


def yaml_comments(path: Path) -> dict[str, str]:
    """``{dotted key: trailing comment}`` of a block-style YAML file, nesting followed by indentation.

    A line-based reader (the YAML loaders drop comments): ``key: value  # comment``; comment-only
    lines, and keys without a comment, give nothing.
    """
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings enclosing the current line
    for line in path.read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match[1]), match[2], match[3]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        _, hash_sign, comment = rest.partition(" #")
        if hash_sign and comment.strip():
            out[dotted] = plain(comment.strip())
    return out


def doc_table(doc: str) -> dict[str, str]:
    """``{key: meaning}`` from the ``key  default  meaning`` table of a docstring (reST simple table).

    The columns are where the ``=====`` rule's runs start; a row with an empty key column continues
    the meaning above it.
    """
    lines = doc.splitlines()
    rules = [i for i, ln in enumerate(lines) if re.fullmatch(r"=+( +=+)+", ln.strip())]
    if len(rules) < 3:
        return {}
    rule = lines[rules[0]]
    starts = [m.start() for m in re.finditer(r"=+", rule)]
    out: dict[str, str] = {}
    last = ""
    for row in lines[rules[1] + 1 : rules[2]]:
        key, meaning = row[: starts[1]].strip(), row[starts[-1] :].strip()
        if key:
            last = key
            out[key] = plain(meaning)
        elif last and meaning:
            out[last] = f"{out[last]} {plain(meaning)}"
    return out


def plain(text: str) -> str:
    """Docstring or comment text without reST markup: ``x``, `x` and :role:`x` become x."""
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text)
    return re.sub(r"`{1,2}([^`]*)`{1,2}", r"\1", text).replace("::", ":")


def _spaces(current: str) -> list[str]:
    lines = ["Spaces (space=<name>, from spaces/<name>.yaml; * the one shown below):"]
    for name in list_spaces():
        try:
            description = str(load_space(name).get("description", ""))
        except ConfigError as err:
            description = f"(unreadable: {err})"
        lines.append(f"{'*' if name == current else ' '} {name:<14} {description}")
    return lines


def _leaves(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _leaves(value, name + ".")
        else:
            out.append((name, value))
    return out


def _yaml(value: Any) -> str:
    """A value as it would be typed on the command line (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)

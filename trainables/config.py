"""The trial config: one plain dict, its defaults, and its validation.

A config is flat except for ``aug`` and ``targets``. Keys may also arrive dotted
(``"aug.cutmix": 0.5``), as a search space or a ``key=value`` command line writes them;
:func:`resolve_config` folds them in.
Unknown keys are an error that lists the valid ones, so a typo in a search space fails at once
instead of silently training the default.

=================== ========================== ===============================================================
key                 default                    meaning
=================== ========================== ===============================================================
data                ``"synthetic"``            data spec for ``trainables.data.load_dataset`` (use absolute paths under Ray)
skip_bad            ``False``                  skip rows whose image file is missing or corrupt (listed in a warning) instead of failing
fold                ``0``                      validation fold; ``-1``/``None`` trains on every row, no validation (refits)
k                   ``5``                      number of folds
folds_seed          ``0``                      seed of the fold assignment
group_pattern       ``"auto"``                 leakage groups from file names: ``auto`` = file-name families (photo-1, photo-2, ...) when they look like groups; ``none`` = every row alone; ``sketchy`` or a regex
group_column        ``None``                   train.csv column naming the leakage group (e.g. ``person``); wins over ``group``/``group_pattern``
backbone            ``"tf_efficientnet_lite0"`` any ``timm`` model name
pretrained          ``True``                   builtin offline weights if the backbone has them, else timm's hub
pretrained_path     ``None``                   local weights file (or trainable checkpoint dir); wins over ``pretrained``
pseudo_labels       ``None``                   CSV of test rows (``image_path,target``) added to the training side of every fold; ``{fold}`` in it is the fold
image_size          ``128``                    side of the square decoded cache and of the network input
epochs              ``10``                     training epochs
batch_size          ``64``                     training batch size (evaluation uses twice this)
optimizer           ``"adamw"``                ``adamw`` or ``sgd`` (nesterov momentum)
lr                  ``3e-4``                   peak learning rate
weight_decay        ``0.05``                   decoupled for AdamW; norm and bias parameters are exempt
momentum            ``0.9``                    SGD momentum
schedule            ``"cosine"``               ``cosine`` (per step), ``step``, ``plateau`` (on val loss) or ``none``
warmup_epochs       ``0.5``                    linear warmup from ``lr / 100``, per update, fractions allowed; every schedule
step_size           ``3``                      epochs between decays (``step``) or patience (``plateau``)
gamma               ``0.1``                    decay factor (``step``, ``plateau``)
drop_rate           ``0.0``                    dropout before the classifier
drop_path_rate      ``0.0``                    stochastic depth (models that support it)
freeze_stages       ``0``                      freeze the stem and this many stages after it (weights and batch-norm statistics)
frozen_cache        ``True``                   on CPU, train on the frozen stages' outputs cached per epoch and shared by folds and trials (:mod:`trainables.frozen`)
head_init           ``"auto"``                 ``probe``: the classifier starts as a linear probe of the pretrained features (:mod:`trainables.probe`); ``random``: timm's init; ``auto``: probe with ``pretrained`` weights (not ``pretrained_path``)
label_smoothing     ``0.1``                    on hard and on mixed targets
seed                ``0``                      seeds model init, data order, augmentation, mixing
num_workers         ``"auto"``                 DataLoader workers; ``auto`` sizes them to the trial's CPU share
amp                 ``"auto"``                 ``auto`` (bf16/fp16 on CUDA, off on CPU), ``bf16``, ``fp16``, ``false``
device              ``"auto"``                 ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1`` ...
tta_flip            ``False``                  average with the horizontally flipped view at validation/predict
aug.hflip           ``True``                   random horizontal flip
aug.sketch_ab       ``False``                  "Sketch Albumentations": affine, elastic, noise, motion blur
aug.edge            ``False``                  Canny edge map, black lines on white, at train and eval
aug.cutmix          ``0.0``                    probability of CutMix per batch
aug.mixup           ``0.0``                    probability of MixUp per batch
aug.mix_alpha       ``1.0``                    Beta(alpha, alpha) of the mixing ratio
aug.balance         ``True``                   fill short classes up to the largest with copies (the reference's balancing)
aug.randaug_balance ``False``                  fill copies are RandAugment-style augmented, not flipped (implies balance)
aug.del_flip        ``False``                  drop the training rows the data layer marked duplicate
aug.object_split    ``False``                  add each object of a multi-object training sketch as an extra row (never validation)
targets.factors     ``None``                   ``None``: one softmax over the classes. A list of factors the classes split into (below)
targets.heads       ``"factors"``              with factors: ``factors`` (one head per factor, recombined) or ``classes`` (one
                                               softmax over the classes; the factors only add per-factor metrics)
targets.sep         ``"_"``                    separator of the factor values in a class name; ``None``: the target is the
                                               factors' mixed-radix number (first factor slowest; ``values`` required)
targets.fine        ``True``                   factors with a ``column`` train on its finer labels, merged back for the classes
=================== ========================== ===============================================================

Multi-task targets (:mod:`trainables.factors`): ``targets.factors`` lists the factors a class
splits into, in the order its name writes them (``wear_female_young``: mask, gender, age). An
entry is a name, or a mapping with ``name`` and optionally ``values`` (the factor's values in
order; default: as they first appear in the class list), ``column`` (a train.csv column with finer
labels for this factor's head), ``bins`` (cut points turning a numeric ``column`` into bins,
``[20, 25, 30]`` -> <20, 20-25, 25-30, >=30; without it the column's distinct values are the
labels) and ``weight`` (of this head's loss; default 1). Each finer label must fall inside one
value of the factor. Example, the reference's 11 age bins merged into 3::

    targets.factors=[mask,gender,{name: age, column: age, bins: [20,25,30,35,40,45,50,55,60,65]}]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

AUG_DEFAULTS: dict[str, Any] = {
    "hflip": True,
    "sketch_ab": False,
    "edge": False,
    "cutmix": 0.0,
    "mixup": 0.0,
    "mix_alpha": 1.0,
    "balance": True,
    "randaug_balance": False,
    "del_flip": False,
    "object_split": False,
}

TARGETS_DEFAULTS: dict[str, Any] = {
    "factors": None,
    "heads": "factors",
    "sep": "_",
    "fine": True,
}

# Keys a factor mapping may hold (see the module docstring).
FACTOR_KEYS = ("name", "values", "column", "bins", "weight")

# Keys every trainable takes, with the same meaning (the table above); defined once, here.
COMMON_DEFAULTS: dict[str, Any] = {
    "data": "synthetic",
    "skip_bad": False,
    "fold": 0,
    "k": 5,
    "folds_seed": 0,
    "group_pattern": "auto",
    "group_column": None,
    "pretrained_path": None,
    "pseudo_labels": None,
    "image_size": 128,
    "epochs": 10,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 3e-4,
    "weight_decay": 0.05,
    "momentum": 0.9,
    "schedule": "cosine",
    "warmup_epochs": 0.5,
    "step_size": 3,
    "gamma": 0.1,
    "label_smoothing": 0.1,
    "seed": 0,
    "num_workers": "auto",
    "amp": "auto",
    "device": "auto",
    "tta_flip": False,
    "aug": AUG_DEFAULTS,
}

# The ``timm`` trainable's config: the common keys plus its network's.
BASE_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "backbone": "tf_efficientnet_lite0",
    "pretrained": True,
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "freeze_stages": 0,
    "frozen_cache": True,
    "head_init": "auto",
    "targets": TARGETS_DEFAULTS,
}

# Keys newer than the checkpoint format, saved only when set (:func:`saved_config`): a checkpoint's
# config then reads as before, for older code.
SAVED_IF_SET = (
    "group_column", "targets", "pseudo_labels", "skip_bad", "freeze_stages", "frozen_cache", "head_init",
)  # fmt: skip

HEAD_INITS = ("auto", "probe", "random")

_CHOICES: dict[str, tuple[Any, ...]] = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("cosine", "step", "plateau", "none"),
    "amp": ("auto", "bf16", "fp16", True, False),
}


def merge_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Apply ``overrides`` (nested or dotted ``aug.*`` keys) to a copy of ``defaults``.

    Args:
        defaults: A complete config, e.g. from ``default_config(name)``.
        overrides: Keys to change; ``None`` changes nothing.

    Returns:
        A new dict with the same keys as ``defaults``.

    Raises:
        ValueError: A key is not in ``defaults``; the message lists the valid keys.
    """
    out = copy.deepcopy(dict(defaults))
    unknown: list[str] = []
    for key, value in (overrides or {}).items():
        head, _, rest = str(key).partition(".")
        if rest:
            if not isinstance(out.get(head), dict) or rest not in out[head]:
                unknown.append(key)
            else:
                out[head][rest] = value
        elif key not in out:
            unknown.append(key)
        elif isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {key!r} must be a mapping, got {value!r}")
            bad = sorted(set(value) - set(out[key]))
            unknown += [f"{key}.{b}" for b in bad]
            out[key].update({k: v for k, v in value.items() if k in out[key]})
        else:
            out[key] = value
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; valid keys: {_key_list(defaults)}")
    return out


def validate_config(config: Mapping[str, Any]) -> None:
    """Check the values of a complete config, naming the key and the allowed values on error.

    Checks the :data:`COMMON_DEFAULTS` keys, and the ``timm`` keys (``drop_rate``,
    ``drop_path_rate``, ``targets``) where the config has them; a trainable checks its own.

    Args:
        config: A config returned by :func:`merge_config`.

    Raises:
        ValueError: A value is out of range or not one of the allowed choices.
    """
    for key, choices in _CHOICES.items():
        if config[key] not in choices:
            raise ValueError(f"config {key}={config[key]!r} is not one of {list(choices)}")
    for key in ("epochs", "batch_size", "image_size", "k"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"config {key}={config[key]!r} must be a positive integer")
    if config["image_size"] < 16:
        raise ValueError(f"config image_size={config['image_size']} is too small; use 16 or more")
    fold = config["fold"]
    if fold is not None and not (fold == -1 or 0 <= int(fold) < config["k"]):
        raise ValueError(f"config fold={fold} must be -1/None (train on all rows) or in [0, k={config['k']})")
    if not (isinstance(config["lr"], (int, float)) and config["lr"] > 0):
        raise ValueError(f"config lr={config['lr']!r} must be a positive number")
    warmup = config["warmup_epochs"]
    if not (isinstance(warmup, (int, float)) and warmup >= 0):
        raise ValueError(f"config warmup_epochs={warmup!r} must be epochs >= 0 (fractions allowed, e.g. 0.5)")
    nw = config["num_workers"]
    if nw != "auto" and not (isinstance(nw, int) and nw >= 0):
        raise ValueError(f"config num_workers={nw!r} must be 'auto' or an integer >= 0")
    if not isinstance(config["skip_bad"], bool):
        raise ValueError(f"config skip_bad={config['skip_bad']!r} must be true or false")
    freeze_stages = config.get("freeze_stages", 0)
    if not (isinstance(freeze_stages, int) and not isinstance(freeze_stages, bool) and freeze_stages >= 0):
        raise ValueError(f"config freeze_stages={freeze_stages!r} must be an integer >= 0 (0 trains every layer)")
    if not isinstance(config.get("frozen_cache", True), bool):
        raise ValueError(f"config frozen_cache={config['frozen_cache']!r} must be true or false")
    if config.get("head_init", "auto") not in HEAD_INITS:
        raise ValueError(f"config head_init={config['head_init']!r} is not one of {list(HEAD_INITS)}")
    if config.get("head_init") == "probe" and factor_heads(config):
        raise ValueError(
            "config head_init=probe fits one softmax over the classes, and targets.factors gives the "
            "network a head per factor; use head_init=auto (timm's init for factor heads) or random"
        )
    for key in ("drop_rate", "drop_path_rate", "label_smoothing"):
        if key in config and not 0.0 <= float(config[key]) < 1.0:
            raise ValueError(f"config {key}={config[key]!r} must be in [0, 1)")
    aug = config["aug"]
    for key in ("cutmix", "mixup"):
        if not 0.0 <= float(aug[key]) <= 1.0:
            raise ValueError(f"config aug.{key}={aug[key]!r} is a probability; use a value in [0, 1]")
    if float(aug["mix_alpha"]) <= 0:
        raise ValueError(f"config aug.mix_alpha={aug['mix_alpha']!r} must be > 0")
    group_column = config.get("group_column")
    if group_column is not None and not (isinstance(group_column, str) and group_column.strip()):
        raise ValueError(f"config group_column={group_column!r} must be a train.csv column name or null")
    pseudo = config.get("pseudo_labels")
    if pseudo is not None and not (isinstance(pseudo, str) and pseudo.strip()):
        raise ValueError(
            f"config pseudo_labels={pseudo!r} must be the path of a CSV (image_path,target) or null"
        )
    if "targets" in config:
        validate_targets(config["targets"])


def validate_targets(targets: Mapping[str, Any]) -> None:
    """Check the shape of a ``targets`` group (what needs the dataset is checked in ``trainables.factors``).

    Args:
        targets: The config's ``targets`` dict.

    Raises:
        ValueError: A malformed factor list, with the entry and what to write instead.
    """
    sep, factors = targets["sep"], targets["factors"]
    if sep is not None and not (isinstance(sep, str) and sep):
        raise ValueError(
            f"config targets.sep={sep!r} must be a non-empty string, or null for mixed-radix targets"
        )
    if not isinstance(targets["fine"], bool):
        raise ValueError(f"config targets.fine={targets['fine']!r} must be true or false")
    if targets["heads"] not in ("factors", "classes"):
        raise ValueError(f"config targets.heads={targets['heads']!r} is not one of ['factors', 'classes']")
    if factors is None:
        return
    if isinstance(factors, (str, Mapping)) or not isinstance(factors, (list, tuple)) or len(factors) < 2:
        raise ValueError(
            f"config targets.factors={factors!r} must be null or a list of at least 2 factors, "
            "e.g. [mask, gender, age]"
        )
    names = [factor_name(entry) for entry in factors]
    if len(set(names)) != len(names):
        raise ValueError(f"config targets.factors: factor names must be unique, got {names}")
    for entry in factors:
        _validate_factor(entry, sep)


def _validate_factor(entry: Any, sep: str | None) -> None:
    """Check one ``targets.factors`` entry (its name already checked by :func:`factor_name`)."""
    if isinstance(entry, str):
        entry = {"name": entry}
    name = entry["name"]
    values = entry.get("values")
    if values is not None and (
        isinstance(values, (str, Mapping)) or len(values) < 2 or len({str(v) for v in values}) != len(values)
    ):
        raise ValueError(
            f"config targets.factors {name!r}: values={values!r} must list 2 or more distinct values"
        )
    if sep is None and values is None:
        raise ValueError(
            f"config targets.factors {name!r}: with targets.sep=null the classes are numbered by the "
            "factors' values, so every factor needs its values list"
        )
    column = entry.get("column")
    if column is not None and not (isinstance(column, str) and column):
        raise ValueError(
            f"config targets.factors {name!r}: column={column!r} must be a train.csv column name"
        )
    bins = entry.get("bins")
    if bins is not None:
        if column is None:
            raise ValueError(f"config targets.factors {name!r}: bins need a column of numbers to cut")
        ok = isinstance(bins, (list, tuple)) and len(bins) >= 1
        ok = ok and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bins)
        if not ok or any(b >= c for b, c in zip(bins, bins[1:], strict=False)):
            raise ValueError(
                f"config targets.factors {name!r}: bins={bins!r} must be increasing cut points, e.g. [30, 60]"
            )
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ValueError(f"config targets.factors {name!r}: weight={weight!r} must be a number > 0")


def factor_name(entry: Any) -> str:
    """The name of one ``targets.factors`` entry (a string, or a mapping with ``name``).

    Raises:
        ValueError: The entry is neither, or its mapping has keys outside :data:`FACTOR_KEYS`.
    """
    if isinstance(entry, str) and entry:
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and entry["name"]:
        unknown = sorted(set(entry) - set(FACTOR_KEYS))
        if unknown:
            raise ValueError(
                f"config targets.factors {entry['name']!r}: unknown key(s) {unknown}; valid: {list(FACTOR_KEYS)}"
            )
        return str(entry["name"])
    raise ValueError(
        f"config targets.factors entry {entry!r} must be a factor name or a mapping with a name, "
        "e.g. {name: age, column: age, bins: [30, 60]}"
    )


def uses_factors(config: Mapping[str, Any]) -> bool:
    """Whether the config splits its classes into factors (``targets.factors`` is set)."""
    targets = config.get("targets") or {}
    return bool(targets.get("factors"))


def factor_heads(config: Mapping[str, Any]) -> bool:
    """Whether the network has one head per factor (factors set and ``targets.heads`` is ``factors``)."""
    return uses_factors(config) and config["targets"].get("heads", "factors") == "factors"


def resolve_config(
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    validate: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Merge overrides into the defaults and validate the result (see the module table).

    Args:
        defaults: The trainable's defaults.
        overrides: The user's keys (nested or dotted).
        validate: The trainable's check of a complete config; default :func:`validate_config`.

    Returns:
        The complete, validated config.
    """
    config = merge_config(defaults, overrides)
    if isinstance(config.get("targets"), dict) and config["targets"].get("factors") is not None:
        # Plain lists and dicts, as a checkpoint's JSON gives them back: a resume compares configs.
        config["targets"]["factors"] = _plain(config["targets"]["factors"])
    (validate or validate_config)(config)
    return config


def saved_config(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The config as a checkpoint stores it: :data:`SAVED_IF_SET` keys only when not at their default."""
    return {k: v for k, v in config.items() if k not in SAVED_IF_SET or v != defaults.get(k)}


def train_on_all(config: Mapping[str, Any]) -> bool:
    """Whether the config asks for a refit on every row (``fold`` is -1 or None)."""
    return config["fold"] is None or int(config["fold"]) < 0


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _key_list(defaults: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    for key, value in defaults.items():
        keys += [f"{key}.{k}" for k in value] if isinstance(value, dict) else [key]
    return keys

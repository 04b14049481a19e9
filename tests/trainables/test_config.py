"""Registry, config keys and the inline command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainables.conftest import tiny_config
from trainables import create_trainable, default_config, list_trainables
from trainables.config import COMMON_DEFAULTS, resolve_config
from trainables.overrides import parse_overrides
from trainables.registry import Trainable
from trainables.run import main


def test_unknown_trainable_lists_the_valid_names() -> None:
    assert "timm" in list_trainables()
    with pytest.raises(ValueError, match=r"unknown trainable 'timmm'.*'timm'"):
        create_trainable("timmm")


@pytest.mark.parametrize("name", list_trainables())
def test_default_config_is_complete_and_resolves(name: str) -> None:
    cfg = default_config(name)
    trainable = create_trainable(name)
    assert isinstance(trainable, Trainable)  # default_config, validate_config, resolve, fit, predict
    trainable.validate_config(cfg)
    assert trainable.resolve({}) == cfg
    # the keys every trainable shares are defined once and mean the same everywhere
    assert set(COMMON_DEFAULTS) <= set(cfg)
    # the fold keys every trainable shares, so the OOF stage and person groups work for all of them
    for key in ("data", "fold", "k", "folds_seed", "group_pattern", "group_column"):
        assert key in cfg, key
    for key in ("data", "fold", "backbone", "pretrained", "image_size", "epochs", "lr", "aug", "seed"):
        assert key in cfg
    assert {
        "hflip",
        "sketch_ab",
        "edge",
        "cutmix",
        "mixup",
        "mix_alpha",
        "randaug_balance",
        "del_flip",
    } <= set(cfg["aug"])
    assert default_config(name) is not default_config(name)  # a fresh copy each time


def test_unknown_keys_are_an_error_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['aug.cutmx', 'lrr'\].*aug.cutmix"):
        resolve_config(default_config("timm"), {"lrr": 1, "aug.cutmx": 0.5})
    with pytest.raises(ValueError, match="aug.nope"):
        resolve_config(default_config("timm"), {"aug": {"nope": 1}})


def test_dotted_and_nested_aug_keys_merge() -> None:
    cfg = resolve_config(default_config("timm"), {"aug.cutmix": 0.5, "aug": {"edge": True}, "lr": 1e-3})
    assert cfg["aug"]["cutmix"] == 0.5 and cfg["aug"]["edge"] and cfg["aug"]["hflip"] and cfg["lr"] == 1e-3


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"optimizer": "adam"}, "optimizer"),
        ({"schedule": "linear"}, "schedule"),
        ({"fold": 5}, "fold"),
        ({"epochs": 0}, "epochs"),
        ({"aug.cutmix": 1.5}, "probability"),
        ({"num_workers": "many"}, "num_workers"),
        ({"amp": "fp8"}, "amp"),
        ({"skip_bad": "yes"}, "skip_bad"),
        ({"warmup_epochs": -1}, "warmup_epochs=-1 must be epochs >= 0"),
    ],
)
def test_bad_values_name_the_key(override: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_config(default_config("timm"), override)


def test_fold_minus_one_or_null_means_train_on_all() -> None:
    for fold in (-1, None):
        assert resolve_config(default_config("timm"), {"fold": fold})["fold"] == fold


def test_command_line_overrides_parse_as_yaml_values() -> None:
    got = parse_overrides(
        ["epochs=2", "aug.cutmix=0.5", "pretrained_path=null", "fold=-1", "backbone=test_vit"]
    )
    assert got == [
        ("epochs", 2),
        ("aug.cutmix", 0.5),
        ("pretrained_path", None),
        ("fold", -1),
        ("backbone", "test_vit"),
    ]
    assert resolve_config(default_config("timm"), dict(got))["aug"]["cutmix"] == 0.5
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["epochs"])


def test_cli_show_config_and_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--show-config", "lr=0.01", "aug.edge=true"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["lr"] == 0.01 and cfg["aug"]["edge"] is True
    with pytest.raises(SystemExit):
        main(["lrr=1"])
    assert "unknown config key" in capsys.readouterr().err
    assert main(["--show-config", "skip_bad=true"]) == 0
    assert json.loads(capsys.readouterr().out)["skip_bad"] is True
    with pytest.raises(SystemExit):
        main(["skip_bad=maybe"])
    assert "skip_bad='maybe' must be true or false" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_runs_one_inline_trial(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config(tiny_data, epochs=1)
    args = [f"{k}={v}" for k, v in cfg.items()] + ["aug.cutmix=0.5", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "val_acc" in out and '"final"' in out
    assert (tmp_path / "run" / "checkpoint_0001" / "model.pt").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())[0]["epoch"] == 1


@pytest.mark.parametrize("name", ["timm", "clip", "dino"])
def test_the_schema_is_generated_from_the_trainables_defaults(name: str) -> None:
    from omegaconf import OmegaConf

    from trainables.schema import CommonSchema, trainable_schema

    schema = trainable_schema(name, default_config(name))
    assert issubclass(schema, CommonSchema)
    typed = OmegaConf.structured(schema)
    assert OmegaConf.to_container(typed) == default_config(name)  # no default written twice
    with pytest.raises(ValueError, match="could not be converted to Integer"):
        typed.epochs = "many"

"""Config loading: base + space + overrides, every space file built, clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

from search.algorithms import make_scheduler, make_searcher, resolve_search_alg
from search.config import ConfigError, dimensions, list_spaces, load_config, max_epochs, trainable_config
from search.run import main, usage
from search.space import build_param_space

SPACES = list_spaces()


def test_the_reference_spaces_exist() -> None:
    assert {"quick", "aug_ablation", "backbones", "lr"} <= set(SPACES)


@pytest.mark.parametrize("space", SPACES)
def test_every_space_loads_and_builds(space: str) -> None:
    """Each file loads over the base, and its param space, searcher and scheduler build."""
    import timm

    cfg = load_config([f"space={space}"])
    dims = dimensions(cfg)
    assert cfg.space == space and cfg.description, f"spaces/{space}.yaml needs a description"
    alg = resolve_search_alg(cfg)
    param_space = build_param_space(trainable_config(cfg), dims, grid_as_choice=alg != "grid")
    assert "name" not in param_space and param_space["data"] == cfg.data
    searcher = make_searcher(cfg, max_concurrent=2)
    scheduler = make_scheduler(cfg)
    assert isinstance(searcher, BasicVariantGenerator if alg in ("grid", "random") else ConcurrencyLimiter)
    assert isinstance(scheduler, FIFOScheduler if cfg.scheduler.name == "fifo" else object)
    if cfg.trainable.name == "clip":  # open_clip names; the clip trainable checked them at load_config
        return
    # every backbone a space names, fixed or searched, is a model timm can build
    backbones = list(dims["backbone"].args) if "backbone" in dims else [cfg.trainable.backbone]
    unknown = [b for b in backbones if not timm.is_model(b)]
    assert not unknown, f"spaces/{space}.yaml names backbones timm does not know: {unknown}"


def test_aug_ablation_is_the_reference_grid() -> None:
    cfg = load_config(["space=aug_ablation"])
    dims = dimensions(cfg)
    assert set(dims) == {"aug.sketch_ab", "aug.edge", "aug.cutmix", "aug.del_flip"}
    assert all(d.is_grid for d in dims.values()) and resolve_search_alg(cfg) == "grid"
    space = build_param_space(trainable_config(cfg), dims)
    assert space["aug"]["sketch_ab"] == {"grid_search": [False, True]}
    assert space["backbone"] == "tf_efficientnet_lite0"


def test_overrides_apply_last_and_fix_searched_keys() -> None:
    cfg = load_config(
        [
            "space=quick",
            "trainable.lr=0.01",  # searched by quick: the command line fixes it
            "search.aug.cutmix=null",  # stop searching a key
            "search.batch_size={choice: [16, 32]}",  # add one
            "search.epochs.grid=[1, 2]",  # distribution name in the key
            "tune.num_samples=8",
            "data=synthetic",
        ]
    )
    dims = dimensions(cfg)
    assert set(dims) == {"batch_size", "epochs"}
    assert cfg.trainable.lr == 0.01 and cfg.tune.num_samples == 8
    assert dims["epochs"].args == (1, 2) and max_epochs(cfg) == 2
    # the quick space's known-good point named lr and aug.cutmix, both no longer searched: dropped
    assert OmegaConf.to_container(cfg.tune.points_to_evaluate) == []


def test_auto_search_alg_is_tpe_for_sampled_keys_and_grid_for_grids() -> None:
    assert resolve_search_alg(load_config(["space=quick"])) == "tpe"
    grid = load_config(
        ["space=quick", "search={aug: {cutmix: {grid: [0.0, 0.5]}}}", "tune.points_to_evaluate=[]"]
    )
    assert resolve_search_alg(grid) == "grid"


@pytest.mark.parametrize("alg", ["random", "gp", "cmaes"])
def test_other_search_algs_build(alg: str) -> None:
    cfg = load_config(["space=lr", f"tune.search_alg={alg}"])
    searcher = make_searcher(cfg, max_concurrent=None)
    assert searcher is not None


@pytest.mark.parametrize("name", ["asha", "hyperband", "median", "fifo"])
def test_schedulers_build_with_max_t_from_epochs(name: str) -> None:
    cfg = load_config(["space=quick", f"scheduler.name={name}", "trainable.epochs=5"])
    scheduler = make_scheduler(cfg)
    if name == "asha":
        assert isinstance(scheduler, AsyncHyperBandScheduler) and scheduler._max_t == 5


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["space=nope"], "unknown space 'nope'; spaces in"),
        (["tune.num_sample=3"], "did you mean tune.num_samples"),
        (["trainable.epochs=many"], "trainable.epochs='many' should be int"),
        (["search.lr={logunifrom: [1.0e-4, 1.0e-3]}"], "unknown distribution 'logunifrom'"),
        (["search.lr={loguniform: [0, 1]}"], "log scale needs low > 0"),
        (["search.nope={grid: [1, 2]}"], "search.nope: not a key of trainable 'timm'"),
        (["search.optimizer={choice: [adamw, adam]}"], "search.optimizer: value 'adam'"),
        (["tune.search_alg=bayes"], "tune.search_alg='bayes': use one of"),
        (["scheduler.name=pbt"], "scheduler.name='pbt': use one of"),
        (
            ["space=aug_ablation", "search.lr={uniform: [0.1, 0.2]}"],
            "search_alg=grid needs every searched key",
        ),
        (["space=quick", "tune.points_to_evaluate=[{lr: 1.0}]"], "lr: value 1.0 is outside"),
        (["space=quick", "tune.points_to_evaluate=[{momentum: 0.5}]"], "['momentum'] are not searched keys"),
        (["trainable.data=x"], "data=<synthetic|path>"),
        (["trainable.name=nope"], "unknown trainable 'nope'; registered:"),
        (["resources.cpu=0"], "resources.cpu must be > 0"),
        (["oof.ship_results=sometimes"], "oof.ship_results='sometimes': use auto"),
        (["oops"], "is not key=value"),
    ],
)
def test_bad_input_fails_with_what_to_do(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides)
    assert expected in str(info.value)


def test_unknown_key_lists_the_valid_keys_of_its_section() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["trainable.lrr=1"])
    message = str(info.value)
    assert "did you mean trainable.lr" in message
    for key in ("backbone", "weight_decay", "aug"):  # the keys of trainable, not of every section
        assert key in message
    assert "tune.num_samples" not in message and "ray.address" not in message


def test_points_to_evaluate_are_completed_from_the_base_config() -> None:
    cfg = load_config(["space=lr", "tune.points_to_evaluate=[{lr: 1.0e-3}]"])
    searcher = make_searcher(cfg, max_concurrent=1).searcher
    assert searcher._points_to_evaluate == [{"lr": 1e-3, "batch_size": 64, "schedule": "cosine"}]


def test_experiment_name_defaults_to_space_and_time() -> None:
    from datetime import datetime

    cfg = load_config(["space=lr"], now=datetime(2026, 1, 2, 3, 4, 5))
    assert cfg.experiment == "lr-20260102-030405"


def test_space_files_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mine.yaml").write_text(
        "description: mine\ntune: {num_samples: 3}\nsearch: {lr: {uniform: [0.1, 0.2]}}\n"
    )
    (tmp_path / "typo.yaml").write_text("description: typo\ntune: {num_sample: 3}\n")
    monkeypatch.setenv("SEARCH_SPACES_DIR", str(tmp_path))
    assert list_spaces() == ["mine", "typo"]
    assert load_config(["space=mine"]).tune.num_samples == 3
    with pytest.raises(ConfigError, match=r"spaces/typo.yaml: unknown key 'tune.num_sample'"):
        load_config(["space=typo"])


def test_help_lists_spaces_distributions_and_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in (
        "python -m search.run",
        "aug_ablation",
        "loguniform",
        "trainable.aug.cutmix",
        "tune.num_samples",
    ):
        assert text in out
    assert usage() in out


def test_cli_reports_bad_input_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space=nope"]) == 2
    assert "unknown space 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("alg", ["tpe", "gp", "cmaes"])
def test_optuna_searchers_start_with_the_known_point_then_sample_the_space(alg: str) -> None:
    """Real Optuna samplers behind Ray's OptunaSearch, fed results without training anything."""
    cfg = load_config(["space=lr", f"tune.search_alg={alg}", "tune.num_samples=12"])
    dims = dimensions(cfg)
    searcher = make_searcher(cfg, max_concurrent=None)
    space = build_param_space(trainable_config(cfg), dims, grid_as_choice=True)
    searcher.set_search_properties(str(cfg.tune.metric), str(cfg.tune.mode), space)
    suggested = []
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        suggested.append(config)
        assert 5e-5 <= config["lr"] <= 2e-3 and config["batch_size"] in (32, 64, 128)
        assert config["schedule"] in ("cosine", "step")
        searcher.on_trial_complete(f"t{i}", {"val_acc": 1.0 - abs(config["lr"] - 5e-4) * 100})
    assert (suggested[0]["lr"], suggested[0]["batch_size"], suggested[0]["schedule"]) == (3e-4, 64, "cosine")
    assert len({c["lr"] for c in suggested}) == len(suggested)  # it samples, it does not repeat one point


def test_unknown_stages_fail_before_the_search(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space=quick", "stages=[nope]"]) == 2
    assert "unknown stage 'nope'; stages: oof, ensemble" in capsys.readouterr().err


def test_a_group_override_merges_and_checks_its_keys() -> None:
    cfg = load_config(["space=lr", "trainable.aug={cutmix: 0.5, mixup: 0.2}"])
    assert (
        cfg.trainable.aug.cutmix == 0.5 and cfg.trainable.aug.mixup == 0.2 and cfg.trainable.aug.hflip is True
    )
    with pytest.raises(ConfigError, match="unknown key 'trainable.aug.cutmx'"):
        load_config(["space=lr", "trainable.aug={cutmx: 0.5}"])


def test_the_config_is_typed_by_its_schema_with_every_key_set() -> None:
    from omegaconf import OmegaConf

    from search.schema import TuneSchema

    cfg = load_config(["space=lr", "trainable.lr=1", "resources.cpu=0.5"])
    assert OmegaConf.missing_keys(cfg) == set()
    assert OmegaConf.get_type(cfg.tune) is TuneSchema
    assert OmegaConf.get_type(cfg.trainable).__name__ == "TimmTrainable"
    assert cfg.trainable.lr == 1.0 and isinstance(
        cfg.trainable.lr, float
    )  # an int widened to the key's float
    assert cfg.resources.cpu == 0.5 and cfg.resources.gpu == 0 and isinstance(cfg.resources.gpu, int)
    for override, expected in [
        ("tune.num_samples=2.5", "tune.num_samples=2.5 should be int like the default 4"),
        ("mlflow.enabled=sometimes", "mlflow.enabled='sometimes' should be bool like the default True"),
        ("tune.max_concurrent=many", "tune.max_concurrent='many': Value 'many' of type 'str' could not"),
        (
            "trainable.aug={cutmx: 0.5}",
            "unknown key 'trainable.aug.cutmx'; did you mean trainable.aug.cutmix",
        ),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config([override])
        assert expected in str(info.value), override


def test_the_plan_is_computed_once_per_config_and_follows_a_change() -> None:
    from search.config import search_plan

    cfg = load_config(["space=lr", "tune.search_alg=auto"])
    plan = search_plan(cfg)
    assert search_plan(cfg) is plan and plan.search_alg == "tpe" and not plan.grid
    assert plan.max_epochs == cfg.trainable.epochs and set(plan.dimensions) == set(dimensions(cfg))
    cfg.trainable.epochs = 7  # what budget= does after loading
    assert search_plan(cfg).max_epochs == 7 and max_epochs(cfg) == 7


def test_pseudo_and_oof_read_their_keys_typed(capsys: pytest.CaptureFixture[str]) -> None:
    from search.pseudo import main as pseudo_main

    assert pseudo_main(["threshold=high"]) == 2
    assert "threshold='high'" in capsys.readouterr().err  # refused before any search is looked up


def test_narrowing_a_choice_drops_its_values_and_the_points_that_hold_them() -> None:
    from search.config import narrow_search

    cfg = load_config([
        "trainable.backbone=test_efficientnet",
        "search.backbone={choice: [test_efficientnet, test_convnext, test_vit]}",
        "search.aug.cutmix={choice: [0.0, 0.5]}",
        "tune.points_to_evaluate=[{backbone: test_vit, lr: 0.001}, {backbone: test_efficientnet, aug.cutmix: 0.5}]",
    ])  # fmt: skip
    narrow_search(cfg, {"backbone": ["test_vit"], "aug.cutmix": [0.5], "lr": [0.001]})
    dims = dimensions(cfg)
    assert dims["backbone"].args == ("test_efficientnet", "test_convnext")
    assert "aug.cutmix" not in dims and cfg.trainable.aug.cutmix == 0.0  # one value left: not searched
    assert "lr" in dims  # a range is not a choice: left as it is
    # the test_vit point is gone; the other held cutmix 0.5, taken out too
    assert OmegaConf.to_container(cfg.tune.points_to_evaluate) == []


def test_narrowing_away_the_base_value_moves_the_base_to_a_value_kept() -> None:
    """A partial known-good point takes its missing keys from the base config (normalize_points)."""
    from search.config import narrow_search
    from search.space import normalize_points

    cfg = load_config([
        "trainable.backbone=test_efficientnet",
        "search.backbone={choice: [test_efficientnet, test_convnext, test_vit]}",
        "tune.points_to_evaluate=[{lr: 0.001}]",
    ])  # fmt: skip
    narrow_search(cfg, {"backbone": ["test_efficientnet"]})
    dims = dimensions(cfg)
    assert dims["backbone"].args == ("test_convnext", "test_vit") and cfg.trainable.backbone == "test_convnext"
    points = OmegaConf.to_container(cfg.tune.points_to_evaluate)
    assert normalize_points(points, dims, trainable_config(cfg))[0]["backbone"] == "test_convnext"

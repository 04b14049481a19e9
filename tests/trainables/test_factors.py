"""Multi-task labels: classes split into factor heads, recombined, learned, checkpointed, predicted."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from trainables import create_trainable
from trainables.augment import FactorMixup, build_mixer
from trainables.checkpoint import read_meta
from trainables.config import AUG_DEFAULTS, BASE_DEFAULTS, resolve_config
from trainables.data import Dataset, folds_for, generate_synthetic_factors, load_dataset
from trainables.engine import Batcher, device_batches, run_epoch
from trainables.factor_build import build_factorisation
from trainables.factors import Factor, Factorisation
from trainables.models import create_model
from trainables.runtime import resolve_runtime
from trainables.session import InlineSession

FINE_AGE = {"name": "age", "column": "age", "bins": [20, 25, 30, 35, 40, 45, 50, 55, 60, 65]}
FACTORS = ["mask", "gender", FINE_AGE]
N_CLASSES = 18


def _targets(factors: Any = FACTORS, sep: str | None = "_", fine: bool = True) -> dict[str, Any]:
    return {"factors": factors, "sep": sep, "fine": fine}


def _config(**overrides: Any) -> dict[str, Any]:
    """A factorised config that trains in seconds on CPU: a timm test model at 32 px, from scratch."""
    base: dict[str, Any] = {
        "data": "synthetic-factors",
        "backbone": "test_resnet",
        "pretrained": False,
        "image_size": 32,
        "epochs": 5,
        "batch_size": 16,
        "lr": 1e-2,
        "warmup_epochs": 0,
        "num_workers": 0,
        "k": 4,
        "aug.balance": False,
        "targets.factors": FACTORS,
    }
    return {**base, **overrides}


@pytest.fixture(scope="module")
def runs(session_runs_dir: Path) -> Iterator[Path]:
    """The session's RUNS_DIR for module fixtures (the per-test one applies after them)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNS_DIR", str(session_runs_dir))
        yield session_runs_dir


@pytest.fixture(scope="module")
def faces(runs: Path) -> Dataset:
    """The built-in factorised face set (generated once per session)."""
    return load_dataset("synthetic-factors")


@pytest.fixture(scope="module")
def fitted(faces: Dataset, runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 5-epoch fit of mask/gender/age heads (age on 11 finer bins) on fold 0 of the face set."""
    config = _config()
    session = InlineSession(tmp_path_factory.mktemp("factors-fit"), verbose=False)
    metrics = create_trainable("timm").fit(config, session)
    return {
        "config": config,
        "metrics": metrics,
        "session": session,
        "checkpoint": session.latest_checkpoint(),
    }


# -- decomposition and recombination --------------------------------------------------------------


def test_classes_split_by_name_and_by_index_agree(faces: Dataset) -> None:
    by_name, labels = build_factorisation(_targets(["mask", "gender", "age"]), faces.classes, faces.train)
    assert [f.values for f in by_name.factors] == [
        ("wear", "incorrect", "nomask"),
        ("male", "female"),
        ("young", "middle", "old"),
    ]
    values = [{"name": f.name, "values": list(f.values)} for f in by_name.factors]
    by_index, _ = build_factorisation(_targets(values, sep=None), faces.classes, faces.train)
    np.testing.assert_array_equal(by_name.codes, by_index.codes)  # target = mask * 6 + gender * 3 + age
    assert by_name.head_sizes == [3, 2, 3] and by_name.num_outputs == 8
    np.testing.assert_array_equal(labels, by_name.codes[faces.train["target"].to_numpy()])


def test_fine_age_bins_come_from_the_age_column_and_nest_in_the_groups(faces: Dataset) -> None:
    fz, labels = build_factorisation(_targets(), faces.classes, faces.train)
    age = fz.factors[2]
    assert age.bins == (
        "<20", "20-25", "25-30", "30-35", "35-40", "40-45", "45-50", "50-55", "55-60", "60-65", ">=65",
    )  # fmt: skip
    assert age.bin_value == (0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2)
    assert fz.head_sizes == [3, 2, 11]
    years = faces.train["age"].astype(int).to_numpy()
    np.testing.assert_array_equal(labels[:, 2], np.searchsorted(FINE_AGE["bins"], years, side="right"))
    # the bins merge back into each row's class: a row's bin lies in its class's age group
    class_age = fz.codes[faces.train["target"].to_numpy(), 2]
    np.testing.assert_array_equal(np.asarray(age.bin_value)[labels[:, 2]], class_age)
    # targets.fine=false trains the same factor on its three values
    coarse, coarse_labels = build_factorisation(_targets(fine=False), faces.classes, faces.train)
    assert coarse.head_sizes == [3, 2, 3]
    np.testing.assert_array_equal(coarse_labels[:, 2], class_age)


def _brute_force_joint(fz: Factorisation, logits: torch.Tensor) -> np.ndarray:
    """p(class) = prod_f p_f(value_f(class)), bins summed, renormalised: written the slow way."""
    heads = [logits[:, sl].double().softmax(1).numpy() for sl in fz.slices]
    joint = np.ones((len(logits), len(fz.classes)))
    for c, f in itertools.product(range(len(fz.classes)), range(len(fz.factors))):
        factor, value = fz.factors[f], fz.codes[c, f]
        members = [b for b, v in enumerate(factor.bin_value) if v == value] if factor.bins else [value]
        joint[:, c] *= heads[f][:, members].sum(1)
    return joint / joint.sum(1, keepdims=True)


def test_recombined_probabilities_are_the_renormalised_product(faces: Dataset) -> None:
    fz, _ = build_factorisation(_targets(), faces.classes, faces.train)
    logits = torch.randn(64, fz.num_outputs, generator=torch.Generator().manual_seed(0)) * 4
    joint = fz.joint_probs(logits)
    assert joint.shape == (64, N_CLASSES) and joint.dtype == torch.float32 and (joint >= 0).all()
    np.testing.assert_allclose(joint.sum(1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(joint.numpy(), _brute_force_joint(fz, logits), rtol=1e-4, atol=1e-7)
    # every combination is a class, so each factor's marginal is its head (age: bins summed)
    marginals = fz.marginals(joint.numpy())
    for marginal, logp in zip(marginals, fz.value_log_probs(logits), strict=True):
        np.testing.assert_allclose(marginal, logp.exp().numpy(), atol=1e-5)
    # confident heads agree on one class: it gets (almost) all the mass
    sharp = torch.full((1, fz.num_outputs), -30.0)
    for sl, index in zip(fz.slices, (1, 0, 10), strict=True):  # incorrect, male, >=65
        sharp[0, sl.start + index] = 30.0
    assert fz.classes[int(fz.joint_probs(sharp).argmax())] == "incorrect_male_old"
    # validation builds the lookup tables under inference_mode; a gradient through them still works
    fresh, _ = build_factorisation(_targets(), faces.classes, faces.train)
    with torch.inference_mode():
        fresh.joint_probs(logits)
    leaf = logits.clone().requires_grad_()
    fresh.joint_log_probs(leaf)[:, 0].sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_missing_combinations_get_no_mass_and_the_rest_renormalises() -> None:
    classes = ["a_x", "a_y", "b_x"]  # b_y is not a class
    train = pd.DataFrame({"target": [0, 1, 2]})
    fz, _ = build_factorisation(_targets(["letter", "axis"]), classes, train)
    logits = torch.zeros(2, fz.num_outputs)  # every head uniform: the product is uniform too
    np.testing.assert_allclose(fz.joint_probs(logits).numpy(), np.full((2, 3), 1 / 3), atol=1e-6)
    logits[1, fz.slices[0]] = torch.tensor([-20.0, 20.0])  # sure it is a "b"
    probs = fz.joint_probs(logits)[1].numpy()
    assert probs[2] == pytest.approx(1.0, abs=1e-6)  # b_x takes what b_y would have had


def test_metrics_are_on_classes_and_per_factor(faces: Dataset) -> None:
    fz, _ = build_factorisation(_targets(), faces.classes, faces.train)
    labels = np.array([fz.classes.index("wear_male_young"), fz.classes.index("nomask_female_old")])
    probs = np.zeros((2, N_CLASSES), np.float32)
    probs[0, fz.classes.index("wear_male_middle")] = 1.0  # mask and gender right, age wrong
    probs[1, fz.classes.index("nomask_female_old")] = 1.0
    assert fz.metrics(probs, labels) == {"val_acc_mask": 1.0, "val_acc_gender": 1.0, "val_acc_age": 0.5}
    assert all(np.isnan(v) for v in fz.metrics(probs[:0], labels[:0]).values())


def test_loss_sums_the_heads_and_mixing_mixes_every_head_alike() -> None:
    fz = Factorisation(
        ["a_x", "a_y", "b_x", "b_y"],
        [Factor("letter", ("a", "b")), Factor("axis", ("x", "y"), weight=0.5)],
        np.array([[0, 0], [0, 1], [1, 0], [1, 1]]),
    )
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([[0, 1], [1, 0], [1, 1], [0, 0], [1, 0], [0, 1]])
    expected = F.cross_entropy(logits[:, :2], y[:, 0]) + 0.5 * F.cross_entropy(logits[:, 2:], y[:, 1])
    assert fz.loss(logits, y).item() == pytest.approx(expected.item(), rel=1e-6)

    mixer = build_mixer({**AUG_DEFAULTS, "mixup": 1.0}, 4, 0.0, head_sizes=fz.head_sizes)
    assert isinstance(mixer, FactorMixup)
    np.random.seed(0)
    x = torch.rand(6, 3, 8, 8)
    mixed, targets = mixer(x.clone(), y)
    # mixed = lam * x + (1 - lam) * partner, partner the flipped batch: solve for lam
    partner = x.flip(0)
    lam = float(((mixed - partner) * (x - partner)).sum() / ((x - partner) ** 2).sum())
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed, x * lam + partner * (1 - lam))  # one mix of the images
    for h, target in enumerate(targets):  # each head: its own labels, the same ratio and partner
        one_hot = F.one_hot(y[:, h], 2).float()
        torch.testing.assert_close(target, one_hot * lam + one_hot.flip(0) * (1 - lam))
    smoothed = mixer.targets(y)  # an odd batch trains unmixed on smoothed targets
    assert [t.shape for t in smoothed] == [(6, 2), (6, 2)]
    assert fz.loss(logits, targets).item() > 0


def test_an_epoch_trains_the_heads_on_mixed_and_odd_batches() -> None:
    fz = Factorisation(
        ["a_x", "a_y", "b_x", "b_y"],
        [
            Factor("letter", ("a", "b")),
            Factor("axis", ("x", "y"), bins=("x1", "x2", "y1"), bin_value=(0, 0, 1)),
        ],
        np.array([[0, 0], [0, 1], [1, 0], [1, 1]]),
    )
    torch.manual_seed(0)
    model = create_model("test_resnet", fz.num_outputs)
    runtime = resolve_runtime({"device": "cpu", "amp": False, "num_workers": 0})
    batcher = Batcher(runtime, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), channels_last=False)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.tensor(labels))
        for n, labels in ((4, [[0, 0], [1, 2], [0, 1], [1, 0]]), (3, [[1, 1], [0, 2], [1, 0]]))
    ]
    mixer = build_mixer({**AUG_DEFAULTS, "cutmix": 1.0}, 4, 0.1, head_sizes=fz.head_sizes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.train()
    out = run_epoch(
        device_batches(batches, batcher, mixer, 4, 0.1),
        lambda x, y: fz.loss(model(x), y, 0.1),
        optimizer, None, scaler, batcher, 0,
    )  # fmt: skip
    assert out["num_updates"] == 2 and np.isfinite(out["train_loss"]) and out["train_loss"] > 0
    with pytest.raises(ValueError, match=r"expected \(batch, 2\) labels"):
        mixer.targets(torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        (_targets(["mask", "gender"]), r"do not split on '_' into 2 parts: \['wear_male_young'"),
        (_targets(["mask", "gender", "age"], sep="-"), "set targets.sep to the separator"),
        (
            _targets([{"name": "mask", "values": ["wear", "incorrect"]}, "gender", "age"]),
            r"value\(s\) \['nomask'\] that are not in its values",
        ),
        (
            _targets(
                [{"name": "m", "values": ["a", "b", "c"]}, {"name": "g", "values": ["a", "b"]}], sep=None
            ),
            r"3 x 2 = 6, but the dataset has 18 classes",
        ),
        (
            _targets(["mask", "gender", {"name": "age", "column": "years", "bins": [30, 60]}]),
            r"column 'years' is not in train.csv; columns that could label it: \['group', 'age', 'gender'\]",
        ),
        (
            _targets(["mask", "gender", {"name": "age", "column": "age", "bins": [25, 50]}]),
            r"finer label\(s\) of column 'age' fall in several of its values.*25-50 \(young: \d+, middle: \d+",
        ),
        (
            _targets([{"name": "mask", "column": "gender"}, "gender", "age"]),
            r"column 'gender' fall in several of its values \['wear', 'incorrect', 'nomask'\]",
        ),
    ],
)
def test_decompositions_that_do_not_fit_the_data_say_why(faces: Dataset, targets: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_factorisation(targets, faces.classes, faces.train)


@pytest.mark.parametrize(
    ("factors", "match"),
    [
        ("mask", "list of at least 2 factors"),
        (["mask"], "list of at least 2 factors"),
        (["mask", "mask"], "unique"),
        (["mask", {"name": "age", "colum": "age"}], r"unknown key\(s\) \['colum'\]"),
        (["mask", {"name": "age", "column": "age", "bins": [60, 30]}], "increasing cut points"),
        (["mask", {"name": "age", "bins": [30]}], "bins need a column"),
        (["mask", {"name": "age", "weight": 0}], "weight=0 must be a number > 0"),
        (["mask", {"name": "age", "values": ["old"]}], "2 or more distinct values"),
        (["mask", {"values": ["a", "b"]}], "a factor name or a mapping with a name"),
    ],
)
def test_bad_targets_config_is_refused_before_training(factors: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_config(BASE_DEFAULTS, {"targets.factors": factors})


def test_targets_config_round_trips_through_json() -> None:
    with pytest.raises(ValueError, match="every factor needs its values"):
        resolve_config(BASE_DEFAULTS, {"targets": {"factors": ["a", "b"], "sep": None}})
    with pytest.raises(ValueError, match="group_column"):
        resolve_config(BASE_DEFAULTS, {"group_column": ""})
    cfg = resolve_config(
        BASE_DEFAULTS, {"targets.factors": ("mask", {"name": "age", "bins": (30, 60), "column": "age"})}
    )
    assert cfg["targets"]["factors"] == ["mask", {"name": "age", "bins": [30, 60], "column": "age"}]
    assert resolve_config(BASE_DEFAULTS, {})["targets"] == {
        "factors": None, "heads": "factors", "sep": "_", "fine": True,
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"targets.heads='softmax' is not one of \['factors', 'classes'\]"):
        resolve_config(BASE_DEFAULTS, {"targets.heads": "softmax"})


# -- training -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_decomposed_model_learns_and_reports_class_and_factor_metrics(fitted: dict[str, Any]) -> None:
    history = fitted["session"].history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    for row in history:
        assert {"val_acc", "val_f1", "val_loss", "val_acc_mask", "val_acc_gender", "val_acc_age"} <= set(row)
    final = fitted["metrics"]
    assert final["val_acc"] >= 4 / N_CLASSES, history  # chance is 1/18; a 5-epoch run gets ~0.5
    assert final["val_acc_gender"] >= 0.6 and final["val_acc_age"] >= 0.55, final  # chance 1/2 and 1/3
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.slow
def test_checkpoint_predicts_class_probabilities_from_the_heads(
    fitted: dict[str, Any], faces: Dataset
) -> None:
    meta = read_meta(fitted["checkpoint"])
    assert meta["factors"]["head_sizes"] == [3, 2, 11] and meta["classes"] == faces.classes
    assert meta["config"]["targets"]["factors"] == FACTORS and "group_column" not in meta["config"]
    t = create_trainable("timm")
    probs = t.predict(fitted["config"], fitted["checkpoint"], split="test")
    assert probs.shape == (len(faces.test), N_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    flipped = t.predict(None, fitted["checkpoint"], split="test", rows=np.arange(5), tta_flip=True)
    np.testing.assert_allclose(flipped.sum(axis=1), 1.0, atol=1e-5)
    # the validation rows' predictions reproduce the reported val_acc: the folds and recombination match
    folds = folds_for(faces, k=4, seed=0)
    val = np.flatnonzero(folds["fold"].to_numpy() == 0)
    probs = t.predict(fitted["config"], fitted["checkpoint"], split="train", rows=val)
    acc = float((probs.argmax(1) == faces.train["target"].to_numpy()[val]).mean())
    assert acc == pytest.approx(fitted["metrics"]["val_acc"], abs=1e-9)
    with pytest.raises(ValueError, match="targets"):
        t.predict({**fitted["config"], "targets.factors": None}, fitted["checkpoint"])


class _Crash(RuntimeError):
    pass


class _CrashingSession(InlineSession):
    def __init__(self, out_dir: Path, crash_after: int) -> None:
        super().__init__(out_dir, verbose=False)
        self.crash_after = crash_after

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        if len(self.history) == self.crash_after:
            raise _Crash


@pytest.mark.slow
def test_mixed_multitask_training_resumes_exactly_with_person_groups(runs: Path, tmp_path: Path) -> None:
    # A small set whose person column is called "person": group_column must reach the folds.
    root = generate_synthetic_factors(
        tmp_path / "people", persons_per_cell=3, test_persons_per_cell=0, group_column="person"
    )
    config = _config(
        data=str(root), epochs=2, k=3, group_column="person", drop_rate=0.2,
        **{"aug.cutmix": 0.5, "aug.mixup": 0.5, "aug.balance": True},
    )  # fmt: skip
    t = create_trainable("timm")
    straight = InlineSession(tmp_path / "straight", verbose=False)
    final = t.fit(config, straight)
    with pytest.raises(_Crash):
        t.fit(config, _CrashingSession(tmp_path / "crashed", crash_after=1))
    resumed = InlineSession(tmp_path / "crashed", verbose=False)
    final_resumed = t.fit(config, resumed)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for key in ("val_acc", "val_loss", "train_loss", "val_acc_mask", "val_acc_age"):
        assert final_resumed[key] == final[key], key

    ds = load_dataset(str(root))
    by_person = folds_for(ds, k=3, seed=0, group_column="person")
    assert read_meta(straight.latest_checkpoint())["folds_hash"] == by_person.attrs["hash"]
    assert by_person.groupby(ds.train["person"])["fold"].nunique().max() == 1
    with pytest.raises(ValueError, match=r"cannot resume.*group_column"):
        t.fit(
            {**config, "group_column": None, "epochs": 3}, InlineSession(tmp_path / "crashed", verbose=False)
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_multitask_fit_with_amp_and_mixing(faces: Dataset, tmp_path: Path) -> None:
    config = _config(
        epochs=2, num_workers=2, device="auto", amp="auto", **{"aug.cutmix": 0.5, "aug.mixup": 0.5}
    )
    assert resolve_runtime(config).amp_dtype is not None
    session = InlineSession(tmp_path, verbose=False)
    final = create_trainable("timm").fit(config, session)
    assert np.isfinite(final["train_loss"]) and final["val_acc"] > 1 / N_CLASSES
    probs = create_trainable("timm").predict(config, session.latest_checkpoint(), split="test", tta_flip=True)
    assert probs.shape == (len(faces.test), N_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)

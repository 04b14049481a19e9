"""Frozen stages run once per image and epoch, not once per fold: their outputs, cached and shared.

With ``freeze_stages`` the stem and the first stages keep their ImageNet weights and fixed
batch-norm statistics: they are a fixed function of their input. On a CPU they are also most of
a training step (Lite0 at 192 px, 3 stages frozen, one core: 15.5 ms of a 27.5 ms step go to
their forward pass; the rest of the network's forward, backward and AdamW step take 12). A K-fold
refit runs that same function on the same images K-1 times.

So a trial whose frozen stages this module knows how to split off trains the rest of the network
on their outputs, read from a per-epoch cache (:func:`trainables.features.cached_features`):

* epoch ``e``'s cache holds every training image of the split through the trial's random
  augmentation, seeded by ``(seed, e, row)`` (not by the sample's place in one fold's epoch), then
  through the frozen stages. The first trial that needs it builds it (about one frozen forward
  pass per image, the cost of the pass it replaces); every other fold and every trial with the
  same backbone, image size, pixel augmentation and seed reads it.
* the copies that fill short classes (``aug.balance``) are drawn as the image loader draws them
  (flipped, or RandAugment-style, then augmented) and go through the frozen stages on the spot:
  they are a different draw in every fold (on sketchy125, 612 of an epoch's 2,000 samples).
* CutMix and MixUp mix the frozen stages' output maps instead of the pixels (timm's ``Mixup`` on
  the batch it gets: a box on the 24 x 24 map of a 192 px input is a box of 8 px cells).

The test split, which every fold of every model predicts, has a cache of its own: the frozen
stages' outputs of each test image and its mirror (no augmentation), so a fold's test predictions
run only the rest of the network (:func:`test_predictions`). Validation rows are predicted once
each, on the whole network.

What stays as it was: the checkpoint is the whole network, and a trial the cache does not apply
to (:func:`cache_refusal`) trains and predicts on images as before. ``frozen_cache=false`` turns
it off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from common.io import remove_abandoned_temporaries
from trainables.augment import ORIGINAL, SampleTransform, edge_map
from trainables.features import cached_features, feature_cache_dir, feature_sidecar, weights_digest
from trainables.loader import normalize
from trainables.runtime import derived_seed

if TYPE_CHECKING:
    from trainables.factors import Factorisation

log = logging.getLogger(__name__)

# The pixel side of the config: a different value is a different cache. lr, weight decay,
# smoothing, CutMix and the rest act after the frozen stages and share one.
_PIXEL_AUG_KEYS = ("hflip", "sketch_ab", "edge")
# EfficientNet-family models (timm's ``EfficientNet``: Lite0-4, B0-B7, MobileNet-V2 style ones).
_SPLIT_ATTRS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head")


def config_refusal(cfg: Mapping[str, Any], device_type: str = "cpu") -> str | None:
    """Why a config's trials train on images rather than on cached frozen-stage outputs, as far as
    the config alone tells (:func:`cache_refusal` also asks the model); None when they can."""
    aug = cfg["aug"]
    reasons = (
        (not cfg.get("frozen_cache", True), "frozen_cache=false"),
        (int(cfg.get("freeze_stages", 0)) <= 0, "nothing is frozen"),
        (device_type != "cpu", "on a GPU the frozen stages cost little"),
        (bool(aug["object_split"]), "aug.object_split adds rows outside the split"),
        (bool(cfg.get("pseudo_labels")), "pseudo_labels add rows outside the split"),
        (float(cfg.get("drop_path_rate", 0.0)) > 0, "stochastic depth would act inside the frozen stages"),
    )
    return next((why for refused, why in reasons if refused), None)


def splits(model: nn.Module) -> bool:
    """Whether :class:`FrozenSplit` knows where ``model``'s frozen stages end (EfficientNet family)."""
    return all(hasattr(model, a) for a in _SPLIT_ATTRS)


def cache_refusal(cfg: Mapping[str, Any], model: nn.Module, device: torch.device) -> str | None:
    """Why a trial trains on images rather than on cached frozen-stage outputs; None when it can.

    Args:
        cfg: The resolved trial config.
        model: The trial's network.
        device: Where it trains.
    """
    why = config_refusal(cfg, device.type)
    if why is None and not splits(model):
        why = f"{type(model).__name__} is not split here"
    return why


def predicts_from_cache(cfg: Mapping[str, Any], model: nn.Module, device: torch.device) -> bool:
    """Whether a checkpoint's test predictions may read the test split's frozen-stage cache (the
    training-side refusals, such as object split, do not matter to a trained network)."""
    frozen = int(cfg.get("freeze_stages", 0)) > 0
    return bool(cfg.get("frozen_cache", True)) and frozen and device.type == "cpu" and splits(model)


class FrozenSplit:
    """A model cut after its frozen stages: ``prefix`` (frozen, eval) and the trained rest.

    Args:
        model: An EfficientNet-family timm model (:func:`cache_refusal` says which).
        stages: Frozen stages after the stem (``freeze_stages``).
    """

    def __init__(self, model: nn.Module, stages: int) -> None:
        self.model, self.stages = model, int(stages)
        self.prefix = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[: self.stages])

    def rest(self, features: torch.Tensor) -> torch.Tensor:
        """The logits of the network from the frozen stages' output."""
        m = self.model
        return m.forward_head(m.bn2(m.conv_head(m.blocks[self.stages :](features))))

    def extractor(
        self, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 ``(B, S, S, 3)`` images -> the frozen stages' outputs, as the trial would compute them."""

        @torch.inference_mode()
        def extract(images: np.ndarray) -> np.ndarray:
            self.prefix.eval()  # frozen batch norm either way; eval keeps it obvious
            return self.prefix(normalize(torch.from_numpy(images).permute(0, 3, 1, 2), mean, std)).float().numpy()

        return extract


class EpochFeatures:
    """A trial's per-epoch caches of augmented frozen-stage outputs, and its batches from them.

    Args:
        data: The trial's :class:`~trainables.trialkit.TrialData` (its rows index the split).
        cfg: The resolved trial config.
        split: The model's :class:`FrozenSplit`.
        mean: Input normalisation of the model.
        std: Input normalisation of the model.
    """

    def __init__(
        self,
        data: Any,
        cfg: Mapping[str, Any],
        split: FrozenSplit,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.data, self.split = data, split
        self.size, self.seed = int(cfg["image_size"]), int(cfg["seed"])
        self.transform = SampleTransform(cfg["aug"], self.size, train=True)
        self.extract = split.extractor(tuple(mean), tuple(std))
        self.spec_base = {
            **_spec(split),
            "aug": {k: bool(cfg["aug"][k]) for k in _PIXEL_AUG_KEYS},
            "seed": self.seed,
        }

    def epoch(self, epoch: int) -> np.memmap:
        """Epoch ``epoch``'s ``(N, 1, C, H, W)`` cache over the whole split, built if missing."""

        def augment(image: np.ndarray, row: int) -> np.ndarray:
            return self.transform(image, ORIGINAL, derived_seed(self.seed, epoch, row))

        spec = {**self.spec_base, "epoch": int(epoch)}
        return cached_features(self.data.ds, "train", self.size, spec, self.extract, augment=augment)

    def batches(
        self, order: list[int], labels: np.ndarray, batch_size: int, drop_last: bool, epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's ``(features, labels)`` batches in ``order`` (the sampler's ``epoch * n + i``
        keys over the training rows; ``labels`` per training row, as the image loader has them).

        An original row reads the epoch's cache; a copy filling a short class goes through the
        frozen stages here, drawn as the image loader draws it (flipped, then augmented with the
        seed of its place in the epoch)."""
        rows = self.data.rows
        kinds = rows.train_kinds
        cache = self.epoch(epoch)
        n = len(rows.train_rows)
        positions = np.asarray(order, dtype=np.int64) % n
        stop = len(positions) - (len(positions) % batch_size if drop_last else 0)
        for lo in range(0, stop, batch_size):
            idx = positions[lo : lo + batch_size]
            split_rows = rows.train_rows[idx]
            copy = kinds[idx] != ORIGINAL
            out = np.empty((len(idx), *cache.shape[2:]), np.float32)
            out[~copy] = cache[split_rows[~copy], 0]
            if copy.any():
                images = [
                    self.transform(self.data.images[r], int(kinds[i]), derived_seed(self.seed, epoch, int(i)))
                    for r, i in zip(split_rows[copy], idx[copy], strict=True)
                ]
                out[copy] = self.extract(np.stack(images))
            x = torch.from_numpy(out).contiguous(memory_format=torch.channels_last)
            yield x, torch.from_numpy(np.asarray(labels[idx], dtype=np.int64))


def _spec(split: FrozenSplit) -> dict[str, Any]:
    """What frozen-stage outputs depend on besides the data, the draw and the image size: the
    stages' weights themselves (ImageNet's, a file's, or a seed's random ones)."""
    return {
        "kind": "frozen-stages",
        "model": type(split.model).__name__,
        "freeze_stages": split.stages,
        "weights": weights_digest(split.prefix.state_dict()),
    }


@torch.inference_mode()
def test_predictions(
    split: FrozenSplit,
    ds: Any,
    cfg: Mapping[str, Any],
    positions: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    tta_flip: bool,
    factors: Factorisation | None = None,
) -> np.ndarray:
    """Class probabilities of test rows ``positions`` from the cached frozen-stage outputs.

    The same as :func:`trainables.engine.predict_proba` on the images (up to the cache's float16),
    at the cost of the rest of the network: the test split's cache is built by the first fold to
    predict it and read by every other fold and model with the same frozen stages.
    """
    spec = {**_spec(split), "edge": bool(cfg["aug"]["edge"])}
    extract = split.extractor(tuple(mean), tuple(std))
    edge = edge_map if cfg["aug"]["edge"] else None
    features = cached_features(ds, "test", int(cfg["image_size"]), spec, extract, preprocess=edge)
    split.model.eval()

    def to_probs(x: np.ndarray) -> torch.Tensor:
        logits = split.rest(
            torch.from_numpy(x.astype(np.float32)).contiguous(memory_format=torch.channels_last)
        )
        return logits.float().softmax(dim=1) if factors is None else factors.joint_probs(logits)

    out = []
    batch = 2 * int(cfg["batch_size"])
    for lo in range(0, len(positions), batch):
        rows = np.asarray(positions[lo : lo + batch])
        probs = to_probs(features[rows, 0])
        if tta_flip:
            probs = (probs + to_probs(features[rows, 1])) / 2
        out.append(probs)
    probs = torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)
    return probs / probs.sum(axis=1, keepdims=True)


def prune_frozen_caches() -> tuple[int, int]:
    """Remove every frozen-stage cache (a 21-minute compete run leaves about 1 GB of them), as a
    finished flow does; the next flow that needs one builds it. A process that has one open keeps
    reading it (the file goes when the last map closes). Half-written caches that killed builders
    left go too (:func:`~common.io.remove_abandoned_temporaries`).

    Returns:
        ``(caches removed, bytes freed)``.
    """
    removed, freed = 0, 0
    for array in sorted(feature_cache_dir().glob("*.npy")):
        sidecar = feature_sidecar(array) or {}
        if (sidecar.get("spec") or {}).get("kind") != "frozen-stages":
            continue
        freed += array.stat().st_size
        for path in (array, array.with_suffix(".json"), array.with_suffix(".lock")):
            path.unlink(missing_ok=True)
        removed += 1
    freed += remove_abandoned_temporaries(feature_cache_dir().parent)
    return removed, freed


def log_refusal(cfg: Mapping[str, Any], why: str | None) -> None:
    """Say once per trial why its frozen stages run on every step (only where some are frozen)."""
    if why is not None and int(cfg.get("freeze_stages", 0)) > 0 and cfg.get("frozen_cache", True):
        log.info("frozen stages run every step: %s", why)

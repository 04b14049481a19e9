"""Multi-task labels: a class split into factors, one head per factor, probabilities recombined.

The reference's 18 classes are 3 mask states x 2 genders x 3 age groups. Rather than one softmax
over 18 classes, the network gets a head per factor (3 + 2 + 3 outputs), each trained with its
own cross-entropy, the losses summed. The heads share one ``Linear`` layer of ``sum(head sizes)``
outputs, split by column: mathematically one independent head per factor, and the model stays a
plain timm classifier (checkpoints, ``pretrained_path`` and the other trainables work unchanged).

Recombination, for every consumer that wants class probabilities (validation metrics, OOF
artifacts, ensembles)::

    p(class) = prod_f p_f(value_f(class)) / Z

the factors taken as independent given the image, ``Z`` renormalising over the classes that exist
(a combination without a class gets no mass). It is computed in log space: the sum of the heads'
log-probabilities at each class's values, then a softmax over the classes.

Finer bins: a factor may train on finer labels than its values (the reference's 11 age bins for 3
age groups), taken from a train.csv column (``column``, cut by ``bins`` when numeric). Each bin
must lie inside one value; the value's probability is the sum of its bins' probabilities.

Where a class's values come from (``targets.sep``): its name split on the separator
(``wear_female_young``), or, with ``sep: null``, its target index read as a mixed-radix number of
the factors' values (``target = mask * 6 + gender * 3 + age``, the reference's numbering).
Building a factorisation from a config and a dataset is :mod:`trainables.factor_build`'s job.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from common.metrics import accuracy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Factor:
    """One factor of the class: its values and what its head is trained on.

    Attributes:
        name: E.g. ``"age"``.
        values: The factor's values in order, e.g. ``("young", "middle", "old")``.
        bins: Names of the finer labels the head predicts; empty when it predicts ``values``.
        bin_value: For each bin, the index of the value it belongs to.
        weight: Weight of this head's loss in the sum.
    """

    name: str
    values: tuple[str, ...]
    bins: tuple[str, ...] = ()
    bin_value: tuple[int, ...] = ()
    weight: float = 1.0

    @property
    def head_size(self) -> int:
        """Outputs of this factor's head."""
        return len(self.bins) or len(self.values)


class Factorisation:
    """The classes as tuples of factor values, and the arithmetic between heads and classes.

    Args:
        classes: Class names in target order.
        factors: The factors, in the order of ``codes``' columns and of the heads' outputs.
        codes: ``(C, F)`` int: the value index of each class in each factor; rows distinct.
    """

    def __init__(self, classes: Sequence[str], factors: Sequence[Factor], codes: np.ndarray) -> None:
        self.classes = [str(c) for c in classes]
        self.factors = tuple(factors)
        self.codes = np.asarray(codes, dtype=np.int64).reshape(len(self.classes), len(self.factors))
        for f, factor in enumerate(self.factors):
            if self.codes[:, f].min() < 0 or self.codes[:, f].max() >= len(factor.values):
                raise ValueError(
                    f"factor {factor.name!r}: class codes outside its {len(factor.values)} values"
                )
            if factor.bins and (
                len(factor.bin_value) != len(factor.bins)
                or sorted(set(factor.bin_value)) != list(range(len(factor.values)))
            ):
                raise ValueError(
                    f"factor {factor.name!r}: every value needs at least one bin, every bin one value"
                )
        if len({tuple(row) for row in self.codes.tolist()}) != len(self.classes):
            raise ValueError("two classes have the same factor values; the decomposition must be one-to-one")
        stops = np.cumsum([0, *self.head_sizes])
        self.slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(stops)]
        self._device_tables: dict[str, tuple[torch.Tensor, list[torch.Tensor | None]]] = {}

    @property
    def head_sizes(self) -> list[int]:
        """Outputs per head, in factor order."""
        return [f.head_size for f in self.factors]

    @property
    def num_outputs(self) -> int:
        """Outputs of the whole network: the heads side by side."""
        return int(sum(self.head_sizes))

    @property
    def names(self) -> list[str]:
        """Factor names in order."""
        return [f.name for f in self.factors]

    def __repr__(self) -> str:
        parts = [
            f"{f.name}={len(f.values)}" + (f"({len(f.bins)} bins)" if f.bins else "") for f in self.factors
        ]
        return f"Factorisation({' x '.join(parts)} -> {len(self.classes)} classes)"

    # -- heads -> classes (torch, on the model's device) -----------------------------------------

    def value_log_probs(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """Per factor, ``(B, V_f)`` log-probabilities of its values (finer bins summed)."""
        _, merges = self._tables(logits.device)
        out = []
        for sl, merge in zip(self.slices, merges, strict=True):
            logp = logits[:, sl].float().log_softmax(dim=1)
            if merge is not None:  # log of a sum of bin probabilities, without leaving log space
                logp = torch.logsumexp(logp.unsqueeze(2) + merge, dim=1)
            out.append(logp)
        return out

    def joint_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` log-probabilities of the classes from the heads' ``(B, num_outputs)`` logits."""
        if logits.shape[1] != self.num_outputs:
            raise ValueError(f"expected {self.num_outputs} outputs ({self!r}), got {logits.shape[1]}")
        codes, _ = self._tables(logits.device)
        total = logits.new_zeros((len(logits), len(self.classes)), dtype=torch.float32)
        for f, logp in enumerate(self.value_log_probs(logits)):
            total = total + logp[:, codes[:, f]]
        return total.log_softmax(dim=1)  # renormalise over the classes that exist

    def joint_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` class probabilities (rows sum to 1) from the heads' logits."""
        return self.joint_log_probs(logits).exp()

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor | Sequence[torch.Tensor],
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """The weighted sum of the heads' cross-entropies.

        Args:
            logits: ``(B, num_outputs)``.
            targets: Hard labels ``(B, F)`` (one column per head, bin indices where a head has
                bins), or one soft target ``(B, head size)`` per head (mixed / smoothed).
            label_smoothing: Smoothing of hard labels (soft targets carry their own).

        Returns:
            A scalar.
        """
        per_head = (
            [targets[:, f] for f in range(len(self.factors))]
            if isinstance(targets, torch.Tensor)
            else list(targets)
        )
        if len(per_head) != len(self.factors):
            raise ValueError(f"expected targets for {len(self.factors)} heads, got {len(per_head)}")
        soft = SoftTargetCrossEntropy()
        total = logits.new_zeros((), dtype=torch.float32)
        for factor, sl, target in zip(self.factors, self.slices, per_head, strict=True):
            head = logits[:, sl].float()
            if target.dtype.is_floating_point:
                loss = soft(head, target)
            else:
                loss = F.cross_entropy(head, target, label_smoothing=label_smoothing)
            total = total + factor.weight * loss
        return total

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        key = str(device)
        if key not in self._device_tables:
            # Built as ordinary tensors even under inference_mode (validation builds them first), so a
            # later training step may index with them while autograd records.
            with torch.inference_mode(False):
                self._device_tables[key] = self._build_tables(device)
        return self._device_tables[key]

    def _build_tables(self, device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        codes = torch.as_tensor(self.codes, device=device)
        merges: list[torch.Tensor | None] = []
        for factor in self.factors:
            if not factor.bins:
                merges.append(None)
                continue
            member = np.zeros((len(factor.bins), len(factor.values)), dtype=bool)
            member[np.arange(len(factor.bins)), list(factor.bin_value)] = True
            merge = np.where(member, 0.0, -np.inf).astype(np.float32)
            merges.append(torch.as_tensor(merge, device=device).unsqueeze(0))
        return codes, merges

    # -- classes -> factors (numpy) ---------------------------------------------------------------

    def marginals(self, probs: np.ndarray) -> list[np.ndarray]:
        """Per factor, ``(n, V_f)``: the class probabilities summed over the classes of each value."""
        out = []
        for f, factor in enumerate(self.factors):
            onehot = np.zeros((len(self.classes), len(factor.values)), dtype=np.float64)
            onehot[np.arange(len(self.classes)), self.codes[:, f]] = 1.0
            out.append(np.asarray(probs, dtype=np.float64) @ onehot)
        return out

    def metrics(self, probs: np.ndarray, labels: np.ndarray, prefix: str = "val_") -> dict[str, float]:
        """Accuracy of each factor when the class probabilities are read one factor at a time.

        Args:
            probs: ``(n, C)`` class probabilities.
            labels: ``(n,)`` class targets.
            prefix: Name prefix; keys are ``<prefix>acc_<factor>``.

        Returns:
            One accuracy per factor (NaN without rows), e.g. ``val_acc_mask``.
        """
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return {f"{prefix}acc_{name}": float("nan") for name in self.names}
        out = {}
        for f, marginal in enumerate(self.marginals(probs)):
            truth = self.codes[labels, f]
            out[f"{prefix}acc_{self.factors[f].name}"] = accuracy(marginal, truth)
        return out

    # -- persistence --------------------------------------------------------------------------------

    def to_meta(self) -> dict[str, Any]:
        """A JSON-able description, enough to rebuild this object for prediction (no dataset needed)."""
        return {
            "classes": self.classes,
            "factors": [
                {
                    "name": f.name,
                    "values": list(f.values),
                    "bins": list(f.bins),
                    "bin_value": list(f.bin_value),
                    "weight": f.weight,
                }
                for f in self.factors
            ],
            "codes": self.codes.tolist(),
            "head_sizes": self.head_sizes,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Factorisation:
        """Rebuild from :meth:`to_meta`'s output (e.g. a checkpoint's ``meta.json``)."""
        factors = [
            Factor(
                name=str(f["name"]),
                values=tuple(str(v) for v in f["values"]),
                bins=tuple(str(b) for b in f.get("bins", ())),
                bin_value=tuple(int(v) for v in f.get("bin_value", ())),
                weight=float(f.get("weight", 1.0)),
            )
            for f in meta["factors"]
        ]
        return cls(meta["classes"], factors, np.asarray(meta["codes"], dtype=np.int64))

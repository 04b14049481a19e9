"""ProbStack: M models' probabilities over the same rows, blended fast and in little memory.

The weight searches score thousands of weight vectors, each a blend ``sum_m w_m P_m`` over
(N, C) probabilities followed by an argmax. At the reference scale (10 x 15,021 x 500) a dense
float32 blend is 21 ms and a float32 copy of the stack alone is twice the float16 files (the
memory target). Two observations make it cheaper, exactly:

* the argmax of a blend is almost always a class near the top of some model, so each row keeps
  a short *candidate* list, the union of every model's top-k classes, with their float32
  probabilities: (M, N, S) with S ~ tens instead of C = 500;
* a class outside the list has, in model m, at most that model's k-th largest probability
  ``t_m``, so its blended score is at most ``sum_m w_m t_m``. When the best candidate beats that
  bound the candidate argmax is the true argmax; otherwise the row is recomputed densely from
  the (memory-mapped) source arrays. The answer is the dense argmax either way.

Log-loss needs only each row's true-class probability, an (M, N) matrix: exact and tiny.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ensemble.artifacts import Artifact

__all__ = ["ProbStack", "as_stack"]

# Cap on the (B, N, S) float32 temporaries of one batched pass: 16 MB.
_BLOCK_ELEMENTS = 4_000_000


@dataclass
class _Candidates:
    """Per-row candidate classes and their probabilities (see the module docstring)."""

    idx: np.ndarray  # (N, S) int32 class ids, ascending; padded by repeating column 0
    count: np.ndarray  # (N,) int32 real candidates per row (the rest is padding)
    vals: np.ndarray  # (M, N, S) float32 probabilities of those classes
    tail: np.ndarray  # (M, N) float32 bound on any non-candidate's probability (-1: none exist)
    labels: np.ndarray  # (M, N) int32 each model's own argmax

    def take(self, rows: np.ndarray) -> _Candidates:
        return _Candidates(
            idx=self.idx[rows],
            count=self.count[rows],
            vals=self.vals[:, rows],
            tail=self.tail[:, rows],
            labels=self.labels[:, rows],
        )

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.idx, self.count, self.vals, self.tail, self.labels))


class ProbStack:
    """Probabilities of M models over the same N rows and C classes.

    Holds the arrays as given (memory maps stay memory maps; float16 stays float16) and reads
    them a row block at a time, upcasting each block to float32. ``subset`` gives a view on some
    rows that shares the source arrays and the candidate lists.

    Args:
        probs: (M, N, C) array, or a sequence of M (N, C) arrays (e.g. memory-mapped ``oof.npy``).
        top_k: Classes each model contributes to a row's candidate list.
        chunk_rows: Rows per block when reading the sources.
    """

    def __init__(self, probs: np.ndarray | Sequence[np.ndarray], *, top_k: int = 10, chunk_rows: int = 1024):
        models = (
            list(probs) if not isinstance(probs, np.ndarray) else [probs[m] for m in range(probs.shape[0])]
        )
        if not models:
            raise ValueError("probs must hold at least one model")
        shape = np.shape(models[0])
        if len(shape) != 2:
            raise ValueError(f"each model's probabilities must be 2-D (rows, classes), got shape {shape}")
        for m, arr in enumerate(models):
            if np.shape(arr) != shape:
                raise ValueError(f"model {m} has shape {np.shape(arr)}, model 0 has {shape}: all must match")
        self._models = [a if isinstance(a, np.ndarray) else np.asarray(a) for a in models]
        self._rows: np.ndarray | None = None  # None: all source rows in order
        self._cand: _Candidates | None = None
        self.top_k = int(top_k)
        self.chunk_rows = int(chunk_rows)
        self.n_dense_rows = 0  # rows recomputed densely because the candidate bound was not met

    @classmethod
    def from_artifacts(cls, artifacts: Sequence[Artifact], split: str = "oof", **kw: int) -> ProbStack:
        """Stack artifacts' ``oof`` (or ``test``) arrays without copying them."""
        if split not in ("oof", "test"):
            raise ValueError(f"split must be 'oof' or 'test', got {split!r}")
        arrays = [getattr(a, split) for a in artifacts]
        missing = [a.model_id for a, arr in zip(artifacts, arrays, strict=True) if arr is None]
        if missing:
            raise ValueError(f"models {missing} have no {split} probabilities")
        return cls(arrays, **kw)

    # ------------------------------------------------------------------------------ geometry

    @property
    def n_models(self) -> int:
        return len(self._models)

    @property
    def n_rows(self) -> int:
        return self._models[0].shape[0] if self._rows is None else int(self._rows.size)

    @property
    def n_classes(self) -> int:
        return int(self._models[0].shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_models, self.n_rows, self.n_classes)

    @property
    def rows(self) -> np.ndarray:
        """Indices of this stack's rows in the source arrays (``arange(N)`` for a full stack)."""
        return np.arange(self._models[0].shape[0]) if self._rows is None else self._rows

    def subset(self, rows: np.ndarray | Sequence[int]) -> ProbStack:
        """A stack over some of these rows (positions in this stack), sharing the sources."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"rows must lie in [0, {self.n_rows})")
        sub = object.__new__(ProbStack)
        sub._models = self._models
        sub._rows = self.rows[rows]
        sub._cand = None if self._cand is None else self._cand.take(rows)
        sub.top_k = self.top_k
        sub.chunk_rows = self.chunk_rows
        sub.n_dense_rows = 0
        return sub

    def _blocks(self) -> Iterator[tuple[slice, np.ndarray | slice]]:
        """(position slice in this stack, selector into the sources) per block of rows."""
        n = self.n_rows
        for start in range(0, n, self.chunk_rows):
            pos = slice(start, min(start + self.chunk_rows, n))
            yield pos, (pos if self._rows is None else self._rows[pos])

    def _read(self, m: int, sel: np.ndarray | slice) -> np.ndarray:
        # Always a fresh float32 array: callers scale it in place, and a float32 source slice
        # would otherwise be a view of the caller's data.
        return np.array(self._models[m][sel], dtype=np.float32)

    # ------------------------------------------------------------------------------ dense paths

    def blend(self, weights: np.ndarray | Sequence[float]) -> np.ndarray:
        """The weighted blend ``sum_m w_m P_m`` as a dense (N, C) float32 array."""
        w = self._check_weights(weights)
        out = np.empty((self.n_rows, self.n_classes), dtype=np.float32)
        for pos, sel in self._blocks():
            out[pos] = self._blend_block(w, sel)
        return out

    def _blend_block(self, w: np.ndarray, sel: np.ndarray | slice) -> np.ndarray:
        acc: np.ndarray | None = None
        for m in np.flatnonzero(w):
            x = self._read(m, sel)
            x *= w[m]
            if acc is None:
                acc = x
            else:
                acc += x
        if acc is None:  # all-zero weights: nothing is blended
            n = len(range(self.n_rows)[sel]) if isinstance(sel, slice) else len(sel)
            acc = np.zeros((n, self.n_classes), dtype=np.float32)
        return acc

    def true_probs(self, y: np.ndarray) -> np.ndarray:
        """(M, N) float32: each model's probability of each row's true class (exact log-loss input)."""
        y = np.asarray(y)
        if y.shape != (self.n_rows,):
            raise ValueError(f"y must have shape ({self.n_rows},), got {y.shape}")
        rows = self.rows
        # Point gathers: touches N values per model instead of reading N x C.
        return np.stack([np.asarray(arr[rows, y], dtype=np.float32) for arr in self._models])

    # -------------------------------------------------------------------------- candidate path

    @property
    def candidates(self) -> _Candidates:
        """The per-row candidate lists, built on first use with one pass over the sources."""
        if self._cand is None:
            self._cand = self._build_candidates()
        return self._cand

    @property
    def model_labels(self) -> np.ndarray:
        """(M, N) int32: each model's argmax (its hard vote)."""
        return self.candidates.labels

    def _build_candidates(self) -> _Candidates:
        # Two passes so that the only large allocation is the final (M, N, S) array: the first
        # finds each row's candidates model by model (small temporaries), the second gathers
        # their probabilities straight into place. Building from per-block pieces and
        # concatenating would hold the candidate values two or three times at the peak.
        n_models, n = self.n_models, self.n_rows
        tail = np.empty((n_models, n), dtype=np.float32)
        labels = np.empty((n_models, n), dtype=np.int32)
        count = np.empty(n, dtype=np.int32)
        idx_parts = []
        for pos, sel in self._blocks():
            pool = []
            for m in range(n_models):
                top, tail[m, pos], labels[m, pos] = self._top_k(self._read(m, sel))
                pool.append(top)
            part, count[pos] = self._union(np.hstack(pool))
            idx_parts.append(part)
        width = max(p.shape[1] for p in idx_parts)
        idx = np.concatenate([_pad(p, width, axis=1) for p in idx_parts])
        del idx_parts
        vals = np.empty((n_models, n, width), dtype=np.float32)
        for pos, sel in self._blocks():
            for m in range(n_models):
                vals[m, pos] = np.take_along_axis(self._read(m, sel), idx[pos], axis=1)
        return _Candidates(idx=idx, count=count, vals=vals, tail=tail, labels=labels)

    def _top_k(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One model's (r, C) block: its top-k classes (r, k), k-th largest value (r,), argmax (r,)."""
        n_classes = x.shape[1]
        k = min(self.top_k, n_classes)
        labels = x.argmax(axis=1)
        if k == n_classes:  # every class is a candidate: nothing is left out to bound
            return (
                np.broadcast_to(np.arange(n_classes), x.shape),
                np.full(x.shape[0], -1.0, np.float32),
                labels,
            )
        top = np.argpartition(x, n_classes - k, axis=1)[:, n_classes - k :]
        return top, np.take_along_axis(x, top, axis=1).min(axis=1), labels

    @staticmethod
    def _union(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the distinct classes of ``pool`` (r, M*k), ascending, padded to a common width,
        and how many there are.

        Padding repeats the row's first (smallest) candidate: argmax returns the first of equal
        values, so a padded copy never displaces the real entry.
        """
        srt = np.sort(pool, axis=1)
        keep = np.ones(srt.shape, dtype=bool)
        keep[:, 1:] = srt[:, 1:] != srt[:, :-1]
        count = keep.sum(axis=1).astype(np.int32)
        idx = np.repeat(srt[:, :1], int(count.max()), axis=1).astype(np.int32)
        rr, cc = np.nonzero(keep)
        idx[rr, (np.cumsum(keep, axis=1) - 1)[rr, cc]] = srt[rr, cc]
        return idx, count

    def predict_many(self, weights: np.ndarray) -> np.ndarray:
        """Exact argmax labels of B blends at once: (B, M) weights -> (B, N) int64 labels.

        One batched pass over the candidate lists (blocks of weight vectors keep temporaries
        under ~16 MB); rows whose candidate bound is not met are recomputed densely.
        """
        W = np.asarray(weights, dtype=np.float32)
        W = W.reshape(-1, self.n_models)
        cand = self.candidates
        n, width = cand.idx.shape
        out = np.empty((W.shape[0], n), dtype=np.int64)
        step = max(1, _BLOCK_ELEMENTS // max(1, n * width))
        row_ids = np.arange(n)
        for b0 in range(0, W.shape[0], step):
            Wb = W[b0 : b0 + step]
            blended = np.tensordot(Wb, cand.vals, axes=1)  # (b, N, S) one BLAS call
            pos = blended.argmax(axis=-1)
            best = np.take_along_axis(blended, pos[..., None], axis=-1)[..., 0]
            out[b0 : b0 + step] = cand.idx[row_ids, pos]
            bound = Wb @ cand.tail  # (b, N) best score any non-candidate could reach
            # A relative margin absorbs float32 rounding in the two sums being compared.
            unsafe = best <= bound + 1e-6 * np.abs(bound) + 1e-7
            for j in np.flatnonzero(unsafe.any(axis=1)):
                rows = np.flatnonzero(unsafe[j])
                out[b0 + j, rows] = self._dense_argmax(Wb[j], rows)
        return out

    def _dense_argmax(self, w: np.ndarray, rows: np.ndarray) -> np.ndarray:
        self.n_dense_rows += int(rows.size)
        src = self.rows[rows]
        order = np.argsort(src, kind="stable")  # sorted reads are kinder to a memory map
        labels = np.empty(rows.size, dtype=np.int64)
        for start in range(0, rows.size, self.chunk_rows):
            part = order[start : start + self.chunk_rows]
            labels[part] = self._blend_block(w.astype(np.float32), src[part]).argmax(axis=1)
        return labels

    def predict(self, weights: np.ndarray | Sequence[float]) -> np.ndarray:
        """Exact argmax labels (N,) of one blend."""
        return self.predict_many(self._check_weights(weights)[None])[0]

    def _check_weights(self, weights: np.ndarray | Sequence[float]) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float32)
        if w.shape != (self.n_models,):
            raise ValueError(f"weights must have shape ({self.n_models},), got {w.shape}")
        return w

    def __repr__(self) -> str:
        kind = self._models[0].dtype
        return (
            f"ProbStack(models={self.n_models}, rows={self.n_rows}, classes={self.n_classes}, dtype={kind})"
        )


def _pad(a: np.ndarray, width: int, axis: int) -> np.ndarray:
    missing = width - a.shape[axis]
    if missing == 0:
        return a
    first = np.take(a, [0], axis=axis)
    return np.concatenate([a, np.repeat(first, missing, axis=axis)], axis=axis)


def as_stack(probs: ProbStack | np.ndarray | Sequence[np.ndarray]) -> ProbStack:
    """Accept a ProbStack, an (M, N, C) array or a sequence of (N, C) arrays."""
    return probs if isinstance(probs, ProbStack) else ProbStack(probs)

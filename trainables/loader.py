"""Batches from the decoded memmap: a torch Dataset over (cache, rows, labels), seeded per sample.

Samples are ``uint8`` CHW tensors: the host never converts to float, the copy to the GPU is a
quarter of the size, and normalisation happens on the device (:func:`to_device`).

Reproducibility: the training sampler's order is a function of ``(seed, epoch)``, and each
sample's augmentation is seeded by ``(seed, epoch, position)``; the epoch travels inside the
sampled key (``epoch * n + i``), so it reaches persistent worker processes too. An epoch's batches
are therefore the same whatever the worker count and whether the run was resumed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common.sockets import PYMP_TEMP_MAX, short_socket_temp
from trainables.augment import FLIP_COPY, ORIGINAL, RANDAUG_COPY, SampleTransform
from trainables.runtime import Runtime, derived_seed


def balanced_index(
    rows: np.ndarray, labels: np.ndarray, randaug: bool, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill every class up to the largest class's count with copies of its own rows.

    Copies cycle through a class's rows in a seeded random order, so each row is copied at most
    once more than any other of its class.

    Args:
        rows: Training row positions in the cached split.
        labels: Their targets.
        randaug: Copies are RandAugment-style (``RANDAUG_COPY``) rather than flipped (``FLIP_COPY``).
        seed: Seeds which rows are copied.

    Returns:
        ``(rows, labels, kinds)`` with the originals first, then the copies.
    """
    rng = np.random.default_rng(derived_seed(seed, 7))
    classes, counts = np.unique(labels, return_counts=True)
    extra_rows: list[np.ndarray] = []
    for cls, count in zip(classes, counts, strict=True):
        need = int(counts.max() - count)
        if need:
            members = rng.permutation(rows[labels == cls])
            extra_rows.append(np.resize(members, need))
    extra = np.concatenate(extra_rows) if extra_rows else np.zeros(0, dtype=rows.dtype)
    kind = RANDAUG_COPY if randaug else FLIP_COPY
    out_rows = np.concatenate([rows, extra])
    label_of = dict(zip(rows.tolist(), labels.tolist(), strict=True))
    out_labels = np.concatenate([labels, np.array([label_of[r] for r in extra.tolist()], dtype=labels.dtype)])
    kinds = np.concatenate([np.full(len(rows), ORIGINAL, np.int8), np.full(len(extra), kind, np.int8)])
    return out_rows, out_labels, kinds


class CachedImages(Dataset):
    """Rows of a decoded cache through a :class:`SampleTransform`; item ``key`` is ``epoch * n + i``.

    The memmap is reopened by file name in each worker process rather than pickled, so spawned
    workers (macOS, Windows) do not copy the whole cache.

    Args:
        images: The (N, S, S, 3) uint8 memmap (or array) of one split.
        rows: Positions into ``images`` making up this dataset, repeats allowed.
        labels: A label per position (any value, e.g. -1, when unknown), or ``(n, heads)`` labels
            for multi-task heads (an item's label is then an int64 tensor of ``heads``).
        transform: What to do to each image.
        kinds: ``ORIGINAL``/``FLIP_COPY``/``RANDAUG_COPY`` per position; all originals if None.
        seed: The trial seed.
    """

    def __init__(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        transform: SampleTransform,
        kinds: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.kinds = np.zeros(len(self.rows), np.int8) if kinds is None else np.asarray(kinds, np.int8)
        self.transform = transform
        self.seed = seed
        if not (len(self.rows) == len(self.labels) == len(self.kinds)):
            raise ValueError("rows, labels and kinds must have the same length")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        n = len(self.rows)
        epoch, i = divmod(int(key), n)
        seed = derived_seed(self.seed, epoch, i) if self.transform.train else None
        image = self.transform(self.images[self.rows[i]], int(self.kinds[i]), seed)
        label = int(self.labels[i]) if self.labels.ndim == 1 else torch.from_numpy(self.labels[i].copy())
        return torch.from_numpy(image).permute(2, 0, 1), label

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["images"] = _memmap_state(self.images)
        return state

    def __setstate__(self, state: dict) -> None:
        state["images"] = _reopen(state["images"])
        self.__dict__.update(state)


class StackedImages:
    """Several decoded caches read as one, positions running on from one to the next.

    Training on pseudo-labelled test images reads the train and test caches through one
    :class:`CachedImages`; each part stays a memmap and travels to workers by file name.

    Args:
        parts: (N_i, S, S, 3) arrays of the same image shape.
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        if len({p.shape[1:] for p in parts}) != 1:
            raise ValueError(f"stacked caches must share an image shape, got {[p.shape for p in parts]}")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, position: int) -> np.ndarray:
        part = int(np.searchsorted(self.starts, position, side="right")) - 1
        if not 0 <= part < len(self.parts):
            raise IndexError(f"position {position} outside 0..{len(self) - 1}")
        return self.parts[part][position - self.starts[part]]

    def __getstate__(self) -> dict:
        return {"parts": [_memmap_state(p) for p in self.parts], "starts": self.starts}

    def __setstate__(self, state: dict) -> None:
        self.parts = [_reopen(p) for p in state["parts"]]
        self.starts = state["starts"]


def _memmap_state(images: np.ndarray) -> object:
    filename = getattr(images, "filename", None)
    if isinstance(images, np.memmap) and filename:
        return (str(filename), images.dtype.str, images.shape, int(images.offset))
    return images


def _reopen(state: object) -> np.ndarray:
    if isinstance(state, tuple):
        filename, dtype, shape, offset = state
        return np.memmap(filename, mode="r", dtype=np.dtype(dtype), shape=shape, offset=offset)
    return state  # type: ignore[return-value]


class EpochSampler(Sampler[int]):
    """A shuffled pass over ``n`` items, a function of ``(seed, epoch)``, yielding ``epoch * n + i``.

    Args:
        n: Dataset length.
        seed: The trial seed.
        shuffle: False gives the identity order (evaluation).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        offset = self.epoch * self.n
        return iter((order + offset).tolist())

    def __len__(self) -> int:
        return self.n

    def state_dict(self) -> dict[str, int]:
        """What decides the order: seed and epoch."""
        return {"seed": self.seed, "epoch": self.epoch}


# Workers are not forked from the trial process: by the time it loads data it runs threads (Ray's,
# pyarrow's jemalloc, the data layer's decode pools), and a fork can copy one of their locks held,
# hanging the worker forever (seen here). A forkserver forks from a clean single-threaded process.
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def make_loader(
    dataset: CachedImages,
    batch_size: int,
    runtime: Runtime,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with the runtime's workers (forkserver/spawn) and pinning; sequential if ``sampler`` is None."""
    workers = runtime.num_workers
    if workers > 0:
        short_socket_temp("TMPDIR", PYMP_TEMP_MAX)  # the forkserver's and torch's sockets
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler if sampler is not None else EpochSampler(len(dataset), shuffle=False),
        num_workers=workers,
        pin_memory=runtime.pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
        multiprocessing_context=_START_METHOD if workers > 0 else None,
    )


def to_device(
    images: torch.Tensor,
    runtime: Runtime,
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = True,
) -> torch.Tensor:
    """uint8 NCHW batch -> normalised float32 on the device (channels_last where it pays)."""
    return normalize(images.to(runtime.device, non_blocking=runtime.pin_memory), mean, std, channels_last)


def normalize(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool = True
) -> torch.Tensor:
    """uint8 NCHW batch -> normalised float32 on its own device; ``images.permute(0, 3, 1, 2)`` of
    an NHWC array (a decoded cache's rows) is an NCHW batch already in channels_last's layout."""
    x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    x = x.float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def _worker_init(worker_id: int) -> None:
    # One thread per worker: the workers are the parallelism; nested thread pools oversubscribe.
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)

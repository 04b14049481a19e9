"""Near-duplicate detection: flipped or resized copies of one image inside a class.

Each image gets a perceptual hash (``imagehash.phash``, a DCT of the 32x32 grayscale image) of
itself and of its mirror image. Hashes see the letterboxed cache image, so a resized copy (same
aspect) hashes like its original, and comparing one image's hash with the other's mirror hash
catches horizontal flips. Pairs within ``max_distance`` bits are joined, and sets are the
connected components (scipy's ``connected_components``), so a copy of a copy lands in the same set.
"""

from __future__ import annotations

import logging

import imagehash
import numpy as np
from PIL import Image

from ._cache import decoded_images
from ._dataset import Dataset

log = logging.getLogger(__name__)

# Hashes come from the 128 px cache (the default training size, so usually shared): phash
# resamples it to 64x64 with Lanczos, which keeps thin strokes stable. A 64 px source shifted
# flipped copies by up to 38 bits; from 128 px the planted copies stay within 12.
HASH_IMAGE_SIZE = 128
HASH_BITS = 16  # phash hash_size: 16x16 = 256 bits; 8x8 cannot tell sparse line drawings apart
DEFAULT_MAX_DISTANCE = 32  # of 256 bits; see find_duplicates for the measured gap


def phash_pairs(images: np.ndarray, hash_bits: int = HASH_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Perceptual hashes of images and of their mirror images.

    Args:
        images: ``(N, H, W, 3)`` uint8.
        hash_bits: ``imagehash.phash``'s ``hash_size``; a hash has ``hash_bits**2`` bits.

    Returns:
        ``(hashes, mirrored)``, each ``(N, hash_bits**2 / 8)`` uint8 (bits packed).
    """
    plain = np.empty((len(images), hash_bits * hash_bits // 8), dtype=np.uint8)
    mirror = np.empty_like(plain)
    for i, img in enumerate(images):
        pil = Image.fromarray(np.asarray(img))
        plain[i] = np.packbits(imagehash.phash(pil, hash_size=hash_bits).hash.ravel())
        mirror[i] = np.packbits(
            imagehash.phash(pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT), hash_size=hash_bits).hash.ravel()
        )
    return plain, mirror


def hash_distances(plain: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """``(N, N)`` flip-invariant Hamming distances: ``min(d(a, b), d(a, mirror(b)))``."""
    same = np.bitwise_count(plain[:, None, :] ^ plain[None, :, :]).sum(-1)
    flipped = np.bitwise_count(plain[:, None, :] ^ mirror[None, :, :]).sum(-1)
    return np.minimum(same, flipped)


def close_pairs(plain: np.ndarray, mirror: np.ndarray, max_distance: int, chunk: int = 512) -> np.ndarray:
    """``(P, 2)`` row pairs ``i < j`` whose flip-invariant distance is at most ``max_distance``.

    Computed in blocks of ``chunk`` rows so memory stays at ``chunk x N`` distances.
    """
    found = []
    for lo in range(0, len(plain), chunk):
        block = slice(lo, min(lo + chunk, len(plain)))
        same = np.bitwise_count(plain[block, None, :] ^ plain[None, :, :]).sum(-1)
        flipped = np.bitwise_count(plain[block, None, :] ^ mirror[None, :, :]).sum(-1)
        i, j = np.nonzero(np.minimum(same, flipped) <= max_distance)
        i += lo
        found.append(np.stack([i[i < j], j[i < j]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def hash_images(ds: Dataset, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """:func:`phash_pairs` of a split's 128 px cache images (the cache is built if needed)."""
    return phash_pairs(decoded_images(ds, split, HASH_IMAGE_SIZE))


def find_duplicates(
    ds: Dataset, *, max_distance: int = DEFAULT_MAX_DISTANCE, labels: np.ndarray | None = None
) -> list[list[int]]:
    """Sets of training rows that are flipped and/or resized copies of each other, within a class.

    Only rows of the same class are compared: the task is to keep copies out of opposite sides of
    a fold boundary, and copies across classes would be label noise, a different problem (the EDA
    report lists those separately). The default threshold sits in the gap measured between planted
    copies (at most ~16 of 256 bits after a flip and a resize) and distinct drawings of one class
    (never under 56 in the built-in set; never under 44 in sketchy125, where the closest pairs are
    re-drawings of one photo by different people, which the group pattern handles).

    Args:
        ds: The dataset; hashes come from its 128 px decoded cache (built if needed).
        max_distance: Largest Hamming distance (of 256 bits) still called a copy.
        labels: Compare within these labels instead of ``ds.train.target`` (e.g. all zeros to
            compare across classes).

    Returns:
        Sets of row numbers, each sorted, with at least two rows, ordered by their first row.
    """
    plain, mirror = hash_images(ds)
    labels = ds.train["target"].to_numpy() if labels is None else np.asarray(labels)
    pairs = [np.empty((0, 2), dtype=np.int64)]
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        pairs.append(rows[close_pairs(plain[rows], mirror[rows], max_distance)])
    found = duplicate_sets(np.concatenate(pairs), len(plain))
    log.info("found %d near-duplicate set(s) covering %d rows", len(found), sum(map(len, found)))
    return found


def duplicate_sets(pairs: np.ndarray, n: int) -> list[list[int]]:
    """The connected components of ``n`` rows joined by ``(P, 2)`` ``pairs`` that have two rows or more.

    Returns:
        Sets of row numbers, each sorted, ordered by their first row.
    """
    # Imported here: scipy.sparse costs ~0.3 s, and most processes only read cached folds.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    # A stable sort by component keeps each set's rows ascending; sets then go by their first row.
    order = np.argsort(component, kind="stable")
    sets = [rows.tolist() for rows in np.split(order, np.cumsum(sizes)[:-1]) if len(rows) > 1]
    return sorted(sets, key=lambda members: members[0])

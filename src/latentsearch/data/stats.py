"""Statistics of an image collection that choose how to train on it.

They read pixels only (no model, no labels), so a recipe adapts to the data itself rather than
to a data set's name.
"""

from __future__ import annotations

import numpy as np

from latentsearch.errors import LatentsearchError


def _nearest_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query to its nearest database row. Shapes: (Q, D), (N, D)."""
    sq = (database**2).sum(axis=1)
    best = np.full(len(queries), np.inf, dtype=np.float64)
    for start in range(0, len(queries), 256):
        q = queries[start : start + 256]
        d2 = (q**2).sum(axis=1)[:, None] + sq[None, :] - 2.0 * (q @ database.T)
        best[start : start + len(q)] = d2.min(axis=1)
    return np.sqrt(np.maximum(best, 0.0))


def mirror_ratio(
    pixels: np.ndarray, *, n_queries: int = 1000, n_database: int = 5000, seed: int = 0
) -> float:
    """How far mirrored images lie from the collection, relative to unmirrored ones.

    Mirrors a sample of images left to right and compares the median distance (raw pixels) to
    the nearest other image with that of the same images unmirrored. Near 1: mirror images look
    like the collection (photos of objects, microscopy), so a random flip is a safe
    augmentation. Well above 1: mirroring makes images the collection does not contain (digits,
    text, objects that always face one way).

    Args:
        pixels: Shape: (N, H, W, C), uint8.
        n_queries: Images mirrored and compared.
        n_database: Images they are compared against.
        seed: Sampling seed.

    Returns:
        The ratio of median nearest-neighbour distances, mirrored / unmirrored.

    Raises:
        LatentsearchError: Fewer than 8 images.
    """
    n = len(pixels)
    if n < 8:
        raise LatentsearchError(f"need at least 8 images to measure mirror symmetry, got {n}")
    n_q = min(n_queries, n // 4)
    n_db = min(n_database, n - n_q)
    pick = np.random.default_rng(seed).permutation(n)
    # Sorted reads are faster on a memory map; the two samples stay random.
    queries = np.asarray(pixels[np.sort(pick[:n_q])], dtype=np.float32) / 255.0
    database = np.asarray(pixels[np.sort(pick[n_q : n_q + n_db])], dtype=np.float32) / 255.0
    flat_db = database.reshape(n_db, -1)
    plain = _nearest_distances(queries.reshape(n_q, -1), flat_db)
    mirrored = _nearest_distances(queries[:, :, ::-1].reshape(n_q, -1), flat_db)
    return float(np.median(mirrored) / max(float(np.median(plain)), 1e-12))


def colour_fraction(
    pixels: np.ndarray, *, n_sample: int = 1000, tolerance: int = 12, seed: int = 0
) -> float:
    """The share of pixels whose channels differ: 0 for grey images, whatever their channels.

    Folders decode every image to RGB, so a collection of grey scans or digits arrives with
    three equal channels; this tells it apart from colour photos. A pixel counts as coloured
    when its channels differ by more than ``tolerance`` levels (JPEG's chroma noise on a grey
    picture stays below that).

    Args:
        pixels: Shape: (N, H, W, C), uint8.
        n_sample: Images read (a random sample).
        tolerance: Largest channel difference, in levels of 255, still counted as grey.
        seed: Sampling seed.

    Returns:
        A share in [0, 1]; 0 for one-channel images.
    """
    n, c = len(pixels), pixels.shape[-1]
    if c == 1 or n == 0:
        return 0.0
    pick = np.sort(np.random.default_rng(seed).permutation(n)[:n_sample])
    sample = np.asarray(pixels[pick], dtype=np.int16)
    spread = sample.max(axis=-1) - sample.min(axis=-1)
    return float((spread > tolerance).mean())


def grey_share(
    pixels: np.ndarray,
    *,
    n_sample: int = 1000,
    tolerance: int = 12,
    grey_below: float = 0.05,
    seed: int = 0,
) -> float:
    """The share of images that are grey: fewer than ``grey_below`` of their pixels coloured.

    Args:
        pixels: Shape: (N, H, W, C), uint8.
        n_sample: Images read (a random sample).
        tolerance: See :func:`colour_fraction`.
        grey_below: Largest share of coloured pixels of an image still counted as grey.
        seed: Sampling seed.

    Returns:
        A share in [0, 1]; 1 for one-channel images, 0 for none.
    """
    n, c = len(pixels), pixels.shape[-1]
    if n == 0:
        return 0.0
    if c == 1:
        return 1.0
    pick = np.sort(np.random.default_rng(seed).permutation(n)[:n_sample])
    sample = np.asarray(pixels[pick], dtype=np.int16)
    coloured = (sample.max(axis=-1) - sample.min(axis=-1)) > tolerance
    return float((coloured.reshape(len(sample), -1).mean(axis=1) < grey_below).mean())

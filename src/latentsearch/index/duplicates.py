"""Near-duplicate groups: pairs closer than a threshold, joined into connected components.

Pairs come from FAISS range searches over batches of the stored vectors, sized so that no
batch can return more than ``PAIR_BUDGET`` pairs; memory therefore stays O(N) plus one
batch, and no N x N matrix is ever formed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from latentsearch.index.errors import ImageIndexError

PAIR_BUDGET = 1 << 22
"""Most (query, item) pairs one range-search batch may return: about 50 MB."""

DEFAULT_DUPLICATE_FRACTION = 0.001
"""Default threshold, as a share of the median squared distance between two random images."""

TYPICAL_DISTANCE_PAIRS = 2_000
"""Random pairs whose median squared distance sets the scale of the default threshold."""


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, i: int) -> int:
        """The representative of ``i``'s set."""
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    def union(self, i: int, j: int) -> None:
        """Joins the sets of ``i`` and ``j``."""
        a, b = self.find(i), self.find(j)
        if a == b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]

    def groups(self) -> list[list[int]]:
        """Sets with at least two members, each sorted, ordered by their smallest member."""
        roots = np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
        if len(roots) == 0:
            return []
        order = np.argsort(roots, kind="stable")
        bounds = np.flatnonzero(np.diff(roots[order])) + 1
        out = [part.tolist() for part in np.split(order, bounds) if len(part) > 1]
        out.sort(key=lambda g: g[0])
        return out


def close_pairs(
    index: Any, vectors: np.ndarray, threshold: float, *, pair_budget: int = PAIR_BUDGET
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pairs of indexed vectors whose squared L2 distance is below ``threshold``.

    FAISS's batched L2 uses ``|x|^2 + |y|^2 - 2<x, y>`` in float32, which can put two
    identical vectors a little above 0. The range search therefore uses a slightly larger
    radius and every candidate pair is re-measured directly in float64.

    Args:
        index: A FAISS index over ``vectors`` (in the same order) with ``range_search``;
            exact for a flat index, approximate for HNSW / IVF.
        vectors: Shape: (N, D), float32.
        threshold: Squared L2 distance; pairs strictly closer are returned.
        pair_budget: Most pairs a batch may return.

    Yields:
        ``(i, j, distance)`` per batch, each pair once with ``i < j``. Shapes: (P,), (P,), (P,).
    """
    n = len(vectors)
    if n < 2:
        return
    sq_norms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    radius = float(threshold + 1e-4 * sq_norms.max())
    # No two vectors are farther apart than (|x| + |y|)^2 <= 4 max |x|^2: a larger threshold
    # (1e39, say) means "every pair" and must not overflow FAISS's float32 radius.
    radius = min(radius, float(4.0 * sq_norms.max() * (1 + 1e-3) + 1e-6))
    batch = int(max(1, min(4096, pair_budget // n)))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        lims, _, found = index.range_search(vectors[start:stop], radius)
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims.astype(np.int64)))
        found = found.astype(np.int64)
        # Keep each pair once; an approximate search may find it from one side only.
        keep = rows != found
        i = np.minimum(rows[keep], found[keep])
        j = np.maximum(rows[keep], found[keep])
        if i.size:
            pairs = np.unique(np.stack([i, j], axis=1), axis=0)
            i, j = pairs[:, 0], pairs[:, 1]
        diff = vectors[i].astype(np.float64) - vectors[j].astype(np.float64)
        dist = np.einsum("ij,ij->i", diff, diff)
        close = dist < threshold
        yield i[close], j[close], dist[close]


def duplicate_groups(
    vectors: np.ndarray, threshold: float, *, index: Any = None
) -> list[list[int]]:
    """Connected components of the "closer than ``threshold``" graph, singletons left out.

    Args:
        vectors: Shape: (N, D), float32.
        threshold: Squared L2 distance, > 0.
        index: An approximate FAISS index over ``vectors`` to range-search, or None for an
            exact search (a flat index over the mean-centred vectors: distances do not change,
            and smaller norms mean smaller float32 rounding).

    Returns:
        Groups of positions, each sorted, ordered by their first position.

    Raises:
        ImageIndexError: When ``threshold`` is not a positive finite number.
    """
    if not np.isfinite(threshold) or threshold <= 0:
        raise ImageIndexError(f"the duplicate threshold must be a positive number, got {threshold}")
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if index is None and len(x):
        x = np.ascontiguousarray(x - x.mean(axis=0, dtype=np.float64).astype(np.float32))
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
    sets = UnionFind(len(x))
    for i, j, _ in close_pairs(index, x, float(threshold)):
        for a, b in zip(i.tolist(), j.tolist(), strict=True):
            sets.union(a, b)
    return sets.groups()


def typical_distance(
    vectors: np.ndarray, *, pairs: int = TYPICAL_DISTANCE_PAIRS, seed: int = 0
) -> float:
    """Median squared L2 distance between random pairs of distinct vectors.

    Args:
        vectors: Shape: (N, D), N >= 2.

    Raises:
        ImageIndexError: With fewer than two vectors.
    """
    n = len(vectors)
    if n < 2:
        raise ImageIndexError("need at least two indexed images to measure distances")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, pairs)
    b = (a + rng.integers(1, n, pairs)) % n  # never a == b
    diff = vectors[a].astype(np.float64) - vectors[b].astype(np.float64)
    return float(np.median(np.einsum("ij,ij->i", diff, diff)))


def default_threshold(vectors: np.ndarray) -> float:
    """``DEFAULT_DUPLICATE_FRACTION`` of the median squared distance between random images.

    A scale-free default: embeddings of different models have very different magnitudes.
    Shape: (N, D) -> scalar.
    """
    return DEFAULT_DUPLICATE_FRACTION * typical_distance(vectors)

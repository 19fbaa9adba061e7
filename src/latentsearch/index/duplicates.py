"""Near-duplicate groups: pairs closer than a threshold, grouped by average linkage.

Close pairs are first joined into connected components, then each component is split by
average linkage (:func:`group_pairs`): two groups merge only while their members are close on
average, so a chain of similar but different images (plain skies, near-white pictures) does
not become one group, as it does under connected components alone (``linkage="single"``).

Pairs come from FAISS range searches over batches of the stored vectors, sized so that no
batch can return more than ``PAIR_BUDGET`` pairs; memory therefore stays O(N) plus one
batch, and no N x N matrix is ever formed.

:func:`find_duplicates` chooses how. Up to ``DUPLICATES_EXACT_MAX_ITEMS`` vectors it range-
searches an exact flat index: the reference, but O(N^2) (41 s over 60,000 CIFAR-10
embeddings, about 3 hours at 1,000,000). Above it, it range-searches an IVF-Flat index
(``backends.build_index(..., "ivf")``, nprobe tuned to ``DUPLICATES_TARGET_RECALL``): each
vector is compared only with the vectors of its ``nprobe`` nearest lists, so the cost grows
as N^1.5, and a pair is missed only when its two vectors fall in lists that neither probes.
Because the threshold is a radius, a range search finds every close neighbour that is probed,
however many exact copies a vector has, where a k-nearest-neighbour graph would stop at k.
What the approximate search misses is measured, not assumed: ``MISSED_PAIR_SAMPLE`` random
vectors are range-searched exactly against all N, and the share of their close pairs that the
approximate search did not return is reported as ``missed_pair_rate_estimate``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentsearch.index import backends
from latentsearch.index.errors import ImageIndexError

PAIR_BUDGET = 1 << 22
"""Most (query, item) pairs one range-search batch may return: about 50 MB."""

DEFAULT_DUPLICATE_FRACTION = 0.001
"""Default threshold, as a share of the median squared distance between two random images."""

PHOTO_DUPLICATE_FRACTION = 0.16
"""The default for embeddings with a texture part (the auto recipe's photographs), chosen on the
edited copies of the photo dev set (``benchmarks/results/photos.json``): pair precision 0.91,
recall 0.86 there; 0.14 gave 0.91 / 0.77 and 0.18 gave 0.79 / 0.89, as two near-identical
wallpapers and their copies merged. Those embeddings keep edited copies much closer, relative to
the median, than the learned part alone does."""

TYPICAL_DISTANCE_PAIRS = 2_000
"""Random pairs whose median squared distance sets the scale of the default threshold."""

DUPLICATE_METHODS = ("auto", "exact", "approximate")
"""Accepted ``method`` values of :func:`find_duplicates`."""

DUPLICATES_EXACT_MAX_ITEMS = 50_000
"""``auto`` searches all pairs exactly up to this many vectors (about 30 s), approximately above."""

DUPLICATES_NPROBE = (1, 2, 4, 8, 16, 32, 64)
"""IVF lists probed per vector tried by the approximate search, cheapest first."""

DUPLICATES_TARGET_RECALL = 0.99
"""Share of probe points that must reach their source's list to settle ``nprobe``.

A probe point is a sampled vector moved by the threshold distance straight towards the
centroid of its nearest other list: the worst single direction for a close pair to straddle
two lists. Tuning on real pairs would need them to exist; ``missed_pair_rate_estimate``
measures real pairs afterwards.
"""

NPROBE_SAMPLE = 1_000
"""Vectors that become probe points when tuning ``nprobe``."""

MISSED_PAIR_SAMPLE = 2_000
"""Random vectors whose close pairs are found exactly to estimate what the approximate missed."""

EXACT_BLOCK = 8_192
"""Indexed vectors compared with the whole sample at once in the exact sample check."""


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
        if len(self.parent) == 0:
            return []
        # Pointer jumping: every node's parent becomes its grandparent until all point at
        # their root; O(N log depth) in NumPy instead of N calls of find().
        roots = self.parent.copy()
        while True:
            up = roots[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        order = np.argsort(roots, kind="stable")
        bounds = np.flatnonzero(np.diff(roots[order])) + 1
        out = [part.tolist() for part in np.split(order, bounds) if len(part) > 1]
        out.sort(key=lambda g: g[0])
        return out


LINKAGES = ("average", "single")
"""How close pairs become groups: see :func:`group_pairs`."""

ABSENT_PAIR_FACTOR = 2.0
"""Average linkage counts a pair the range search did not return at this many thresholds."""


def _average_linkage(
    members: np.ndarray, i: np.ndarray, j: np.ndarray, d: np.ndarray, threshold: float
) -> list[list[int]]:
    """Average-linkage agglomeration of one connected component over its close pairs.

    Two groups merge, closest first, while the mean squared distance over all their cross
    pairs stays below ``threshold``; a pair the range search did not return (it is at least
    ``threshold`` apart) counts as ``ABSENT_PAIR_FACTOR * threshold``. So a group needs most of
    its members close to each other, and a chain of near pairs does not become one group.

    Args:
        members: Positions in the component. Shape: (M,).
        i: First position of each close pair. Shape: (P,).
        j: Second position. Shape: (P,).
        d: Squared distance of each pair. Shape: (P,).
        threshold: Squared L2 distance.

    Returns:
        The groups of two or more positions, each sorted.
    """
    absent = ABSENT_PAIR_FACTOR * threshold
    size = {int(m): 1 for m in members}
    group = {int(m): [int(m)] for m in members}
    # links[a][b] = [sum of the found distances, pairs found] between groups a and b; the
    # two directions share one list so an update is seen from both sides.
    links: dict[int, dict[int, list[float]]] = {int(m): {} for m in members}
    for a, b, x in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
        links[a][b] = links[b][a] = [x, 1.0]

    def mean(a: int, b: int) -> float:
        total, found = links[a][b]
        pairs = size[a] * size[b]
        return (total + (pairs - found) * absent) / pairs

    heap = [(mean(a, b), a, b) for a in links for b in links[a] if a < b]
    heapq.heapify(heap)
    while heap:
        x, a, b = heapq.heappop(heap)
        if x >= threshold:
            break
        if a not in links or b not in links[a] or mean(a, b) != x:
            continue  # a stale entry: one side merged since it was pushed
        for other, link in links.pop(b).items():
            if other == a:
                continue
            mine = links[a].setdefault(other, [0.0, 0.0])
            mine[0] += link[0]
            mine[1] += link[1]
            del links[other][b]
            links[other][a] = mine
        del links[a][b]
        size[a] += size.pop(b)
        group[a] += group.pop(b)
        for other in links[a]:
            heapq.heappush(heap, (mean(a, other), min(a, other), max(a, other)))
    return [sorted(g) for g in group.values() if len(g) > 1]


def group_pairs(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    d: np.ndarray,
    threshold: float,
    linkage: str = "average",
) -> list[list[int]]:
    """Groups of near-duplicates from the close pairs.

    ``single``: connected components of the "closer than ``threshold``" graph; one pair is
    enough to join two groups, so chains of similar images (a series of plain skies, say)
    become one group. ``average`` (the default): each component is split by average linkage
    (:func:`_average_linkage`), so a group is a set of images close on average to each other.

    Args:
        n: Vectors.
        i: First position of each close pair, each pair once. Shape: (P,).
        j: Second position. Shape: (P,).
        d: Squared distance of each pair. Shape: (P,).
        threshold: Squared L2 distance the pairs were found within.
        linkage: ``average`` or ``single``.

    Returns:
        Groups of positions, each sorted, ordered by their first position.
    """
    if linkage not in LINKAGES:
        raise ImageIndexError(f"unknown linkage {linkage!r}; choose one of: {', '.join(LINKAGES)}")
    sets = UnionFind(n)
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        sets.union(a, b)
    components = sets.groups()
    if linkage == "single":
        return components
    component = np.full(n, -1, dtype=np.int64)
    for c, members in enumerate(components):
        component[members] = c
    order = np.argsort(component[i], kind="stable")
    i, j, d = i[order], j[order], d[order]
    bounds = np.searchsorted(component[i], np.arange(len(components) + 1))
    out: list[list[int]] = []
    for c, members in enumerate(components):
        part = slice(bounds[c], bounds[c + 1])
        out.extend(_average_linkage(np.asarray(members), i[part], j[part], d[part], threshold))
    out.sort(key=lambda g: g[0])
    return out


def close_pairs(
    index: Any,
    vectors: np.ndarray,
    threshold: float,
    *,
    pair_budget: int = PAIR_BUDGET,
    max_per_query: int | None = None,
    search_params: Any = None,
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
        max_per_query: Most results one query can return (an IVF returns at most the
            vectors of the lists it probes); None for N.
        search_params: FAISS search parameters (``faiss.SearchParametersIVF``), or None.

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
    per_query = n if max_per_query is None else max(1, min(n, max_per_query))
    batch = int(max(1, min(4096, pair_budget // per_query)))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        if search_params is None:
            lims, _, found = index.range_search(vectors[start:stop], radius)
        else:
            lims, _, found = index.range_search(vectors[start:stop], radius, params=search_params)
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
    vectors: np.ndarray, threshold: float, *, index: Any = None, linkage: str = "average"
) -> list[list[int]]:
    """Groups of vectors closer than ``threshold`` (:func:`group_pairs`), singletons left out.

    Args:
        vectors: Shape: (N, D), float32.
        threshold: Squared L2 distance, > 0.
        index: An approximate FAISS index over ``vectors`` to range-search, or None for an
            exact search (a flat index over the mean-centred vectors: distances do not change,
            and smaller norms mean smaller float32 rounding).
        linkage: ``average`` or ``single`` (connected components); see :func:`group_pairs`.

    Returns:
        Groups of positions, each sorted, ordered by their first position.

    Raises:
        ImageIndexError: When ``threshold`` is not a positive finite number.
    """
    if not np.isfinite(threshold) or threshold <= 0:
        raise ImageIndexError(f"the duplicate threshold must be a positive number, got {threshold}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if index is None and len(x):
        x = _centred(x)
        index = _flat_index(x)
    return _join_close_pairs(index, x, float(threshold), linkage=linkage)[0]


@dataclass
class DuplicateSearch:
    """Near-duplicate groups with how they were found and what the search may have missed.

    Attributes:
        groups: Groups of positions, each sorted, ordered by their first position.
        method: ``exact`` (all pairs) or ``approximate`` (IVF range search).
        pairs: Distinct close pairs found.
        params: Settings of the approximate search, e.g. ``{"nlist": 4000, "nprobe": 8}``.
        sample_vectors: Vectors whose close pairs were also found exactly (0 when exact).
        sample_pairs: Close pairs of those vectors, by exact search.
        sample_missed: Of those, pairs the approximate search did not return.
        seconds: Wall-clock time of the whole search, the sample check included.
    """

    groups: list[list[int]]
    method: str
    pairs: int
    params: dict[str, int] = field(default_factory=dict)
    sample_vectors: int = 0
    sample_pairs: int = 0
    sample_missed: int = 0
    seconds: float = 0.0

    @property
    def missed_pair_rate_estimate(self) -> float | None:
        """Share of close pairs the search missed, from the exact sample check.

        0.0 for an exact search; None when the sample held no close pair to check.
        """
        if self.method == "exact":
            return 0.0
        if self.sample_pairs == 0:
            return None
        return self.sample_missed / self.sample_pairs


def _pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """One int64 per pair ``(min, max)``. Shapes: (P,), (P,) -> (P,)."""
    return np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j).astype(np.int64)


def exact_pairs_of(vectors: np.ndarray, sample: np.ndarray, threshold: float) -> np.ndarray:
    """Every pair (s, j), s in ``sample``, j != s, strictly closer than ``threshold``.

    Blocks of ``EXACT_BLOCK`` vectors are compared with the whole sample through one matrix
    product; candidates within a slightly larger radius (float32 rounding of
    ``|x|^2 + |y|^2 - 2<x, y>``) are re-measured in float64.

    Args:
        vectors: Shape: (N, D), float32, preferably mean-centred (smaller rounding).
        sample: Positions of the sample. Shape: (S,).
        threshold: Squared L2 distance.

    Returns:
        Pair keys ``min * N + max``, sorted, unique. Shape: (P,).
    """
    n = len(vectors)
    q = vectors[sample]
    q_norms = np.einsum("ij,ij->i", q, q)
    radius = threshold + 1e-4 * float(np.einsum("ij,ij->i", vectors, vectors).max())
    keys = []
    for start in range(0, n, EXACT_BLOCK):
        block = vectors[start : start + EXACT_BLOCK]
        d = q_norms[:, None] + np.einsum("ij,ij->i", block, block)[None, :] - 2 * (q @ block.T)
        rows, cols = np.nonzero(d < radius)
        cols = cols + start
        s = sample[rows]
        keep = s != cols
        s, cols = s[keep], cols[keep]
        diff = vectors[s].astype(np.float64) - vectors[cols].astype(np.float64)
        close = np.einsum("ij,ij->i", diff, diff) < threshold
        keys.append(_pair_keys(s[close], cols[close], n))
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)


def find_duplicates(
    vectors: np.ndarray,
    threshold: float,
    *,
    method: str = "auto",
    index: Any = None,
    exact_max_items: int = DUPLICATES_EXACT_MAX_ITEMS,
    sample: int = MISSED_PAIR_SAMPLE,
    target_recall: float = DUPLICATES_TARGET_RECALL,
    seed: int = 0,
    linkage: str = "average",
) -> DuplicateSearch:
    """Near-duplicate groups, exact for small collections, approximate and measured above.

    Args:
        vectors: Shape: (N, D), float32.
        threshold: Squared L2 distance, > 0; pairs strictly closer are joined.
        method: ``exact`` (all pairs, O(N^2)), ``approximate`` (IVF range search, misses
            measured on a sample) or ``auto`` (exact up to ``exact_max_items`` vectors).
        index: An IVF-Flat FAISS index over ``vectors`` (in their order) to reuse for the
            approximate search instead of building one; any other kind is ignored, and so is
            this when exact. The IVF keeps its own ``nprobe``: the search passes its own.
        exact_max_items: Largest N ``auto`` searches exactly.
        sample: Vectors whose close pairs are found exactly to estimate the missed pairs.
        target_recall: See ``DUPLICATES_TARGET_RECALL``.
        seed: Seeds the IVF and the samples.
        linkage: How pairs become groups: ``average`` or ``single`` (see :func:`group_pairs`).

    Returns:
        The groups, the method, and for ``approximate`` the missed-pair estimate.

    Raises:
        ImageIndexError: For a threshold that is not a positive number or an unknown method.
    """
    if not np.isfinite(threshold) or threshold <= 0:
        raise ImageIndexError(f"the duplicate threshold must be a positive number, got {threshold}")
    if method not in DUPLICATE_METHODS:
        raise ImageIndexError(
            f"unknown duplicates method {method!r}; choose one of: {', '.join(DUPLICATE_METHODS)}"
        )
    t0 = time.perf_counter()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if method == "auto":
        method = "exact" if n <= exact_max_items else "approximate"
    if method == "exact":
        x = _centred(x)
        groups, pairs, _ = _join_close_pairs(_flat_index(x), x, threshold, linkage=linkage)
        return DuplicateSearch(
            groups=groups, method="exact", pairs=pairs, seconds=time.perf_counter() - t0
        )
    if index is not None and backends.index_type_of(index) != "ivf":
        # IVF-PQ ranges over approximate distances; HNSW's range search stops at its
        # candidate list and was measured missing pairs among 41 identical vectors.
        index = None
    if index is None:
        x = _centred(x)
        index = backends.ivf_flat(x, seed=seed)
    search_params, params = _ivf_search_params(index, x, threshold, target_recall, seed)
    rng = np.random.default_rng(seed + 1)
    picked = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    in_sample = np.zeros(n, dtype=bool)
    in_sample[picked] = True
    groups, pairs, found = _join_close_pairs(
        index,
        x,
        threshold,
        max_per_query=_max_per_query(index, n, params.get("nprobe", 0)),
        in_sample=in_sample,
        search_params=search_params,
        linkage=linkage,
    )
    expected = exact_pairs_of(x, picked, threshold)
    missed = int(np.count_nonzero(~np.isin(expected, found)))
    return DuplicateSearch(
        groups=groups,
        method="approximate",
        pairs=pairs,
        params=params,
        sample_vectors=len(picked),
        sample_pairs=len(expected),
        sample_missed=missed,
        seconds=time.perf_counter() - t0,
    )


def _centred(x: np.ndarray) -> np.ndarray:
    """Mean-centred copy: distances do not change, float32 rounding shrinks. Shape: (N, D)."""
    if not len(x):
        return x
    return np.ascontiguousarray(x - x.mean(axis=0, dtype=np.float64).astype(np.float32))


def _flat_index(x: np.ndarray) -> Any:
    """An exact FAISS index over ``x``. Shape: (N, D)."""
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index


def _ivf_of(index: Any) -> Any:
    """The IVF inside a FAISS index, or None."""
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _ivf_search_params(
    index: Any, x: np.ndarray, threshold: float, target: float, seed: int
) -> tuple[Any, dict[str, int]]:
    """Per-call search parameters with the cheapest ``nprobe`` reaching ``target``.

    See ``DUPLICATES_TARGET_RECALL`` for the probe points. Returns ``(None, {})`` for an
    index that is not an IVF.
    """
    import faiss

    ivf = _ivf_of(index)
    if ivf is None:
        return None, {}
    nlist = int(ivf.nlist)
    ladder = (*(p for p in DUPLICATES_NPROBE if p < nlist), nlist)
    rng = np.random.default_rng(seed + 2)
    base = x[np.sort(rng.choice(len(x), size=min(NPROBE_SAMPLE, len(x)), replace=False))]
    nprobe = ladder[0]
    if nlist > 1:
        _, nearest = ivf.quantizer.search(base, 2)
        centroids = ivf.quantizer.reconstruct_n(0, nlist)
        toward = centroids[nearest[:, 1]] - centroids[nearest[:, 0]]
        length = np.linalg.norm(toward, axis=1, keepdims=True)
        probes = base + toward / np.maximum(length, 1e-30) * np.float32(np.sqrt(threshold))
        _, lists = ivf.quantizer.search(np.ascontiguousarray(probes, dtype=np.float32), ladder[-1])
        for nprobe in ladder:
            if (lists[:, :nprobe] == nearest[:, :1]).any(axis=1).mean() >= target:
                break
    search_params: Any = faiss.SearchParametersIVF()
    search_params.nprobe = nprobe
    return search_params, {"nlist": nlist, "nprobe": nprobe}


def _max_per_query(index: Any, n: int, nprobe: int) -> int | None:
    """Most results one range query of an IVF index can return; None for other kinds."""
    ivf = _ivf_of(index)
    if ivf is None:
        return None
    largest = max(ivf.invlists.list_size(k) for k in range(ivf.nlist))
    return int(min(n, max(nprobe, 1) * largest))


def _join_close_pairs(
    index: Any,
    x: np.ndarray,
    threshold: float,
    *,
    max_per_query: int | None = None,
    in_sample: np.ndarray | None = None,
    search_params: Any = None,
    linkage: str = "average",
) -> tuple[list[list[int]], int, np.ndarray]:
    """Groups (:func:`group_pairs`) of the close pairs the index finds.

    Args:
        index: FAISS index over ``x``, in order.
        x: Shape: (N, D), float32.
        threshold: Squared L2 distance.
        max_per_query: See :func:`close_pairs`.
        in_sample: Marks the vectors whose pairs to return as keys. Shape: (N,), bool.
        search_params: FAISS search parameters for every range search, or None.
        linkage: See :func:`group_pairs`.

    Returns:
        The groups, the number of pairs found, and the keys ``min * N + max`` of the found
        pairs that touch the sample (empty without one). Shape of the keys: (P,).
    """
    n = len(x)
    # A pair whose two vectors fall in different batches can come from both: its key counts
    # it once (20 bytes per pair found with its distance, next to the groups' O(N)).
    every = [np.zeros(0, dtype=np.int64)]
    distances = [np.zeros(0, dtype=np.float64)]
    keys = [np.zeros(0, dtype=np.int64)]
    found = close_pairs(
        index, x, float(threshold), max_per_query=max_per_query, search_params=search_params
    )
    for i, j, d in found:
        every.append(_pair_keys(i, j, n))
        distances.append(d)
        if in_sample is not None:
            touch = in_sample[i] | in_sample[j]
            keys.append(_pair_keys(i[touch], j[touch], n))
    unique, first = np.unique(np.concatenate(every), return_index=True)
    d = np.concatenate(distances)[first]
    groups = group_pairs(n, unique // max(n, 1), unique % max(n, 1), d, threshold, linkage)
    return groups, len(unique), np.unique(np.concatenate(keys))


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


def duplicate_fraction(model_kwargs: Mapping[str, Any]) -> float:
    """The default threshold's share of the typical distance for a model built with
    ``model_kwargs``: ``PHOTO_DUPLICATE_FRACTION`` when it embeds a texture part (the auto
    recipe's photographs), else ``DEFAULT_DUPLICATE_FRACTION``."""
    texture = float(model_kwargs.get("texture_weight", 0) or 0)
    return PHOTO_DUPLICATE_FRACTION if texture > 0 else DEFAULT_DUPLICATE_FRACTION


def default_threshold(vectors: np.ndarray, fraction: float = DEFAULT_DUPLICATE_FRACTION) -> float:
    """``fraction`` of the median squared distance between random images.

    A scale-free default: embeddings of different models have very different magnitudes.
    Shape: (N, D) -> scalar.
    """
    return fraction * typical_distance(vectors)

"""The FAISS structures behind an image index: exact flat, HNSW, IVF and IVF-PQ, built and tuned.

This module knows no images and no torch: it turns float32 vectors ``(N, D)`` into a FAISS
index for squared Euclidean distance and, for the approximate kinds, picks the search
parameter (HNSW ``efSearch``, IVF ``nprobe``) by measuring recall@10 against exact search
on a sample of the indexed vectors.

Why these settings: ``benchmarks/bench_search.py`` measured flat, HNSW and IVF on 60,000
CIFAR-10 embeddings and on 1,000,000 clustered 128-d vectors (``benchmarks/README.md``).
Exact search stays interactive (a few milliseconds per query on one core) up to about
``EXACT_MAX_ITEMS`` vectors, so ``auto`` keeps results exact up to there. Above it ``auto``
builds IVF: on 60,000 CIFAR-10 embeddings IVF and HNSW tie (recall@10 0.99 at ~0.05 ms per
query), while at 1,000,000 vectors IVF reached recall@10 0.976 at 90x the exact index's
single-query speed, built in half HNSW's time and needs only the vectors plus 8 bytes of id
each, where HNSW (M=32) needed efSearch=128 for 0.963 at 36x, and 256 more bytes per vector.

Above ``COMPRESSED_MIN_ITEMS`` vectors ``auto`` builds IVF-PQ, for memory: flat and IVF keep
every vector, ``4 * D`` bytes (512 at D = 128: 5.1 GB for ten million), where IVF-PQ keeps
``M`` one-byte codes (``M = D / 4`` sub-quantizers of 4 dimensions, 256 centroids each) plus
an 8-byte id: 40 bytes at D = 128, 13x less. Product quantization alone ranks neighbours by
approximate distances, so the index asks for ``k_factor * k`` candidates and re-ranks them with
exact distances from the stored vectors (``search_index``; an index folder keeps them in
``embeddings.npy`` anyway); ``k_factor`` and ``nprobe`` are tuned together to
``TARGET_RECALL``. FAISS's own ``IndexRefineFlat`` would do the same but store the vectors a
second time inside the index, 4 * D + M + 8 bytes per vector, more than IVF itself. IVF-PQ
needs enough vectors to train (``IVFPQ_MIN_ITEMS``: 39 per PQ centroid, as FAISS's k-means
asks), far below the threshold, so ``auto`` never picks it for a small collection. The
threshold is where IVF's vectors reach about 2.5 GB at D = 128; ``benchmarks/bench_scale_index.py``
measures recall@10, bytes per vector and latency of flat, IVF and IVF-PQ at 1,000,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentsearch.index.errors import ImageIndexError

METRIC = "l2"
"""The distance every index uses: squared Euclidean."""

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
"""Accepted ``index_type`` values; ``auto`` resolves to flat, ``APPROXIMATE_INDEX`` or
``COMPRESSED_INDEX`` by size."""

EXACT_MAX_ITEMS = 200_000
"""``auto`` builds an exact flat index up to this many items, an approximate one above."""

APPROXIMATE_INDEX = "ivf"
"""What ``auto`` builds above ``EXACT_MAX_ITEMS`` (chosen by measurement, see module doc)."""

COMPRESSED_MIN_ITEMS = 5_000_000
"""``auto`` builds ``COMPRESSED_INDEX`` above this many items (memory, see module doc)."""

COMPRESSED_INDEX = "ivfpq"
"""What ``auto`` builds above ``COMPRESSED_MIN_ITEMS``."""

TARGET_RECALL = 0.97
"""Build-time tuning picks the cheapest search setting reaching this sample recall@10.

Above the 0.95 the project promises, because self-queries from the index are slightly easier
than unseen images.
"""

RECALL_K = 10
"""Neighbours compared when measuring recall."""

RECALL_SAMPLE = 1_000
"""Indexed vectors used as queries when measuring recall at build time."""

HNSW_M = 32
"""HNSW graph degree: links per node on the upper layers, twice that on the bottom one."""

HNSW_EF_CONSTRUCTION = 64
"""HNSW candidate-list size while inserting: larger builds slower, searches better."""

HNSW_EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""``efSearch`` values tried at build time, cheapest first."""

IVF_LISTS_PER_SQRT_N = 4
"""IVF builds about ``4 * sqrt(N)`` inverted lists (FAISS's usual rule of thumb)."""

IVF_TRAIN_POINTS_PER_LIST = 64
"""k-means trains on this many sampled vectors per list (FAISS wants at least 39)."""

IVF_KMEANS_ITERATIONS = 10
"""k-means iterations for the IVF centroids; FAISS's 25 barely helps search, doubles build."""

IVF_NPROBE = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)
"""``nprobe`` values tried at build time, cheapest first."""

PQ_DIMS_PER_CODE = 4
"""IVF-PQ sub-quantizer width: ``M = D / 4`` one-byte codes per vector (the largest divisor
of D not above D / 4 when 4 does not divide D)."""

PQ_BITS = 8
"""Bits per PQ code: 256 centroids per sub-quantizer."""

IVFPQ_MIN_ITEMS = 39 * (1 << PQ_BITS)
"""Fewest vectors IVF-PQ trains on: 39 per PQ centroid, FAISS's k-means minimum."""

IVFPQ_K_FACTOR = (1, 2, 4, 8, 16)
"""Re-ranking depths tried at build time: ``k_factor * k`` candidates re-ranked exactly."""

IVFPQ_TRAIN_POINTS = 65_536
"""Most vectors the IVF-PQ codebooks train on (FAISS caps PQ training at 256 per centroid)."""


@dataclass
class BuiltIndex:
    """A FAISS index with what was chosen and measured while building it.

    Attributes:
        index: The FAISS index over the vectors, in their order.
        index_type: ``flat``, ``hnsw``, ``ivf`` or ``ivfpq``.
        params: Build and search settings, e.g. ``{"M": 32, "efSearch": 64}``; for IVF-PQ
            ``k_factor`` is the re-ranking depth ``search_index`` applies.
        recall_at_10: Sample recall@10 against exact search; None for the exact index.
    """

    index: Any
    index_type: str
    params: dict[str, int] = field(default_factory=dict)
    recall_at_10: float | None = None


def check_index_type(index_type: str) -> None:
    """Refuses an ``index_type`` that is not one of ``INDEX_TYPES``.

    Raises:
        ImageIndexError: Naming the accepted ones.
    """
    if index_type not in INDEX_TYPES:
        raise ImageIndexError(
            f"unknown index type {index_type!r}; choose one of: {', '.join(INDEX_TYPES)}"
        )


def resolve_index_type(
    index_type: str,
    n: int,
    *,
    exact_max_items: int | None = None,
    compressed_min_items: int | None = None,
) -> str:
    """The concrete kind (``flat``, ``hnsw``, ``ivf``, ``ivfpq``) ``index_type`` means for ``n``.

    Args:
        index_type: One of ``INDEX_TYPES``.
        n: Number of items.
        exact_max_items: ``auto``'s exact limit; None for ``EXACT_MAX_ITEMS``.
        compressed_min_items: ``auto``'s IVF-PQ threshold; None for ``COMPRESSED_MIN_ITEMS``.

    Raises:
        ImageIndexError: For an unknown ``index_type``.
    """
    check_index_type(index_type)
    if index_type == "auto":
        exact = EXACT_MAX_ITEMS if exact_max_items is None else exact_max_items
        compressed = COMPRESSED_MIN_ITEMS if compressed_min_items is None else compressed_min_items
        if n <= exact:
            return "flat"
        # Never below what IVF-PQ can train on, whatever threshold is passed.
        return COMPRESSED_INDEX if n > max(compressed, IVFPQ_MIN_ITEMS) else APPROXIMATE_INDEX
    return index_type


def as_vectors(vectors: np.ndarray, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """Checks vectors and returns them as a C-contiguous float32 array.

    Args:
        vectors: Shape: (N, D), any real dtype.
        dim: Required D, or None for any.
        name: How to call them in messages.

    Returns:
        Shape: (N, D), float32.

    Raises:
        ImageIndexError: For another shape or dimension, or NaN / infinite values.
    """
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise ImageIndexError(f"{name} must have shape (N, D), got {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise ImageIndexError(f"{name} must be numeric, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ImageIndexError(f"{name} have dimension {arr.shape[1]}, the index has {dim}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    step = max(1, (1 << 24) // max(1, out.shape[1]))  # a 16 MB mask at a time, not N x D
    if not all(np.isfinite(out[i : i + step]).all() for i in range(0, len(out), step)):
        raise ImageIndexError(f"{name} contain NaN or infinite values")
    return out


def exact_neighbors(
    queries: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by squared L2, without building an index.

    Shapes: (Q, D), (N, D) -> distances (Q, k), positions (Q, k).
    """
    import faiss

    distances, positions = faiss.knn(queries, vectors, k)
    return distances, positions.astype(np.int64)


def recall_at_k(
    queries: np.ndarray,
    vectors: np.ndarray,
    approx_positions: np.ndarray,
    exact_positions: np.ndarray,
) -> float:
    """Share of returned neighbours that are true k nearest neighbours, averaged over queries.

    A returned item counts when it is no farther than the farthest of the exact k, so items
    at the same distance (duplicate images) are interchangeable rather than misses. Distances
    are recomputed directly in float64: FAISS's batched exact search uses
    ``|x|^2 + |y|^2 - 2<x, y>`` in float32, whose rounding (large for embeddings far from the
    origin) would otherwise turn equal distances into misses.

    Args:
        queries: Shape: (Q, D).
        vectors: The indexed vectors. Shape: (N, D).
        approx_positions: What the index returned, -1 for nothing. Shape: (Q, k).
        exact_positions: The exact k nearest neighbours. Shape: (Q, k).
    """
    q = np.asarray(queries, dtype=np.float64)[:, None, :]

    def distances(positions: np.ndarray) -> np.ndarray:
        diff = np.asarray(vectors)[np.maximum(positions, 0)].astype(np.float64) - q
        return np.einsum("qkd,qkd->qk", diff, diff)

    radius = distances(exact_positions).max(axis=1, keepdims=True)
    found = distances(approx_positions)
    hit = (approx_positions >= 0) & (found <= radius * (1 + 1e-9) + 1e-12)
    return float(hit.mean())


def index_type_of(index: Any) -> str | None:
    """``flat``, ``hnsw``, ``ivf`` or ``ivfpq``: what a FAISS index really is; None otherwise.

    Only squared-L2 indexes count; an inner-product one is None too. IVF-PQ behind an OPQ
    rotation (an ``IndexPreTransform``) is ``ivfpq``.
    """
    import faiss

    real = faiss.downcast_index(index)
    if getattr(real, "metric_type", None) != faiss.METRIC_L2:
        return None
    if isinstance(real, faiss.IndexPreTransform):
        inner = faiss.downcast_index(real.index)
        return "ivfpq" if isinstance(inner, faiss.IndexIVFPQ) else None
    if isinstance(real, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(real, faiss.IndexFlat):
        return "flat"
    if isinstance(real, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(real, faiss.IndexIVF):
        return "ivf"
    return None


def set_search_params(index: Any, index_type: str, params: dict[str, int]) -> None:
    """Applies the stored search setting (``efSearch`` or ``nprobe``) to a loaded index.

    IVF-PQ's ``k_factor`` is not a property of the FAISS index: ``search_index`` reads it.
    """
    import faiss

    if index_type == "hnsw" and "efSearch" in params:
        hnsw: Any = faiss.downcast_index(index)
        hnsw.hnsw.efSearch = int(params["efSearch"])
    elif index_type in ("ivf", "ivfpq") and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def _tune(
    index: Any,
    index_type: str,
    name: str,
    ladder: tuple[int, ...],
    vectors: np.ndarray,
    target_recall: float,
    seed: int,
) -> tuple[int, float]:
    """Cheapest ``name`` value of ``ladder`` whose sample recall@10 reaches the target."""
    n = len(vectors)
    k = min(RECALL_K, n)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(RECALL_SAMPLE, n), replace=False))
    queries = vectors[sample]
    _, exact = exact_neighbors(queries, vectors, k)
    best = (ladder[-1], 0.0)
    for value in ladder:
        set_search_params(index, index_type, {name: value})
        _, found = index.search(queries, k)
        recall = recall_at_k(queries, vectors, found, exact)
        best = (value, recall)
        if recall >= target_recall:
            break
    set_search_params(index, index_type, {name: best[0]})
    return best


def pq_subquantizers(d: int) -> int:
    """IVF-PQ's ``M`` for dimension ``d``: the largest divisor of ``d`` up to ``d / 4``."""
    top = max(1, d // PQ_DIMS_PER_CODE)
    return next(m for m in range(top, 0, -1) if d % m == 0)


def search_index(
    built: BuiltIndex, queries: np.ndarray, k: int, *, vectors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Searches a built index; IVF-PQ candidates are re-ranked with exact distances.

    For ``ivfpq`` with ``k_factor`` above 1 and the indexed ``vectors`` given, the index is
    asked for ``k_factor * k`` candidates, ranked by product-quantized distances, and the
    ``k`` nearest by exact squared L2 (from ``vectors``, which may be memory-mapped: only the
    candidates' rows are read) are returned. Every other kind is searched as it is.

    Args:
        built: The index and its settings.
        queries: Shape: (Q, D), float32.
        k: Neighbours per query, 1 <= k <= N.
        vectors: The indexed vectors, in index order. Shape: (N, D).

    Returns:
        ``(distances, positions)``, nearest first; missing slots hold position -1.
        Shapes: (Q, k), (Q, k).
    """
    k_factor = int(built.params.get("k_factor", 1))
    if built.index_type != "ivfpq" or k_factor <= 1 or vectors is None:
        return built.index.search(queries, k)
    depth = min(int(built.index.ntotal), k * k_factor)
    _, candidates = built.index.search(queries, depth)
    candidates = candidates.astype(np.int64)
    out_d = np.empty((len(queries), k), dtype=np.float32)
    out_i = np.empty((len(queries), k), dtype=np.int64)
    step = max(1, (1 << 24) // max(1, depth * queries.shape[1]))  # ~64 MB of gathered rows
    for start in range(0, len(queries), step):
        cand = candidates[start : start + step]
        rows = np.asarray(vectors[np.maximum(cand, 0).ravel()], dtype=np.float32)
        diff = rows.reshape(*cand.shape, -1) - queries[start : start + step, None, :]
        dist = np.einsum("qkd,qkd->qk", diff, diff)
        dist[cand < 0] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        out_d[start : start + step] = np.take_along_axis(dist, order, axis=1)
        out_i[start : start + step] = np.where(
            np.isfinite(out_d[start : start + step]), np.take_along_axis(cand, order, axis=1), -1
        )
    return out_d, out_i


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: about ``4 * sqrt(n)``, at least 39 vectors each."""
    return int(max(1, min(IVF_LISTS_PER_SQRT_N * np.sqrt(n), n // 39)))


def _train_ivf(x: np.ndarray, factory: str, nlist: int, n_train: int, seed: int) -> Any:
    """An IVF index from ``factory``, trained on ``n_train`` sampled rows of ``x``, filled."""
    import faiss

    n, d = x.shape
    index = faiss.index_factory(d, factory, faiss.METRIC_L2)
    ivf: Any = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    ivf.cp.niter = IVF_KMEANS_ITERATIONS
    ivf.cp.min_points_per_centroid = min(39, n // nlist)  # tiny sets: no warning on stderr
    pq = getattr(faiss.downcast_index(ivf), "pq", None)
    if pq is not None:
        pq.cp.seed = seed
    rng = np.random.default_rng(seed)
    n_train = min(n, n_train)
    train = x if n_train == n else x[np.sort(rng.choice(n, size=n_train, replace=False))]
    index.train(train)
    del train  # the sample is a copy (39 vectors per list: ~80 MB at 1M): gone before the add
    add_presized(index, x)
    return index


def add_presized(index: Any, x: np.ndarray) -> None:
    """Adds ``x`` to an IVF index whose inverted lists are first sized to hold it exactly.

    FAISS grows each list by doubling its capacity as vectors arrive, so a plain ``add`` of
    1M 128-d vectors into 4,000 lists took 728 bytes of memory per vector (measured) for 520
    of codes and ids; sized first, 497. The vectors are assigned to their lists once, and the
    assignment is reused for the add. An index whose vectors are transformed first (OPQ) is
    added to as usual: sizing it would need a transformed copy of ``x``.

    Args:
        index: A trained FAISS IVF index (or one wrapping it).
        x: Shape: (N, D), C-contiguous float32.
    """
    import faiss

    ivf: Any = faiss.extract_index_ivf(index)
    lists: Any = faiss.downcast_InvertedLists(ivf.invlists)
    if ivf is not index or not isinstance(lists, faiss.ArrayInvertedLists) or not len(x):
        index.add(x)
        return
    assign = np.ascontiguousarray(ivf.quantizer.assign(x, 1).ravel(), dtype=np.int64)
    counts = np.bincount(assign, minlength=ivf.nlist)
    for list_no in np.flatnonzero(counts).tolist():
        old = lists.list_size(list_no)
        lists.resize(list_no, old + int(counts[list_no]))  # reserves the capacity...
        lists.resize(list_no, old)  # ...which shrinking the size keeps
    ivf.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(assign))


def ivf_flat(vectors: np.ndarray, *, seed: int = 0) -> Any:
    """An untuned IVF-Flat index (``ivf_lists(N)`` lists, nprobe 1) over float32 vectors.

    Shape: (N, D), N >= 1.
    """
    nlist = ivf_lists(len(vectors))
    return _train_ivf(vectors, f"IVF{nlist},Flat", nlist, IVF_TRAIN_POINTS_PER_LIST * nlist, seed)


def _tune_ivfpq(
    built: BuiltIndex, vectors: np.ndarray, target_recall: float, seed: int
) -> tuple[int, int, float]:
    """Cheapest ``nprobe``, then ``k_factor``, whose sample recall@10 reaches the target.

    ``nprobe`` decides which vectors can be found at all, ``k_factor`` how many of them the
    exact re-ranking sees; ``nprobe`` is chosen with the deepest re-ranking, then the
    shallowest re-ranking that keeps the target at that ``nprobe``.
    """
    n = len(vectors)
    k = min(RECALL_K, n)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(RECALL_SAMPLE, n), replace=False))
    queries = vectors[sample]
    _, exact = exact_neighbors(queries, vectors, k)
    nlist = built.params["nlist"]

    def recall(nprobe: int, k_factor: int) -> float:
        set_search_params(built.index, "ivfpq", {"nprobe": nprobe})
        built.params.update(nprobe=nprobe, k_factor=k_factor)
        _, found = search_index(built, queries, k, vectors=vectors)
        return recall_at_k(queries, vectors, found, exact)

    deepest = IVFPQ_K_FACTOR[-1]
    nprobe, best = nlist, 0.0
    for value in (*(p for p in IVF_NPROBE if p < nlist), nlist):
        nprobe, best = value, recall(value, deepest)
        if best >= target_recall:
            break
    k_factor = deepest
    for value in IVFPQ_K_FACTOR[:-1]:
        r = recall(nprobe, value)
        if r >= min(target_recall, best):
            k_factor, best = value, r
            break
    set_search_params(built.index, "ivfpq", {"nprobe": nprobe})
    built.params.update(nprobe=nprobe, k_factor=k_factor)
    return nprobe, k_factor, best


def build_index(
    vectors: np.ndarray,
    index_type: str = "auto",
    *,
    target_recall: float = TARGET_RECALL,
    hnsw_m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    opq: bool = False,
    seed: int = 0,
) -> BuiltIndex:
    """Builds the FAISS index ``index_type`` asks for over ``vectors``, tuned for recall.

    Args:
        vectors: Shape: (N, D), float32, N >= 1.
        index_type: One of ``INDEX_TYPES``.
        target_recall: Sample recall@10 the approximate kinds are tuned to reach.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW insertion candidate-list size.
        opq: IVF-PQ only: rotate the vectors with a trained OPQ matrix before quantizing.
        seed: Seeds the recall sample and the IVF training sample.

    Returns:
        The index with its settings and, for approximate kinds, the measured recall@10.

    Raises:
        ImageIndexError: For an unknown ``index_type``, no vectors, bad values, or IVF-PQ
            over fewer than ``IVFPQ_MIN_ITEMS`` vectors.
    """
    import faiss

    x = as_vectors(vectors)
    n, d = x.shape
    if n == 0:
        raise ImageIndexError("nothing to index: no vectors")
    if not 0.0 < target_recall <= 1.0:
        raise ImageIndexError(f"target_recall must be in (0, 1], got {target_recall}")
    kind = resolve_index_type(index_type, n)
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
        index.add(x)
        return BuiltIndex(index=index, index_type="flat")
    if kind == "hnsw":
        if hnsw_m < 2 or ef_construction < 1:
            raise ImageIndexError(f"bad HNSW settings M={hnsw_m}, efConstruction={ef_construction}")
        index = faiss.IndexHNSWFlat(d, hnsw_m)
        index.hnsw.efConstruction = ef_construction
        index.add(x)
        ef, recall = _tune(index, "hnsw", "efSearch", HNSW_EF_SEARCH, x, target_recall, seed)
        params = {"M": hnsw_m, "efConstruction": ef_construction, "efSearch": ef}
        return BuiltIndex(index=index, index_type="hnsw", params=params, recall_at_10=recall)
    # IVF: at least 39 training vectors per list, as FAISS's k-means asks.
    nlist = ivf_lists(n)
    if kind == "ivfpq":
        if n < IVFPQ_MIN_ITEMS:
            raise ImageIndexError(
                f"IVF-PQ needs at least {IVFPQ_MIN_ITEMS:,} vectors to train its codebooks, "
                f"got {n:,}: use index type 'ivf' (or 'auto') for a collection this small"
            )
        m = pq_subquantizers(d)
        rotate = f"OPQ{m}_{d}," if opq else ""
        index = _train_ivf(
            x,
            f"{rotate}IVF{nlist},PQ{m}x{PQ_BITS}",
            nlist,
            max(IVF_TRAIN_POINTS_PER_LIST * nlist, IVFPQ_TRAIN_POINTS),
            seed,
        )
        params = {"nlist": nlist, "M": m, "nbits": PQ_BITS, "opq": int(opq)}
        built = BuiltIndex(index=index, index_type="ivfpq", params=params)
        _, _, built.recall_at_10 = _tune_ivfpq(built, x, target_recall, seed)
        return built
    index = _train_ivf(x, f"IVF{nlist},Flat", nlist, IVF_TRAIN_POINTS_PER_LIST * nlist, seed)
    ladder = (*(p for p in IVF_NPROBE if p < nlist), nlist)
    nprobe, recall = _tune(index, "ivf", "nprobe", ladder, x, target_recall, seed)
    params = {"nlist": nlist, "nprobe": nprobe}
    return BuiltIndex(index=index, index_type="ivf", params=params, recall_at_10=recall)


def index_bytes(index: Any) -> int:
    """Size of the index when serialised: the vectors (or IVF-PQ's codes) plus the graph or lists.

    IVF-PQ's re-ranking reads the stored vectors, which this does not count.
    """
    import faiss

    return int(faiss.serialize_index(index).nbytes)

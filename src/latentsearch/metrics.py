"""Evaluation metrics over NumPy arrays: clustering, retrieval and the raw-pixel baseline.

This module is the "numbers" layer of the package: it knows nothing about torch or models and
takes plain arrays (float embeddings ``(N, D)`` and integer labels ``(N,)``). The label ``-1``
means "unknown" everywhere: such items are left out of the clustering scores and of the query
set, and as database items they are never relevant.

Retrieval scores follow pytorch-metric-learning's ``AccuracyCalculator`` (Musgrave et al.,
"A Metric Learning Reality Check", ECCV 2020), including MAP@R and R-precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
    rand_score,
)
from sklearn.metrics.cluster import contingency_matrix

from latentsearch.errors import LatentsearchError

__all__ = [
    "CLUSTERING_METRICS",
    "METRICS",
    "RETRIEVAL_METRICS",
    "FaissKNN",
    "KNNFunction",
    "Metric",
    "MetricInfo",
    "RetrievalResults",
    "clustering_accuracy",
    "clustering_scores",
    "kmeans_scores",
    "nearest_neighbors",
    "pixel_baseline",
    "retrieval_results",
    "retrieval_scores",
]

Metric = Literal["l2", "cosine"]
"""Distance for the exact search: squared Euclidean (``"l2"``) or ``1 - cosine similarity``."""

KNNFunction = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
"""``knn(query_chunk, database, n) -> indices`` of shape ``(Q, n)``, nearest first."""

_METRICS = ("l2", "cosine")


@dataclass(frozen=True)
class MetricInfo:
    """One score this module computes.

    Attributes:
        key: Its key in the dicts the scoring functions return.
        label: A short name for tables.
        description: What it measures, in a line.
    """

    key: str
    label: str
    description: str


CLUSTERING_METRICS = (
    MetricInfo("nmi", "NMI", "normalised mutual information between clusters and classes"),
    MetricInfo("ri", "Rand index", "share of image pairs on which clusters and classes agree"),
    MetricInfo("ari", "ARI", "Rand index corrected for chance (0: random, 1: perfect)"),
    MetricInfo("ami", "AMI", "mutual information corrected for chance"),
    MetricInfo("acc", "accuracy", "share of images in the cluster matched to their class"),
)
"""What :func:`clustering_scores` returns, in the order tables show it."""

RETRIEVAL_METRICS = (
    MetricInfo("precision_at_1", "precision@1", "the nearest database image has the query's class"),
    MetricInfo("precision_at_10", "precision@10", "share of the 10 nearest with the query's class"),
    MetricInfo("map_at_r", "MAP@R", "average precision over the first R results (R: class size)"),
    MetricInfo("r_precision", "R-precision", "share of the first R results with the query's class"),
)
"""What :func:`retrieval_scores` returns at its default ``k``, in the order tables show it."""

METRICS: tuple[str, ...] = tuple(m.key for m in CLUSTERING_METRICS + RETRIEVAL_METRICS)
"""The key of every score of one representation: clustering's, then retrieval's."""


# --------------------------------------------------------------------------- input checks


def _labels(name: str, labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        raise ValueError(
            f"{name} must hold integer labels (use -1 for unknown), got dtype {arr.dtype}; "
            "convert with .astype(np.int64)"
        )
    return arr.astype(np.int64, copy=False)


def _embeddings(name: str, x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, D), got shape {arr.shape}")
    if arr.dtype.kind not in "iufb":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero-dimensional rows (shape {arr.shape})")
    # float32 stays float32 (what the models and FAISS produce); anything else is computed in
    # float64 so integer or float64 inputs lose no precision.
    dtype = np.float32 if arr.dtype == np.float32 else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {desc} items; they must describe the same items")


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(_METRICS)}")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------- clustering


def clustering_accuracy(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Clustering accuracy under the best one-to-one mapping of clusters to classes.

    The mapping maximises the number of matched items (Hungarian algorithm on the contingency
    matrix), so it also works when the numbers of clusters and classes differ: items in
    clusters left unmatched count as errors. No ``-1`` filtering happens here; use
    :func:`clustering_scores` for that.

    Args:
        labels_true: Ground-truth classes. Shape: (N,).
        labels_pred: Cluster assignments. Shape: (N,).

    Returns:
        Fraction of items whose cluster maps to their class, in [0, 1].
    """
    table = contingency_matrix(labels_true, labels_pred)  # (n_classes, n_clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels_true))


def clustering_scores(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """External clustering scores of a partition against ground-truth classes.

    Items whose true label is ``-1`` (unknown) are ignored.

    Args:
        labels_true: Ground-truth classes, ``-1`` for unknown. Shape: (N,).
        labels_pred: Cluster assignments. Shape: (N,).

    Returns:
        ``nmi`` (normalised mutual information, arithmetic mean), ``ri`` (unadjusted Rand
        index), ``ari`` (adjusted Rand index), ``ami`` (adjusted mutual information) and
        ``acc`` (see :func:`clustering_accuracy`).

    Raises:
        ValueError: If the arrays are not 1-D integer arrays of the same length or no item is
            labelled.
    """
    true = _labels("labels_true", labels_true)
    pred = _labels("labels_pred", labels_pred)
    _same_length(labels_true=true, labels_pred=pred)
    known = true != -1
    if not known.any():
        raise LatentsearchError("no item is labelled: every entry of labels_true is -1 (unknown)")
    true, pred = true[known], pred[known]
    return {
        "nmi": float(normalized_mutual_info_score(true, pred)),
        "ri": float(rand_score(true, pred)),
        "ari": float(adjusted_rand_score(true, pred)),
        "ami": float(adjusted_mutual_info_score(true, pred)),
        "acc": clustering_accuracy(true, pred),
    }


def kmeans_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_clusters: int | None = None,
    seed: int = 0,
    n_init: int = 10,
) -> tuple[dict[str, float], np.ndarray]:
    """Cluster the labelled embeddings with k-means and score the partition.

    Args:
        embeddings: Representations. Shape: (N, D).
        labels: Ground-truth classes, ``-1`` for unknown (those items are not clustered).
            Shape: (N,).
        n_clusters: Number of clusters; defaults to the number of distinct labels ``>= 0``.
        seed: ``random_state`` of :class:`sklearn.cluster.KMeans`.
        n_init: Number of k-means restarts; 10 reproduces the old scikit-learn default.

    Returns:
        ``(scores, assignments)``: the :func:`clustering_scores` of the partition, and the
        cluster of each labelled item in input order. Shape of assignments: (M,), M = number of
        items whose label is not ``-1``.

    Raises:
        ValueError: On malformed input, when no item is labelled, or when ``n_clusters`` is
            not between 1 and the number of labelled items.
    """
    x = _embeddings("embeddings", embeddings)
    y = _labels("labels", labels)
    _same_length(embeddings=x, labels=y)
    _check_positive("n_init", n_init)
    known = y != -1
    if not known.any():
        raise LatentsearchError("no item is labelled: every entry of labels is -1 (unknown)")
    x, y = x[known].astype(np.float32, copy=False), y[known]
    if n_clusters is None:
        n_clusters = len(np.unique(y))
    _check_positive("n_clusters", n_clusters)
    if n_clusters > len(y):
        raise LatentsearchError(
            f"n_clusters={n_clusters} exceeds the {len(y)} labelled items; lower n_clusters"
        )
    assignments = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init).fit_predict(x)
    return clustering_scores(y, assignments), assignments


# --------------------------------------------------------------------------- exact search


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector has no direction; leaving it at zero gives it similarity 0 to everything.
    return x / np.maximum(norms, np.finfo(x.dtype).tiny)


def _distances(
    query: np.ndarray, database: np.ndarray, db_sq_norms: np.ndarray | None
) -> np.ndarray:
    """Squared L2 (when ``db_sq_norms`` is given) or cosine distance. Shape: (Q, N)."""
    d = query @ database.T
    if db_sq_norms is None:  # rows are unit vectors: cosine distance = 1 - <q, x>
        np.subtract(1, d, out=d)
    else:  # |q - x|^2 = |q|^2 - 2 <q, x> + |x|^2, clipped at 0 against rounding
        d *= -2
        d += np.einsum("ij,ij->i", query, query)[:, None]
        d += db_sq_norms[None, :]
    np.maximum(d, 0, out=d)
    return d


def _smallest(d: np.ndarray, n: int, block: int = 128) -> np.ndarray:
    """Indices of the ``n`` smallest entries of each row, ordered by (value, index).

    Rows are handled ``block`` at a time because argpartition returns a full int64 index
    array (8 bytes per distance); this keeps that temporary small.

    Shape: (Q, N) -> (Q, n).
    """
    if n >= d.shape[1]:
        return np.argsort(d, axis=1, kind="stable")[:, :n]
    out = np.empty((d.shape[0], n), dtype=np.int64)
    for start in range(0, d.shape[0], block):
        rows = d[start : start + block]
        cand = np.argpartition(rows, n - 1, axis=1)[:, :n]
        cand.sort(axis=1)  # index order first, so the stable sort below breaks ties by index
        order = np.argsort(np.take_along_axis(rows, cand, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(cand, order, axis=1)
        # argpartition picks arbitrary members of a tie at the n-th value; where a tie
        # straddles the cut, fall back to a full stable sort of that row.
        kth = np.take_along_axis(rows, idx[:, -1:], axis=1)
        straddle = np.flatnonzero((rows <= kth).sum(axis=1) > n)
        if straddle.size:
            idx[straddle] = np.argsort(rows[straddle], axis=1, kind="stable")[:, :n]
        out[start : start + block] = idx
    return out


class _ExactSearch:
    """Chunk-wise exact search over one database, prepared once."""

    def __init__(self, database: np.ndarray, metric: str) -> None:
        self.metric = metric
        if metric == "cosine":
            self.database = _normalize(database)
            self.sq_norms: np.ndarray | None = None
        else:
            self.database = database
            self.sq_norms = np.einsum("ij,ij->i", database, database)

    def prepare_query(self, query: np.ndarray) -> np.ndarray:
        return _normalize(query) if self.metric == "cosine" else query

    def chunk(
        self, query: np.ndarray, n: int, self_index: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices of the ``n`` nearest items. Shapes: (Q, n), (Q, n)."""
        d = _distances(query, self.database, self.sq_norms)
        if self_index is not None:
            d[np.arange(len(query)), self_index] = np.inf
        idx = _smallest(d, n)
        return np.take_along_axis(d, idx, axis=1), idx


def nearest_neighbors(
    query: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    metric: Metric = "l2",
    exclude_self: bool = False,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest-neighbour search in NumPy, in chunks of queries.

    Memory stays at about ``chunk_size x N`` distances. Ties are broken by database index.

    Args:
        query: Query vectors. Shape: (Q, D).
        database: Database vectors. Shape: (N, D).
        k: Number of neighbours, at most N (N - 1 with ``exclude_self``).
        metric: ``"l2"`` (squared Euclidean distance) or ``"cosine"`` (1 - cosine similarity).
        exclude_self: Query ``i`` is database item ``i`` (same set, Q == N) and is left out
            of its own neighbours.
        chunk_size: Number of queries per distance block.

    Returns:
        ``(distances, indices)``, nearest first; distances are float32 for float32 input,
        float64 otherwise. Shapes: (Q, k), (Q, k).

    Raises:
        ValueError: On malformed input, a dimension mismatch, an unknown metric, or a ``k``
            larger than the number of candidates.
    """
    q = _embeddings("query", query)
    db = _embeddings("database", database)
    _check_metric(metric)
    _check_positive("k", k)
    _check_positive("chunk_size", chunk_size)
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query has dimension {q.shape[1]} but database has dimension {db.shape[1]}"
        )
    if exclude_self and len(q) != len(db):
        raise ValueError(
            f"exclude_self needs query and database to be the same set, got {len(q)} queries "
            f"and {len(db)} database items"
        )
    available = len(db) - int(exclude_self)
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} database items available per query")
    dtype = np.result_type(q, db)
    q, db = q.astype(dtype, copy=False), db.astype(dtype, copy=False)
    search = _ExactSearch(db, metric)
    distances = np.empty((len(q), k), dtype=dtype)
    indices = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), chunk_size):
        stop = min(start + chunk_size, len(q))
        self_index = np.arange(start, stop) if exclude_self else None
        d, i = search.chunk(search.prepare_query(q[start:stop]), k, self_index)
        distances[start:stop], indices[start:stop] = d, i
    return distances, indices


class FaissKNN:
    """A ``knn`` callable for :func:`retrieval_scores` backed by an exact FAISS index.

    The flat L2 index is built on the first call and reused while the same database array is
    passed (:func:`retrieval_scores` passes one array for all chunks). Ranking by L2 also ranks
    by cosine there, since :func:`retrieval_scores` hands unit rows to ``knn`` for
    ``metric="cosine"``. Unlike the NumPy search, FAISS does not promise index order on ties.
    Requires ``faiss`` (``faiss-cpu``).
    """

    def __init__(self) -> None:
        self._database: np.ndarray | None = None
        self._index: Any = None

    def __call__(self, query_chunk: np.ndarray, database: np.ndarray, n: int) -> np.ndarray:
        """Indices of the ``n`` nearest database items. Shape: (Q, D), (N, D) -> (Q, n)."""
        import faiss  # optional dependency, imported only when used

        if self._index is None or database is not self._database:
            index = faiss.IndexFlatL2(database.shape[1])
            index.add(np.ascontiguousarray(database, dtype=np.float32))
            self._database, self._index = database, index
        _, indices = self._index.search(np.ascontiguousarray(query_chunk, dtype=np.float32), n)
        return np.asarray(indices, dtype=np.int64)


# --------------------------------------------------------------------------- retrieval


def _drop_self(indices: np.ndarray, self_index: np.ndarray) -> np.ndarray:
    """Remove each query's own index from ``n + 1`` neighbours (or the last one if absent).

    Shape: (Q, n + 1) -> (Q, n).
    """
    is_self = indices == self_index[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), indices.shape[1] - 1)
    keep = np.arange(indices.shape[1])[None, :] != drop[:, None]
    return indices[keep].reshape(len(indices), indices.shape[1] - 1)


def _call_knn(knn: KNNFunction, query: np.ndarray, database: np.ndarray, n: int) -> np.ndarray:
    indices = np.asarray(knn(query, database, n))
    if indices.shape != (len(query), n):
        raise ValueError(
            f"knn returned shape {indices.shape}, expected {(len(query), n)} "
            "(one row of n database indices per query, nearest first)"
        )
    if indices.dtype.kind not in "iu":
        raise ValueError(f"knn must return integer indices, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= len(database)):
        raise ValueError(
            f"knn returned indices outside [0, {len(database)}); -1 usually means the search "
            "found fewer than n neighbours"
        )
    return indices.astype(np.int64, copy=False)


@dataclass(frozen=True)
class RetrievalResults:
    """What :func:`retrieval_results` found.

    Attributes:
        scores: Score name -> value, as :func:`retrieval_scores` returns them.
        distances: Distances of each query's kept neighbours, nearest first; NaN where a
            custom ``knn`` searched (it returns indices only). Shape: (Q, n).
        indices: Database indices of each query's kept neighbours, nearest first; with
            ``same_set`` the query itself is never among them. Shape: (Q, n).
    """

    scores: dict[str, float]
    distances: np.ndarray
    indices: np.ndarray


def retrieval_results(
    query: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    database_labels: np.ndarray,
    *,
    same_set: bool = False,
    k: int = 10,
    metric: Metric = "l2",
    knn: KNNFunction | None = None,
    chunk_size: int = 1024,
    neighbors: int = 10,
) -> RetrievalResults:
    """Retrieval quality of embeddings, and the nearest neighbours it was computed from.

    As pytorch-metric-learning's ``AccuracyCalculator``, the search runs once and every score
    reads its result; the first ``neighbors`` results of each query are kept for callers that
    show or reuse them (a report's retrieval grid, per-class precision).

    For each query, let R be the number of database items of its class (not counting the query
    itself when ``same_set``). Scores are averaged over queries:

    - ``precision_at_1`` and ``precision_at_10`` (plus ``precision_at_{k}`` when k != 10):
      relevant items among the first k results, divided by k; ranks beyond the database count
      as misses.
    - ``r_precision``: relevant items among the first R results, divided by R.
    - ``map_at_r``: ``(1/R) * sum_{i<=R} P@i * rel_i``, the average precision cut at R, which
      unlike plain AP does not reward a ranking whose tail is wrong (Musgrave et al., 2020).

    Queries labelled ``-1`` are ignored, database items labelled ``-1`` are never relevant,
    and, as in pytorch-metric-learning, queries with R = 0 are left out of every score.
    Distances are computed exactly in blocks of ``chunk_size x N`` and only the first
    ``max(R, k, 10)`` results of a block are sorted, so memory stays bounded at CIFAR-10 size
    (10,000 queries, 50,000 items, R = 5,000).

    Args:
        query: Query embeddings. Shape: (Q, D).
        query_labels: Query classes, ``-1`` for unknown. Shape: (Q,).
        database: Database embeddings. Shape: (N, D).
        database_labels: Database classes, ``-1`` for unknown. Shape: (N,).
        same_set: Query and database are the same items (query ``i`` is database item
            ``i``); each query is then excluded from its own results.
        k: Cut-off of the extra ``precision_at_{k}`` score.
        metric: ``"l2"`` (squared Euclidean) or ``"cosine"``.
        knn: Optional search ``knn(query_chunk, database, n) -> indices (Q, n)``, nearest
            first, e.g. :class:`FaissKNN`. For ``metric="cosine"`` it receives L2-normalised
            rows. With ``same_set`` it is asked for ``n + 1`` results and the query's own
            index is removed. Default: exact NumPy search, ties broken by database index.
        chunk_size: Number of queries per block.
        neighbors: Results to keep per query (capped at the candidates per query); 0 keeps
            none. Queries left out of the scores (label ``-1``, R = 0) are searched too.

    Returns:
        The scores and the kept neighbours.

    Raises:
        ValueError: On malformed input (lengths, ndim, dimension mismatch, unknown metric,
            ``same_set`` with different sets), or when no labelled query has a relevant item.
    """
    q, q_labels, db, db_labels = _retrieval_inputs(
        query, query_labels, database, database_labels, same_set=same_set
    )
    _check_metric(metric)
    _check_positive("k", k)
    _check_positive("chunk_size", chunk_size)
    if isinstance(neighbors, bool) or not isinstance(neighbors, (int, np.integer)) or neighbors < 0:
        raise ValueError(f"neighbors must be a non-negative integer, got {neighbors!r}")
    r_all, scored = _relevant_counts(q_labels, db_labels, same_set=same_set)
    available = len(db) - int(same_set)
    search = _KeptNeighbors(
        q, db, metric=metric, knn=knn, same_set=same_set, depth=min(neighbors, available)
    )
    cutoffs = sorted({1, 10, k})
    sums = dict.fromkeys([*(f"precision_at_{c}" for c in cutoffs), "r_precision", "map_at_r"], 0.0)
    for start in range(0, scored.size, chunk_size):
        rows = scored[start : start + chunk_size]
        r = r_all[rows]
        n = min(max(int(r.max()), cutoffs[-1]), available)
        idx = search.first(rows, n)
        _add_chunk_scores(sums, db_labels[idx] == q_labels[rows][:, None], r, cutoffs)
    scores = {name: total / scored.size for name, total in sums.items()}

    if search.depth:  # the queries no score reads still get their neighbours
        unscored = np.setdiff1d(np.arange(len(q)), scored)
        for start in range(0, unscored.size, chunk_size):
            search.first(unscored[start : start + chunk_size], search.depth)
    return RetrievalResults(scores=scores, distances=search.distances, indices=search.indices)


def _retrieval_inputs(
    query: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    database_labels: np.ndarray,
    *,
    same_set: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The checked arrays of :func:`retrieval_results`, both embeddings in one dtype.

    Raises:
        ValueError: Lengths, ndim or dimensions that do not match, or ``same_set`` with
            different sets.
    """
    q = _embeddings("query", query)
    q_labels = _labels("query_labels", query_labels)
    db = _embeddings("database", database)
    db_labels = _labels("database_labels", database_labels)
    _same_length(query=q, query_labels=q_labels)
    _same_length(database=db, database_labels=db_labels)
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query has dimension {q.shape[1]} but database has dimension {db.shape[1]}"
        )
    if same_set and (len(q) != len(db) or not np.array_equal(q_labels, db_labels)):
        raise ValueError(
            "same_set=True needs query and database (and their labels) to be the same items; "
            "pass the same arrays twice, or use same_set=False"
        )
    dtype = np.result_type(q, db)
    return q.astype(dtype, copy=False), q_labels, db.astype(dtype, copy=False), db_labels


def _relevant_counts(
    query_labels: np.ndarray, database_labels: np.ndarray, *, same_set: bool
) -> tuple[np.ndarray, np.ndarray]:
    """R of every query, and the queries that can be scored (labelled, with R > 0).

    R is the number of database items of the query's class, minus the query itself when
    ``same_set``.

    Returns:
        R per query (Q,) and the indices of the scored queries (S,).

    Raises:
        LatentsearchError: No query can be scored.
    """
    classes, counts = np.unique(database_labels[database_labels != -1], return_counts=True)
    r_all = np.zeros(len(query_labels), dtype=np.int64)
    if classes.size:
        pos = np.minimum(np.searchsorted(classes, query_labels), classes.size - 1)
        found = classes[pos] == query_labels
        r_all[found] = counts[pos[found]]
    r_all -= int(same_set)
    scored = np.flatnonzero((query_labels != -1) & (r_all > 0))
    if scored.size == 0:
        raise LatentsearchError(
            "no query can be scored: every query is labelled -1 or has no item of its class in "
            "the database (R = 0)"
        )
    return r_all, scored


def _add_chunk_scores(
    sums: dict[str, float], rel: np.ndarray, r: np.ndarray, cutoffs: list[int]
) -> None:
    """Adds a chunk of queries' precisions at each cut-off, R-precision and MAP@R to ``sums``.

    Args:
        sums: Score name -> sum over the queries so far; updated in place.
        rel: Whether each of a query's first n results is of its class. Shape: (C, n).
        r: Each query's R (at most n). Shape: (C,).
        cutoffs: The k of each ``precision_at_{k}``.
    """
    n = rel.shape[1]
    for c in cutoffs:
        sums[f"precision_at_{c}"] += float(rel[:, :c].sum(axis=1).sum() / c)
    within_r = np.arange(n)[None, :] < r[:, None]
    rel_r = rel & within_r
    hits = np.cumsum(rel_r, axis=1)
    sums["r_precision"] += float((hits[:, -1] / r).sum())
    precision_at_i = hits / np.arange(1, n + 1)[None, :]
    sums["map_at_r"] += float(((precision_at_i * rel_r).sum(axis=1) / r).sum())


class _KeptNeighbors:
    """Searches chunks of queries and keeps each query's first ``depth`` neighbours.

    Args:
        query: Shape: (Q, D).
        database: Shape: (N, D), the query's dtype.
        metric: ``"l2"`` or ``"cosine"``.
        knn: A custom search (indices only), or None for the exact NumPy one.
        same_set: Query ``i`` is database item ``i``, left out of its own results.
        depth: Neighbours kept per query.
    """

    def __init__(
        self,
        query: np.ndarray,
        database: np.ndarray,
        *,
        metric: str,
        knn: KNNFunction | None,
        same_set: bool,
        depth: int,
    ) -> None:
        self._query = query
        self._exact = _ExactSearch(database, metric)
        self._knn = knn
        self._same_set = same_set
        self.depth = depth
        self.distances = np.full((len(query), depth), np.nan, dtype=query.dtype)
        self.indices = np.full((len(query), depth), -1, dtype=np.int64)

    def first(self, rows: np.ndarray, n: int) -> np.ndarray:
        """The first ``n`` results of the queries at ``rows``, once their first ``depth`` are kept.

        Returns:
            Database indices, nearest first. Shape: (len(rows), n).
        """
        dist, idx = self._nearest(rows, max(n, self.depth))
        self.indices[rows] = idx[:, : self.depth]
        if dist is not None:
            self.distances[rows] = dist[:, : self.depth]
        return idx[:, :n]  # the scores read exactly n results, however many are kept

    def _nearest(self, rows: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray]:
        """Distances (None from a custom knn) and indices of the n nearest items of rows."""
        q_chunk = self._exact.prepare_query(self._query[rows])
        self_index = rows if self._same_set else None
        if self._knn is None:
            return self._exact.chunk(q_chunk, n, self_index)
        database = self._exact.database  # unit rows for cosine, so any L2/IP knn ranks by cosine
        if self_index is not None:
            return None, _drop_self(_call_knn(self._knn, q_chunk, database, n + 1), self_index)
        return None, _call_knn(self._knn, q_chunk, database, n)


def retrieval_scores(
    query: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    database_labels: np.ndarray,
    *,
    same_set: bool = False,
    k: int = 10,
    metric: Metric = "l2",
    knn: KNNFunction | None = None,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """The scores of :func:`retrieval_results`, without neighbours (same arguments).

    Returns:
        Scores keyed ``precision_at_1``, ``precision_at_10`` [, ``precision_at_{k}``],
        ``r_precision`` and ``map_at_r``, each in [0, 1].
    """
    return retrieval_results(
        query,
        query_labels,
        database,
        database_labels,
        same_set=same_set,
        k=k,
        metric=metric,
        knn=knn,
        chunk_size=chunk_size,
        neighbors=0,
    ).scores


# --------------------------------------------------------------------------- baseline


def pixel_baseline(pixels_uint8: np.ndarray) -> np.ndarray:
    """Raw pixels as the reference representation: flattened and scaled to [0, 1].

    Args:
        pixels_uint8: Images. Shape: (N, H, W, C), dtype uint8.

    Returns:
        float32 vectors. Shape: (N, H * W * C).

    Raises:
        ValueError: If the array is not 4-D uint8.
    """
    pixels = np.asarray(pixels_uint8)
    if pixels.ndim != 4:
        raise ValueError(
            f"pixels must have shape (N, H, W, C), got shape {pixels.shape}; add a channel "
            "axis to grayscale images with x[..., None]"
        )
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8 in [0, 255], got dtype {pixels.dtype}")
    return np.divide(pixels.reshape(len(pixels), -1), np.float32(255), dtype=np.float32)

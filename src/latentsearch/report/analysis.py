"""The numbers behind the report's pictures: samples, matched contingency, per-class precision.

Pure NumPy (plus SciPy's Hungarian solver), so every function is testable without a model.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``n`` items whose classes keep their proportions (within one item).

    The items are shuffled, grouped by label (the shuffle orders each group), then every
    (N / n)-th one is taken: a systematic sample over the grouped order, so each class gets
    ``round(n * share)`` items and small classes are not lost to chance.

    Args:
        labels: Class per item, -1 for unknown (a group of its own). Shape: (N,).
        n: Items wanted; all N (in order) when n >= N.
        seed: Seeds the shuffle.

    Returns:
        Sorted indices into ``labels``. Shape: (min(n, N),).

    Raises:
        ValueError: If ``n`` is not positive.
    """
    labels = np.asarray(labels)
    if n < 1:
        raise ValueError(f"the sample size must be at least 1, got {n}")
    total = len(labels)
    if n >= total:
        return np.arange(total)
    shuffled = np.random.default_rng(seed).permutation(total)
    grouped = shuffled[np.argsort(labels[shuffled], kind="stable")]
    # Offsetting by half a step centres the picks, so the first and last groups are treated
    # alike.
    picks = ((np.arange(n) + 0.5) * total / n).astype(np.int64)
    return np.sort(grouped[picks])


def matched_contingency(
    labels: np.ndarray, clusters: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class-by-cluster counts, clusters reordered so that matched pairs lie on the diagonal.

    The matching maximises the items on the diagonal (Hungarian algorithm), the same one that
    scores clustering accuracy; clusters left unmatched come last.

    Args:
        labels: True class per item, in ``[0, n_classes)``. Shape: (N,).
        clusters: Cluster per item, in ``[0, C)``. Shape: (N,).
        n_classes: Number of classes (rows), including classes without items.

    Returns:
        ``(counts, order)``: ``counts[i, j]`` items of class i in cluster ``order[j]``.
        Shapes: (n_classes, C), (C,).

    Raises:
        ValueError: On mismatched lengths or labels outside ``[0, n_classes)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    clusters = np.asarray(clusters, dtype=np.int64)
    if labels.shape != clusters.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and clusters must be 1-D and of one length, got {labels.shape} and "
            f"{clusters.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); drop unlabelled (-1) items first")
    if len(clusters) and clusters.min() < 0:
        raise ValueError("clusters must be non-negative")
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    counts = np.zeros((n_classes, n_clusters), dtype=np.int64)
    np.add.at(counts, (labels, clusters), 1)
    rows, cols = linear_sum_assignment(-counts)
    matched = cols[np.argsort(rows)]
    rest = np.setdiff1d(np.arange(n_clusters), matched)
    order = np.concatenate([matched, rest]).astype(np.int64)
    return counts[:, order], order


def per_class_precision(
    query_labels: np.ndarray,
    neighbor_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    k: int,
    same_set: bool = False,
    n_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision@k of each query, averaged per class, as ``retrieval_scores`` counts it.

    A query counts when it is labelled and its class has at least one relevant database item
    (R > 0, the query itself excluded when ``same_set``); ranks missing from
    ``neighbor_labels`` (a database smaller than k) count as misses.

    Args:
        query_labels: Class per query, -1 for unknown. Shape: (Q,).
        neighbor_labels: Labels of each query's nearest database items, nearest first.
            Shape: (Q, k') with k' <= k.
        database_labels: Class per database item. Shape: (N,).
        k: The cut-off; hits are divided by k.
        same_set: The queries are the database items (each query is one relevant item less).
        n_classes: Number of classes C; None: the largest label + 1.

    Returns:
        ``(precision, counts)``: mean precision@k per class (NaN for a class without a
        counted query) and the number of counted queries per class. Shapes: (C,), (C,).

    Raises:
        ValueError: On mismatched shapes or a ``k`` smaller than the neighbours given.
    """
    q = np.asarray(query_labels, dtype=np.int64)
    nb = np.asarray(neighbor_labels, dtype=np.int64)
    db = np.asarray(database_labels, dtype=np.int64)
    if nb.ndim != 2 or nb.shape[0] != len(q):
        raise ValueError(f"neighbor_labels must have shape ({len(q)}, k), got {nb.shape}")
    if nb.shape[1] > k:
        raise ValueError(f"got {nb.shape[1]} neighbours per query for precision at k={k}")
    largest = int(max(q.max(initial=-1), db.max(initial=-1)))
    if n_classes is None:
        n_classes = largest + 1
    elif largest >= n_classes:
        raise ValueError(f"labels reach {largest}, beyond n_classes={n_classes}")
    relevant = np.bincount(db[db >= 0], minlength=n_classes)
    r = np.where(q >= 0, relevant[np.clip(q, 0, None)] - int(same_set), 0)
    counted = (q >= 0) & (r > 0)
    hits = (nb == q[:, None]).sum(axis=1) / k
    counts = np.bincount(q[counted], minlength=n_classes)
    sums = np.bincount(q[counted], weights=hits[counted], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return precision, counts

"""Tests for latentsearch.metrics: checked against scikit-learn, brute force and hand counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
    pairwise_distances,
    rand_score,
)

from latentsearch.metrics import (
    CLUSTERING_METRICS,
    METRICS,
    RETRIEVAL_METRICS,
    FaissKNN,
    Metric,
    clustering_scores,
    kmeans_scores,
    nearest_neighbors,
    pixel_baseline,
    retrieval_results,
    retrieval_scores,
)

# --------------------------------------------------------------------------- helpers


def separated_clusters(
    n_classes: int = 4, per_class: int = 25, dim: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Tight blobs around far-apart centres: any sane metric must come out exactly 1."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * 100
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + rng.standard_normal((len(labels), dim)) * 0.01
    perm = rng.permutation(len(labels))
    return x[perm].astype(np.float32), labels[perm]


def naive_retrieval(
    query: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    database_labels: np.ndarray,
    *,
    same_set: bool,
    metric: Metric,
    k: int,
) -> dict[str, float]:
    """Per-query loops straight from the definitions in Musgrave et al. (2020)."""
    sk_metric = "sqeuclidean" if metric == "l2" else "cosine"
    dist = pairwise_distances(
        query.astype(np.float64), database.astype(np.float64), metric=sk_metric
    )
    p1, pk, rp, ap = [], [], [], []
    for i, label in enumerate(query_labels):
        if label == -1:
            continue
        candidates = [j for j in range(len(database)) if not (same_set and j == i)]
        ranking = sorted(candidates, key=lambda j: (dist[i, j], j))
        rel = [int(database_labels[j] == label) for j in ranking]
        r = sum(rel)  # every item of the class is somewhere in the full ranking
        if r == 0:
            continue
        p1.append(rel[0])
        pk.append(sum(rel[:k]) / k)
        rp.append(sum(rel[:r]) / r)
        ap.append(sum(sum(rel[: i + 1]) / (i + 1) * rel[i] for i in range(r)) / r)
    return {
        "precision_at_1": float(np.mean(p1)),
        f"precision_at_{k}": float(np.mean(pk)),
        "r_precision": float(np.mean(rp)),
        "map_at_r": float(np.mean(ap)),
    }


# --------------------------------------------------------------------------- clustering


@pytest.mark.parametrize(("seed", "n_classes", "n_clusters"), [(0, 3, 3), (1, 5, 3), (2, 2, 6)])
def test_clustering_scores_match_sklearn(seed: int, n_classes: int, n_clusters: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_classes, 200)
    pred = rng.integers(0, n_clusters, 200)
    scores = clustering_scores(true, pred)
    assert set(scores) == {"nmi", "ri", "ari", "ami", "acc"}
    assert all(type(v) is float for v in scores.values())
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(true, pred))
    assert scores["ri"] == pytest.approx(rand_score(true, pred))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(true, pred))
    assert scores["ami"] == pytest.approx(adjusted_mutual_info_score(true, pred))


@pytest.mark.parametrize(("seed", "n_classes", "n_clusters"), [(0, 3, 3), (1, 4, 2), (2, 2, 4)])
def test_accuracy_matches_brute_force_over_mappings(
    seed: int, n_classes: int, n_clusters: int
) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_classes, 60)
    pred = rng.integers(0, n_clusters, 60)
    # Try every injective mapping between the smaller and the larger label set.
    best = 0
    if n_clusters <= n_classes:
        for classes in itertools.permutations(range(n_classes), n_clusters):
            best = max(best, sum(int(true[i] == classes[pred[i]]) for i in range(60)))
    else:
        for clusters in itertools.permutations(range(n_clusters), n_classes):
            best = max(best, sum(int(pred[i] == clusters[true[i]]) for i in range(60)))
    assert clustering_scores(true, pred)["acc"] == pytest.approx(best / 60)


def test_accuracy_hand_made_cases() -> None:
    # A perfect clustering under renamed clusters.
    true = np.array([0, 0, 1, 1, 2, 2])
    assert clustering_scores(true, np.array([2, 2, 0, 0, 1, 1]))["acc"] == 1.0
    # 2x2: contingency [[1, 1], [0, 2]] -> best mapping 0->0, 1->1 keeps 1 + 2 = 3 of 4.
    assert clustering_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))["acc"] == 0.75
    # More clusters than classes: class 0 split 2/1 over clusters 0, 1 -> 5 of 6.
    scores = clustering_scores(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 2, 2, 2]))
    assert scores["acc"] == pytest.approx(5 / 6)


def test_clustering_ignores_unknown_labels() -> None:
    rng = np.random.default_rng(3)
    true = rng.integers(-1, 3, 100)
    pred = rng.integers(0, 3, 100)
    known = true != -1
    assert clustering_scores(true, pred) == clustering_scores(true[known], pred[known])


@pytest.mark.parametrize(
    ("true", "pred", "match"),
    [
        (np.array([0, 1, 1]), np.array([0, 1]), "length mismatch"),
        (np.array([-1, -1]), np.array([0, 1]), "no item is labelled"),
        (np.array([[0, 1]]), np.array([[0, 1]]), "1-D"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "integer"),
    ],
)
def test_clustering_scores_rejects_bad_input(
    true: np.ndarray, pred: np.ndarray, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        clustering_scores(true, pred)


def test_kmeans_scores_recovers_separated_clusters() -> None:
    x, y = separated_clusters()
    y[:7] = -1  # unknown items are not clustered
    scores, assignments = kmeans_scores(x.astype(np.float64), y, n_init=2)
    assert scores == {"nmi": 1.0, "ri": 1.0, "ari": 1.0, "ami": 1.0, "acc": 1.0}
    assert assignments.shape == (len(y) - 7,)
    assert len(np.unique(assignments)) == 4
    assert clustering_scores(y[7:], assignments) == scores


def test_kmeans_scores_n_clusters_and_errors() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    _, assignments = kmeans_scores(x, y, n_clusters=6, n_init=1)
    assert len(np.unique(assignments)) == 6
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_scores(x, y, n_clusters=31)
    with pytest.raises(ValueError, match="length mismatch"):
        kmeans_scores(x, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        kmeans_scores(x[:, 0], y)


# --------------------------------------------------------------------------- retrieval

# 1-D database:   position 0   1   2   3   10
#                 label    A   A   B   A   B     (A = 0, B = 1; R_A = 3, R_B = 2)
DB_1D = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
DB_1D_LABELS = np.array([0, 0, 1, 0, 1])
# Queries, their rankings (by position) and relevance, k = 3:
#   0.4 (A): 0 1 2 3 10 -> 1 1 0 1 0   P@1 1  P@3 2/3  P@10 3/10  RP 2/3  AP@R (1 + 1)/3 = 2/3
#   2.1 (B): 2 3 1 0 10 -> 1 0 0 0 1   P@1 1  P@3 1/3  P@10 2/10  RP 1/2  AP@R (1)/2 = 1/2
#   2.9 (A): 3 2 1 0 10 -> 1 0 1 1 0   P@1 1  P@3 2/3  P@10 3/10  RP 2/3  AP@R (1 + 2/3)/3 = 5/9
#   9.0 (A): 10 3 2 1 0 -> 0 1 0 1 1   P@1 0  P@3 1/3  P@10 3/10  RP 1/3  AP@R (1/2)/3 = 1/6
#   5.0 (-1): ignored.
# Means: P@1 3/4, P@3 2/4, P@10 11/40 (ranks past the 5 items count as misses, as in
# pytorch-metric-learning), RP (2/3 + 1/2 + 2/3 + 1/3)/4 = 13/24,
# MAP@R (2/3 + 1/2 + 5/9 + 1/6)/4 = 17/36.
QUERY_1D = np.array([[0.4], [2.1], [2.9], [9.0], [5.0]])
QUERY_1D_LABELS = np.array([0, 1, 0, 0, -1])
EXPECTED_1D = {
    "precision_at_1": 3 / 4,
    "precision_at_3": 1 / 2,
    "precision_at_10": 11 / 40,
    "r_precision": 13 / 24,
    "map_at_r": 17 / 36,
}


def test_retrieval_hand_computed_1d() -> None:
    scores = retrieval_scores(QUERY_1D, QUERY_1D_LABELS, DB_1D, DB_1D_LABELS, k=3)
    assert scores == pytest.approx(EXPECTED_1D)
    assert set(scores) == set(EXPECTED_1D)
    assert all(type(v) is float for v in scores.values())


def test_retrieval_hand_computed_2d_cosine_vs_l2() -> None:
    # Database: (1, 0) labelled A, (3, 3) labelled B; query (0.5, 0.4) labelled B.
    # Cosine: the query's angle (38.7 deg) is closer to 45 deg than to 0 -> B first.
    #   ranking B A -> rel 1 0, R = 1: P@1 = 1, RP = 1, AP@R = 1.
    # Squared L2: 0.41 to (1, 0) vs 13.01 to (3, 3) -> A first.
    #   ranking A B -> rel 0 1, R = 1: P@1 = 0, RP = 0, AP@R = 0; P@10 = 1/10 either way.
    db = np.array([[1.0, 0.0], [3.0, 3.0]])
    db_labels = np.array([0, 1])
    q, q_labels = np.array([[0.5, 0.4]]), np.array([1])
    cos = retrieval_scores(q, q_labels, db, db_labels, metric="cosine")
    l2 = retrieval_scores(q, q_labels, db, db_labels, metric="l2")
    assert cos == pytest.approx(
        {"precision_at_1": 1, "precision_at_10": 0.1, "r_precision": 1, "map_at_r": 1}
    )
    assert l2 == pytest.approx(
        {"precision_at_1": 0, "precision_at_10": 0.1, "r_precision": 0, "map_at_r": 0}
    )


def test_unknown_database_items_are_never_relevant() -> None:
    # The nearest item is labelled -1, so P@1 = 0; R counts only the one item labelled 0,
    # which sits at rank 2, past R = 1: RP = 0 and AP@R = 0 (only the first R ranks count);
    # P@10 = 1/10.
    db = np.array([[0.0], [1.0], [5.0]])
    db_labels = np.array([-1, 0, 1])
    scores = retrieval_scores(np.array([[0.0]]), np.array([0]), db, db_labels, k=1)
    assert scores["precision_at_1"] == 0
    assert scores["r_precision"] == 0
    assert scores["map_at_r"] == 0
    assert scores["precision_at_10"] == pytest.approx(0.1)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("same_set", [False, True])
def test_separated_clusters_score_exactly_one(metric: Metric, same_set: bool) -> None:
    x, y = separated_clusters(per_class=30)
    if same_set:
        scores = retrieval_scores(x, y, x, y, same_set=True, k=5, metric=metric, chunk_size=16)
    else:
        q = x[:40] + np.random.default_rng(1).standard_normal((40, x.shape[1])) * 0.01
        scores = retrieval_scores(q, y[:40], x, y, k=5, metric=metric)
    assert scores == {
        "precision_at_1": 1.0,
        "precision_at_5": 1.0,
        "precision_at_10": 1.0,
        "r_precision": 1.0,
        "map_at_r": 1.0,
    }


def test_same_set_excludes_self_with_duplicates() -> None:
    # Items 0, 1 are one point (labels 0, 1); items 2, 3 another point far away (labels 0, 1).
    # Integer coordinates keep every distance exact, so ties resolve by index.
    x = np.array([[1.0, 2.0], [1.0, 2.0], [10.0, 20.0], [10.0, 20.0]])
    y = np.array([0, 1, 0, 1])
    # same_set: query 0 ranks 1 2 3 -> rel 0 1 0, R = 1 -> P@1 0, AP@R 0. By symmetry every
    # query gets its duplicate (other class) first and R = 1 -> all scores 0.
    excluded = retrieval_scores(x, y, x, y, same_set=True, k=1)
    assert excluded["precision_at_1"] == 0
    assert excluded["map_at_r"] == 0
    # Not same_set: query 0 ranks 0 1 2 3 (tie at 0 broken by index) -> rel 1 0 1 0, R = 2,
    # P@1 1, AP@R (1 + 0)/2 = 1/2; query 1 ranks 0 1 3 2 -> rel 0 1 0 1, P@1 0,
    # AP@R (1/2)/2 = 1/4; queries 2 and 3 mirror them. Means: P@1 1/2, MAP@R 3/8.
    included = retrieval_scores(x, y, x, y, same_set=False, k=1)
    assert included["precision_at_1"] == 0.5
    assert included["map_at_r"] == pytest.approx(3 / 8)


def test_same_set_on_random_data_differs_from_self_retrieval() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 6))
    y = rng.integers(0, 4, 80)
    assert retrieval_scores(x, y, x, y)["precision_at_1"] == 1.0  # every item finds itself
    assert retrieval_scores(x, y, x, y, same_set=True)["precision_at_1"] < 0.7


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("same_set", [False, True])
def test_retrieval_matches_naive_reference(metric: Metric, same_set: bool) -> None:
    rng = np.random.default_rng(5)
    db = rng.standard_normal((120, 5)).astype(np.float32)
    db_labels = rng.integers(-1, 5, 120)
    if same_set:
        q, q_labels = db, db_labels
    else:
        q, q_labels = rng.standard_normal((50, 5)).astype(np.float32), rng.integers(-1, 5, 50)
    got = retrieval_scores(
        q, q_labels, db, db_labels, same_set=same_set, metric=metric, k=4, chunk_size=16
    )
    want = naive_retrieval(q, q_labels, db, db_labels, same_set=same_set, metric=metric, k=4)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("same_set", [False, True])
def test_chunked_equals_single_chunk(same_set: bool) -> None:
    rng = np.random.default_rng(6)
    db = rng.standard_normal((300, 8)).astype(np.float32)
    db_labels = rng.integers(0, 3, 300)  # R ~ 100 > k: exercises the partial sort
    q, q_labels = (db, db_labels) if same_set else (db[:90] + 0.1, db_labels[:90])
    chunked = retrieval_scores(q, q_labels, db, db_labels, same_set=same_set, k=7, chunk_size=13)
    whole = retrieval_scores(q, q_labels, db, db_labels, same_set=same_set, k=7, chunk_size=len(q))
    assert chunked == pytest.approx(whole, rel=1e-12)

    d_chunk, i_chunk = nearest_neighbors(q, db, 20, chunk_size=13, exclude_self=same_set)
    d_whole, i_whole = nearest_neighbors(q, db, 20, chunk_size=len(q), exclude_self=same_set)
    np.testing.assert_array_equal(i_chunk, i_whole)
    # |q|² - 2 q·x + |x|² loses absolute, not relative, precision (float32 on |x|² ~ 10), and
    # BLAS may sum a block of another size in another order.
    np.testing.assert_allclose(d_chunk, d_whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_neighbors_matches_sklearn(metric: Metric) -> None:
    rng = np.random.default_rng(7)
    q, db = rng.standard_normal((30, 4)), rng.standard_normal((200, 4))
    distances, indices = nearest_neighbors(q, db, 15, metric=metric, chunk_size=8)
    full = pairwise_distances(q, db, metric="sqeuclidean" if metric == "l2" else "cosine")
    want = np.argsort(full, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(indices, want)
    np.testing.assert_allclose(distances, np.take_along_axis(full, want, axis=1), atol=1e-9)
    assert distances.dtype == np.float64
    assert nearest_neighbors(q.astype(np.float32), db.astype(np.float32), 3)[0].dtype == (
        np.float32
    )


def test_nearest_neighbors_breaks_ties_by_index() -> None:
    # Twenty identical points: a tie straddles every cut, so the order must be by index.
    x = np.ones((20, 3))
    _, indices = nearest_neighbors(x[:4], x, 5)
    np.testing.assert_array_equal(indices, np.tile(np.arange(5), (4, 1)))
    _, indices = nearest_neighbors(x, x, 5, exclude_self=True)
    np.testing.assert_array_equal(indices[0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(indices[3], [0, 1, 2, 4, 5])


def test_custom_knn_is_used() -> None:
    calls: list[tuple[tuple[int, ...], tuple[int, ...], int]] = []

    def farthest_first(query_chunk: np.ndarray, database: np.ndarray, n: int) -> np.ndarray:
        calls.append((query_chunk.shape, database.shape, n))
        d = pairwise_distances(query_chunk, database, metric="sqeuclidean")
        return np.argsort(-d, axis=1, kind="stable")[:, :n]

    # Farthest item first in the 1-D example: 0.4 (A) -> 10 (B), 2.1 (B) -> 10 (B),
    # 2.9 (A) -> 10 (B), 9.0 (A) -> 0 (A): P@1 = 2/4, where the exact search gives 3/4.
    scores = retrieval_scores(
        QUERY_1D, QUERY_1D_LABELS, DB_1D, DB_1D_LABELS, k=3, knn=farthest_first, chunk_size=3
    )
    assert scores["precision_at_1"] == 0.5
    # 4 labelled queries in chunks of 3; n = min(max(R, k, 10), 5 items) = 5.
    assert calls == [((3, 1), (5, 1), 5), ((1, 1), (5, 1), 5)]


def test_custom_knn_with_same_set_drops_self() -> None:
    def exact(query_chunk: np.ndarray, database: np.ndarray, n: int) -> np.ndarray:
        d = pairwise_distances(query_chunk, database, metric="sqeuclidean")
        return np.argsort(d, axis=1, kind="stable")[:, :n]

    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((60, 4)), rng.integers(0, 3, 60)
    want = retrieval_scores(x, y, x, y, same_set=True, k=5)
    got = retrieval_scores(x, y, x, y, same_set=True, k=5, knn=exact, chunk_size=7)
    assert got == pytest.approx(want, rel=1e-12)


def test_custom_knn_bad_output_is_reported() -> None:
    def too_few(query_chunk: np.ndarray, database: np.ndarray, n: int) -> np.ndarray:
        return np.zeros((len(query_chunk), n - 1), dtype=np.int64)

    def missing(query_chunk: np.ndarray, database: np.ndarray, n: int) -> np.ndarray:
        return -np.ones((len(query_chunk), n), dtype=np.int64)

    args = (QUERY_1D, QUERY_1D_LABELS, DB_1D, DB_1D_LABELS)
    with pytest.raises(ValueError, match="knn returned shape"):
        retrieval_scores(*args, knn=too_few)
    with pytest.raises(ValueError, match="outside"):
        retrieval_scores(*args, knn=missing)


def test_faiss_knn_agrees_with_exact_search() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(9)
    db = rng.standard_normal((200, 8)).astype(np.float32)
    db_labels = rng.integers(0, 4, 200)
    for metric in ("l2", "cosine"):
        want = retrieval_scores(db, db_labels, db, db_labels, same_set=True, metric=metric)
        got = retrieval_scores(
            db, db_labels, db, db_labels, same_set=True, metric=metric, knn=FaissKNN()
        )
        assert got == pytest.approx(want, abs=1e-9)


def test_pixel_baseline() -> None:
    pixels = np.array([0, 51, 255] * 8, dtype=np.uint8).reshape(2, 2, 2, 3)
    x = pixel_baseline(pixels)
    assert x.shape == (2, 12)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0, :3], [0.0, 0.2, 1.0])
    np.testing.assert_array_equal(x[1], pixels[1].reshape(-1) / np.float32(255))
    with pytest.raises(ValueError, match="uint8"):
        pixel_baseline(pixels.astype(np.float32))
    with pytest.raises(ValueError, match="channel"):
        pixel_baseline(pixels[..., 0])


_Q = np.zeros((3, 2))
_Y = np.zeros(3, dtype=int)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"query_labels": np.zeros(2, dtype=int)}, "length mismatch"),
        ({"database_labels": np.zeros(4, dtype=int)}, "length mismatch"),
        ({"query": np.zeros(3)}, "2-D"),
        ({"database": np.zeros((3, 2, 1))}, "2-D"),
        ({"query_labels": np.zeros((3, 1), dtype=int)}, "1-D"),
        ({"query": np.zeros((3, 5))}, "dimension"),
        ({"metric": "manhattan"}, "unknown metric"),
        ({"k": 0}, "positive"),
        ({"chunk_size": 0}, "positive"),
        ({"query": np.full((3, 2), np.nan)}, "NaN"),
        ({"query_labels": -np.ones(3, dtype=int)}, "no query can be scored"),
        (
            {"database": np.zeros((4, 2)), "database_labels": np.zeros(4, int), "same_set": True},
            "same",
        ),
    ],
)
def test_retrieval_scores_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "query": _Q,
        "query_labels": _Y,
        "database": _Q,
        "database_labels": _Y,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        retrieval_scores(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((3, 2)), np.zeros((5, 3)), 2), {}, "dimension"),
        ((np.zeros((3, 2)), np.zeros((5, 2)), 6), {}, "exceeds"),
        ((np.zeros((5, 2)), np.zeros((5, 2)), 5), {"exclude_self": True}, "exceeds"),
        ((np.zeros((3, 2)), np.zeros((5, 2)), 2), {"exclude_self": True}, "same set"),
        ((np.zeros((3, 2)), np.zeros((5, 2)), 2), {"metric": "dot"}, "unknown metric"),
        ((np.zeros(3), np.zeros((5, 2)), 2), {}, "2-D"),
    ],
)
def test_nearest_neighbors_rejects_bad_input(
    args: tuple[np.ndarray, np.ndarray, int], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        nearest_neighbors(*args, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- shared results


def test_metrics_lists_every_score_once_in_table_order() -> None:
    x, y = separated_clusters()
    assert [m.key for m in CLUSTERING_METRICS] == list(clustering_scores(y, y))
    assert {m.key for m in RETRIEVAL_METRICS} == set(retrieval_scores(x, y, x, y, same_set=True))
    assert tuple(m.key for m in CLUSTERING_METRICS + RETRIEVAL_METRICS) == METRICS
    assert len(set(METRICS)) == len(METRICS)


@pytest.mark.parametrize("same_set", [False, True])
def test_retrieval_keeps_the_neighbours_its_scores_came_from(same_set: bool) -> None:
    rng = np.random.default_rng(3)
    db = rng.standard_normal((60, 5)).astype(np.float32)
    db_labels = rng.integers(0, 3, 60)
    q, q_labels = (db, db_labels) if same_set else (db[:25] + 0.1, db_labels[:25].copy())
    if not same_set:
        q_labels[[2, 7]] = -1  # left out of the scores, still searched
    found = retrieval_results(q, q_labels, db, db_labels, same_set=same_set, neighbors=7)
    assert found.scores == retrieval_scores(q, q_labels, db, db_labels, same_set=same_set)
    want_d, want_i = nearest_neighbors(q, db, 7, exclude_self=same_set)
    np.testing.assert_array_equal(found.indices, want_i)
    np.testing.assert_array_equal(found.distances, want_d)


def test_retrieval_keeps_more_neighbours_than_it_scores_without_changing_scores() -> None:
    x, y = separated_clusters(n_classes=4, per_class=5)
    deep = retrieval_results(x, y, x, y, same_set=True, neighbors=50)
    assert deep.indices.shape == (20, 19)  # capped at the other items
    assert deep.scores == retrieval_scores(x, y, x, y, same_set=True)
    assert retrieval_results(x, y, x, y, neighbors=0).indices.shape == (20, 0)
    with pytest.raises(ValueError, match="neighbors"):
        retrieval_results(x, y, x, y, neighbors=-1)


def test_a_custom_knn_keeps_indices_without_distances() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((80, 6)).astype(np.float32), rng.integers(0, 4, 80)
    found = retrieval_results(x, y, x, y, knn=FaissKNN(), neighbors=3)
    exact = retrieval_results(x, y, x, y, neighbors=3)
    np.testing.assert_array_equal(found.indices, exact.indices)
    assert np.isnan(found.distances).all()

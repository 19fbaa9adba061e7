"""FAISS backends: exactness of flat, recall tuning of HNSW / IVF, the recall measure."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.index import backends
from latentsearch.index.errors import ImageIndexError
from latentsearch.metrics import nearest_neighbors


def _clusters(n: int, d: int = 16, k: int = 20, seed: int = 0) -> np.ndarray:
    """Points around ``k`` random centres (a small version of the benchmark's mixture)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_flat_index_is_exact() -> None:
    x = _clusters(500)
    q = _clusters(20, seed=1)
    built = backends.build_index(x, "flat")
    assert built.index_type == "flat" and built.recall_at_10 is None and built.params == {}
    d, i = built.index.search(q, 7)
    want_d, want_i = nearest_neighbors(q, x, 7)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("kind", "param"), [("hnsw", "efSearch"), ("ivf", "nprobe")])
def test_approximate_indexes_are_tuned_to_the_target_recall(kind: str, param: str) -> None:
    x = _clusters(3000)
    built = backends.build_index(x, kind, target_recall=0.9)
    assert built.index_type == kind and param in built.params
    assert built.recall_at_10 is not None and built.recall_at_10 >= 0.9
    # Recall on unseen queries, measured independently with NumPy.
    q = _clusters(200, seed=5)
    _, i = built.index.search(q, 10)
    _, want = nearest_neighbors(q, x, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, want, strict=True)])
    assert overlap >= 0.8


def test_tuning_stops_at_the_cheapest_setting_that_reaches_the_target() -> None:
    x = _clusters(3000)
    low = backends.build_index(x, "hnsw", target_recall=0.5)
    high = backends.build_index(x, "hnsw", target_recall=1.0)
    assert low.params["efSearch"] == backends.HNSW_EF_SEARCH[0]
    assert high.params["efSearch"] >= low.params["efSearch"]


def test_search_params_survive_serialisation() -> None:
    import faiss

    built = backends.build_index(_clusters(2000), "ivf", target_recall=0.99)
    copy = faiss.deserialize_index(faiss.serialize_index(built.index))
    backends.set_search_params(copy, "ivf", built.params)
    assert faiss.extract_index_ivf(copy).nprobe == built.params["nprobe"]
    assert backends.index_bytes(built.index) > 2000 * 16 * 4


def test_auto_switches_to_approximate_above_the_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert backends.resolve_index_type("auto", backends.EXACT_MAX_ITEMS) == "flat"
    big = backends.EXACT_MAX_ITEMS + 1
    assert backends.resolve_index_type("auto", big) == backends.APPROXIMATE_INDEX
    assert backends.resolve_index_type("flat", big) == "flat"
    monkeypatch.setattr(backends, "EXACT_MAX_ITEMS", 100)
    built = backends.build_index(_clusters(300), "auto")
    assert built.index_type == backends.APPROXIMATE_INDEX and built.recall_at_10 is not None
    with pytest.raises(ImageIndexError, match="unknown index type"):
        backends.resolve_index_type("lsh", 10)


def test_recall_counts_ties_at_the_kth_distance_as_hits() -> None:
    vectors = np.array([[0.0], [1.0], [-1.0], [2.0], [5.0]], dtype=np.float32)
    queries = np.array([[0.0], [0.0]], dtype=np.float32)
    exact = np.array([[0, 1, 3], [0, 1, 3]])  # distances 0, 1, 4
    approx = np.array([[0, 2, 4], [2, 1, -1]])  # item 2 ties with 1; 4 is too far; -1: none
    assert backends.recall_at_k(queries, vectors, approx, exact) == pytest.approx(4 / 6)


def test_recall_is_not_fooled_by_float32_rounding_far_from_the_origin() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 32)) * 0.05 + 30).astype(np.float32)  # |x|^2 ~ 3e4
    q = x[:50]
    _, exact = backends.exact_neighbors(q, x, 10)
    same = exact[:, ::-1].copy()  # the same sets in another order: full recall
    assert backends.recall_at_k(q, x, same, exact) == 1.0


def test_bad_vectors_are_refused() -> None:
    with pytest.raises(ImageIndexError, match="shape"):
        backends.as_vectors(np.zeros(4))
    with pytest.raises(ImageIndexError, match="dimension 4"):
        backends.as_vectors(np.zeros((2, 4)), dim=8)
    with pytest.raises(ImageIndexError, match="NaN"):
        backends.as_vectors(np.array([[np.inf, 0.0]]))
    with pytest.raises(ImageIndexError, match="no vectors"):
        backends.build_index(np.zeros((0, 4), dtype=np.float32))
    assert backends.as_vectors(np.ones((2, 3), dtype=np.float64)).dtype == np.float32


# ---------------------------------------------------------------------------- IVF-PQ
@pytest.mark.parametrize("opq", [False, True])
def test_ivfpq_is_tuned_to_the_target_recall_and_compresses(opq: bool) -> None:
    import faiss

    n, d = backends.IVFPQ_MIN_ITEMS, 16
    x = _clusters(n, d=d)
    built = backends.build_index(x, "ivfpq", target_recall=0.9, opq=opq)
    assert built.index_type == "ivfpq" and backends.index_type_of(built.index) == "ivfpq"
    assert built.params["M"] == 4 and built.params["opq"] == int(opq)
    assert {"nlist", "nprobe", "k_factor"} <= set(built.params)
    assert built.recall_at_10 is not None and built.recall_at_10 >= 0.9
    # Unseen queries, checked with NumPy: the re-ranked search reaches the target too.
    q = _clusters(200, d=d, seed=5)
    dist, pos = backends.search_index(built, q, 10, vectors=x)
    _, want = nearest_neighbors(q, x, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pos, want, strict=True)])
    assert overlap >= 0.8  # unseen queries from other centres, as in the IVF test above
    # Re-ranked distances are the exact ones of the returned items.
    exact = ((x[pos].astype(np.float64) - q[:, None, :]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, exact, rtol=1e-4, atol=1e-4)
    # 4 one-byte codes + an 8-byte id per vector, against 64 bytes of floats for flat.
    flat = backends.index_bytes(backends.build_index(x, "flat").index)
    assert backends.index_bytes(built.index) < flat / 2
    copy = faiss.deserialize_index(faiss.serialize_index(built.index))
    assert backends.index_type_of(copy) == "ivfpq"
    backends.set_search_params(copy, "ivfpq", built.params)
    assert faiss.extract_index_ivf(copy).nprobe == built.params["nprobe"]


def test_ivfpq_refuses_too_few_vectors_to_train() -> None:
    with pytest.raises(ImageIndexError, match=f"at least {backends.IVFPQ_MIN_ITEMS:,}"):
        backends.build_index(_clusters(500), "ivfpq")


def test_auto_picks_ivfpq_by_size_never_for_small_collections() -> None:
    big = backends.COMPRESSED_MIN_ITEMS
    assert backends.resolve_index_type("auto", big) == backends.APPROXIMATE_INDEX
    assert backends.resolve_index_type("auto", big + 1) == "ivfpq"
    assert backends.resolve_index_type("ivfpq", 10) == "ivfpq"  # asked for: build decides
    small = {"exact_max_items": 100, "compressed_min_items": 1_000}
    assert backends.resolve_index_type("auto", 100, **small) == "flat"
    assert backends.resolve_index_type("auto", 500, **small) == "ivf"
    # Above the passed threshold but too few to train IVF-PQ: still IVF.
    assert backends.resolve_index_type("auto", backends.IVFPQ_MIN_ITEMS, **small) == "ivf"
    assert backends.resolve_index_type("auto", backends.IVFPQ_MIN_ITEMS + 1, **small) == "ivfpq"


@pytest.mark.parametrize(("d", "m"), [(128, 32), (64, 16), (32, 8), (12, 3), (10, 2), (7, 1)])
def test_pq_subquantizers_divide_the_dimension(d: int, m: int) -> None:
    assert backends.pq_subquantizers(d) == m


def test_search_index_leaves_other_kinds_alone() -> None:
    x = _clusters(300)
    built = backends.build_index(x, "flat")
    d1, i1 = backends.search_index(built, x[:5], 3, vectors=x)
    d2, i2 = built.index.search(x[:5], 3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ4x8", "OPQ4_8,IVF16,PQ4x8"])
def test_presized_add_fills_the_lists_exactly_as_a_plain_add(factory: str) -> None:
    import faiss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    trained = faiss.index_factory(8, factory)
    trained.train(x)
    plain, sized = faiss.clone_index(trained), faiss.clone_index(trained)
    for part in (x[:1000], x[1000:]):  # the second add goes into lists that hold vectors
        plain.add(part)
        backends.add_presized(sized, np.ascontiguousarray(part))
    assert sized.ntotal == plain.ntotal == len(x)
    a, b = faiss.extract_index_ivf(plain), faiss.extract_index_ivf(sized)
    for list_no in range(a.nlist):
        n = a.invlists.list_size(list_no)
        assert b.invlists.list_size(list_no) == n
        if n:
            ids_a = faiss.rev_swig_ptr(a.invlists.get_ids(list_no), n)
            ids_b = faiss.rev_swig_ptr(b.invlists.get_ids(list_no), n)
            assert (ids_a == ids_b).all()
            size = n * a.code_size
            codes_a = faiss.rev_swig_ptr(a.invlists.get_codes(list_no), size)
            codes_b = faiss.rev_swig_ptr(b.invlists.get_codes(list_no), size)
            assert (codes_a == codes_b).all()
    a.nprobe = b.nprobe = 4
    assert (plain.search(x[:50], 5)[1] == sized.search(x[:50], 5)[1]).all()

"""The vector-store interface on random vectors: FAISS and embedded Milvus behave alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from latentsearch.index import ImageIndexError
from latentsearch.index.stores import create_store
from latentsearch.index.vector_store import FaissStore, MilvusOptions, VectorStore

pytest.importorskip("pymilvus")

MakeStore = Callable[..., VectorStore]

FINGERPRINT = {"model": "test", "weights_sha256": "0" * 64, "embedding_dim": 16}


def _clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` float32 vectors around 8 random centres (ties between distances are unlikely)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(8, d))
    return (centres[rng.integers(0, 8, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _exact(queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 k nearest rows, in float64 NumPy."""
    d = ((queries[:, None, :].astype(np.float64) - rows[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


@pytest.fixture(params=["faiss", "milvus"])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    made: list[VectorStore] = []

    def make(vectors: np.ndarray, index_type: str = "flat") -> VectorStore:
        store = create_store(vectors, index_type, backend=request.param, fingerprint=FINGERPRINT)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_flat_search_is_exact(make_store: MakeStore) -> None:
    x = _clustered(300)
    queries = _clustered(12, seed=1)
    store = make_store(x)
    assert len(store) == 300 and store.index_type == "flat" and store.recall_at_10 is None
    distances, positions = store.search(queries, 7)
    want_d, want_p = _exact(queries, x, 7)
    assert positions.dtype == np.int64 and distances.dtype == np.float32
    np.testing.assert_array_equal(positions, want_p)
    np.testing.assert_allclose(distances, want_d, rtol=1e-4)


def test_milvus_flat_returns_the_neighbours_of_faiss_flat() -> None:
    x = _clustered(400, d=32, seed=2)
    queries = _clustered(50, d=32, seed=3)
    fp = {**FINGERPRINT, "embedding_dim": 32}
    faiss_store = create_store(x, "flat", backend="faiss", fingerprint=fp)
    milvus_store = create_store(x, "flat", backend="milvus", fingerprint=fp)
    try:
        fd, fp_ = faiss_store.search(queries, 10)
        md, mp = milvus_store.search(queries, 10)
    finally:
        milvus_store.close()
    np.testing.assert_array_equal(mp, fp_)
    np.testing.assert_allclose(md, fd, rtol=1e-4)  # both squared L2


def test_add_remove_replace_keep_rows_in_order(make_store: MakeStore) -> None:
    x = _clustered(60, seed=4)
    extra = _clustered(10, seed=5)
    store = make_store(x)
    rows = x
    store.add(extra)
    rows = np.concatenate([rows, extra])
    assert len(store) == 70
    np.testing.assert_array_equal(store.search(rows, 1)[1][:, 0], np.arange(70))

    store.remove(np.array([3, 20, 69]))
    rows = np.delete(rows, [3, 20, 69], axis=0)
    assert len(store) == 67
    np.testing.assert_array_equal(store.search(rows, 1)[1][:, 0], np.arange(67))

    new = rows.copy()
    new[[0, 5]] = _clustered(2, seed=6)  # two rows change, one is dropped, two are added
    new = np.concatenate([new[:-1], _clustered(2, seed=7)])
    store.replace(new)
    assert len(store) == len(new)
    _, got = store.search(new, 3)
    np.testing.assert_array_equal(got, _exact(new, new, 3)[1])
    with pytest.raises(ImageIndexError, match="positions"):
        store.remove(np.array([len(new)]))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_are_tuned_for_recall(make_store: MakeStore, kind: str) -> None:
    x = _clustered(1_000, seed=8)
    store = make_store(x, kind)
    assert store.index_type == kind
    assert store.recall_at_10 is not None and store.recall_at_10 >= 0.95
    assert ("efSearch" if kind == "hnsw" else "nprobe") in store.params
    _, got = store.search(x[:20], 1)
    assert (got[:, 0] == np.arange(20)).mean() >= 0.95
    store.remove(np.array([0]))  # gaps close: the old row 1 is now row 0
    _, got = store.search(x[1:2], 1)
    assert got[0, 0] == 0 and len(store) == 999


def test_faiss_store_wraps_a_built_index_and_says_it_is_flat_for_duplicates() -> None:
    x = _clustered(50)
    flat = FaissStore.build(x, "flat")
    assert flat.backend == "faiss" and flat.duplicate_index is None
    hnsw = FaissStore.build(x, "hnsw")
    assert hnsw.duplicate_index is hnsw.built.index


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ImageIndexError, match="unknown backend 'annoy'"):
        create_store(_clustered(5), "flat", backend="annoy", fingerprint=FINGERPRINT)


def test_milvus_refuses_kinds_it_lacks_and_bad_collection_names() -> None:
    x = _clustered(5)
    with pytest.raises(ImageIndexError, match="collection name"):
        create_store(x, "flat", backend=MilvusOptions(collection="1 bad"), fingerprint=FINGERPRINT)


def test_an_ivfpq_image_index_reranks_with_its_stored_embeddings() -> None:
    from latentsearch.index import backends
    from latentsearch.index.vector_store import FaissStore

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16)).astype(np.float32) * 4
    x = (centres[rng.integers(0, 20, 10_000)] + rng.normal(size=(10_000, 16))).astype(np.float32)
    store = FaissStore(backends.build_index(x, "ivfpq"))
    q = x[:50] + 0.01
    pq_only = store.search(q, 10)
    store.rows = x
    d, i = store.search(q, 10)
    exact = ((x[i] - q[:, None, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, exact, rtol=1e-4, atol=1e-4)  # exact distances after re-ranking
    assert not np.allclose(pq_only[0], exact)  # PQ alone gives approximate ones

"""Duplicate groups checked against brute-force pairs; union-find; the default threshold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from latentsearch.index import backends, duplicates
from latentsearch.index.errors import ImageIndexError


def _brute_groups(x: np.ndarray, threshold: float) -> list[list[int]]:
    """Connected components from the full distance matrix (fine for a few hundred points)."""
    x64 = x.astype(np.float64)
    d = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    label = list(range(len(x)))
    changed = True
    while changed:  # min-label propagation until stable
        changed = False
        for i, j in zip(*np.nonzero(d < threshold), strict=True):
            low = min(label[i], label[j])
            if label[i] != low or label[j] != low:
                label[i] = label[j] = low
                changed = True
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(label):
        groups.setdefault(lab, []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def _with_near_copies(n: int = 300, seed: int = 0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)) + offset
    x[10] = x[3]  # exact copy
    x[200] = x[3] + 1e-3  # near copy of the same: one group of three
    x[50] = x[40] + 2e-3  # a pair
    return x.astype(np.float32)


def test_union_find_groups() -> None:
    sets = duplicates.UnionFind(7)
    sets.union(5, 1)
    sets.union(1, 3)
    sets.union(6, 4)
    sets.union(3, 5)
    assert sets.groups() == [[1, 3, 5], [4, 6]]
    assert duplicates.UnionFind(0).groups() == []


@pytest.mark.parametrize("threshold", [1e-4, 1e-2, 0.5, 3.0])
def test_groups_match_brute_force(threshold: float) -> None:
    x = _with_near_copies()
    assert duplicates.duplicate_groups(x, threshold, linkage="single") == _brute_groups(
        x, threshold
    )


def test_batches_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _with_near_copies()
    want = duplicates.duplicate_groups(x, 2.0)
    monkeypatch.setattr(duplicates, "PAIR_BUDGET", 7 * len(x))  # batches of 7 queries
    seen: list[int] = []
    real = duplicates.close_pairs

    def spy(index, vectors, threshold, **kw):  # type: ignore[no-untyped-def]
        for part in real(index, vectors, threshold, pair_budget=duplicates.PAIR_BUDGET):
            seen.append(1)
            yield part

    monkeypatch.setattr(duplicates, "close_pairs", spy)
    assert duplicates.duplicate_groups(x, 2.0) == want
    assert len(seen) == -(-len(x) // 7)


def test_exact_copies_are_found_despite_a_large_common_offset() -> None:
    # |x|^2 ~ 1e8: float32 |x|^2 + |y|^2 - 2<x,y> alone is off by ~10 for identical rows.
    x = _with_near_copies(offset=3000.0)
    groups = duplicates.duplicate_groups(x, 1e-6)
    assert groups == [[3, 10]]


def test_an_approximate_index_can_be_used() -> None:
    import faiss

    x = _with_near_copies()
    index = faiss.IndexHNSWFlat(x.shape[1], 16)
    index.add(x)
    assert duplicates.duplicate_groups(x, 1e-6, index=index) == [[3, 10]]


def test_threshold_must_be_positive() -> None:
    x = _with_near_copies()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ImageIndexError, match="positive"):
            duplicates.duplicate_groups(x, bad)


def test_typical_distance_is_the_median_over_random_pairs() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    # Two standard normal points in 8-d: |a - b|^2 / 2 ~ chi-square(8), median ~ 7.34.
    assert duplicates.typical_distance(x, pairs=4000) == pytest.approx(2 * 7.34, rel=0.08)
    assert duplicates.default_threshold(x) == pytest.approx(
        duplicates.DEFAULT_DUPLICATE_FRACTION * duplicates.typical_distance(x)
    )
    with pytest.raises(ImageIndexError, match="two"):
        duplicates.typical_distance(x[:1])


@pytest.mark.parametrize("threshold", [1e39, 1e300, float(np.finfo(np.float32).max) * 10])
def test_a_huge_threshold_joins_everything_without_overflow(threshold: float) -> None:
    x = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
    assert duplicates.duplicate_groups(x, threshold) == [list(range(40))]


# ---------------------------------------------------------------------------- at scale
def _planted(n: int = 3000, d: int = 16, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """Clustered vectors with planted groups: 40 exact copies, near copies, a chain."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d)) * 3
    x = centres[rng.integers(0, 20, n)] + rng.normal(size=(n, d))
    copies = list(range(100, 140))  # more copies than any k-NN graph would keep
    x[copies] = x[7]
    x[n - 10] = x[11] + 1e-3 * rng.normal(size=d)
    x[n - 9] = x[11] - 1e-3 * rng.normal(size=d)
    x[n - 5] = x[50] + 0.01  # a chain: squared distances 0.0016 per link, 0.0064 end to end
    x[n - 4] = x[n - 5] + 0.01
    planted = [[7, *copies], [11, n - 10, n - 9], [50, n - 5, n - 4]]
    return x.astype(np.float32), planted


def test_approximate_search_finds_every_planted_group() -> None:
    x, planted = _planted()
    threshold = 0.004  # the chain's links (0.0016) are pairs, its ends (0.0064) are not
    exact = duplicates.find_duplicates(x, threshold, method="exact", linkage="single")
    approx = duplicates.find_duplicates(
        x, threshold, method="approximate", sample=len(x), linkage="single"
    )
    assert exact.method == "exact" and approx.method == "approximate"
    assert exact.groups == sorted(planted, key=lambda g: g[0]) == approx.groups
    assert approx.pairs == exact.pairs == 40 * 41 // 2 + 3 + 2
    assert approx.params["nlist"] > 1 and approx.params["nprobe"] >= 1
    # The whole set is the sample: every pair was checked, none missed.
    assert approx.sample_pairs == exact.pairs and approx.missed_pair_rate_estimate == 0.0
    assert exact.missed_pair_rate_estimate == 0.0


def test_the_missed_pair_estimate_counts_what_the_search_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, _ = _planted()
    real = duplicates.close_pairs

    def lossy(index, vectors, threshold, **kw):  # type: ignore[no-untyped-def]
        for i, j, dist in real(index, vectors, threshold, **kw):
            keep = (i + j) % 3 != 0  # drop about a third of the pairs
            yield i[keep], j[keep], dist[keep]

    monkeypatch.setattr(duplicates, "close_pairs", lossy)
    found = duplicates.find_duplicates(x, 0.01, method="approximate", sample=len(x))
    monkeypatch.setattr(duplicates, "close_pairs", real)
    truth = duplicates.find_duplicates(x, 0.01, method="exact")
    assert found.sample_pairs == truth.pairs
    assert found.sample_missed == truth.pairs - found.pairs > 0
    assert found.missed_pair_rate_estimate == pytest.approx(1 - found.pairs / truth.pairs)


def test_auto_is_exact_for_small_sets_and_approximate_above() -> None:
    x, planted = _planted(n=600)
    small = duplicates.find_duplicates(x, 1e-3, exact_max_items=len(x))
    big = duplicates.find_duplicates(x, 1e-3, exact_max_items=len(x) - 1, sample=100)
    assert small.method == "exact" and big.method == "approximate"
    assert small.groups == big.groups == [planted[0], planted[1]]
    assert big.sample_vectors == 100
    with pytest.raises(ImageIndexError, match="unknown duplicates method"):
        duplicates.find_duplicates(x, 1e-3, method="lsh")
    with pytest.raises(ImageIndexError, match="positive"):
        duplicates.find_duplicates(x, 0.0, method="approximate")


def test_hnsw_misses_pairs_among_copies_so_it_is_not_reused() -> None:
    import faiss

    x, planted = _planted(n=600)
    index = faiss.IndexHNSWFlat(x.shape[1], 16)
    index.add(x)
    # HNSW's range search stops at its candidate list: over these 41 identical vectors it
    # returned 813 of the 823 pairs when it was reused (the estimate counted the 10 missed).
    # An IVF-Flat is built instead.
    found = duplicates.find_duplicates(x, 1e-3, method="approximate", index=index, sample=600)
    assert found.groups == [planted[0], planted[1]] and found.params["nlist"] >= 1
    assert found.sample_pairs == found.pairs == 41 * 40 // 2 + 3
    assert found.missed_pair_rate_estimate == 0.0


def test_a_given_ivf_index_is_reused() -> None:
    x, planted = _planted(n=600)
    ivf = backends.ivf_flat(x)
    found = duplicates.find_duplicates(x, 1e-3, method="approximate", index=ivf, sample=600)
    assert found.groups == [planted[0], planted[1]]
    assert found.params["nlist"] == backends.ivf_lists(len(x))
    assert found.missed_pair_rate_estimate == 0.0


# ---------------------------------------------------------------------------- linkage
def _chain_and_clumps(t: float) -> tuple[np.ndarray, list[list[int]]]:
    """Two tight clumps of five, and a chain of ten whose links are pairs but whose ends are
    far apart: what connected components join into one long group."""
    rng = np.random.default_rng(1)
    far = rng.normal(size=(3, 8)) * 100
    clump_a = far[0] + rng.normal(size=(5, 8)) * 0.01 * np.sqrt(t)
    clump_b = far[1] + rng.normal(size=(5, 8)) * 0.01 * np.sqrt(t)
    step = np.zeros(8)
    step[0] = 0.8 * np.sqrt(t)  # consecutive links at 0.64 t, two links apart at 2.56 t
    chain = far[2] + np.arange(10)[:, None] * step
    x = np.concatenate([clump_a, clump_b, chain]).astype(np.float32)
    return x, [list(range(5)), list(range(5, 10))]


def test_average_linkage_keeps_clumps_and_does_not_chain() -> None:
    t = 1.0
    x, clumps = _chain_and_clumps(t)
    single = duplicates.duplicate_groups(x, t, linkage="single")
    assert single == [*clumps, list(range(10, 20))]  # the chain is one group of ten
    average = duplicates.duplicate_groups(x, t)
    assert average[:2] == clumps
    chained = average[2:]
    # The chain splits into runs of neighbours, none longer than two links end to end.
    assert chained and all(len(g) <= 3 for g in chained)
    assert sorted(i for g in chained for i in g) == sorted(set(i for g in chained for i in g))
    for g in chained:
        assert all(b - a == 1 for a, b in itertools.pairwise(g))


def test_average_linkage_agrees_between_exact_and_approximate_search() -> None:
    x, _ = _planted()
    exact = duplicates.find_duplicates(x, 0.004, method="exact")
    approx = duplicates.find_duplicates(x, 0.004, method="approximate", sample=len(x))
    assert exact.groups == approx.groups
    # The copies and the near copies stay whole; the chain's far ends no longer join.
    assert exact.groups[:2] == [[7, *range(100, 140)], [11, len(x) - 10, len(x) - 9]]
    assert [50, len(x) - 5, len(x) - 4] not in exact.groups


def test_an_unknown_linkage_is_refused() -> None:
    x = _with_near_copies()
    with pytest.raises(ImageIndexError, match="unknown linkage"):
        duplicates.duplicate_groups(x, 1.0, linkage="complete")
